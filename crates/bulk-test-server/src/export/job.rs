//! A kick-off and its state: polls answered, the plan once made, cancelled, served, and who
//! asked for it.
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};

use super::files::Plan;
use super::request::{ExportRequest, Level};

/// Who asked for a job and what for, for servers that reuse or limit jobs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct JobKey {
    /// The level and parameters of the kick-off.
    pub request: String,
    /// The client the bearer token was issued to.
    pub client: Option<String>,
    /// The Group of a Group-level export.
    pub group: Option<String>,
}

/// A kick-off and its state.
pub(crate) struct Job {
    pub id: String,
    pub request_url: String,
    pub transaction_time: DateTime<Utc>,
    pub allow_partial: bool,
    /// Files are served as gzip bytes without `Content-Encoding`.
    pub gzip_files: bool,
    /// A system-level export.
    pub system_level: bool,
    pub polls: AtomicU32,
    pub plan: OnceLock<Result<Arc<Plan>, String>>,
    pub cancelled: AtomicBool,
    /// Planning progress in per mille.
    pub progress: AtomicU64,
    pub manifest_served: AtomicBool,
    pub key: JobKey,
    /// When planning ended (successfully or not), on the server's clock.
    pub completed_at: OnceLock<DateTime<Utc>>,
    /// The files' URLs in the output store, by file number, once uploaded (or why not).
    pub uploaded: tokio::sync::OnceCell<Result<Vec<String>, String>>,
}

impl Job {
    pub fn new(
        id: String,
        request_url: String,
        transaction_time: DateTime<Utc>,
        request: &ExportRequest,
        key: JobKey,
    ) -> Job {
        Job {
            id,
            request_url,
            transaction_time,
            allow_partial: request.allow_partial,
            gzip_files: request.gzip_files,
            system_level: request.level == Level::System,
            polls: AtomicU32::new(0),
            plan: OnceLock::new(),
            cancelled: AtomicBool::new(false),
            progress: AtomicU64::new(0),
            manifest_served: AtomicBool::new(false),
            key,
            completed_at: OnceLock::new(),
            uploaded: tokio::sync::OnceCell::new(),
        }
    }

    pub fn in_progress(&self) -> bool {
        !self.cancelled.load(Ordering::Relaxed) && !self.manifest_served.load(Ordering::Relaxed)
    }
}
