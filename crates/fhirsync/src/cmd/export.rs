//! `fhirsync export`: one Bulk Data export into a directory of NDJSON files.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, FixedOffset, NaiveDate};
use fhir_bulk::{
    BulkClient, ClientConfig, ExportLevel, ExportOptions, ExportRequest, ExportSummary, FileKind,
};
use fhirsync::config::{AuthArgs, ProcessEnv};
use fhirsync::logging::LogMode;
use fhirsync::progress::Progress;
use indicatif::HumanBytes;
use url::Url;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// FHIR server base URL (the system-level endpoint is `<URL>/$export`).
    #[arg(long, env = "FHIRSYNC_FHIR_ENDPOINT", value_name = "URL")]
    fhir_endpoint: Url,

    /// Directory for `<Type>.<n>.ndjson`, `manifest.json`, `deleted/`, `error/`, `rejects/`.
    #[arg(long, value_name = "DIR")]
    output_dir: PathBuf,

    /// Resource types to export, comma-separated (all types when omitted).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "T1,T2",
        conflicts_with = "resource_types"
    )]
    types: Vec<String>,

    /// Resource types to export, space-separated.
    #[arg(long, num_args = 1.., value_name = "TYPE")]
    resource_types: Vec<String>,

    /// Only resources changed after this instant (RFC 3339, or a date meaning midnight UTC).
    #[arg(long, value_parser = parse_instant, value_name = "TIME")]
    since: Option<DateTime<FixedOffset>>,

    /// Only resources changed up to this instant (RFC 3339, or a date meaning midnight UTC).
    #[arg(long, value_parser = parse_instant, value_name = "TIME")]
    until: Option<DateTime<FixedOffset>>,

    /// Export the members of this Group (`Group/<ID>/$export`).
    #[arg(long, value_name = "ID")]
    group_id: Option<String>,

    /// Patient-level export (`Patient/$export`); implied by --patient without --group-id.
    #[arg(long, conflicts_with = "group_id")]
    patient_level: bool,

    /// Only these patients (ids or Patient/<id>); sent as a POST kick-off.
    #[arg(long = "patient", num_args = 1.., value_name = "ID")]
    patients: Vec<String>,

    /// A `Type?query` filter; repeat for several (commas inside a query are kept).
    #[arg(long = "type-filter", value_name = "Q")]
    type_filters: Vec<String>,

    /// Elements to include, comma-separated (`id,Patient.name`).
    #[arg(long, value_delimiter = ',', value_name = "E")]
    elements: Vec<String>,

    /// `_outputFormat` (server default: application/fhir+ndjson).
    #[arg(long, value_name = "MIME")]
    output_format: Option<String>,

    /// `includeAssociatedData` codes, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "CODE")]
    include_associated_data: Vec<String>,

    /// Let the server send the manifest in pages (`allowPartialManifests`).
    #[arg(long)]
    allow_partial_manifests: bool,

    /// `organizeOutputBy`, e.g. `Patient`.
    #[arg(long, value_name = "TYPE")]
    organize_output_by: Option<String>,

    /// Files downloaded at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    max_concurrent_downloads: u64,

    /// Ask for gzip-compressed files (`--gzip=false` for a server on the same host or a fast LAN)
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1, default_missing_value = "true", require_equals = true, action = clap::ArgAction::Set)]
    gzip: bool,

    /// Give up when the server has not finished the export after this many seconds.
    #[arg(long, default_value_t = 24 * 3600, value_name = "SECS")]
    timeout: u64,

    /// Continue the export recorded in the output directory (after a crash or a kill).
    #[arg(long)]
    resume: bool,

    /// Leave the job on the server afterwards instead of deleting it (DELETE on the status URL).
    #[arg(long)]
    keep_job: bool,

    /// SMART Backend Services or client-secret authentication, as for `fhirsync sync`.
    #[command(flatten)]
    auth: AuthArgs,
}

fn parse_instant(s: &str) -> Result<DateTime<FixedOffset>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t);
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().fixed_offset())
        .ok_or_else(|| format!("{s:?} is neither an RFC 3339 instant (2024-01-31T12:00:00Z) nor a date (2024-01-31)"))
}

impl Args {
    fn request(&self) -> ExportRequest {
        let level = match (
            &self.group_id,
            self.patient_level || !self.patients.is_empty(),
        ) {
            (Some(id), _) => ExportLevel::Group(id.clone()),
            (None, true) => ExportLevel::Patient,
            (None, false) => ExportLevel::System,
        };
        let types = if self.types.is_empty() {
            &self.resource_types
        } else {
            &self.types
        };
        ExportRequest {
            level,
            output_format: self.output_format.clone(),
            since: self.since,
            until: self.until,
            types: types
                .iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            elements: self
                .elements
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect(),
            type_filters: self.type_filters.clone(),
            patients: self.patients.clone(),
            include_associated_data: self.include_associated_data.clone(),
            allow_partial_manifests: self.allow_partial_manifests,
            organize_output_by: self.organize_output_by.clone(),
            force_post: false,
        }
    }
}

pub async fn run(args: Args, mode: LogMode) -> anyhow::Result<()> {
    let request = args.request();
    request.validate()?;
    let mut config = ClientConfig::new(args.fhir_endpoint.clone());
    config.max_concurrent_downloads = args.max_concurrent_downloads as usize;
    config.gzip = args.gzip;
    config.poll.timeout = Duration::from_secs(args.timeout);
    // Flags, then FHIR_CLIENT_ID / FHIR_PRIVATE_KEY / FHIR_CLIENT_SECRET (and `*_FILE`).
    let auth = args
        .auth
        .resolve(&ProcessEnv, None)
        .context("authentication settings")?;
    fhirsync::sync::authenticate(&mut config, &auth)?;
    let progress = (mode == LogMode::Human).then(|| Progress::new("starting export"));
    if let Some(p) = &progress {
        config.events = Some(p.handler(config.events.take()));
    }
    let client = BulkClient::new(config)?;
    let options = ExportOptions {
        resume: args.resume,
        delete_job_on_success: !args.keep_job,
        delete_job_on_failure: !args.keep_job,
    };
    let result = client
        .export_to_dir(&request, &args.output_dir, &options)
        .await
        .with_context(|| {
            format!(
                "export from {} into {}",
                args.fhir_endpoint,
                args.output_dir.display()
            )
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants() {
        assert_eq!(
            parse_instant("2024-01-31").unwrap().to_rfc3339(),
            "2024-01-31T00:00:00+00:00"
        );
        assert_eq!(
            parse_instant("2024-01-31T12:00:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2024-01-31T12:00:00+02:00"
        );
        assert!(parse_instant("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
