//! Signals and reloads: SIGTERM/SIGINT shut the daemon down, SIGHUP hands it a new configuration.
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{ConfigError, DaemonConfig};

/// Sends a new configuration to a running daemon (SIGHUP).
#[derive(Clone)]
pub struct Reloader(mpsc::UnboundedSender<DaemonConfig>);

impl Reloader {
    pub(super) fn new(tx: mpsc::UnboundedSender<DaemonConfig>) -> Self {
        Self(tx)
    }

    /// Returns false when the daemon has stopped.
    pub fn reload(&self, config: DaemonConfig) -> bool {
        self.0.send(config).is_ok()
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
    F: Fn() -> Result<DaemonConfig, ConfigError> + Send + 'static,
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
