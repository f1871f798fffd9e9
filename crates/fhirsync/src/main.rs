use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fhirsync::logging::{self, LogFormat};

mod cmd;

/// Keeps Delta Lake tables in sync with FHIR servers via Bulk Data export.
#[derive(Parser)]
#[command(name = "fhirsync", version, about, propagate_version = true)]
struct Cli {
    /// Log format: `human` (with progress bars) on a terminal, `json` otherwise.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto, env = "FHIRSYNC_LOG_FORMAT")]
    log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `debug` or `warn,fhir_bulk=debug`.
    #[arg(long, global = true, default_value = fhirsync::logging::DEFAULT_FILTER, env = "FHIRSYNC_LOG")]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Demo: the built-in server with bundled Synthea data, a full sync, server changes, an incremental sync, a query.
    Demo(cmd::demo::Args),
    /// One sync: export (incremental from the last committed cursor), encode, merge into Delta tables.
    Sync(cmd::sync::Args),
    /// Apply a local directory of NDJSON files (e.g. a previous export) to the Delta tables.
    Import(cmd::import::Args),
    /// Run syncs on cron schedules and serve /health and /metrics.
    Daemon(cmd::daemon::Args),
    /// Exit 0 if the last sync is recent and did not fail, 1 otherwise (one JSON line on stdout).
    Health(cmd::health::Args),
    /// Cursor, last sync and per-table version, rows, files and size.
    Status(cmd::status::Args),
    /// SQL over all tables (registered by resource type name).
    Query(cmd::query::Args),
    /// Compact small files, vacuum old ones, write checkpoints.
    Maintain(cmd::maintain::Args),
    /// Run a Bulk Data export and write the NDJSON files, manifest, errors and deletions to a directory.
    Export(cmd::export::Args),
    /// Start the built-in Bulk Data test server (synthetic or bundled Synthea data) on loopback.
    ServeTest(cmd::serve_test::Args),
    /// Encode a directory of NDJSON files into one Parquet file per resource type (Pathling encoding).
    Encode(cmd::encode::Args),
}

fn main() -> ExitCode {
    fhirsync::memory::limit_malloc_arenas();
    let cli = Cli::parse();
    let mode = match logging::init(cli.log_format, &cli.log_level) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("fhirsync: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fhirsync: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => cmd::demo::run(args, mode).await,
            Command::Sync(args) => cmd::sync::run(args, mode).await,
            Command::Import(args) => cmd::import::run(args, mode).await,
            Command::Daemon(args) => cmd::daemon::run(args, mode).await,
            Command::Health(args) => cmd::health::run(args, mode).await,
            Command::Status(args) => cmd::status::run(args, mode).await,
            Command::Query(args) => cmd::query::run(args, mode).await,
            Command::Maintain(args) => cmd::maintain::run(args, mode).await,
            Command::Export(args) => cmd::export::run(args, mode).await,
            Command::ServeTest(args) => cmd::serve_test::run(args, mode).await,
            Command::Encode(args) => cmd::encode::run(args, mode).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, with the whole context chain, for people and for log scrapers.
            tracing::error!(error = %format!("{e:#}"), "fhirsync failed");
            eprintln!("fhirsync: {e:#}");
            ExitCode::FAILURE
        }
    }
}
