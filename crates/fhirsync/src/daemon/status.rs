//! What the daemon knows: every job's status, the staleness limit, the metrics and the clock,
//! shared by the job loops and the HTTP server.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::clock::Clock;
use crate::health::{self, HealthReport, JobStatus};
use crate::metrics::Metrics;

pub struct DaemonState {
    jobs: Mutex<BTreeMap<String, JobStatus>>,
    stale_after: Mutex<Duration>,
    pub(crate) metrics: Metrics,
    clock: Arc<dyn Clock>,
}

impl DaemonState {
    pub(crate) fn new(stale_after: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            jobs: Mutex::new(BTreeMap::new()),
            stale_after: Mutex::new(stale_after),
            metrics: Metrics::new(),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, JobStatus>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The daemon's wall-clock time.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A copy of every job's status.
    pub(crate) fn snapshot(&self) -> Vec<JobStatus> {
        self.lock().values().cloned().collect()
    }

    pub fn job(&self, name: &str) -> Option<JobStatus> {
        self.lock().get(name).cloned()
    }

    pub fn stale_after(&self) -> Duration {
        *self.stale_after.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The verdict over all jobs now (the `/health` body).
    pub(crate) fn health(&self) -> HealthReport {
        health::evaluate(&self.snapshot(), self.stale_after(), self.now())
    }

    /// The metrics now, in OpenMetrics text format (the `/metrics` body).
    pub fn metrics_text(&self) -> String {
        self.metrics.encode(self.now())
    }

    pub(crate) fn set_stale_after(&self, d: Duration) {
        *self.stale_after.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    pub(crate) fn update(&self, name: &str, f: impl FnOnce(&mut JobStatus)) {
        let mut jobs = self.lock();
        let status = jobs.entry(name.to_owned()).or_insert_with(|| JobStatus {
            name: name.to_owned(),
            ..Default::default()
        });
        f(status);
    }

    pub(crate) fn remove(&self, name: &str) {
        self.lock().remove(name);
    }
}
