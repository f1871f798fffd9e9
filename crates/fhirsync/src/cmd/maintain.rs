use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use delta_sink::{DeltaSink, OptimizeOptions, StorageOptions};
use fhirsync::logging::LogMode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the Delta tables live: a directory or `s3://bucket/prefix`.
    #[arg(long, value_name = "PATH", env = "DELTA_PATH")]
    pub delta_path: String,

    /// Tables to maintain (default: all).
    #[arg(long, value_name = "TYPE", num_args = 1.., value_delimiter = ',')]
    pub types: Option<Vec<String>>,

    /// Skip compaction of small files.
    #[arg(long)]
    pub no_optimize: bool,

    /// Order rows by id while compacting, so later merges touch fewer files.
    #[arg(long)]
    pub zorder: bool,

    /// Remove files no longer referenced and older than this (e.g. `7d`, `168h`); no vacuum when absent.
    #[arg(long, value_parser = fhirsync::config::parse_duration)]
    pub vacuum_retention: Option<Duration>,

    /// Allow a vacuum retention shorter than the table's safety minimum (7 days by default).
    #[arg(long)]
    pub force_short_retention: bool,

    /// Write a checkpoint of each table's log.
    #[arg(long)]
    pub checkpoint: bool,

    /// The syncs' state file (as given to `fhirsync sync`): maintenance takes the lock beside
    /// it, so it never runs during a sync. Default: `<delta-path>/_fhirsync/state.json` for a
    /// local path; for `s3://` paths without it nothing is locked.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
}

pub async fn run(args: Args, _mode: LogMode) -> anyhow::Result<()> {
    // A vacuum during a sync would delete the sync's files not yet committed.
    let _lock = super::lock_tables(&args.delta_path, args.state_file.as_deref())?;
    let sink = DeltaSink::new(&args.delta_path, StorageOptions::from_env())?;
    let tables =
        fhirsync::tables::list_tables(&sink, &args.delta_path, args.types.as_deref()).await?;
    for (name, mut table) in tables {
        if !args.no_optimize {
            let r = table
                .optimize(OptimizeOptions {
                    zorder_by_id: args.zorder,
                    target_file_size: None,
                })
                .await
                .with_context(|| format!("compacting the {name} table"))?;
            println!(
                "{name}: compacted {} files into {} (version {})",
                r.files_removed, r.files_added, r.version
            );
        }
        if let Some(retention) = args.vacuum_retention {
            let r = table
                .vacuum(retention, !args.force_short_retention, false)
                .await
                .with_context(|| format!("vacuuming the {name} table"))?;
            println!("{name}: vacuum removed {} files", r.files_deleted);
        }
        if args.checkpoint {
            let v = table
                .checkpoint()
                .await
                .with_context(|| format!("checkpointing the {name} table"))?;
            println!("{name}: checkpoint written at version {v}");
        }
    }
    Ok(())
}
