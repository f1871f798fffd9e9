//! A kick-off and its state: polls answered, the plan once made, cancelled, served.
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};

use super::files::Plan;

/// A kick-off and its state.
pub(crate) struct Job {
    pub id: String,
    pub request_url: String,
    pub transaction_time: DateTime<Utc>,
    pub allow_partial: bool,
    pub polls: AtomicU32,
    pub plan: OnceLock<Result<Arc<Plan>, String>>,
    pub cancelled: AtomicBool,
    /// Planning progress in per mille.
    pub progress: AtomicU64,
    pub manifest_served: AtomicBool,
}

impl Job {
    pub fn new(
        id: String,
        request_url: String,
        transaction_time: DateTime<Utc>,
        allow_partial: bool,
    ) -> Job {
        Job {
            id,
            request_url,
            transaction_time,
            allow_partial,
            polls: AtomicU32::new(0),
            plan: OnceLock::new(),
            cancelled: AtomicBool::new(false),
            progress: AtomicU64::new(0),
            manifest_served: AtomicBool::new(false),
        }
    }

    pub fn in_progress(&self) -> bool {
        !self.cancelled.load(Ordering::Relaxed) && !self.manifest_served.load(Ordering::Relaxed)
    }
}
