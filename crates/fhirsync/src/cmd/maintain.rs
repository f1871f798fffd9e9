use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::ArgAction;
use delta_sink::{DeltaSink, OptimizeOptions, StorageOptions};
use fhirsync::config::ResourceTypeArgs;
use fhirsync::logging::LogMode;

#[derive(clap::Args, Debug)]
#[command(mut_arg(
    "resource_types",
    ResourceTypeArgs::help("of the tables to maintain", "every table found")
))]
pub struct Args {
    /// Where the Delta tables live: a directory or `s3://bucket/prefix`
    #[arg(long, value_name = "PATH", env = "DELTA_PATH")]
    pub delta_path: String,

    #[command(flatten)]
    pub types: ResourceTypeArgs,

    /// Skip compaction of small files
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub no_optimize: bool,

    /// Order rows by id while compacting, so later merges touch fewer files
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub zorder: bool,

    /// Remove files no longer referenced and older than this (`7d`, `168h`, or a bare number of
    /// seconds) [default: no vacuum]
    #[arg(long, value_name = "DURATION", value_parser = fhirsync::config::parse_duration)]
    pub vacuum_retention: Option<Duration>,

    /// Allow a vacuum retention shorter than the table's safety minimum (7 days by default)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub force_short_retention: bool,

    /// Write a checkpoint of each table's log
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub checkpoint: bool,

    /// The syncs' state file (as given to `fhirsync sync`): maintenance takes the lock beside
    /// it, so it never runs during a sync; for `s3://` paths without it nothing is locked
    /// [default: <delta-path>/_fhirsync/state.json]
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,
}

pub async fn run(args: Args, _mode: LogMode) -> anyhow::Result<()> {
    // A vacuum during a sync would delete the sync's files not yet committed.
    let _lock = super::lock_tables(&args.delta_path, args.state_file.as_deref())?;
    let sink = DeltaSink::new(&args.delta_path, StorageOptions::from_env())?;
    let types = args.types.resolve()?;
    let mut tables =
        fhirsync::tables::list_tables(&sink, &args.delta_path, types.as_deref()).await?;
    // The views' tables too, unless only some types were asked for.
    if types.is_none() {
        for (name, table) in fhirsync::tables::list_views(&sink, &args.delta_path).await? {
            tables.push((format!("view {name}"), table));
        }
    }
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
