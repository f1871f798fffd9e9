//! What a run is and what it reports: the vocabulary shared by the sync, the daemon, its
//! schedules, health and metrics, and the summaries. Depends on no other module of the crate.
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use delta_sink::WriteStatus;

/// Which kind of sync a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Export `_since` the stored cursor (a full export when there is none) and merge.
    Incremental,
    /// Ignore the cursor, export everything and rewrite the tables.
    FullRefresh,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incremental => "incremental",
            Self::FullRefresh => "full_refresh",
        }
    }
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one table got from one sync.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct TableReport {
    pub status: Option<WriteStatus>,
    pub version: Option<u64>,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Rows removed because the export listed them as deleted.
    pub deleted: u64,
    /// Rows removed because a full export no longer had them.
    pub reconciled: u64,
    pub rejected: u64,
    pub resources: u64,
}

impl TableReport {
    /// Rows removed either way: what summaries and metrics call "deleted".
    pub fn removed(&self) -> u64 {
        self.deleted + self.reconciled
    }
}

/// The whole result of a sync or import: for the summaries, the state file, the daemon's
/// health and metrics.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SyncReport {
    pub sync_id: String,
    /// The export's `transactionTime`: the cursor the next incremental sync starts from.
    pub transaction_time: Option<String>,
    /// `_since` used for the export (`None`: a full export).
    pub since: Option<String>,
    pub tables: BTreeMap<String, TableReport>,
    pub bytes_downloaded: u64,
    pub resources: u64,
    pub rejects: u64,
    pub rejects_file: Option<PathBuf>,
    pub resumed_files: usize,
    pub duration: Duration,
    /// HTTP retries by reason: `429`, `5xx`, `network`, `401`.
    pub http_retries: BTreeMap<String, u64>,
    pub token_refreshes: u64,
}
