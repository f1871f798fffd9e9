//! Logging set-up: human-readable output (and progress bars) on a terminal, JSON lines otherwise.
use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `human` when stderr is a terminal, `json` otherwise.
    #[default]
    Auto,
    Human,
    Json,
}

/// What was chosen: commands draw progress bars only in `Human` mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    Human,
    Json,
}

impl LogMode {
    pub fn resolve(format: LogFormat) -> Self {
        match format {
            LogFormat::Human => LogMode::Human,
            LogFormat::Json => LogMode::Json,
            LogFormat::Auto if std::io::stderr().is_terminal() => LogMode::Human,
            LogFormat::Auto => LogMode::Json,
        }
    }
}

/// fhirsync's own crates at `info`, the libraries underneath (delta-rs, DataFusion, HTTP) at `warn`.
/// Opening a table that does not exist yet, and binary columns without statistics, are normal
/// here but logged loudly by the Delta kernel.
pub const DEFAULT_FILTER: &str = "warn,fhirsync=info,fhir_bulk=info,smart_auth=info,delta_sink=info,\
     fhir_encoder=info,bulk_test_server=info,buoyant_kernel::snapshot::builder=off,\
     deltalake_core::writer::stats=error";

/// Under progress bars on a terminal: warnings and errors only, so the bars stay in sight (the
/// bars say what the info lines would; `--log-level debug` brings every line back).
pub const BARS_FILTER: &str = "warn,buoyant_kernel::snapshot::builder=off,\
     deltalake_core::writer::stats=error";

/// Installs the global subscriber; logs go to stderr so stdout stays free for command output.
/// `filter` is the user's (`None`: [`DEFAULT_FILTER`], or [`BARS_FILTER`] for a command that
/// draws progress bars on a terminal).
pub fn init(format: LogFormat, filter: Option<&str>, bars: bool) -> anyhow::Result<LogMode> {
    let mode = LogMode::resolve(format);
    let filter = filter.unwrap_or(if bars && mode == LogMode::Human {
        BARS_FILTER
    } else {
        DEFAULT_FILTER
    });
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter {filter:?}: {e}"))?;
    let registry = tracing_subscriber::registry().with(filter);
    match mode {
        LogMode::Human => registry
            .with(
                fmt::layer()
                    .with_writer(crate::progress::LogWriter)
                    .with_target(false)
                    .compact(),
            )
            .try_init(),
        LogMode::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(mode)
}
