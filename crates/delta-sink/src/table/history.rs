//! What the log tells without a data scan: the committed cursor, the last sync's
//! metadata, table figures.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde_json::Value;

use super::ResourceTable;
use super::options::METADATA_PREFIX;
use crate::error::{Result, SinkError};

/// The fhirsync metadata of a commit, read back from the table history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SyncMetadata {
    /// Table version of that commit.
    pub table_version: Option<u64>,
    /// Commit timestamp (epoch ms).
    pub commit_timestamp: Option<i64>,
    /// Delta operation name (`MERGE`, `WRITE`, ...).
    pub operation: Option<String>,
    /// `fhirsync.transactionTime`.
    pub transaction_time: Option<DateTime<Utc>>,
    /// `fhirsync.syncId`.
    pub sync_id: Option<String>,
    /// `fhirsync.appId`.
    pub app_id: Option<String>,
    /// `fhirsync.version` (the txn version).
    pub cursor_version: Option<i64>,
    /// All `fhirsync.*` entries.
    pub entries: HashMap<String, Value>,
}

/// Table figures for status displays, from the log alone (no data scan).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TableStats {
    /// Table URL.
    pub url: String,
    /// Current version.
    pub version: u64,
    /// Rows, summed from the add actions' statistics (`None` if a file lacks them).
    pub rows: Option<u64>,
    /// Active data files.
    pub files: u64,
    /// Bytes in active data files.
    pub size_bytes: u64,
    /// Latest commit carrying fhirsync metadata.
    pub last_sync: Option<SyncMetadata>,
}

impl ResourceTable {
    /// The txn version last committed for `app_id` (the cursor), if any.
    pub async fn committed_version(&self, app_id: &str) -> Result<Option<i64>> {
        if !self.exists() {
            return Ok(None);
        }
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        snapshot
            .transaction_version(self.table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| self.err(e))
    }

    /// The newest commit's fhirsync metadata, looking back past maintenance commits
    /// (optimize, vacuum) that carry none; at most `lookback` commits are read.
    pub async fn last_sync_metadata(&self, lookback: usize) -> Result<Option<SyncMetadata>> {
        if !self.exists() {
            return Ok(None);
        }
        let infos: Vec<_> = self
            .table
            .history(Some(lookback.max(1)))
            .try_collect()
            .await
            .map_err(|e| self.err(e))?;
        let current = self.table.version();
        // history() yields newest first; it does not carry versions, so derive them.
        for (i, info) in infos.into_iter().enumerate() {
            let entries: HashMap<String, Value> = info
                .info
                .iter()
                .filter(|(k, _)| k.starts_with(METADATA_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if entries.is_empty() {
                continue;
            }
            let s = |k: &str| entries.get(k).and_then(Value::as_str).map(str::to_string);
            let transaction_time = s("fhirsync.transactionTime")
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc));
            let cursor_version = entries.get("fhirsync.version").and_then(Value::as_i64);
            return Ok(Some(SyncMetadata {
                table_version: entries
                    .get("fhirsync.tableVersion")
                    .and_then(Value::as_u64)
                    .or_else(|| current.map(|v| v.saturating_sub(i as u64))),
                commit_timestamp: info.timestamp,
                operation: info.operation.clone(),
                transaction_time,
                sync_id: s("fhirsync.syncId"),
                app_id: s("fhirsync.appId"),
                cursor_version,
                entries,
            }));
        }
        Ok(None)
    }

    /// Version, rows (from file statistics), files and bytes, plus the last sync metadata.
    pub async fn stats(&self) -> Result<TableStats> {
        let version = self.table.version().ok_or_else(|| SinkError::NotATable {
            table: self.name.clone(),
        })?;
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        let mut rows = Some(0u64);
        let mut files = 0u64;
        let mut size = 0u64;
        for f in snapshot.log_data().iter() {
            files += 1;
            size += u64::try_from(f.size()).unwrap_or(0);
            let deleted = f
                .deletion_vector_descriptor()
                .map_or(0, |dv| dv.cardinality);
            rows = match (rows, f.num_records()) {
                (Some(r), Some(n)) => Some(r + (n as u64).saturating_sub(deleted as u64)),
                _ => None,
            };
        }
        Ok(TableStats {
            url: self.name.clone(),
            version,
            rows,
            files,
            size_bytes: size,
            last_sync: self.last_sync_metadata(100).await?,
        })
    }
}
