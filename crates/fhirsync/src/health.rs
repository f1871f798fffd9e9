//! Health verdicts: of the daemon's jobs (`/health`) and of a state file (`fhirsync health`).
//!
//! A job is healthy when its last successful sync is younger than the staleness limit and its
//! most recent run did not fail. A job that has not succeeded yet counts as `pending` (healthy)
//! for one staleness period after the daemon started, so a first full export is not reported as
//! an outage.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::run::RunKind;
use crate::state::SyncState;

/// What the daemon knows about one job, for its verdict.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobStatus {
    pub name: String,
    /// When the job's loop started (a job that has never succeeded is "pending" for a while).
    pub started_at: Option<DateTime<Utc>>,
    pub running: Option<RunKind>,
    pub running_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last committed `transactionTime`.
    pub last_cursor: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Whether the most recent finished run failed.
    pub last_run_failed: bool,
    pub consecutive_failures: u64,
    pub next_run: Option<DateTime<Utc>>,
    pub next_run_kind: Option<RunKind>,
    pub queued: Option<RunKind>,
}

/// A job's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Synced recently, last run succeeded.
    Ok,
    /// Not synced yet, still within the first staleness period.
    Pending,
    /// The last successful sync is too old (or there never was one).
    Stale,
    /// The most recent run failed.
    Failed,
}

impl Verdict {
    pub(crate) fn is_healthy(self) -> bool {
        matches!(self, Self::Ok | Self::Pending)
    }
}

/// What the state file says, read tolerantly (only `last_sync_time` is guaranteed).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct StateFileView {
    /// `last_success_at`, else `last_sync_time` (the cursor, a server time) as the best estimate.
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_run_failed: bool,
}

impl StateFileView {
    pub(crate) fn from_state(state: &SyncState) -> Self {
        let cursor = state
            .last_sync_time
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
            .map(|t| t.with_timezone(&Utc));
        let last_success_at = state.last_success_at.or(cursor);
        let last_run_failed = match (state.last_error_at, last_success_at) {
            (Some(err), Some(ok)) => err > ok,
            (Some(_), None) => true,
            (None, _) => false,
        };
        Self {
            last_success_at,
            last_run_failed,
        }
    }
}

/// One job in the `/health` body.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct JobHealth {
    pub status: Verdict,
    pub healthy: bool,
    /// Why the job is not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last committed cursor (`transactionTime`).
    pub last_sync_time: Option<String>,
    pub age_seconds: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_kind: Option<RunKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_since: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_kind: Option<RunKind>,
    pub consecutive_failures: u64,
}

/// The `/health` body.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct HealthReport {
    /// `ok` or `unhealthy`.
    pub status: &'static str,
    pub healthy: bool,
    pub checked_at: DateTime<Utc>,
    pub stale_after_seconds: u64,
    pub jobs: BTreeMap<String, JobHealth>,
}

fn verdict(
    last_success_at: Option<DateTime<Utc>>,
    last_run_failed: bool,
    started_at: Option<DateTime<Utc>>,
    stale_after: Duration,
    now: DateTime<Utc>,
) -> (Verdict, Option<String>, Option<i64>) {
    let limit = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
    let age = last_success_at.map(|t| now - t);
    let age_seconds = age.map(|a| a.num_seconds());
    if last_run_failed {
        return (
            Verdict::Failed,
            Some("the most recent sync failed".into()),
            age_seconds,
        );
    }
    match age {
        Some(a) if a <= limit => (Verdict::Ok, None, age_seconds),
        Some(a) => (
            Verdict::Stale,
            Some(format!(
                "last successful sync {} ago, limit {}",
                humantime::format_duration(Duration::from_secs(a.num_seconds().max(0) as u64)),
                humantime::format_duration(stale_after)
            )),
            age_seconds,
        ),
        None => match started_at {
            Some(s) if now - s <= limit => (
                Verdict::Pending,
                Some("no successful sync yet".into()),
                None,
            ),
            _ => (Verdict::Stale, Some("no successful sync yet".into()), None),
        },
    }
}

/// The verdict for one job of the daemon.
pub(crate) fn evaluate_job(s: &JobStatus, stale_after: Duration, now: DateTime<Utc>) -> JobHealth {
    let (status, reason, age_seconds) = verdict(
        s.last_success_at,
        s.last_run_failed,
        s.started_at,
        stale_after,
        now,
    );
    JobHealth {
        status,
        healthy: status.is_healthy(),
        reason,
        last_success_at: s.last_success_at,
        last_sync_time: s.last_cursor.clone(),
        age_seconds,
        last_error: s.last_error.clone(),
        last_error_at: s.last_error_at,
        running: s.running.is_some(),
        running_kind: s.running,
        running_since: s.running_since,
        next_run: s.next_run,
        next_run_kind: s.next_run_kind,
        consecutive_failures: s.consecutive_failures,
    }
}

/// The verdict over all jobs: healthy when every job is.
pub(crate) fn evaluate(
    jobs: &[JobStatus],
    stale_after: Duration,
    now: DateTime<Utc>,
) -> HealthReport {
    let jobs: BTreeMap<String, JobHealth> = jobs
        .iter()
        .map(|j| (j.name.clone(), evaluate_job(j, stale_after, now)))
        .collect();
    let healthy = jobs.values().all(|j| j.healthy);
    HealthReport {
        status: if healthy { "ok" } else { "unhealthy" },
        healthy,
        checked_at: now,
        stale_after_seconds: stale_after.as_secs(),
        jobs,
    }
}

/// The verdict of `fhirsync health`, printed as one JSON line.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StateFileHealth {
    pub status: Verdict,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub state_file: PathBuf,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_sync_time: Option<String>,
    pub age_seconds: Option<i64>,
    pub max_age_seconds: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub checked_at: DateTime<Utc>,
}

/// Judges a state file; an unreadable or missing file is unhealthy, with the reason.
pub fn check_state_file(path: &Path, max_age: Duration, now: DateTime<Utc>) -> StateFileHealth {
    let mut report = StateFileHealth {
        status: Verdict::Stale,
        healthy: false,
        reason: None,
        state_file: path.to_owned(),
        last_success_at: None,
        last_sync_time: None,
        age_seconds: None,
        max_age_seconds: max_age.as_secs(),
        last_error: None,
        last_error_at: None,
        checked_at: now,
    };
    if !path.exists() {
        report.reason = Some("the state file does not exist (no sync has completed)".into());
        return report;
    }
    let state = match SyncState::load(path) {
        Ok(s) => s,
        Err(e) => {
            report.reason = Some(e.to_string());
            return report;
        }
    };
    let view = StateFileView::from_state(&state);
    let (status, reason, age) = verdict(
        view.last_success_at,
        view.last_run_failed,
        None,
        max_age,
        now,
    );
    report.status = status;
    report.healthy = status.is_healthy();
    report.reason = reason.or_else(|| match (&state.last_sync_time, view.last_success_at) {
        (Some(t), None) => Some(format!("last_sync_time {t:?} is not an instant")),
        _ => None,
    });
    if report.reason.is_some() && status == Verdict::Ok {
        report.reason = None;
    }
    report.last_success_at = view.last_success_at;
    report.last_sync_time = state.last_sync_time;
    report.age_seconds = age;
    report.last_error = state.last_error;
    report.last_error_at = state.last_error_at;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const TWO_HOURS: Duration = Duration::from_secs(7200);

    #[test]
    fn verdicts() {
        let now = t("2024-05-01T12:00:00Z");
        let ok = verdict(Some(t("2024-05-01T11:00:00Z")), false, None, TWO_HOURS, now);
        assert_eq!(ok.0, Verdict::Ok);
        assert_eq!(ok.2, Some(3600));
        let stale = verdict(Some(t("2024-05-01T09:59:59Z")), false, None, TWO_HOURS, now);
        assert_eq!(stale.0, Verdict::Stale);
        assert!(stale.1.unwrap().contains("2h"));
        let failed = verdict(Some(t("2024-05-01T11:59:00Z")), true, None, TWO_HOURS, now);
        assert_eq!(failed.0, Verdict::Failed);
        let pending = verdict(None, false, Some(t("2024-05-01T11:00:00Z")), TWO_HOURS, now);
        assert_eq!(pending.0, Verdict::Pending);
        assert!(pending.0.is_healthy());
        let never = verdict(None, false, Some(t("2024-05-01T09:00:00Z")), TWO_HOURS, now);
        assert_eq!(never.0, Verdict::Stale);
        assert_eq!(verdict(None, false, None, TWO_HOURS, now).0, Verdict::Stale);
    }

    #[test]
    fn state_file_view_uses_the_cursor_when_nothing_else_is_there() {
        let s = SyncState {
            last_sync_time: Some("2024-05-01T10:00:00.123+02:00".into()),
            ..Default::default()
        };
        let v = StateFileView::from_state(&s);
        assert_eq!(v.last_success_at, Some(t("2024-05-01T08:00:00.123Z")));
        assert!(!v.last_run_failed);
    }

    #[test]
    fn an_error_after_the_last_success_means_failed() {
        let s = SyncState {
            last_sync_time: Some("2024-05-01T10:00:00Z".into()),
            last_success_at: Some(t("2024-05-01T10:05:00Z")),
            last_error: Some("server said 500".into()),
            last_error_at: Some(t("2024-05-01T11:00:00Z")),
            ..Default::default()
        };
        assert!(StateFileView::from_state(&s).last_run_failed);
        let older_error = SyncState {
            last_error_at: Some(t("2024-05-01T09:00:00Z")),
            ..s
        };
        assert!(!StateFileView::from_state(&older_error).last_run_failed);
    }
}
