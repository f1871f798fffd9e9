//! A view run over a synced resource table: the table's rows streamed from Delta, turned
//! back into FHIR JSON (the encoder's decoder), and each resource's view rows gathered into
//! Arrow batches. Memory is a batch of the table and one of the view, whatever the sizes.
use std::collections::BTreeMap;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use delta_sink::{DeltaSink, StorageOptions};
use fhir_encoder::Decoder;
use fhir_encoder::json::Tape;
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
    let ctx = tables::session(&[(resource_type, &table)]).await?;
    let df = ctx
        .sql(&format!("SELECT * FROM \"{resource_type}\""))
        .await
        .context("planning the table scan")?;
    let mut batches = df.execute_stream().await?;
    let mut decoder: Option<Decoder> = None;
    let mut builder = RowBatchBuilder::new(definition);
    let (mut tape, mut json) = (Tape::default(), String::new());
    let mut run = ViewRun::default();
    while let Some(batch) = batches.next().await {
        let batch = batch.with_context(|| format!("reading the {resource_type} table"))?;
        if decoder
            .as_ref()
            .is_none_or(|d| d.schema() != batch.schema_ref())
        {
            let d = Decoder::new(resource_type, batch.schema_ref())
                .with_context(|| format!("reading the {resource_type} table"))?;
            if view.reads_extensions && !d.has_extensions() {
                bail!(
                    "the view reads extensions, which the {resource_type} table does not keep \
                     (it was synced without `--extensions`): sync it again with \
                     `--extensions --full-refresh`, or name the view in the sync (`--view`) so \
                     it is computed from the resources as they arrive"
                );
            }
            decoder = Some(d);
        }
        let Some(d) = decoder.as_ref() else {
            continue;
        };
        let mut rows = d.rows(&batch)?;
        for r in 0..rows.len() {
            json.clear();
            rows.write_json(r, &mut json)?;
            let doc = tape
                .parse(&json)
                .map_err(|e| anyhow::anyhow!("a decoded {resource_type} row: {e}"))?;
            run.resources += 1;
            for row in definition.rows(doc)? {
                builder.push(&row)?;
                run.rows += 1;
            }
            if builder.len() >= VIEW_BATCH_ROWS {
                out(builder.finish()?)?;
            }
        }
    }
    if !builder.is_empty() {
        out(builder.finish()?)?;
    }
    Ok(run)
}
