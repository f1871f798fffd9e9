//! The daemon: runs each configured job on its schedules, never two syncs of one job at once,
//! and serves `/health` and `/metrics`.
//!
//! The daemon does not know how a sync is done: it calls a [`SyncRunner`]. Shutdown cancels a
//! running sync through its [`CancellationToken`] (syncs are crash-safe: the cursor is committed
//! with the data) and waits a bounded grace period for it to return.
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{AuthOptions, DaemonConfig, JobConfig, SecretSource};
use crate::metrics::Metrics;
use crate::schedule::OverlapPolicy;

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

/// Rows written to one resource type's table by one sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TypeCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub rejected: u64,
}

/// What a successful sync reports back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncOutcome {
    /// The export's `transactionTime`: the cursor the next incremental sync starts from.
    pub transaction_time: Option<String>,
    pub per_type: BTreeMap<String, TypeCounts>,
    pub bytes_downloaded: u64,
    pub duration: Duration,
    /// HTTP retries by reason: `429`, `5xx`, `network`.
    pub http_retries: BTreeMap<String, u64>,
    pub token_refreshes: u64,
}

/// Runs one sync of a job. The future must return soon after `cancel` fires.
pub trait SyncRunner: Send + Sync + 'static {
    fn run(
        &self,
        job: &JobConfig,
        kind: RunKind,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<SyncOutcome>>;
}

/// What `/health` knows about one job.
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

/// State shared by the job loops and the HTTP server.
pub struct DaemonState {
    jobs: Mutex<BTreeMap<String, JobStatus>>,
    stale_after: Mutex<Duration>,
    pub metrics: Metrics,
}

impl DaemonState {
    pub fn new(stale_after: Duration) -> Self {
        Self {
            jobs: Mutex::new(BTreeMap::new()),
            stale_after: Mutex::new(stale_after),
            metrics: Metrics::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, JobStatus>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of every job's status.
    pub fn snapshot(&self) -> Vec<JobStatus> {
        self.lock().values().cloned().collect()
    }

    pub fn job(&self, name: &str) -> Option<JobStatus> {
        self.lock().get(name).cloned()
    }

    pub fn stale_after(&self) -> Duration {
        *self.stale_after.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_stale_after(&self, d: Duration) {
        *self.stale_after.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut JobStatus)) {
        let mut jobs = self.lock();
        let status = jobs.entry(name.to_owned()).or_insert_with(|| JobStatus {
            name: name.to_owned(),
            ..Default::default()
        });
        f(status);
    }

    fn remove(&self, name: &str) {
        self.lock().remove(name);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the health server failed: {0}")]
    Server(#[source] std::io::Error),
}

/// Sends a new configuration to a running daemon (SIGHUP).
#[derive(Clone)]
pub struct Reloader(mpsc::UnboundedSender<DaemonConfig>);

impl Reloader {
    /// Returns false when the daemon has stopped.
    pub fn reload(&self, config: DaemonConfig) -> bool {
        self.0.send(config).is_ok()
    }
}

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
        let state = Arc::new(DaemonState::new(config.stale_after));
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
        Reloader(self.reload_tx.clone())
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
        let server = tokio::spawn(crate::health::serve(
            listener,
            state.clone(),
            server_stop.clone(),
        ));
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

/// Installs the daemon's signal handling: SIGTERM/SIGINT start a graceful shutdown (a second one
/// exits at once), SIGHUP re-reads the configuration with `reload` and applies it (a bad file is
/// logged and the running configuration kept).
pub fn handle_signals<F>(
    shutdown: CancellationToken,
    reloader: Reloader,
    reload: F,
) -> std::io::Result<JoinHandle<()>>
where
    F: Fn() -> Result<DaemonConfig, crate::config::ConfigError> + Send + 'static,
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                Some(()) = hup.recv() => {
                    info!("SIGHUP: reloading the configuration");
                    match reload() {
                        Ok(config) => {
                            if !reloader.reload(config) {
                                return;
                            }
                        }
                        Err(e) => error!(error = %e, "configuration not reloaded; keeping the running one"),
                    }
                    continue;
                }
                else => return,
            };
            if shutdown.is_cancelled() {
                warn!(
                    signal = name,
                    "second shutdown signal: exiting without waiting for running syncs"
                );
                std::process::exit(130);
            }
            info!(signal = name, "shutdown requested");
            shutdown.cancel();
        }
    }))
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
        let running = match old_jobs.remove(&job.name) {
            Some(old) if old.config == *job => old,
            Some(old) => {
                info!(job = %job.name, "configuration changed; the job restarts after its current sync");
                old.stop.cancel();
                spawn_job(
                    job.clone(),
                    runner.clone(),
                    state.clone(),
                    shutdown,
                    new.grace_period,
                    Some(old.handle),
                )
            }
            None => {
                info!(job = %job.name, "new job");
                spawn_job(
                    job.clone(),
                    runner.clone(),
                    state.clone(),
                    shutdown,
                    new.grace_period,
                    None,
                )
            }
        };
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
        job_loop(job, runner, state, loop_stop, abort, grace).await;
    });
    RunningJob {
        config,
        stop,
        handle,
    }
}

struct Running {
    kind: RunKind,
    cancel: CancellationToken,
    started: tokio::time::Instant,
    handle: JoinHandle<anyhow::Result<SyncOutcome>>,
}

/// Longest single sleep: the wall clock is re-checked at least this often, so a suspended host or
/// a clock step does not delay a run by more than this.
const MAX_SLEEP: Duration = Duration::from_secs(30);

async fn job_loop(
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
    state.update(&name, |s| s.started_at = Some(Utc::now()));

    let mut running: Option<Running> = None;
    let mut queued: Option<RunKind> = None;
    let mut next = job.schedule.next_run(Utc::now());
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
                (at - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_SLEEP)
            })
            .unwrap_or(MAX_SLEEP);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(sleep_for) => {
                let (Some((at, kind)), Some(fire)) = (next, fire_at) else { continue };
                let now = Utc::now();
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
    state.update(&job.name, |s| {
        s.running = Some(kind);
        s.running_since = Some(Utc::now());
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
    result: Result<anyhow::Result<SyncOutcome>, tokio::task::JoinError>,
) {
    let name = &job.name;
    let elapsed = started.elapsed();
    let result = match result {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(anyhow::anyhow!("the sync panicked")),
        Err(_) => Err(anyhow::anyhow!("the sync was aborted")),
    };
    match result {
        Ok(outcome) => {
            let now = Utc::now();
            info!(
                job = %name, run = %kind, duration = ?elapsed,
                cursor = outcome.transaction_time.as_deref().unwrap_or(""),
                bytes = outcome.bytes_downloaded, "sync succeeded"
            );
            state
                .metrics
                .sync_succeeded(name, kind, elapsed, &outcome, now);
            state.update(name, |s| {
                s.running = None;
                s.running_since = None;
                s.last_success_at = Some(now);
                if outcome.transaction_time.is_some() {
                    s.last_cursor = outcome.transaction_time.clone();
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
            let message = redact(&format!("{e:#}"), job);
            state.metrics.sync_failed(name, kind, elapsed);
            state.update(name, |s| {
                s.running = None;
                s.running_since = None;
                s.last_error = Some(message.clone());
                s.last_error_at = Some(Utc::now());
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
    match crate::state::SyncState::load(&path) {
        Ok(saved) => {
            let seed = crate::health::StateFileView::from_state(&saved);
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

/// Removes secret values this job knows of from a message (a defence in depth: errors from
/// libraries should not carry secrets in the first place).
pub fn redact(message: &str, job: &JobConfig) -> String {
    let mut secrets = secret_values(&job.sync.auth);
    for (k, v) in &job.sync.storage_options {
        let k = k.to_ascii_uppercase();
        if ["SECRET", "TOKEN", "PASSWORD", "KEY"]
            .iter()
            .any(|w| k.contains(w))
            && !k.ends_with("KEY_ID")
        {
            secrets.push(v.clone());
        }
    }
    let mut out = message.to_owned();
    for s in secrets {
        // Very short values would redact ordinary words.
        if s.len() >= 6 {
            out = out.replace(&s, "<redacted>");
        }
    }
    out
}

fn secret_values(auth: &AuthOptions) -> Vec<String> {
    let mut v = Vec::new();
    for source in [&auth.private_key, &auth.client_secret]
        .into_iter()
        .flatten()
    {
        match source {
            SecretSource::Inline(s) => v.push(s.expose().to_owned()),
            SecretSource::Env(name) => v.extend(std::env::var(name).ok()),
            SecretSource::File(_) | SecretSource::Command(_) => {}
        }
    }
    // A key's individual lines can show up in parser errors too.
    let lines: Vec<String> = v
        .iter()
        .flat_map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
        })
        .map(str::to_owned)
        .collect();
    v.extend(lines);
    v
}
