//! The per-table commit: each type's writers joined, its deletions, reconciliation and the
//! export's cursor committed in one Delta commit; as many tables at once as there are cores.
use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use delta_sink::{CommitOptions, Cursor, IdSet, IdSetBuilder, WriteOutcome, WriteStatus};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::input::ApplyInput;
use super::pool::{Pool, Slot};
use super::reconcile::reconcile_scope;
use super::view_commit::{TableChange, commit_views, discard_views};
use super::view_slots::ViewSlot;
use crate::config::SaveMode;
use crate::run::{SyncEvent, TableReport, ViewReport};

/// What the tables get besides the rows the writers hold.
pub(super) struct Changes {
    /// Ids the export lists as deleted, by type.
    pub deletions: BTreeMap<String, Vec<String>>,
    /// For a Group-scoped reconciliation: the group's patient ids.
    pub group_members: Option<IdSet>,
    pub transaction_time: DateTime<Utc>,
}

/// Commits every open table of `pool`, `parallel` at once. Every started commit finishes (a
/// commit is never cut off half-way; its thread must not outlive the runtime either); once
/// `cancel` fires no other starts. Returns the tables committed and the first error.
pub(super) async fn commit_all(
    pool: &Arc<Pool>,
    changes: Changes,
    parallel: usize,
    cancel: &CancellationToken,
) -> (Committed, Option<anyhow::Error>) {
    let Changes {
        mut deletions,
        group_members,
        transaction_time,
    } = changes;
    // A commit is mostly one thread's work (key scans, the log); memory stays bounded, since
    // each commit's id index is, and the file rewrites of all tables share one slot per core
    // (in delta-sink).
    let group_members = group_members.map(Arc::new);
    let slots = match pool.slots() {
        Ok(slots) => slots,
        Err(e) => return (Committed::default(), Some(e)),
    };
    let total = slots.len();
    let events = &pool.input.events;
    events.emit(SyncEvent::CommitsStarted {
        tables: slots.len(),
    });
    let not_cancelled = |_: &(String, Arc<Slot>)| !cancel.is_cancelled();
    let slots = slots.into_iter().take_while(not_cancelled);
    let mut commits = futures::stream::iter(slots.map(|(resource_type, slot)| {
        let deletions = deletions.remove(&resource_type);
        let (pool, members) = (pool.clone(), group_members.clone());
        // A thread of its own that drives the commit (a blocking thread may block on the
        // runtime, and the commit's future need not be `Send`).
        tokio::task::spawn_blocking(move || {
            let events = &pool.input.events;
            events.emit(SyncEvent::TableCommitStarted {
                resource_type: resource_type.clone(),
            });
            let done = pool.runtime.block_on(commit_table(
                &pool.input,
                resource_type.clone(),
                &slot,
                pool.views.of_type(&resource_type),
                deletions,
                members.as_deref(),
                transaction_time,
            ));
            events.emit(SyncEvent::TableCommitted { resource_type });
            done
        })
    }))
    .buffer_unordered(parallel);
    let mut committed = Committed::default();
    let mut failed = None;
    let mut done = 0;
    while let Some(joined) = commits.next().await {
        done += 1;
        match joined.map_err(|e| anyhow!("a commit task failed: {e}")) {
            Ok(Ok(Some((resource_type, entry, views)))) => {
                committed.tables.insert(resource_type, entry);
                committed.views.extend(views);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) | Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if done < total {
        failed.get_or_insert(anyhow!(
            "sync cancelled while writing tables ({done} of {total} written); the next run finishes it"
        ));
    }
    (committed, failed)
}

/// What the commits did, by table and by view.
#[derive(Default)]
pub(super) struct Committed {
    pub tables: BTreeMap<String, TableReport>,
    pub views: BTreeMap<String, ViewReport>,
}

type TableCommitted = (String, TableReport, BTreeMap<String, ViewReport>);

/// Commits one type's writers with its deletions, reconciliation and the cursor; `None` for
/// a slot without a table.
#[allow(clippy::too_many_arguments)]
async fn commit_table(
    input: &ApplyInput,
    resource_type: String,
    slot: &Slot,
    views: &[Arc<ViewSlot>],
    deletions: Option<Vec<String>>,
    group_members: Option<&IdSet>,
    transaction_time: DateTime<Utc>,
) -> anyhow::Result<Option<TableCommitted>> {
    let version = transaction_time.timestamp_millis();
    let (table, writers, ids, resources, rejected) = {
        let mut s = slot.lock()?;
        let ids = s.exported_ids.take().filter(|_| !s.reconcile_stopped);
        (
            s.table.take(),
            s.take_writers(),
            ids,
            s.resources,
            s.rejected,
        )
    };
    let mut writers = writers.into_iter();
    let mut writer = writers.next();
    if let Some(w) = writer.as_mut() {
        for other in writers {
            w.absorb(other)
                .await
                .with_context(|| format!("joining the {resource_type} writers"))?;
        }
    }
    let mut entry = TableReport {
        resources,
        rejected,
        ..Default::default()
    };
    let (Some(mut table), Some(mut writer)) = (table, writer) else {
        discard_views(views).await;
        return Ok(None);
    };
    let existed = table.exists();
    let before = match existed {
        true => table.committed_version(&input.app_id).await?,
        false => None,
    };
    let view_deletions = deletions.clone();
    if input.mode == SaveMode::Merge && before.is_some_and(|v| v >= version) {
        tracing::info!(resource_type = %resource_type, "this export is already in the table: skipped");
        if let Err(e) = writer.discard().await {
            tracing::warn!(resource_type = %resource_type, error = %e, "could not delete the rows written again");
        }
        entry.status = Some(WriteStatus::AlreadyApplied);
        entry.version = table.version();
        let change = TableChange::AlreadyApplied;
        let views = commit_views(input, views, &table, change, None, transaction_time).await?;
        return Ok(Some((resource_type, entry, views)));
    }
    let reconciling = input.mode == SaveMode::Merge && ids.is_some();
    if input.mode == SaveMode::Merge {
        if let Some(ids) = deletions {
            writer.delete(ids, transaction_time);
        }
        if let Some(ids) = ids.map(IdSetBuilder::seal) {
            match reconcile_scope(&resource_type, writer.schema(), group_members) {
                Some(scope) => writer.reconcile_within(ids, scope),
                None => tracing::warn!(resource_type = %resource_type,
                    "not reconciled: no top-level element ties its rows to a patient of the group"),
            }
        }
    }
    let cursor = Cursor::new(input.app_id.clone(), transaction_time, input.app_id.clone());
    let options = CommitOptions {
        mode: input.mode,
        cursor: Some(cursor),
    };
    let outcome: WriteOutcome = table
        .commit(writer, options)
        .await
        .with_context(|| format!("committing the {resource_type} table"))?;
    entry.status = Some(outcome.status);
    entry.version = outcome.version;
    entry.inserted = outcome.inserted;
    entry.updated = outcome.updated;
    entry.unchanged = outcome.unchanged + outcome.duplicates;
    entry.deleted = outcome.deleted;
    entry.reconciled = outcome.reconciled;
    let change = if outcome.status == WriteStatus::IgnoredExisting {
        TableChange::Unchanged
    } else if !existed || input.mode == SaveMode::Overwrite {
        TableChange::Replaced
    } else {
        TableChange::Merged {
            before,
            reconciled: reconciling,
        }
    };
    let views = commit_views(
        input,
        views,
        &table,
        change,
        view_deletions.as_deref(),
        transaction_time,
    )
    .await?;
    Ok(Some((resource_type, entry, views)))
}
