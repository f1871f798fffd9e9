//! The resolved options of a sync (what flags, environment and file come down to) and their
//! defaults.
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use fhir_bulk::UntilParameter;
use url::Url;

use super::secrets::{Secret, SecretSource, SigningAlgorithm};

/// The resource types synced when none are given (as the replaced script did).
pub const DEFAULT_RESOURCE_TYPES: [&str; 4] = ["Patient", "Condition", "Observation", "Encounter"];
/// Default address of the daemon's `/health` and `/metrics` server.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
/// A sync older than this makes `/health` unhealthy (the replaced health check used 2 hours).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(2 * 3600);
/// How long a shutdown waits for a cancelled sync to return.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(60);
/// Default number of parallel NDJSON downloads, for `sync`, `daemon` and `export` alike. Ten
/// keeps a fast link busy while servers that generate files slowly stream several at once, and
/// stays well below the connection limits servers enforce; it is the default `sync` has always
/// had (`export` used 4 before the two were aligned), so no scheduled sync changes behaviour.
pub const DEFAULT_MAX_CONCURRENT_DOWNLOADS: usize = 10;
/// Patients named in one export of a Group's new members (a `Parameters` body of about 30 KB).
pub const DEFAULT_PATIENTS_PER_EXPORT: usize = 500;
/// The most parallel downloads accepted: more only multiplies open connections and buffers
/// without making a server send faster.
pub const MAX_CONCURRENT_DOWNLOADS: usize = 64;
/// Default encoder nesting depth for recursive elements (Pathling's default).
pub const DEFAULT_MAX_NESTING_LEVEL: usize = 3;
/// Default leeway before token expiry at which a new token is requested (Pathling's default).
pub const DEFAULT_TOKEN_EXPIRY_TOLERANCE: Duration = Duration::from_secs(120);
/// How encoded resources are written to the Delta tables: the sink's own modes and names.
pub use delta_sink::SaveMode;

/// SMART Backend Services / client credentials settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthOptions {
    /// Whether requests are authenticated at all.
    pub enabled: bool,
    pub client_id: Option<String>,
    /// Private key (PEM or JWK) for signed JWT assertions.
    pub private_key: Option<SecretSource>,
    /// Client secret for `client_secret_basic`/`client_secret_post`.
    pub client_secret: Option<SecretSource>,
    /// Discover the token endpoint from `.well-known/smart-configuration`.
    pub use_smart: bool,
    pub token_endpoint: Option<Url>,
    pub scope: Option<String>,
    /// Send the client secret in the form body instead of the `Authorization` header.
    pub use_form_for_basic_auth: bool,
    pub token_expiry_tolerance: Duration,
    /// JWT signing algorithm (e.g. `RS384`, `ES384`); derived from the key when absent.
    pub algorithm: Option<SigningAlgorithm>,
    /// `kid` header of the JWT assertion.
    pub key_id: Option<String>,
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            enabled: false,
            client_id: None,
            private_key: None,
            client_secret: None,
            use_smart: true,
            token_endpoint: None,
            scope: None,
            use_form_for_basic_auth: false,
            token_expiry_tolerance: DEFAULT_TOKEN_EXPIRY_TOLERANCE,
            algorithm: None,
            key_id: None,
        }
    }
}

impl AuthOptions {
    /// The settings in the shape the token provider takes.
    pub fn to_auth_config(&self) -> smart_auth::AuthConfig {
        smart_auth::AuthConfig {
            enabled: self.enabled,
            client_id: self
                .client_id
                .clone()
                .map(|id| SecretSource::Inline(Secret::new(id))),
            private_key_jwk: self.private_key.clone(),
            client_secret: self.client_secret.clone(),
            use_smart: self.use_smart,
            token_endpoint: self.token_endpoint.clone(),
            scope: self
                .scope
                .clone()
                .unwrap_or_else(|| smart_auth::DEFAULT_SCOPE.to_owned()),
            use_form_for_basic_auth: self.use_form_for_basic_auth,
            token_expiry_tolerance: self.token_expiry_tolerance.as_secs(),
            algorithm: self.algorithm,
            key_id: self.key_id.clone(),
            jku: None,
        }
    }
}

/// Every option of one sync, resolved and validated.
#[derive(Clone, PartialEq)]
pub struct SyncOptions {
    pub fhir_endpoint: Url,
    /// Local directory or object store URL (`s3://bucket/prefix`) holding one table per type.
    pub delta_path: String,
    /// Explicit state file; see [`SyncOptions::state_file_path`] for the default.
    pub state_file: Option<PathBuf>,
    pub resource_types: Vec<String>,
    pub group_id: Option<String>,
    /// Patient references (`Patient/123`) to restrict a patient-level export to.
    pub patients: Vec<String>,
    pub full_refresh: bool,
    /// Compare ids with the tables after a full export and delete those the server no longer has.
    pub reconcile: bool,
    /// Patients named in one export of a Group's new members' earlier data (the `patient`
    /// parameter); more new members are exported in several.
    pub patients_per_export: usize,
    pub since: Option<DateTime<FixedOffset>>,
    pub until: Option<DateTime<FixedOffset>>,
    /// The name `until` is sent under (`_till` for Azure).
    pub until_parameter: UntilParameter,
    pub type_filters: Vec<String>,
    pub elements: Vec<String>,
    /// Upper bound for one whole export (kick-off to last download).
    pub timeout: Option<Duration>,
    /// The longest `Retry-After` honoured between status polls.
    pub max_retry_after: Duration,
    pub max_concurrent_downloads: usize,
    /// Ask the server for gzip-compressed files (off saves CPU on both ends of a fast link).
    pub gzip: bool,
    pub save_mode: SaveMode,
    /// Fail the sync when more resources than this are rejected by the encoder.
    pub max_rejects: Option<u64>,
    /// Merges mark replaced rows in deletion vectors instead of rewriting files (tables get
    /// `delta.enableDeletionVectors`; readers need Delta reader version 3).
    pub deletion_vectors: bool,
    pub max_nesting_level: usize,
    pub extensions: bool,
    /// Keep each resource's original JSON in its table (`_json`).
    pub keep_json: bool,
    /// SQL on FHIR ViewDefinitions (JSON files) kept as tables at `<delta-path>/views/<name>`.
    pub views: Vec<PathBuf>,
    /// Object store options (e.g. `AWS_REGION`, `AWS_ENDPOINT_URL`); values are redacted in `Debug`.
    pub storage_options: BTreeMap<String, String>,
    /// Settings of the stores holding export files in buckets (`AZURE_STORAGE_ACCOUNT_KEY`,
    /// ...); values are redacted in `Debug`.
    pub export_storage_options: BTreeMap<String, String>,
    pub auth: AuthOptions,
}

impl fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Storage options carry credentials (AWS_SECRET_ACCESS_KEY ...): keys only.
        let storage_keys: Vec<&String> = self.storage_options.keys().collect();
        f.debug_struct("SyncOptions")
            .field("fhir_endpoint", &self.fhir_endpoint.as_str())
            .field("delta_path", &self.delta_path)
            .field("state_file", &self.state_file)
            .field("resource_types", &self.resource_types)
            .field("group_id", &self.group_id)
            .field("patients", &self.patients)
            .field("full_refresh", &self.full_refresh)
            .field("reconcile", &self.reconcile)
            .field("patients_per_export", &self.patients_per_export)
            .field("since", &self.since)
            .field("until", &self.until)
            .field("until_parameter", &self.until_parameter)
            .field("type_filters", &self.type_filters)
            .field("elements", &self.elements)
            .field("timeout", &self.timeout)
            .field("max_retry_after", &self.max_retry_after)
            .field("max_concurrent_downloads", &self.max_concurrent_downloads)
            .field("gzip", &self.gzip)
            .field("save_mode", &self.save_mode)
            .field("max_rejects", &self.max_rejects)
            .field("deletion_vectors", &self.deletion_vectors)
            .field("max_nesting_level", &self.max_nesting_level)
            .field("extensions", &self.extensions)
            .field("keep_json", &self.keep_json)
            .field("views", &self.views)
            .field("storage_option_keys", &storage_keys)
            .field(
                "export_storage_option_keys",
                &self.export_storage_options.keys().collect::<Vec<_>>(),
            )
            .field("auth", &self.auth)
            .finish()
    }
}

impl SyncOptions {
    /// Options with defaults for everything but the two required settings.
    pub fn new(fhir_endpoint: Url, delta_path: impl Into<String>) -> Self {
        Self {
            fhir_endpoint,
            delta_path: delta_path.into(),
            state_file: None,
            resource_types: DEFAULT_RESOURCE_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            group_id: None,
            patients: Vec::new(),
            full_refresh: false,
            reconcile: false,
            patients_per_export: DEFAULT_PATIENTS_PER_EXPORT,
            since: None,
            until: None,
            until_parameter: UntilParameter::default(),
            type_filters: Vec::new(),
            elements: Vec::new(),
            timeout: None,
            max_retry_after: fhir_bulk::DEFAULT_MAX_RETRY_AFTER,
            max_concurrent_downloads: DEFAULT_MAX_CONCURRENT_DOWNLOADS,
            gzip: true,
            save_mode: SaveMode::Merge,
            max_rejects: None,
            deletion_vectors: false,
            max_nesting_level: DEFAULT_MAX_NESTING_LEVEL,
            extensions: false,
            keep_json: false,
            views: Vec::new(),
            storage_options: BTreeMap::new(),
            export_storage_options: BTreeMap::new(),
            auth: AuthOptions::default(),
        }
    }

    /// Whether the delta path is an object store URL rather than a local directory.
    pub fn is_remote(&self) -> bool {
        is_remote_path(&self.delta_path)
    }

    /// The state file: the explicit one, else `<delta-path>/_fhirsync/state.json` for a local
    /// delta path. `None` for an object store path without `--state-file`.
    pub fn state_file_path(&self) -> Option<PathBuf> {
        default_state_file(&self.delta_path, self.state_file.as_deref())
    }
}

/// True for `scheme://...` paths other than `file://`.
pub fn is_remote_path(path: &str) -> bool {
    match path.split_once("://") {
        Some((scheme, _)) => {
            scheme != "file"
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+')
        }
        None => false,
    }
}

/// The state file location rule shared by `sync`, `daemon` and `health`.
pub fn default_state_file(delta_path: &str, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if is_remote_path(delta_path) {
        return None;
    }
    let local = delta_path.strip_prefix("file://").unwrap_or(delta_path);
    Some(Path::new(local).join("_fhirsync").join("state.json"))
}
