//! Committing the views of a resource type, right after its table's commit, each with the
//! export's cursor: the rows of the resources the export changed replace theirs, rows of
//! deleted and reconciled resources go. A view that cannot follow the table that way (new,
//! its definition changed, or it missed an export) is rebuilt from the table.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, anyhow};
use arrow::array::AsArray as _;
use chrono::{DateTime, Utc};
use delta_sink::{
    CommitOptions, Cursor, IdSet, IdSetBuilder, ResourceTable, TableWriter, WriteStatus,
};
use futures::StreamExt as _;

use super::input::ApplyInput;
use super::view_slots::ViewSlot;
use crate::config::SaveMode;
use crate::run::ViewReport;
use crate::tables;
use crate::views::stage::{ViewRows, table_schema};
use crate::views::{MaintainedView, TableResources};

/// Rows of a rebuilt view gathered before they are written.
const REBUILD_BATCH_ROWS: usize = 8192;

/// What the export did to the resource table the views read.
#[derive(Debug, Clone, Copy)]
pub(super) enum TableChange {
    /// Created or overwritten: the staged rows are the whole view.
    Replaced,
    /// Merged; `before` is the table's cursor for this sync before the commit.
    Merged {
        before: Option<i64>,
        reconciled: bool,
    },
    /// The table already had this export (a resumed run).
    AlreadyApplied,
    /// The table was left as it was (`--save-mode ignore` on an existing table): so are
    /// the views.
    Unchanged,
}

/// Commits every view of `slots` (the views of one type) after `table`'s commit.
pub(super) async fn commit_views(
    input: &ApplyInput,
    slots: &[Arc<ViewSlot>],
    table: &ResourceTable,
    change: TableChange,
    deletions: Option<&[String]>,
    transaction_time: DateTime<Utc>,
) -> anyhow::Result<BTreeMap<String, ViewReport>> {
    let mut reports = BTreeMap::new();
    // The table's ids, read once for all its views, when they are reconciled.
    let mut table_ids: Option<IdSet> = None;
    for slot in slots {
        let started = std::time::Instant::now();
        let view = &slot.view;
        let mut view_table = slot
            .table
            .lock()
            .map_err(|_| anyhow!("a view writer thread panicked"))?
            .take()
            .ok_or_else(|| anyhow!("the view {} is already committed", view.name))?;
        let writer = joined(slot, &view_table).await?;
        let app_id = view.app_id(&input.app_id);
        let version = transaction_time.timestamp_millis();
        let have = if view_table.exists() {
            view_table.committed_version(&app_id).await?
        } else {
            None
        };
        let mut report = ViewReport {
            resource_type: view.definition.resource.clone(),
            failed: slot.failed.load(Ordering::SeqCst),
            ..ViewReport::default()
        };
        if let TableChange::Unchanged = change {
            discard(writer, view).await;
            report.status = Some(WriteStatus::IgnoredExisting);
            report.version = view_table.version();
            reports.insert(view.name.clone(), report);
            continue;
        }
        if have.is_some_and(|v| v >= version) {
            discard(writer, view).await;
            report.status = Some(WriteStatus::AlreadyApplied);
            report.version = view_table.version();
            reports.insert(view.name.clone(), report);
            continue;
        }
        let cursor = Cursor::new(app_id, transaction_time, input.app_id.clone());
        let (writer, mode) = match change {
            TableChange::Replaced => (writer, SaveMode::Overwrite),
            TableChange::Merged { before, reconciled } if have.is_some() && have == before => {
                let mut writer = writer;
                if let Some(ids) = deletions {
                    writer.delete(ids, transaction_time);
                }
                if reconciled {
                    if table_ids.is_none() {
                        table_ids = Some(ids_of(table).await?);
                    }
                    if let Some(keep) = &table_ids {
                        writer.reconcile(keep.clone(), None);
                    }
                }
                (writer, SaveMode::Merge)
            }
            _ => {
                discard(writer, view).await;
                tracing::info!(view = %view.name, "the view does not follow its table yet: built from the table");
                report.rebuilt = true;
                (
                    rebuild(view, table, &view_table).await?,
                    SaveMode::Overwrite,
                )
            }
        };
        let options = CommitOptions {
            mode,
            cursor: Some(cursor),
        };
        let out = view_table
            .commit(writer, options)
            .await
            .with_context(|| format!("committing the view {}", view.name))?;
        report.status = Some(out.status);
        report.version = out.version;
        report.inserted = out.inserted;
        report.updated = out.updated;
        report.removed = out.deleted + out.reconciled;
        report.commit_seconds = started.elapsed().as_secs_f64();
        tracing::info!(view = %view.name, resources_in = report.inserted + report.updated,
            removed = report.removed, rebuilt = report.rebuilt, seconds = report.commit_seconds,
            "view committed");
        reports.insert(view.name.clone(), report);
    }
    Ok(reports)
}

/// Deletes the rows staged for `slots`' views: their table commits nothing in this run.
pub(super) async fn discard_views(slots: &[Arc<ViewSlot>]) {
    for slot in slots {
        for writer in slot.take_writers().unwrap_or_default() {
            discard(writer, &slot.view).await;
        }
    }
}

/// The view's writers as one (a new, empty one when no file brought it rows).
async fn joined(slot: &ViewSlot, view_table: &ResourceTable) -> anyhow::Result<TableWriter> {
    let mut writers = slot.take_writers()?.into_iter();
    let mut writer = match writers.next() {
        Some(w) => w,
        None => view_table.writer(table_schema(&slot.view.definition)),
    };
    for other in writers {
        writer
            .absorb(other)
            .await
            .with_context(|| format!("joining the writers of the view {}", slot.view.name))?;
    }
    Ok(writer)
}

async fn discard(writer: TableWriter, view: &MaintainedView) {
    if let Err(e) = writer.discard().await {
        tracing::warn!(view = %view.name, error = %e, "could not delete the view's uncommitted rows");
    }
}

/// The view's rows of every resource in `table`, staged for a new version of the view.
async fn rebuild(
    view: &MaintainedView,
    table: &ResourceTable,
    view_table: &ResourceTable,
) -> anyhow::Result<TableWriter> {
    let resource_type = view.definition.resource.as_str();
    let mut writer = view_table.writer(table_schema(&view.definition));
    if !table.exists() {
        return Ok(writer);
    }
    let mut rows = ViewRows::new(view.definition.clone());
    let copy = format!("{:015}.rebuild", Utc::now().timestamp_millis());
    let context = || {
        format!(
            "building the view {} from the {resource_type} table",
            view.name
        )
    };
    let mut resources = TableResources::open(table, resource_type, view.reads_extensions)
        .await
        .with_context(context)?;
    while resources
        .next_batch(&mut |doc| {
            rows.push(doc, &copy);
            Ok(())
        })
        .await
        .with_context(context)?
    {
        if rows.len() >= REBUILD_BATCH_ROWS {
            writer.push(&rows.finish()?).await?;
        }
    }
    writer.push(&rows.finish()?).await?;
    Ok(writer)
}

/// Every id in `table`.
async fn ids_of(table: &ResourceTable) -> anyhow::Result<IdSet> {
    let ctx = tables::session(&[("t", table)]).await?;
    let df = ctx.sql("SELECT id FROM t").await?;
    let mut stream = df.execute_stream().await?;
    let mut ids = IdSetBuilder::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.context("reading the table's ids")?;
        let col = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
        for id in col.as_string::<i32>().iter().flatten() {
            ids.insert(id);
        }
    }
    Ok(ids.seal())
}
