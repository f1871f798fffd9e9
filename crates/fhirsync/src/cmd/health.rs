//! `fhirsync health`: the daemon's health verdict for cron users, from the state file.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use fhirsync::config::{default_state_file, parse_duration};
use fhirsync::health::check_state_file;
use fhirsync::logging::LogMode;

/// Exit code 0 when the last successful sync is younger than --max-age and the most recent run did
/// not fail, 1 otherwise; one line of JSON on stdout either way.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the Delta tables live (locates the default state file)
    #[arg(
        long,
        value_name = "PATH",
        env = "DELTA_PATH",
        required_unless_present = "state_file"
    )]
    pub delta_path: Option<String>,

    /// Sync state file [default: <delta-path>/_fhirsync/state.json]
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Unhealthy when the last successful sync is older than this (`2h`, `90m`, or a bare
    /// number of seconds)
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = parse_duration)]
    pub max_age: Duration,
}

pub async fn run(args: Args, _mode: LogMode) -> anyhow::Result<()> {
    let delta_path = args.delta_path.as_deref().unwrap_or("");
    let path = default_state_file(delta_path, args.state_file.as_deref()).with_context(|| {
        format!("{delta_path} is on object storage: pass --state-file with the local state file")
    })?;
    let report = check_state_file(&path, args.max_age, chrono::Utc::now());
    let line = serde_json::to_string(&report).context("cannot encode the health report")?;
    println!("{line}");
    if report.healthy {
        Ok(())
    } else {
        anyhow::bail!(
            "unhealthy: {}",
            report
                .reason
                .as_deref()
                .unwrap_or("the last sync is not recent enough")
        )
    }
}
