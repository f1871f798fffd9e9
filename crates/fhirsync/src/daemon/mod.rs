//! The daemon: runs each configured job on its schedules, never two syncs of one job at once,
//! and serves `/health` and `/metrics`.
//!
//! The daemon does not know how a sync is done: it calls a [`SyncRunner`]. Shutdown cancels a
//! running sync through its [`CancellationToken`] (syncs are crash-safe: the cursor is committed
//! with the data) and waits a bounded grace period for it to return. Its time comes from a
//! [`Clock`].
mod clock;
mod job;
mod redact;
mod server;
mod signals;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use clock::Clock;
use clock::SystemClock;
pub use job::SyncRunner;
pub use signals::{Reloader, handle_signals};
pub use status::DaemonState;

use crate::config::{DaemonConfig, JobConfig};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the health server failed: {0}")]
    Server(#[source] std::io::Error),
}

/// A job's loop, as the daemon holds it.
struct RunningJob {
    config: JobConfig,
    /// Stops scheduling; a running sync is finished, not cancelled (used by reload).
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// The daemon. Build with [`Daemon::new`], then [`Daemon::run`].
pub struct Daemon {
    config: DaemonConfig,
    runner: Arc<dyn SyncRunner>,
    state: Arc<DaemonState>,
    reload_tx: mpsc::UnboundedSender<DaemonConfig>,
    reload_rx: mpsc::UnboundedReceiver<DaemonConfig>,
}

impl Daemon {
    pub fn new(config: DaemonConfig, runner: Arc<dyn SyncRunner>) -> Self {
        Self::with_clock(config, runner, Arc::new(SystemClock))
    }

    /// A daemon whose schedules, health and metrics go by `clock`.
    pub fn with_clock(
        config: DaemonConfig,
        runner: Arc<dyn SyncRunner>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let state = Arc::new(DaemonState::new(config.stale_after, clock));
        let (reload_tx, reload_rx) = mpsc::unbounded_channel();
        Self {
            config,
            runner,
            state,
            reload_tx,
            reload_rx,
        }
    }

    /// The state `/health` and `/metrics` are served from.
    pub fn state(&self) -> Arc<DaemonState> {
        self.state.clone()
    }

    pub fn reloader(&self) -> Reloader {
        Reloader::new(self.reload_tx.clone())
    }

    /// Binds the configured listen address.
    pub async fn bind(&self) -> std::io::Result<TcpListener> {
        TcpListener::bind(self.config.listen).await
    }

    /// Runs until `shutdown` fires: then cancels running syncs, waits up to the grace period for
    /// them, and returns.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), DaemonError> {
        let Daemon {
            mut config,
            runner,
            state,
            reload_tx,
            mut reload_rx,
        } = self;
        drop(reload_tx);
        let server_stop = CancellationToken::new();
        let addr = listener.local_addr().ok();
        let server = tokio::spawn(server::serve(listener, state.clone(), server_stop.clone()));
        info!(listen = ?addr, jobs = config.jobs.len(), "fhirsync daemon started");

        let mut jobs: BTreeMap<String, RunningJob> = BTreeMap::new();
        let mut draining: Vec<JoinHandle<()>> = Vec::new();
        for job in &config.jobs {
            let running = spawn_job(
                job.clone(),
                runner.clone(),
                state.clone(),
                &shutdown,
                config.grace_period,
                None,
            );
            jobs.insert(job.name.clone(), running);
        }

        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(new) = reload_rx.recv() => {
                    apply_reload(&mut config, new, &mut jobs, &mut draining, &runner, &state, &shutdown);
                }
            }
        }

        info!("shutting down: cancelling running syncs");
        for (_, job) in jobs {
            // Each loop bounds its own wait by the grace period.
            if let Err(e) = job.handle.await {
                error!(job = %job.config.name, error = %e, "job loop ended abnormally");
            }
        }
        for handle in draining {
            let _ = handle.await;
        }
        server_stop.cancel();
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(DaemonError::Server(e)),
            Err(e) => error!(error = %e, "health server task ended abnormally"),
        }
        info!("fhirsync daemon stopped");
        Ok(())
    }
}

/// Applies a new configuration without blocking: a changed job's new loop starts once the old
/// loop (and its running sync) has finished; a removed job is dropped from `/health` then.
fn apply_reload(
    config: &mut DaemonConfig,
    new: DaemonConfig,
    jobs: &mut BTreeMap<String, RunningJob>,
    draining: &mut Vec<JoinHandle<()>>,
    runner: &Arc<dyn SyncRunner>,
    state: &Arc<DaemonState>,
    shutdown: &CancellationToken,
) {
    if new.listen != config.listen {
        warn!(
            listen = %config.listen, requested = %new.listen,
            "changing the listen address needs a restart; keeping the old one"
        );
    }
    state.set_stale_after(new.stale_after);
    let mut old_jobs = std::mem::take(jobs);
    for job in &new.jobs {
        let after = match old_jobs.remove(&job.name) {
            Some(old) if old.config == *job => {
                jobs.insert(job.name.clone(), old);
                continue;
            }
            Some(old) => {
                info!(job = %job.name, "configuration changed; the job restarts after its current sync");
                old.stop.cancel();
                Some(old.handle)
            }
            None => {
                info!(job = %job.name, "new job");
                None
            }
        };
        let running = spawn_job(
            job.clone(),
            runner.clone(),
            state.clone(),
            shutdown,
            new.grace_period,
            after,
        );
        jobs.insert(job.name.clone(), running);
    }
    for (name, old) in old_jobs {
        info!(job = %name, "job removed from the configuration; it stops after its current sync");
        old.stop.cancel();
        let state = state.clone();
        draining.push(tokio::spawn(async move {
            let _ = old.handle.await;
            state.remove(&name);
            state.metrics.remove_job(&name);
        }));
    }
    config.jobs = new.jobs;
    config.stale_after = new.stale_after;
    config.grace_period = new.grace_period;
    config.config_file = new.config_file;
    info!(jobs = jobs.len(), "configuration reloaded");
}

/// Starts a job's loop, after `after` (the loop it replaces) has ended.
fn spawn_job(
    job: JobConfig,
    runner: Arc<dyn SyncRunner>,
    state: Arc<DaemonState>,
    shutdown: &CancellationToken,
    grace: Duration,
    after: Option<JoinHandle<()>>,
) -> RunningJob {
    let stop = shutdown.child_token();
    let abort = shutdown.clone();
    let loop_stop = stop.clone();
    let config = job.clone();
    let handle = tokio::spawn(async move {
        if let Some(previous) = after {
            let _ = previous.await;
        }
        // Replaced again (or shut down) while waiting.
        if loop_stop.is_cancelled() {
            return;
        }
        job::job_loop(job, runner, state, loop_stop, abort, grace).await;
    });
    RunningJob {
        config,
        stop,
        handle,
    }
}
