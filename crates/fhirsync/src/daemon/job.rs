//! One job's loop: runs its syncs when its schedules say, never two at once (a tick during a
//! run is skipped or queued), and records every run's outcome for `/health` and `/metrics`.
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::redact::redact;
use super::status::DaemonState;
use crate::config::JobConfig;
use crate::health::StateFileView;
use crate::run::{RunKind, SyncReport};
use crate::schedule::OverlapPolicy;
use crate::state::SyncState;

/// Runs one sync of a job. The future must return soon after `cancel` fires.
pub trait SyncRunner: Send + Sync + 'static {
    fn run(
        &self,
        job: &JobConfig,
        kind: RunKind,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<SyncReport>>;
}

/// Longest single sleep: the wall clock is re-checked at least this often, so a suspended host or
/// a clock step does not delay a run by more than this.
const MAX_SLEEP: Duration = Duration::from_secs(30);

struct Running {
    kind: RunKind,
    cancel: CancellationToken,
    started: tokio::time::Instant,
    handle: JoinHandle<anyhow::Result<SyncReport>>,
}

/// The job's loop, until `stop` fires. A running sync is then finished (a reload), or
/// cancelled when `abort` fires (a shutdown) and waited for up to `grace`.
pub(super) async fn job_loop(
    job: JobConfig,
    runner: Arc<dyn SyncRunner>,
    state: Arc<DaemonState>,
    stop: CancellationToken,
    abort: CancellationToken,
    grace: Duration,
) {
    let name = job.name.clone();
    let metrics = &state.metrics;
    metrics.register_job(&name);
    load_initial_status(&job, &state);
    state.update(&name, |s| s.started_at = Some(state.now()));

    let mut running: Option<Running> = None;
    let mut queued: Option<RunKind> = None;
    let mut next = job.schedule.next_run(state.now());
    let mut fire_at = next.map(|(at, _)| at + jitter(&job));

    if job.schedule.run_on_start {
        running = Some(start_run(
            &job,
            &runner,
            &state,
            RunKind::Incremental,
            &abort,
        ));
    }

    loop {
        state.update(&name, |s| {
            s.next_run = next.map(|(at, _)| at);
            s.next_run_kind = next.map(|(_, k)| k);
            s.queued = queued;
        });
        let sleep_for = fire_at
            .map(|at| {
                (at - state.now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_SLEEP)
            })
            .unwrap_or(MAX_SLEEP);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(sleep_for) => {
                let (Some((at, kind)), Some(fire)) = (next, fire_at) else { continue };
                let now = state.now();
                if now < fire {
                    continue;
                }
                // Missed ticks (host suspended) collapse into this one.
                next = job.schedule.next_run(now.max(at));
                fire_at = next.map(|(at, _)| at + jitter(&job));
                if running.is_none() {
                    running = Some(start_run(&job, &runner, &state, kind, &abort));
                    continue;
                }
                // A full refresh is rare and scheduled on purpose: never drop it.
                let policy = if kind == RunKind::FullRefresh { OverlapPolicy::Queue } else { job.schedule.on_overlap };
                match policy {
                    OverlapPolicy::Skip => {
                        metrics.tick_skipped(&name);
                        warn!(job = %name, run = %kind, "previous sync still running; tick skipped");
                    }
                    OverlapPolicy::Queue => {
                        if queued.is_some() {
                            metrics.tick_skipped(&name);
                        }
                        let merged = queued.map_or(kind, |q| q.max(kind));
                        info!(job = %name, run = %merged, "previous sync still running; run queued");
                        queued = Some(merged);
                    }
                }
            }
            result = async { (&mut running.as_mut().expect("guarded by the select condition").handle).await }, if running.is_some() => {
                if let Some(r) = running.take() {
                    finish_run(&job, &state, r.kind, r.started, &r.cancel, result);
                }
                if let Some(kind) = queued.take() {
                    running = Some(start_run(&job, &runner, &state, kind, &abort));
                }
            }
        }
    }

    state.update(&name, |s| {
        s.next_run = None;
        s.next_run_kind = None;
        s.queued = None;
    });
    let Some(mut r) = running else { return };
    // On reload the sync finishes as it would have; a shutdown (now or while waiting) cancels it.
    let finished = if abort.is_cancelled() {
        None
    } else {
        tokio::select! {
            result = &mut r.handle => Some(result),
            _ = abort.cancelled() => None,
        }
    };
    let finished = match finished {
        Some(result) => Some(result),
        None => {
            info!(job = %name, grace = ?grace, "waiting for the cancelled sync to return");
            tokio::time::timeout(grace, &mut r.handle).await.ok()
        }
    };
    match finished {
        Some(result) => finish_run(&job, &state, r.kind, r.started, &r.cancel, result),
        None => {
            warn!(job = %name, "sync did not return within the grace period; abandoning it");
            r.handle.abort();
        }
    }
}

fn jitter(job: &JobConfig) -> chrono::Duration {
    chrono::Duration::from_std(job.schedule.jitter_delay()).unwrap_or_default()
}

fn start_run(
    job: &JobConfig,
    runner: &Arc<dyn SyncRunner>,
    state: &DaemonState,
    kind: RunKind,
    abort: &CancellationToken,
) -> Running {
    let cancel = abort.child_token();
    info!(job = %job.name, run = %kind, "sync started");
    state.metrics.sync_started(&job.name, kind);
    let now = state.now();
    state.update(&job.name, |s| {
        s.running = Some(kind);
        s.running_since = Some(now);
    });
    let fut = runner.run(job, kind, cancel.clone());
    Running {
        kind,
        cancel,
        started: tokio::time::Instant::now(),
        handle: tokio::spawn(fut),
    }
}

fn finish_run(
    job: &JobConfig,
    state: &DaemonState,
    kind: RunKind,
    started: tokio::time::Instant,
    cancel: &CancellationToken,
    result: Result<anyhow::Result<SyncReport>, tokio::task::JoinError>,
) {
    let name = &job.name;
    let elapsed = started.elapsed();
    let result = match result {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(anyhow::anyhow!("the sync panicked")),
        Err(_) => Err(anyhow::anyhow!("the sync was aborted")),
    };
    let now = state.now();
    match result {
        Ok(report) => {
            info!(
                job = %name, run = %kind, duration = ?elapsed,
                cursor = report.transaction_time.as_deref().unwrap_or(""),
                bytes = report.bytes_downloaded, "sync succeeded"
            );
            state
                .metrics
                .sync_succeeded(name, kind, elapsed, &report, now);
            state.update(name, |s| {
                s.running = None;
                s.running_since = None;
                s.last_success_at = Some(now);
                if report.transaction_time.is_some() {
                    s.last_cursor = report.transaction_time.clone();
                }
                s.last_run_failed = false;
                s.consecutive_failures = 0;
            });
        }
        Err(_) if cancel.is_cancelled() => {
            info!(job = %name, run = %kind, "sync cancelled");
            state.metrics.sync_cancelled(name, kind);
            state.update(name, |s| {
                s.running = None;
                s.running_since = None;
            });
        }
        Err(e) => {
            let message = redact(&crate::error_line::error_line(&e), job);
            state.metrics.sync_failed(name, kind, elapsed);
            state.update(name, |s| {
                s.running = None;
                s.running_since = None;
                s.last_error = Some(message.clone());
                s.last_error_at = Some(now);
                s.last_run_failed = true;
                s.consecutive_failures += 1;
                state
                    .metrics
                    .set_consecutive_failures(name, s.consecutive_failures);
                error!(
                    job = %name, run = %kind, consecutive_failures = s.consecutive_failures,
                    error = %message, "sync failed; retrying at the next tick"
                );
            });
        }
    }
}

/// Seeds a job's status from its state file, so `/health` is right before the first sync ends.
fn load_initial_status(job: &JobConfig, state: &DaemonState) {
    let Some(path) = job.sync.state_file_path() else {
        return;
    };
    match SyncState::load(&path) {
        Ok(saved) => {
            let seed = StateFileView::from_state(&saved);
            state.update(&job.name, |s| {
                if s.last_success_at.is_none() {
                    s.last_success_at = seed.last_success_at;
                    s.last_cursor = saved.last_sync_time.clone();
                    s.last_error = saved.last_error.as_deref().map(|m| redact(m, job));
                    s.last_error_at = saved.last_error_at;
                    s.last_run_failed = seed.last_run_failed;
                }
            });
            if let Some(at) = seed.last_success_at {
                state
                    .metrics
                    .seed_last_success(&job.name, at, saved.last_sync_time.as_deref());
            }
        }
        Err(e) => {
            warn!(job = %job.name, error = %e, "cannot read the state file; health starts empty")
        }
    }
}
