//! The flags several subcommands share, defined once so that the same thing has the same flag,
//! value format and default everywhere (`docs/cli.md` lists them per subcommand):
//!
//! - lists (resource types, patients, elements) take `A B`, `A,B` or the flag repeated;
//! - durations take `90s`, `30m`, `24h`, `1h 30m` or a bare number of seconds;
//! - instants take RFC 3339 (`2024-01-31T12:00:00Z`) or a date meaning midnight UTC;
//! - every boolean flag is `--flag[=BOOL]`: `--gzip` is `--gzip=true`, `--gzip=false` turns it
//!   off. On an `Option<bool>` (resolved against the environment and file) the attribute is
//!   `#[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
//!   default_missing_value = "true")]`; on a `bool` it adds `default_value_t = false,
//!   action = ArgAction::Set`. A test walks every subcommand and holds each flag to this.
use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use clap::Arg;
use fhir_bulk::UntilParameter;
use url::Url;

use super::environment::{ENV_FHIR_ENDPOINT, Environment, fhir_endpoint_var};
use super::error::{ConfigError, invalid};
use super::file::{FileList, FileOptions};
use super::options::{
    DEFAULT_MAX_CONCURRENT_DOWNLOADS, DEFAULT_MAX_NESTING_LEVEL, MAX_CONCURRENT_DOWNLOADS, SaveMode,
};
use super::parsers::{
    parse_duration, parse_endpoint, parse_instant, parse_key_val, parse_until_parameter,
    resource_type_list, split_list,
};

/// `--resource-types T1 T2` / `--types T1,T2`: every subcommand that takes resource types.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct ResourceTypeArgs {
    /// Resource types, space- or comma-separated (`--types` is the same flag)
    #[arg(
        long = "resource-types",
        visible_alias = "types",
        value_name = "TYPE",
        num_args = 1..,
        value_delimiter = ','
    )]
    pub resource_types: Vec<String>,
}

impl ResourceTypeArgs {
    /// The types given, checked (`Patient`, not `patient`) and without repeats; `None` when the
    /// flag is absent.
    pub fn resolve(&self) -> Result<Option<Vec<String>>, ConfigError> {
        if self.resource_types.is_empty() {
            return Ok(None);
        }
        resource_type_list(split_list(&self.resource_types)).map(Some)
    }

    /// A subcommand's own help for the flag, saying what the types select and the default:
    /// `#[command(mut_arg("resource_types", ResourceTypeArgs::help("to export", "all")))]`.
    pub fn help(what: &str, default: &str) -> impl FnOnce(Arg) -> Arg {
        let text = format!(
            "Resource types {what}, space- or comma-separated (`--types` is the same flag) \
             [default: {default}]"
        );
        move |arg| arg.help(text)
    }
}

/// `--patient ID...`: the patients of a patient-level or group export.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct PatientArgs {
    /// Only these patients (`123` or `Patient/123`), space- or comma-separated or repeated; the
    /// export is then patient-level (`Patient/$export`) unless --group-id is given
    #[arg(
        long = "patient",
        visible_alias = "patients",
        value_name = "ID",
        num_args = 1..,
        value_delimiter = ','
    )]
    pub patients: Vec<String>,
}

/// What to export and how to download it: the flags `export`, `sync` and `daemon` share.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct ExportArgs {
    /// FHIR server base URL offering `$export` [env: FHIR_ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub fhir_endpoint: Option<String>,

    #[command(flatten)]
    pub types: ResourceTypeArgs,

    /// Export the members of this Group (`Group/<id>/$export`)
    #[arg(long, value_name = "ID")]
    pub group_id: Option<String>,

    #[command(flatten)]
    pub patients: PatientArgs,

    /// Only resources changed after this instant (`_since`, in place of a sync's stored cursor):
    /// RFC 3339, or a date meaning midnight UTC
    #[arg(long, value_name = "INSTANT", value_parser = parse_instant)]
    pub since: Option<DateTime<FixedOffset>>,

    /// Only resources changed up to this instant (`_until`): RFC 3339, or a date meaning
    /// midnight UTC
    #[arg(long, value_name = "INSTANT", value_parser = parse_instant)]
    pub until: Option<DateTime<FixedOffset>>,

    /// The name `--until` is sent under: `_until` (the IG) or `_till` (Azure Health Data
    /// Services) [default: _until]
    #[arg(long, value_name = "NAME", value_parser = parse_until_parameter)]
    pub until_parameter: Option<UntilParameter>,

    /// `_typeFilter` search query, e.g. `Observation?status=final`; repeat for several (commas
    /// inside a query are kept)
    #[arg(long = "type-filter", value_name = "QUERY")]
    pub type_filters: Vec<String>,

    /// `_elements` to export (`id,Patient.name`), space- or comma-separated
    #[arg(long, value_name = "ELEMENT", num_args = 1.., value_delimiter = ',')]
    pub elements: Vec<String>,

    /// Give up when the export (kick-off to last download) has not finished after this long:
    /// `90m`, `4h`, or a bare number of seconds [default: no limit; waiting for the server to
    /// finish stops after 7 days]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// The longest `Retry-After` honoured between status polls; a server asking for hours is
    /// polled this often instead [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_retry_after: Option<Duration>,

    /// Parallel NDJSON downloads, 1 to 64 [default: 10]
    #[arg(long, value_name = "N")]
    pub max_concurrent_downloads: Option<usize>,

    /// Ask for gzip-compressed files (`--gzip=false` for a server on the same host or a fast
    /// LAN, where compressing costs both ends more CPU than it saves) [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub gzip: Option<bool>,

    /// Setting for export files the server leaves in a bucket (`s3://`, `gs://`, Azure blob
    /// URLs), over the same-named environment variable, e.g.
    /// `AZURE_STORAGE_ACCOUNT_KEY=...`, `AWS_REGION=eu-west-1`, `GOOGLE_SERVICE_ACCOUNT=key.json`
    /// (repeatable). They are read with these credentials, never with the FHIR token
    #[arg(long = "export-storage-option", value_name = "KEY=VALUE", value_parser = parse_key_val)]
    pub export_storage_options: Vec<(String, String)>,
}

/// [`ExportArgs`] resolved: flag > environment > config file > default.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSettings {
    pub fhir_endpoint: Url,
    /// `None`: the command's default (every type for `export`).
    pub resource_types: Option<Vec<String>>,
    pub group_id: Option<String>,
    pub patients: Vec<String>,
    pub since: Option<DateTime<FixedOffset>>,
    pub until: Option<DateTime<FixedOffset>>,
    pub until_parameter: UntilParameter,
    pub type_filters: Vec<String>,
    pub elements: Vec<String>,
    pub timeout: Option<Duration>,
    pub max_retry_after: Duration,
    pub max_concurrent_downloads: usize,
    pub gzip: bool,
    /// Settings of the stores holding export files in buckets (values are credentials).
    pub export_storage_options: BTreeMap<String, String>,
}

impl ExportArgs {
    /// Resolves the export settings; `file` holds the config file's values (or none).
    pub fn resolve(
        &self,
        env: &dyn Environment,
        file: &FileOptions,
    ) -> Result<ExportSettings, ConfigError> {
        let fhir_endpoint = self
            .fhir_endpoint
            .clone()
            .or_else(|| fhir_endpoint_var(env))
            .or_else(|| file.fhir_endpoint.clone())
            .ok_or(ConfigError::Missing {
                option: "fhir_endpoint",
                flag: "fhir-endpoint",
                env: Some(ENV_FHIR_ENDPOINT),
            })?;
        let fhir_endpoint = parse_endpoint(&fhir_endpoint, "fhir_endpoint")?;
        let resource_types = match self.types.resolve()? {
            Some(types) => Some(types),
            None => file
                .resource_types
                .as_ref()
                .map(|l| resource_type_list(l.items()))
                .transpose()?,
        };
        let since = instant(self.since, file.since.as_deref(), "since")?;
        let until = instant(self.until, file.until.as_deref(), "until")?;
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            return Err(ConfigError::Conflict(format!(
                "since ({since}) must be before until ({until})"
            )));
        }
        let until_parameter = match (self.until_parameter, &file.until_parameter) {
            (Some(p), _) => p,
            (None, Some(name)) => {
                parse_until_parameter(name).map_err(|why| invalid("until_parameter", why))?
            }
            (None, None) => UntilParameter::default(),
        };
        let timeout = match (self.timeout, &file.timeout) {
            (Some(t), _) => Some(t),
            (None, Some(t)) => Some(t.get("timeout")?),
            (None, None) => None,
        };
        if timeout == Some(Duration::ZERO) {
            return Err(invalid("timeout", "must be greater than zero"));
        }
        let max_retry_after = match (self.max_retry_after, &file.max_retry_after) {
            (Some(t), _) => t,
            (None, Some(t)) => t.get("max_retry_after")?,
            (None, None) => fhir_bulk::DEFAULT_MAX_RETRY_AFTER,
        };
        if max_retry_after < Duration::from_secs(1) {
            return Err(invalid("max_retry_after", "must be at least 1s"));
        }
        let max_concurrent_downloads = self
            .max_concurrent_downloads
            .or(file.max_concurrent_downloads)
            .unwrap_or(DEFAULT_MAX_CONCURRENT_DOWNLOADS);
        if !(1..=MAX_CONCURRENT_DOWNLOADS).contains(&max_concurrent_downloads) {
            return Err(invalid(
                "max_concurrent_downloads",
                format!(
                    "must be at least 1 and at most {MAX_CONCURRENT_DOWNLOADS}, got \
                     {max_concurrent_downloads}"
                ),
            ));
        }
        Ok(ExportSettings {
            fhir_endpoint,
            resource_types,
            group_id: self.group_id.clone().or_else(|| file.group_id.clone()),
            patients: list(&self.patients.patients, file.patients.as_ref()),
            since,
            until,
            until_parameter,
            type_filters: if self.type_filters.is_empty() {
                file.type_filters.clone().unwrap_or_default()
            } else {
                self.type_filters.clone()
            },
            elements: list(&self.elements, file.elements.as_ref()),
            timeout,
            max_retry_after,
            max_concurrent_downloads,
            gzip: self.gzip.or(file.gzip).unwrap_or(true),
            export_storage_options: file
                .export_storage_options
                .clone()
                .unwrap_or_default()
                .into_iter()
                .chain(self.export_storage_options.iter().cloned())
                .collect(),
        })
    }
}

fn instant(
    flag: Option<DateTime<FixedOffset>>,
    file: Option<&str>,
    option: &str,
) -> Result<Option<DateTime<FixedOffset>>, ConfigError> {
    match (flag, file) {
        (Some(t), _) => Ok(Some(t)),
        (None, Some(s)) => parse_instant(s).map(Some).map_err(|e| invalid(option, e)),
        (None, None) => Ok(None),
    }
}

fn list(flag: &[String], file: Option<&FileList>) -> Vec<String> {
    if flag.is_empty() {
        file.map(FileList::items).unwrap_or_default()
    } else {
        split_list(flag)
    }
}

/// How resources are encoded: the flags `sync`, `daemon`, `import` and `encode` share.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct EncodingArgs {
    /// Depth to which recursive elements are encoded (Pathling's `maxNestingLevel`) [default: 3]
    #[arg(long, value_name = "N")]
    pub max_nesting_level: Option<usize>,

    /// Encode extensions (`_fid` and the `_extension` map) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub extensions: Option<bool>,

    /// Also keep each resource's original JSON, in a `_json` column of its table: views built
    /// from the table later see all of it (tables grow; see docs/views.md) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub keep_json: Option<bool>,
}

/// [`EncodingArgs`] resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodingSettings {
    pub max_nesting_level: usize,
    pub extensions: bool,
    pub keep_json: bool,
}

impl EncodingArgs {
    pub fn resolve(&self, file: &FileOptions) -> EncodingSettings {
        EncodingSettings {
            max_nesting_level: self
                .max_nesting_level
                .or(file.max_nesting_level)
                .unwrap_or(DEFAULT_MAX_NESTING_LEVEL),
            extensions: self.extensions.or(file.extensions).unwrap_or(false),
            keep_json: self.keep_json.or(file.keep_json).unwrap_or(false),
        }
    }
}

/// How rows are written to the Delta tables: the flags `sync`, `daemon` and `import` share.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct TableWriteArgs {
    /// How rows are written to the tables [default: merge]
    #[arg(long, value_name = "MODE", value_parser = save_mode_parser())]
    pub save_mode: Option<SaveMode>,

    /// Fail, committing nothing, when more resources than this are rejected as invalid
    /// [default: no limit]
    #[arg(long, value_name = "N")]
    pub max_rejects: Option<u64>,

    /// Merge by marking replaced rows in deletion vectors instead of rewriting the files that
    /// hold them (much faster incremental syncs of large tables; readers must support deletion
    /// vectors, e.g. Spark with Delta 2.3+, delta-rs, DuckDB) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub deletion_vectors: Option<bool>,
}

/// [`TableWriteArgs`] resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableWriteSettings {
    pub save_mode: SaveMode,
    pub max_rejects: Option<u64>,
    pub deletion_vectors: bool,
}

impl TableWriteArgs {
    pub fn resolve(&self, file: &FileOptions) -> TableWriteSettings {
        TableWriteSettings {
            save_mode: self.save_mode.or(file.save_mode).unwrap_or_default(),
            max_rejects: self.max_rejects.or(file.max_rejects),
            deletion_vectors: self
                .deletion_vectors
                .or(file.deletion_vectors)
                .unwrap_or(false),
        }
    }
}

/// `--save-mode`: the sink's modes, each listed with its description in `--help`.
fn save_mode_parser() -> impl clap::builder::TypedValueParser<Value = SaveMode> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(
        SaveMode::ALL.map(|m| PossibleValue::new(m.as_str()).help(m.description())),
    )
    .try_map(|s| s.parse::<SaveMode>())
}
