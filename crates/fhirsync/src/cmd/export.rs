//! `fhirsync export`: one Bulk Data export into a directory of NDJSON files.
use std::path::PathBuf;

use anyhow::Context;
use clap::ArgAction;
use fhir_bulk::{
    BulkClient, ClientConfig, ExportLevel, ExportOptions, ExportRequest, ExportSummary, FileKind,
};
use fhirsync::config::{
    AuthArgs, ExportArgs, ExportSettings, FileOptions, ProcessEnv, ResourceTypeArgs,
};
use fhirsync::logging::LogMode;
use fhirsync::progress::Progress;
use indicatif::HumanBytes;

#[derive(clap::Args, Debug)]
#[command(mut_arg(
    "resource_types",
    ResourceTypeArgs::help("to export", "every type the server exports")
))]
pub struct Args {
    #[command(flatten)]
    pub export: ExportArgs,

    /// Directory for `<Type>.<n>.ndjson`, `manifest.json`, `deleted/`, `error/`, `rejects/`
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,

    /// Patient-level export (`Patient/$export`); implied by --patient without --group-id
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set, conflicts_with = "group_id")]
    pub patient_level: bool,

    /// `_outputFormat` [default: the server's, application/fhir+ndjson]
    #[arg(long, value_name = "MIME")]
    pub output_format: Option<String>,

    /// `includeAssociatedData` codes, space- or comma-separated
    #[arg(long, num_args = 1.., value_delimiter = ',', value_name = "CODE")]
    pub include_associated_data: Vec<String>,

    /// Let the server send the manifest in pages (`allowPartialManifests`)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub allow_partial_manifests: bool,

    /// `organizeOutputBy`, e.g. `Patient`
    #[arg(long, value_name = "TYPE")]
    pub organize_output_by: Option<String>,

    /// Continue the export recorded in the output directory (after a crash or a kill)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub resume: bool,

    /// Leave the job on the server afterwards instead of deleting it (DELETE on the status URL)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub keep_job: bool,

    #[command(flatten)]
    pub auth: AuthArgs,
}

/// The `$export` request the flags describe.
fn request(args: &Args, export: &ExportSettings) -> ExportRequest {
    let level = match (
        &export.group_id,
        args.patient_level || !export.patients.is_empty(),
    ) {
        (Some(id), _) => ExportLevel::Group(id.clone()),
        (None, true) => ExportLevel::Patient,
        (None, false) => ExportLevel::System,
    };
    ExportRequest {
        level,
        output_format: args.output_format.clone(),
        since: export.since,
        until: export.until,
        until_parameter: export.until_parameter,
        types: export.resource_types.clone().unwrap_or_default(),
        elements: export.elements.clone(),
        type_filters: export.type_filters.clone(),
        patients: export.patients.clone(),
        include_associated_data: args.include_associated_data.clone(),
        allow_partial_manifests: args.allow_partial_manifests,
        organize_output_by: args.organize_output_by.clone(),
        force_post: false,
    }
}

pub async fn run(args: Args, mode: LogMode) -> anyhow::Result<()> {
    // Flags, then FHIR_ENDPOINT (or the deprecated FHIRSYNC_FHIR_ENDPOINT).
    let export = args.export.resolve(&ProcessEnv, &FileOptions::default())?;
    let request = request(&args, &export);
    request.validate()?;
    let endpoint = export.fhir_endpoint.clone();
    let mut config = ClientConfig::new(endpoint.clone());
    config.max_concurrent_downloads = export.max_concurrent_downloads;
    config.gzip = export.gzip;
    config.storage_options = export.export_storage_options.clone();
    if let Some(t) = export.timeout {
        config.poll.timeout = t;
    }
    config.poll.max_retry_after = export.max_retry_after;
    // Flags, then FHIR_CLIENT_ID / FHIR_PRIVATE_KEY / FHIR_CLIENT_SECRET (and `*_FILE`).
    let auth = args
        .auth
        .resolve(&ProcessEnv, None)
        .context("authentication settings")?;
    fhirsync::sync::authenticate(&mut config, &auth)?;
    let progress = (mode == LogMode::Human).then(|| Progress::new("export", "starting"));
    if let Some(p) = &progress {
        config.events = Some(p.handler(config.events.take()));
    }
    let client = BulkClient::new(config)?;
    let options = ExportOptions {
        resume: args.resume,
        delete_job_on_success: !args.keep_job,
        delete_job_on_failure: !args.keep_job,
    };
    let run = client.export_to_dir(&request, &args.output_dir, &options);
    let result = match export.timeout {
        // The same limit as a sync's: kick-off to last download.
        Some(t) => match tokio::time::timeout(t, run).await {
            Ok(result) => result.map_err(anyhow::Error::from),
            Err(_) => Err(anyhow::anyhow!(
                "the export did not finish within {}; --resume continues it",
                humantime::format_duration(t)
            )),
        },
        None => run.await.map_err(anyhow::Error::from),
    }
    .map_err(|e| fhirsync::sync::explain(e, !request.types.is_empty()))
    .with_context(|| format!("export from {endpoint} into {}", args.output_dir.display()));
    if let Some(p) = &progress {
        p.finish();
    }
    let summary = result?;
    print_summary(&summary, mode);
    Ok(())
}

fn print_summary(s: &ExportSummary, mode: LogMode) {
    let outputs = s.outputs().count();
    let deletions = s.deletions().count();
    let server_issues: usize = s
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Error)
        .map(|f| f.issues.len())
        .sum();
    match mode {
        LogMode::Human => {
            println!(
                "exported {} resources in {} files ({}) to {} in {:.1}s; transaction time {}",
                s.resources,
                outputs,
                HumanBytes(s.bytes),
                s.dir.display(),
                s.duration.as_secs_f64(),
                s.manifest.transaction_time.to_rfc3339(),
            );
            if s.resumed_files > 0 {
                println!(
                    "{} files were already downloaded by an earlier run",
                    s.resumed_files
                );
            }
            if deletions > 0 {
                println!(
                    "{deletions} deletions listed in {}",
                    s.dir.join("deleted").display()
                );
            }
            if server_issues > 0 {
                println!(
                    "the server reported {server_issues} issues; see {}",
                    s.dir.join("error").display()
                );
            }
            if s.rejected_lines > 0 {
                println!(
                    "{} invalid lines were set aside in {}",
                    s.rejected_lines,
                    s.dir.join("rejects").display()
                );
            }
        }
        LogMode::Json => {
            let line = serde_json::json!({
                "resources": s.resources,
                "files": outputs,
                "bytes": s.bytes,
                "rejected_lines": s.rejected_lines,
                "deletions": deletions,
                "server_issues": server_issues,
                "resumed_files": s.resumed_files,
                "duration_ms": s.duration.as_millis() as u64,
                "transaction_time": s.manifest.transaction_time.to_rfc3339(),
                "output_dir": s.dir.display().to_string(),
            });
            println!("{line}");
        }
    }
}
