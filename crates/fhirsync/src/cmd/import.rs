use std::path::PathBuf;

use anyhow::Context;
use fhirsync::config::SaveMode;
use fhirsync::logging::LogMode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of NDJSON files (`.ndjson` or `.ndjson.gz`; types taken from the resources),
    /// e.g. the output of `fhirsync export`; its `deleted/` files are applied when present.
    #[arg(long, value_name = "DIR")]
    pub input: PathBuf,

    /// Where the Delta tables live: a directory or `s3://bucket/prefix`.
    #[arg(long, value_name = "PATH", env = "DELTA_PATH")]
    pub delta_path: String,

    #[arg(long, value_enum, default_value_t = SaveMode::Merge)]
    pub save_mode: SaveMode,

    /// Resource types to import (default: every type found).
    #[arg(long, value_name = "TYPE", num_args = 1.., value_delimiter = ',')]
    pub resource_types: Option<Vec<String>>,

    /// Fail (committing nothing) when more resources than this are rejected.
    #[arg(long)]
    pub max_rejects: Option<u64>,

    /// Maximum depth of recursive elements (Pathling's default is 3).
    #[arg(long, default_value_t = 3)]
    pub max_nesting_level: usize,

    /// Encode extensions (`_fid` and the `_extension` map).
    #[arg(long)]
    pub extensions: bool,

    /// Merge by marking replaced rows in deletion vectors instead of rewriting files
    /// (readers must support deletion vectors).
    #[arg(long)]
    pub deletion_vectors: bool,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args, _mode: LogMode) -> anyhow::Result<()> {
    let request = fhirsync::sync::ImportRequest {
        input: args.input.clone(),
        delta_path: args.delta_path.clone(),
        save_mode: args.save_mode,
        resource_types: args.resource_types.clone(),
        max_rejects: args.max_rejects,
        max_nesting_level: args.max_nesting_level,
        extensions: args.extensions,
        deletion_vectors: args.deletion_vectors,
    };
    let _lock = super::lock_tables(&args.delta_path, None)?;
    let report = fhirsync::sync::run_import(&request)
        .await
        .with_context(|| format!("importing {}", args.input.display()))?;
    super::sync::print_report(&report, args.json)
}
