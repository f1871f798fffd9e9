//! `fhirsync daemon`: runs syncs on cron schedules and serves `/health` and `/metrics`.
use std::sync::Arc;

use anyhow::Context;
use fhirsync::config::{DaemonArgs, JobConfig, ProcessEnv};
use fhirsync::daemon::{Daemon, SyncRunner, handle_signals};
use fhirsync::logging::LogMode;
use fhirsync::run::{RunKind, SyncReport};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

pub async fn run(args: Args, mode: LogMode) -> anyhow::Result<()> {
    run_with(args, Arc::new(SyncLayer { mode })).await
}

/// Runs each scheduled sync exactly as `fhirsync sync` would.
struct SyncLayer {
    mode: LogMode,
}

impl SyncRunner for SyncLayer {
    fn run(
        &self,
        job: &JobConfig,
        kind: RunKind,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<SyncReport>> {
        let opts = job.sync.clone();
        let mode = self.mode;
        let runtime = tokio::runtime::Handle::current();
        async move {
            // The sync's future is not `Send`, so it cannot be spawned as a task: drive it on a
            // blocking thread of the same runtime (its own tasks still run on the workers).
            let report = tokio::task::spawn_blocking(move || {
                runtime.block_on(async move {
                    let client = fhirsync::sync::client_config(&opts, mode).await?;
                    fhirsync::sync::run_sync(&opts, kind, client, cancel).await
                })
            })
            .await
            .context("the sync thread ended abnormally")??;
            Ok(report)
        }
        .boxed()
    }
}

/// Runs the daemon with the given sync implementation until SIGTERM or SIGINT.
pub async fn run_with(args: Args, runner: Arc<dyn SyncRunner>) -> anyhow::Result<()> {
    let config = args
        .daemon
        .resolve(&ProcessEnv)
        .context("invalid daemon configuration")?;
    for job in &config.jobs {
        tracing::info!(
            job = %job.name,
            fhir_endpoint = %job.sync.fhir_endpoint,
            delta_path = %job.sync.delta_path,
            schedule = job.schedule.incremental.as_ref().map(|s| s.as_str()).unwrap_or(""),
            full_refresh_schedule = job.schedule.full_refresh.as_ref().map(|s| s.as_str()).unwrap_or(""),
            timezone = %job.schedule.timezone,
            "job configured"
        );
    }
    let listen = config.listen;
    let daemon = Daemon::new(config, runner);
    let listener = daemon
        .bind()
        .await
        .with_context(|| format!("cannot listen on {listen} for /health and /metrics"))?;
    let shutdown = CancellationToken::new();
    let reload_args = args.daemon.clone();
    handle_signals(shutdown.clone(), daemon.reloader(), move || {
        reload_args.resolve(&ProcessEnv)
    })
    .context("cannot install signal handlers")?;
    daemon.run(listener, shutdown).await?;
    Ok(())
}
