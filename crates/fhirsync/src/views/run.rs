//! A view run over a synced resource table: the table's rows streamed from Delta, turned
//! back into FHIR JSON (the encoder's decoder), and each resource's view rows gathered into
//! Arrow batches. Memory is a batch of the table and one of the view, whatever the sizes.
use std::collections::BTreeMap;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use delta_sink::{DeltaSink, ResourceTable, StorageOptions};
use deltalake::datafusion::execution::SendableRecordBatchStream;
use fhir_encoder::Decoder;
use fhir_encoder::json::{Doc, Tape};
use fhir_views::view::RowBatchBuilder;
use futures::StreamExt as _;

use super::LoadedView;
use crate::tables;

/// View rows per batch handed on.
const VIEW_BATCH_ROWS: usize = 8192;

/// What a view run read and gave.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ViewRun {
    /// Resources of the view's type read from the table.
    pub resources: u64,
    /// Rows of the view.
    pub rows: u64,
}

/// Runs `view` over its resource type's table under `delta_path`, handing the rows to `out`
/// a batch at a time. A table encoded without extensions cannot serve a view that reads
/// them: that is an error naming the fix, not a view of nulls.
pub async fn run_over_table(
    delta_path: &str,
    storage_options: &BTreeMap<String, String>,
    view: &LoadedView,
    out: &mut (dyn FnMut(RecordBatch) -> anyhow::Result<()> + Send),
) -> anyhow::Result<ViewRun> {
    let definition = &view.definition;
    let resource_type = definition.resource.as_str();
    let storage = storage_options
        .iter()
        .fold(StorageOptions::from_env(), |s, (k, v)| s.with(k, v));
    let sink = DeltaSink::new(delta_path, storage)?;
    let table = sink
        .table(resource_type)
        .await
        .with_context(|| format!("opening the {resource_type} table"))?;
    if !table.exists() {
        bail!(
            "there is no {resource_type} table under {delta_path}: sync {resource_type} first \
             (`--resource-types ... {resource_type}`)"
        );
    }
    let mut builder = RowBatchBuilder::new(definition);
    let mut run = ViewRun::default();
    for_each_resource(&table, resource_type, view.reads_extensions, &mut |doc| {
        run.resources += 1;
        for row in definition.rows(doc)? {
            builder.push(&row)?;
            run.rows += 1;
        }
        if builder.len() >= VIEW_BATCH_ROWS {
            out(builder.finish()?)?;
        }
        Ok(())
    })
    .await?;
    if !builder.is_empty() {
        out(builder.finish()?)?;
    }
    Ok(run)
}

/// Streams every resource of `table` (of `resource_type`) back as FHIR JSON, a batch of the
/// table at a time. With `needs_extensions`, a table encoded without them is an error that
/// names the fix.
pub async fn for_each_resource(
    table: &ResourceTable,
    resource_type: &str,
    needs_extensions: bool,
    f: &mut (dyn FnMut(Doc<'_>) -> anyhow::Result<()> + Send),
) -> anyhow::Result<u64> {
    let mut resources = TableResources::open(table, resource_type, needs_extensions).await?;
    while resources.next_batch(f).await? {}
    Ok(resources.read)
}

/// The resources of a table read back as FHIR JSON, a batch of the table at a time (the
/// caller may await between batches, e.g. to write what it made of them).
pub struct TableResources {
    batches: SendableRecordBatchStream,
    resource_type: String,
    needs_extensions: bool,
    decoder: Option<Decoder>,
    tape: Tape,
    json: String,
    /// Resources read so far.
    pub read: u64,
}

impl TableResources {
    pub async fn open(
        table: &ResourceTable,
        resource_type: &str,
        needs_extensions: bool,
    ) -> anyhow::Result<TableResources> {
        let ctx = tables::session(&[(resource_type, table)]).await?;
        let df = ctx
            .sql(&format!("SELECT * FROM \"{resource_type}\""))
            .await
            .context("planning the table scan")?;
        Ok(TableResources {
            batches: df.execute_stream().await?,
            resource_type: resource_type.to_owned(),
            needs_extensions,
            decoder: None,
            tape: Tape::default(),
            json: String::new(),
            read: 0,
        })
    }

    /// Calls `f` with each resource of the table's next batch; `false` once there are none.
    pub async fn next_batch(
        &mut self,
        f: &mut (dyn FnMut(Doc<'_>) -> anyhow::Result<()> + Send),
    ) -> anyhow::Result<bool> {
        let resource_type = self.resource_type.as_str();
        let Some(batch) = self.batches.next().await else {
            return Ok(false);
        };
        let batch = batch.with_context(|| format!("reading the {resource_type} table"))?;
        if self
            .decoder
            .as_ref()
            .is_none_or(|d| d.schema() != batch.schema_ref())
        {
            let d = Decoder::new(resource_type, batch.schema_ref())
                .with_context(|| format!("reading the {resource_type} table"))?;
            if self.needs_extensions && !d.has_extensions() && !d.has_original_json() {
                bail!(
                    "the view reads extensions, which the {resource_type} table does not keep \
                     (it was synced without `--extensions`): sync into a new --delta-path with \
                     `--extensions` (or `--keep-json`, which keeps each resource's whole JSON), \
                     or name the view in the sync (`--view`) from the table's first sync, so \
                     it is computed from the resources as they arrive"
                );
            }
            self.decoder = Some(d);
        }
        let Some(d) = self.decoder.as_ref() else {
            return Ok(true);
        };
        let mut rows = d.rows(&batch)?;
        for r in 0..rows.len() {
            self.json.clear();
            rows.write_json(r, &mut self.json)?;
            let doc = self
                .tape
                .parse(&self.json)
                .map_err(|e| anyhow::anyhow!("a decoded {resource_type} row: {e}"))?;
            self.read += 1;
            f(doc)?;
        }
        Ok(true)
    }
}
