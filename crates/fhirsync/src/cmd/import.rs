//! `fhirsync import`: a local directory of NDJSON files applied to the Delta tables like an export.
use std::path::PathBuf;

use anyhow::Context;
use clap::ArgAction;
use fhirsync::config::{EncodingArgs, FileOptions, ResourceTypeArgs, TableWriteArgs};
use fhirsync::logging::LogMode;
use fhirsync::progress::Progress;

#[derive(clap::Args, Debug)]
#[command(mut_arg(
    "resource_types",
    ResourceTypeArgs::help("to import", "every type found")
))]
pub struct Args {
    /// Directory of NDJSON files (`.ndjson` or `.ndjson.gz`; types taken from the resources),
    /// e.g. the output of `fhirsync export`; its `deleted/` files are applied when present
    #[arg(long, value_name = "DIR")]
    pub input: PathBuf,

    /// Where the Delta tables live: a directory or `s3://bucket/prefix`
    #[arg(long, value_name = "PATH", env = "DELTA_PATH")]
    pub delta_path: String,

    #[command(flatten)]
    pub types: ResourceTypeArgs,

    #[command(flatten)]
    pub write: TableWriteArgs,

    #[command(flatten)]
    pub encoding: EncodingArgs,

    /// Print the report as one JSON object on stdout instead of a table
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub json: bool,
}

pub async fn run(args: Args, mode: LogMode) -> anyhow::Result<()> {
    let no_file = FileOptions::default();
    let write = args.write.resolve(&no_file);
    let encoding = args.encoding.resolve(&no_file);
    let mut request = fhirsync::sync::ImportRequest {
        input: args.input.clone(),
        delta_path: args.delta_path.clone(),
        save_mode: write.save_mode,
        resource_types: args.types.resolve()?,
        max_rejects: write.max_rejects,
        max_nesting_level: encoding.max_nesting_level,
        extensions: encoding.extensions,
        keep_json: encoding.keep_json,
        deletion_vectors: write.deletion_vectors,
        events: Default::default(),
    };
    let _lock = super::lock_tables(&args.delta_path, None)?;
    // On a terminal, bars for the encoding and the commits; in JSON mode the logs say it all.
    let progress = (mode == LogMode::Human).then(|| Progress::new("import", "reading files"));
    if let Some(p) = &progress {
        request.events = p.sync_events();
    }
    let result = fhirsync::sync::run_import(&request).await;
    if let Some(p) = &progress {
        p.finish();
    }
    let report = result.with_context(|| format!("importing {}", args.input.display()))?;
    super::sync::print_report(&report, args.json)
}
