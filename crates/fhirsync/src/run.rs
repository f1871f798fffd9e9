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

/// What a sync did to one view's table.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ViewReport {
    /// The resource type the view reads.
    pub resource_type: String,
    pub status: Option<WriteStatus>,
    pub version: Option<u64>,
    /// Resources whose rows came in for the first time, or replaced their earlier rows.
    pub inserted: u64,
    pub updated: u64,
    /// Resources whose rows went (deleted or reconciled resources).
    pub removed: u64,
    /// Built from its resource table (new, changed, or behind it) rather than from the
    /// export's resources.
    pub rebuilt: bool,
    /// Resources whose rows could not be computed (logged; they have none).
    pub failed: u64,
    /// Time the view's commit took (with its build from the table, if it was built).
    pub commit_seconds: f64,
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
    /// The views kept by the sync, by name.
    pub views: BTreeMap<String, ViewReport>,
    pub bytes_downloaded: u64,
    pub resources: u64,
    pub rejects: u64,
    pub rejects_file: Option<PathBuf>,
    pub resumed_files: usize,
    /// Deletions the export listed (`deleted` files), found in the tables or not.
    pub deletions_listed: usize,
    /// Patients who joined the Group since the last sync, whose earlier data was exported too.
    pub new_group_members: u64,
    pub duration: Duration,
    /// HTTP retries by reason: `429`, `5xx`, `network`, `401`.
    pub http_retries: BTreeMap<String, u64>,
    pub token_refreshes: u64,
}

/// What a sync or import reports while it runs, for progress displays. Counts, never rows.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncEvent {
    /// An import is about to encode this many files (a sync learns its count from the
    /// export's manifest instead).
    EncodingStarted { files: usize },
    /// One input file is encoded into its table's writers.
    FileEncoded { resources: u64 },
    /// Every file is encoded; these tables commit now.
    CommitsStarted { tables: usize },
    /// One table's commit has started.
    TableCommitStarted { resource_type: String },
    /// One table's commit is done (or was skipped).
    TableCommitted { resource_type: String },
}

/// Where [`SyncEvent`]s go: nowhere by default. Called on encoding and commit threads, so it
/// must be cheap.
#[derive(Clone, Default)]
pub struct SyncEvents(Option<SyncEventHandler>);

type SyncEventHandler = std::sync::Arc<dyn Fn(&SyncEvent) + Send + Sync>;

impl SyncEvents {
    pub fn new(handler: impl Fn(&SyncEvent) + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(handler)))
    }

    pub fn emit(&self, event: SyncEvent) {
        if let Some(h) = &self.0 {
            h(&event);
        }
    }
}

impl fmt::Debug for SyncEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "SyncEvents(handler)"
        } else {
            "SyncEvents(none)"
        })
    }
}
