//! The sync's cursor: the identity it is committed under, where the next export starts, and
//! the state file that records the last sync.
use anyhow::Context;
use chrono::{DateTime, Utc};
use delta_sink::{DeltaSink, ResourceTable};

use crate::config::SyncOptions;
use crate::run::SyncReport;
use crate::state::SyncState;

/// The sync's identity: the Delta `txn` app id under which cursors are committed. Stable for a
/// given endpoint and group, so every run of the same sync recognises its own commits.
pub fn sync_identity(endpoint: &url::Url, group_id: Option<&str>) -> String {
    let base = endpoint.as_str().trim_end_matches('/');
    match group_id {
        Some(g) => format!("fhirsync:{base}#Group/{g}"),
        None => format!("fhirsync:{base}"),
    }
}

/// The cursor the next incremental export starts from: the oldest `transactionTime` committed
/// under `app_id` across the requested tables; the state file's (e.g. written by the replaced
/// script) when no table has one yet; `None` (a full export) when a requested table has none.
pub(super) async fn resume_cursor(
    sink: &DeltaSink,
    app_id: &str,
    types: &[String],
    state: &SyncState,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let mut oldest: Option<DateTime<Utc>> = None;
    let mut missing = Vec::new();
    for t in types {
        let table = sink
            .table(t)
            .await
            .with_context(|| format!("opening the {t} table"))?;
        let committed = if table.exists() {
            table_cursor(&table, app_id).await?
        } else {
            None
        };
        match committed {
            Some(tt) => oldest = Some(oldest.map_or(tt, |o| o.min(tt))),
            None => missing.push(t.clone()),
        }
    }
    if missing.is_empty() {
        return Ok(oldest);
    }
    if oldest.is_none()
        && let Some(last) = &state.last_sync_time
    {
        let tt = DateTime::parse_from_rfc3339(last).with_context(|| {
            format!("state file last_sync_time {last:?} is not an RFC 3339 instant")
        })?;
        tracing::info!(since = %last, "no table carries a cursor yet: continuing from the state file");
        return Ok(Some(tt.with_timezone(&Utc)));
    }
    if oldest.is_some() {
        tracing::info!(types = ?missing, "tables without a committed cursor: running a full export");
    }
    Ok(None)
}

async fn table_cursor(
    table: &ResourceTable,
    app_id: &str,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let Some(version) = table.committed_version(app_id).await? else {
        return Ok(None);
    };
    // The txn version is the transactionTime in epoch ms; the metadata has the exact instant.
    if let Some(meta) = table.last_sync_metadata(50).await?
        && meta.app_id.as_deref() == Some(app_id)
        && meta.cursor_version == Some(version)
        && let Some(tt) = meta.transaction_time
    {
        return Ok(Some(tt));
    }
    Ok(DateTime::<Utc>::from_timestamp_millis(version))
}

/// Records a sync's result in its state: on success the new cursor and tables, on failure the
/// error (the last success stays).
pub(super) fn record_result(
    state: &mut SyncState,
    opts: &SyncOptions,
    result: &anyhow::Result<SyncReport>,
) {
    match result {
        Ok(report) => {
            state.last_sync_time = report.transaction_time.clone();
            state.last_success_at = Some(Utc::now());
            state.fhir_endpoint = Some(opts.fhir_endpoint.to_string());
            state.sync_id = Some(report.sync_id.clone());
            state.tables = report
                .tables
                .iter()
                .filter_map(|(t, r)| r.version.map(|v| (t.clone(), v)))
                .collect();
            state.last_error = None;
            state.last_error_at = None;
        }
        Err(e) => {
            state.last_error = Some(crate::error_line::error_line(e));
            state.last_error_at = Some(Utc::now());
        }
    }
}
