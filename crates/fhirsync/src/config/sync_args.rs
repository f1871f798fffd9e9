//! The options of one sync as command-line flags, and their resolution:
//! flag > environment variable > config file > default.
use std::path::PathBuf;

use super::auth_args::AuthArgs;
use super::environment::{ENV_CONFIG, ENV_DELTA_PATH, Environment};
use super::error::{ConfigError, invalid};
use super::file::FileOptions;
use super::options::SyncOptions;
use super::parsers::parse_key_val;
use super::vocabulary::{EncodingArgs, ExportArgs, ResourceTypeArgs, TableWriteArgs};

/// The options of one sync as command-line flags (flattened into `sync` and `daemon`).
///
/// Every flag is optional here; precedence is applied by [`SyncArgs::resolve`].
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
#[command(mut_arg(
    "resource_types",
    ResourceTypeArgs::help("to sync", "Patient Condition Observation Encounter")
))]
pub struct SyncArgs {
    #[command(flatten)]
    pub export: ExportArgs,

    /// Where the Delta tables live: a directory or `s3://bucket/prefix` [env: DELTA_PATH]
    #[arg(long, value_name = "PATH")]
    pub delta_path: Option<String>,

    /// Sync state file [default: <delta-path>/_fhirsync/state.json]
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Ignore the cursor: export everything and rewrite the tables [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub full_refresh: Option<bool>,

    /// With --full-refresh --group-id: delete rows of the group's patients that the server no
    /// longer returns (system-level full refreshes always do) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub reconcile: Option<bool>,

    /// Patients named in one export of the earlier data of patients who joined the group
    /// (--group-id) since the last sync [default: 500]
    #[arg(long, value_name = "N")]
    pub patients_per_export: Option<usize>,

    #[command(flatten)]
    pub write: TableWriteArgs,

    #[command(flatten)]
    pub encoding: EncodingArgs,

    /// A SQL on FHIR ViewDefinition (JSON) kept current with every sync, as a table at
    /// <delta-path>/views/<name> (repeatable)
    #[arg(long = "view", value_name = "VIEW.json")]
    pub views: Vec<PathBuf>,

    /// Object store setting for tables in a bucket (`s3://`, `az://`, `abfss://`, `gs://`), over
    /// the same-named environment variable, e.g. `AWS_REGION=eu-central-1`,
    /// `AZURE_STORAGE_ACCOUNT_KEY=...`, `GOOGLE_SERVICE_ACCOUNT=key.json` (repeatable)
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = parse_key_val)]
    pub storage_options: Vec<(String, String)>,

    #[command(flatten)]
    pub auth: AuthArgs,

    /// TOML config file with any of these options [env: FHIRSYNC_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl SyncArgs {
    /// True when no sync option is set by flag (`--config` aside).
    pub fn has_no_options(&self) -> bool {
        let mut other = self.clone();
        other.config = None;
        other == SyncArgs::default()
    }

    /// The config file named by `--config` or `FHIRSYNC_CONFIG`.
    pub fn config_path(&self, env: &dyn Environment) -> Option<PathBuf> {
        self.config
            .clone()
            .or_else(|| env.var(ENV_CONFIG).map(PathBuf::from))
    }

    /// Resolves the options of one sync: flag > environment > `file` > default.
    pub fn resolve(
        &self,
        env: &dyn Environment,
        file: Option<&FileOptions>,
    ) -> Result<SyncOptions, ConfigError> {
        let empty = FileOptions::default();
        let file = file.unwrap_or(&empty);
        let export = self.export.resolve(env, file)?;
        let delta_path = self
            .delta_path
            .clone()
            .or_else(|| env.var(ENV_DELTA_PATH))
            .or_else(|| file.delta_path.clone())
            .ok_or(ConfigError::Missing {
                option: "delta_path",
                flag: "delta-path",
                env: Some(ENV_DELTA_PATH),
            })?;
        if delta_path.trim().is_empty() {
            return Err(invalid("delta_path", "must not be empty"));
        }

        let mut o = SyncOptions::new(export.fhir_endpoint, delta_path);
        o.state_file = self.state_file.clone().or_else(|| file.state_file.clone());
        if let Some(types) = export.resource_types {
            o.resource_types = types;
        }
        o.group_id = export.group_id;
        o.patients = export.patients;
        o.since = export.since;
        o.until = export.until;
        o.until_parameter = export.until_parameter;
        o.type_filters = export.type_filters;
        o.elements = export.elements;
        o.timeout = export.timeout;
        o.max_retry_after = export.max_retry_after;
        o.max_concurrent_downloads = export.max_concurrent_downloads;
        o.gzip = export.gzip;
        o.export_storage_options = export.export_storage_options;
        o.full_refresh = self.full_refresh.or(file.full_refresh).unwrap_or(false);
        o.reconcile = self.reconcile.or(file.reconcile).unwrap_or(false);
        if let Some(n) = self.patients_per_export.or(file.patients_per_export) {
            if n == 0 {
                return Err(invalid("patients_per_export", "must be at least 1"));
            }
            o.patients_per_export = n;
        }
        let write = self.write.resolve(file);
        o.save_mode = write.save_mode;
        o.max_rejects = write.max_rejects;
        o.deletion_vectors = write.deletion_vectors;
        let encoding = self.encoding.resolve(file);
        o.max_nesting_level = encoding.max_nesting_level;
        o.extensions = encoding.extensions;
        o.keep_json = encoding.keep_json;
        o.views = if self.views.is_empty() {
            file.views.clone().unwrap_or_default()
        } else {
            self.views.clone()
        };
        o.storage_options = file.storage_options.clone().unwrap_or_default();
        o.storage_options
            .extend(self.storage_options.iter().cloned());
        if o.full_refresh && o.since.is_some() {
            return Err(ConfigError::Conflict(
                "full_refresh and since exclude each other".into(),
            ));
        }
        o.auth = self.auth.resolve(env, file.auth.as_ref())?;
        Ok(o)
    }
}
