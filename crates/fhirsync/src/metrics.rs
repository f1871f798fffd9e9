//! Prometheus metrics of the daemon (OpenMetrics text format), labelled by job.
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::run::{RunKind, SyncReport};

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    job: String,
    run: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    job: String,
    resource_type: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    job: String,
    reason: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn duration_histogram() -> Histogram {
    // 1 s .. ~9 h.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// All metrics of one daemon.
pub struct Metrics {
    registry: Registry,
    syncs_started: Family<RunLabels, Counter>,
    syncs_succeeded: Family<RunLabels, Counter>,
    syncs_failed: Family<RunLabels, Counter>,
    syncs_cancelled: Family<RunLabels, Counter>,
    sync_duration: Family<RunLabels, Histogram, fn() -> Histogram>,
    resources: Family<ResourceLabels, Counter>,
    bytes_downloaded: Family<JobLabels, Counter>,
    http_retries: Family<RetryLabels, Counter>,
    token_refreshes: Family<JobLabels, Counter>,
    ticks_skipped: Family<JobLabels, Counter>,
    last_success: Family<JobLabels, FloatGauge>,
    cursor_age: Family<JobLabels, FloatGauge>,
    consecutive_failures: Family<JobLabels, Gauge>,
    running: Family<JobLabels, Gauge>,
    /// Parsed cursor per job, for the cursor age computed at scrape time.
    cursors: Mutex<Vec<(String, DateTime<Utc>)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fhirsync");
        let m = Self {
            syncs_started: Family::default(),
            syncs_succeeded: Family::default(),
            syncs_failed: Family::default(),
            syncs_cancelled: Family::default(),
            sync_duration: Family::new_with_constructor(duration_histogram),
            resources: Family::default(),
            bytes_downloaded: Family::default(),
            http_retries: Family::default(),
            token_refreshes: Family::default(),
            ticks_skipped: Family::default(),
            last_success: Family::default(),
            cursor_age: Family::default(),
            consecutive_failures: Family::default(),
            running: Family::default(),
            cursors: Mutex::new(Vec::new()),
            registry: Registry::default(),
        };
        registry.register("syncs_started", "Syncs started", m.syncs_started.clone());
        registry.register(
            "syncs_succeeded",
            "Syncs that committed",
            m.syncs_succeeded.clone(),
        );
        registry.register("syncs_failed", "Syncs that failed", m.syncs_failed.clone());
        registry.register(
            "syncs_cancelled",
            "Syncs cancelled by a shutdown",
            m.syncs_cancelled.clone(),
        );
        registry.register_with_unit(
            "sync_duration",
            "Wall time of finished syncs",
            prometheus_client::registry::Unit::Seconds,
            m.sync_duration.clone(),
        );
        registry.register(
            "resources_written",
            "Resources written to the tables, by type and kind (inserted, updated, unchanged, deleted, rejected)",
            m.resources.clone(),
        );
        registry.register_with_unit(
            "downloaded",
            "NDJSON bytes downloaded",
            prometheus_client::registry::Unit::Bytes,
            m.bytes_downloaded.clone(),
        );
        registry.register(
            "http_retries",
            "HTTP requests retried, by reason (429, 5xx, network)",
            m.http_retries.clone(),
        );
        registry.register(
            "token_refreshes",
            "Access tokens obtained",
            m.token_refreshes.clone(),
        );
        registry.register(
            "ticks_skipped",
            "Scheduled runs skipped because the previous sync was still running",
            m.ticks_skipped.clone(),
        );
        registry.register_with_unit(
            "last_success_timestamp",
            "Unix time of the last successful sync",
            prometheus_client::registry::Unit::Seconds,
            m.last_success.clone(),
        );
        registry.register_with_unit(
            "cursor_age",
            "Age of the committed cursor (the export's transactionTime)",
            prometheus_client::registry::Unit::Seconds,
            m.cursor_age.clone(),
        );
        registry.register(
            "consecutive_failures",
            "Failed syncs since the last success",
            m.consecutive_failures.clone(),
        );
        registry.register(
            "sync_running",
            "1 while a sync of the job runs",
            m.running.clone(),
        );
        Self { registry, ..m }
    }

    fn job(name: &str) -> JobLabels {
        JobLabels {
            job: name.to_owned(),
        }
    }

    fn run(name: &str, kind: RunKind) -> RunLabels {
        RunLabels {
            job: name.to_owned(),
            run: kind.as_str().to_owned(),
        }
    }

    /// Creates the job's series at zero, so dashboards and alerts see them before the first sync.
    pub fn register_job(&self, name: &str) {
        for kind in [RunKind::Incremental, RunKind::FullRefresh] {
            let l = Self::run(name, kind);
            let _ = self.syncs_started.get_or_create(&l);
            let _ = self.syncs_succeeded.get_or_create(&l);
            let _ = self.syncs_failed.get_or_create(&l);
        }
        let l = Self::job(name);
        let _ = self.ticks_skipped.get_or_create(&l);
        let _ = self.bytes_downloaded.get_or_create(&l);
        let _ = self.token_refreshes.get_or_create(&l);
        let _ = self.consecutive_failures.get_or_create(&l);
        let _ = self.running.get_or_create(&l);
        for reason in ["429", "5xx", "network"] {
            let _ = self.http_retries.get_or_create(&RetryLabels {
                job: name.to_owned(),
                reason: reason.into(),
            });
        }
    }

    /// Drops a job's series (the job left the configuration).
    pub fn remove_job(&self, name: &str) {
        for kind in [RunKind::Incremental, RunKind::FullRefresh] {
            let l = Self::run(name, kind);
            self.syncs_started.remove(&l);
            self.syncs_succeeded.remove(&l);
            self.syncs_failed.remove(&l);
            self.syncs_cancelled.remove(&l);
            self.sync_duration.remove(&l);
        }
        let l = Self::job(name);
        for f in [
            &self.ticks_skipped,
            &self.bytes_downloaded,
            &self.token_refreshes,
        ] {
            f.remove(&l);
        }
        self.last_success.remove(&l);
        self.cursor_age.remove(&l);
        self.consecutive_failures.remove(&l);
        self.running.remove(&l);
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(j, _)| j != name);
        // Per-type and per-reason series of the job are left to age out with the process.
    }

    pub fn sync_started(&self, name: &str, kind: RunKind) {
        self.syncs_started
            .get_or_create(&Self::run(name, kind))
            .inc();
        self.running.get_or_create(&Self::job(name)).set(1);
    }

    pub fn sync_succeeded(
        &self,
        name: &str,
        kind: RunKind,
        elapsed: Duration,
        report: &SyncReport,
        finished_at: DateTime<Utc>,
    ) {
        let l = Self::run(name, kind);
        self.syncs_succeeded.get_or_create(&l).inc();
        self.sync_duration
            .get_or_create(&l)
            .observe(elapsed.as_secs_f64());
        let j = Self::job(name);
        self.running.get_or_create(&j).set(0);
        self.consecutive_failures.get_or_create(&j).set(0);
        self.bytes_downloaded
            .get_or_create(&j)
            .inc_by(report.bytes_downloaded);
        self.token_refreshes
            .get_or_create(&j)
            .inc_by(report.token_refreshes);
        for (reason, n) in &report.http_retries {
            self.http_retries
                .get_or_create(&RetryLabels {
                    job: name.to_owned(),
                    reason: reason.clone(),
                })
                .inc_by(*n);
        }
        for (resource_type, t) in &report.tables {
            for (kind, n) in [
                ("inserted", t.inserted),
                ("updated", t.updated),
                ("unchanged", t.unchanged),
                ("deleted", t.removed()),
                ("rejected", t.rejected),
            ] {
                self.resources
                    .get_or_create(&ResourceLabels {
                        job: name.to_owned(),
                        resource_type: resource_type.clone(),
                        kind: kind.to_owned(),
                    })
                    .inc_by(n);
            }
        }
        self.seed_last_success(name, finished_at, report.transaction_time.as_deref());
    }

    /// Sets the last-success time and cursor (also from the state file at start-up).
    pub fn seed_last_success(&self, name: &str, at: DateTime<Utc>, cursor: Option<&str>) {
        let j = Self::job(name);
        self.last_success
            .get_or_create(&j)
            .set(at.timestamp_millis() as f64 / 1000.0);
        if let Some(cursor) = cursor.and_then(|c| DateTime::parse_from_rfc3339(c).ok()) {
            let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
            cursors.retain(|(n, _)| n != name);
            cursors.push((name.to_owned(), cursor.with_timezone(&Utc)));
        }
    }

    pub fn sync_failed(&self, name: &str, kind: RunKind, elapsed: Duration) {
        let l = Self::run(name, kind);
        self.syncs_failed.get_or_create(&l).inc();
        self.sync_duration
            .get_or_create(&l)
            .observe(elapsed.as_secs_f64());
        self.running.get_or_create(&Self::job(name)).set(0);
    }

    pub fn sync_cancelled(&self, name: &str, kind: RunKind) {
        self.syncs_cancelled
            .get_or_create(&Self::run(name, kind))
            .inc();
        self.running.get_or_create(&Self::job(name)).set(0);
    }

    pub fn set_consecutive_failures(&self, name: &str, n: u64) {
        self.consecutive_failures
            .get_or_create(&Self::job(name))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn tick_skipped(&self, name: &str) {
        self.ticks_skipped.get_or_create(&Self::job(name)).inc();
    }

    /// The metrics in OpenMetrics text format (cursor ages computed now).
    pub fn encode(&self, now: DateTime<Utc>) -> String {
        for (name, cursor) in self
            .cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let age = (now - *cursor).num_milliseconds() as f64 / 1000.0;
            self.cursor_age
                .get_or_create(&Self::job(name))
                .set(age.max(0.0));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
