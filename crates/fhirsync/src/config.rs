//! Configuration of a sync and of the daemon: command-line flags, environment variables and a TOML
//! file, resolved with the precedence **flag > environment > config file > default**.
//!
//! The same option set ([`SyncArgs`]) is flattened into `fhirsync sync` and `fhirsync daemon`; the
//! flag names are those of the replaced sync script. A config file holds either the options of one
//! sync at the top level, or several `[[jobs]]` (daemon) that inherit the top-level options as
//! defaults. Secrets are never printed: [`Secret`] and [`SecretSource`] redact themselves in
//! `Debug`, and resolved secrets are only read where they are used.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::Deserialize;
use url::Url;

use crate::schedule::{OverlapPolicy, Schedule, ScheduleConfig};

/// The resource types synced when none are given (as the replaced script did).
pub const DEFAULT_RESOURCE_TYPES: [&str; 4] = ["Patient", "Condition", "Observation", "Encounter"];
/// Default address of the daemon's `/health` and `/metrics` server.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
/// A sync older than this makes `/health` unhealthy (the replaced health check used 2 hours).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(2 * 3600);
/// How long a shutdown waits for a cancelled sync to return.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(60);
/// Default number of parallel NDJSON downloads.
pub const DEFAULT_MAX_CONCURRENT_DOWNLOADS: usize = 10;
/// Default encoder nesting depth for recursive elements (Pathling's default).
pub const DEFAULT_MAX_NESTING_LEVEL: usize = 3;
/// Default leeway before token expiry at which a new token is requested (Pathling's default).
pub const DEFAULT_TOKEN_EXPIRY_TOLERANCE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required option {option} (flag --{flag}{env})", env = env_hint(.env))]
    Missing {
        option: &'static str,
        flag: &'static str,
        env: Option<&'static str>,
    },
    #[error("invalid value for {option}: {message}")]
    Invalid { option: String, message: String },
    #[error("conflicting options: {0}")]
    Conflict(String),
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("config file {path}, {section}: {message}")]
    FileSection {
        path: PathBuf,
        section: String,
        message: String,
    },
    #[error("cannot read {what} from {source_desc}: {message}")]
    Secret {
        what: String,
        source_desc: String,
        message: String,
    },
}

fn env_hint(env: &Option<&'static str>) -> String {
    env.map(|e| format!(", environment variable {e}"))
        .unwrap_or_default()
}

fn invalid(option: impl Into<String>, message: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        option: option.into(),
        message: message.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets

pub use smart_auth::{Secret, SecretSource, SigningAlgorithm};

/// Reads a secret now, from synchronous code (the sync itself loads secrets with
/// [`SecretSource::load`] when it needs them). Trailing line breaks are removed.
pub fn read_secret(source: &SecretSource, what: &str) -> Result<Secret, ConfigError> {
    let fail = |message: String| ConfigError::Secret {
        what: what.to_owned(),
        source_desc: source.describe(),
        message,
    };
    let value = match source {
        SecretSource::Inline(s) => s.expose().to_owned(),
        SecretSource::File(path) => {
            std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?
        }
        SecretSource::Env(name) => std::env::var(name).map_err(|e| fail(e.to_string()))?,
        SecretSource::Command(cmd) => {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| fail(format!("cannot start: {e}")))?;
            if !out.status.success() {
                return Err(fail(format!("exited with {}", out.status)));
            }
            String::from_utf8(out.stdout).map_err(|_| fail("output is not valid UTF-8".into()))?
        }
    };
    let trimmed = value.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(fail("the value is empty".into()));
    }
    Ok(Secret::new(trimmed))
}

// ---------------------------------------------------------------------------------------------
// Resolved options

/// How encoded resources are written to the Delta tables.
#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SaveMode {
    /// Upsert by resource id (and apply deletions): the incremental mode.
    #[default]
    Merge,
    /// Replace the table contents.
    Overwrite,
    /// Append rows without de-duplication.
    Append,
    /// Leave an existing table untouched.
    Ignore,
    /// Fail if the table exists.
    Error,
}

impl SaveMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Merge => "merge",
            Self::Overwrite => "overwrite",
            Self::Append => "append",
            Self::Ignore => "ignore",
            Self::Error => "error",
        }
    }
}

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
    pub since: Option<DateTime<FixedOffset>>,
    pub until: Option<DateTime<FixedOffset>>,
    pub type_filters: Vec<String>,
    pub elements: Vec<String>,
    /// Upper bound for one whole export (kick-off to last download).
    pub timeout: Option<Duration>,
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
    /// Object store options (e.g. `AWS_REGION`, `AWS_ENDPOINT_URL`); values are redacted in `Debug`.
    pub storage_options: BTreeMap<String, String>,
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
            .field("since", &self.since)
            .field("until", &self.until)
            .field("type_filters", &self.type_filters)
            .field("elements", &self.elements)
            .field("timeout", &self.timeout)
            .field("max_concurrent_downloads", &self.max_concurrent_downloads)
            .field("gzip", &self.gzip)
            .field("save_mode", &self.save_mode)
            .field("max_rejects", &self.max_rejects)
            .field("deletion_vectors", &self.deletion_vectors)
            .field("max_nesting_level", &self.max_nesting_level)
            .field("extensions", &self.extensions)
            .field("storage_option_keys", &storage_keys)
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
            since: None,
            until: None,
            type_filters: Vec::new(),
            elements: Vec::new(),
            timeout: None,
            max_concurrent_downloads: DEFAULT_MAX_CONCURRENT_DOWNLOADS,
            gzip: true,
            save_mode: SaveMode::Merge,
            max_rejects: None,
            deletion_vectors: false,
            max_nesting_level: DEFAULT_MAX_NESTING_LEVEL,
            extensions: false,
            storage_options: BTreeMap::new(),
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

// ---------------------------------------------------------------------------------------------
// Value parsers shared by flags and the file

/// A duration as `humantime` text (`90s`, `2h`, `1h 30m`) or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| e.to_string());
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. `90s`, `2h`, `1h 30m`)"))
}

/// An instant with offset (`2024-01-01T00:00:00Z`), as FHIR `_since` requires.
pub fn parse_instant(s: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map_err(|e| format!("{e} (expected an instant like 2024-01-31T00:00:00Z)"))
}

fn parse_key_val(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err("expected KEY=VALUE".into()),
    }
}

fn parse_endpoint(s: &str, option: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(s.trim()).map_err(|e| invalid(option, format!("{e}: {s:?}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            option,
            format!("expected an http(s) URL, got {s:?}"),
        ));
    }
    Ok(url)
}

/// A duration in the file: `"2h"` or a number of seconds.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum FileDuration {
    Seconds(u64),
    Text(String),
}

impl FileDuration {
    fn get(&self, option: &str) -> Result<Duration, ConfigError> {
        match self {
            Self::Seconds(s) => Ok(Duration::from_secs(*s)),
            Self::Text(t) => parse_duration(t).map_err(|e| invalid(option, e)),
        }
    }
}

/// A list in the file: an array, or one string of space/comma-separated items.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum FileList {
    Items(Vec<String>),
    Text(String),
}

impl FileList {
    fn items(&self) -> Vec<String> {
        match self {
            Self::Items(v) => v.clone(),
            Self::Text(t) => split_list(std::slice::from_ref(t)),
        }
    }
}

/// Splits values given as `A B`, `A,B` or repeated flags into one list.
fn split_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split([',', ' ', '\t', '\n']))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Environment

/// Where environment variables are read from (the process, or a map in tests).
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment. Empty values count as unset.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).cloned()
    }
}

/// No environment at all (per-job options of a multi-job config file).
pub struct NoEnv;

impl Environment for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

pub const ENV_FHIR_ENDPOINT: &str = "FHIR_ENDPOINT";
pub const ENV_DELTA_PATH: &str = "DELTA_PATH";
pub const ENV_CLIENT_ID: &str = "FHIR_CLIENT_ID";
pub const ENV_CLIENT_ID_FILE: &str = "FHIR_CLIENT_ID_FILE";
pub const ENV_PRIVATE_KEY: &str = "FHIR_PRIVATE_KEY";
pub const ENV_PRIVATE_KEY_FILE: &str = "FHIR_PRIVATE_KEY_FILE";
pub const ENV_CLIENT_SECRET: &str = "FHIR_CLIENT_SECRET";
pub const ENV_CLIENT_SECRET_FILE: &str = "FHIR_CLIENT_SECRET_FILE";
pub const ENV_CONFIG: &str = "FHIRSYNC_CONFIG";

// ---------------------------------------------------------------------------------------------
// Flags

/// The authentication flags (`--auth-*`), shared by `sync`, `daemon` and `export`.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct AuthArgs {
    /// OAuth client id; enables authentication [env: FHIR_CLIENT_ID, FHIR_CLIENT_ID_FILE]
    #[arg(long, value_name = "ID")]
    pub auth_client_id: Option<String>,

    /// Path to the private key (PEM or JWK) for SMART Backend Services
    /// [env: FHIR_PRIVATE_KEY (the key itself), FHIR_PRIVATE_KEY_FILE]
    #[arg(long, value_name = "PATH")]
    pub auth_private_key: Option<PathBuf>,

    /// Same as --auth-private-key
    #[arg(long, value_name = "PATH", conflicts_with = "auth_private_key")]
    pub auth_private_key_file: Option<PathBuf>,

    /// Shell command printing the private key (e.g. a vault CLI)
    #[arg(long, value_name = "COMMAND", conflicts_with_all = ["auth_private_key", "auth_private_key_file"])]
    pub auth_private_key_command: Option<String>,

    /// Client secret (visible in the process list: prefer the file or command forms)
    /// [env: FHIR_CLIENT_SECRET, FHIR_CLIENT_SECRET_FILE]
    #[arg(long, value_name = "SECRET", hide_env_values = true)]
    pub auth_client_secret: Option<String>,

    /// File holding the client secret
    #[arg(long, value_name = "PATH", conflicts_with = "auth_client_secret")]
    pub auth_client_secret_file: Option<PathBuf>,

    /// Shell command printing the client secret
    #[arg(long, value_name = "COMMAND", conflicts_with_all = ["auth_client_secret", "auth_client_secret_file"])]
    pub auth_client_secret_command: Option<String>,

    /// Scopes to request, e.g. `system/*.read`
    #[arg(long, value_name = "SCOPES")]
    pub auth_scope: Option<String>,

    /// Token endpoint (otherwise discovered from `.well-known/smart-configuration`)
    #[arg(long, value_name = "URL")]
    pub auth_token_endpoint: Option<String>,

    /// Send the client secret in the form body instead of HTTP Basic
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub auth_use_form_for_basic_auth: Option<bool>,

    /// Renew a token this long before it expires [default: 120s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub auth_token_expiry_tolerance: Option<Duration>,

    /// JWT signing algorithm (RS384, ES384, ...) [default: from the key]
    #[arg(long, value_name = "ALG")]
    pub auth_algorithm: Option<String>,

    /// `kid` of the signing key
    #[arg(long, value_name = "KID")]
    pub auth_key_id: Option<String>,
}

impl AuthArgs {
    /// Resolves the authentication settings: flag > environment > `[auth]` table > default.
    pub fn resolve(
        &self,
        env: &dyn Environment,
        file: Option<&FileAuth>,
    ) -> Result<AuthOptions, ConfigError> {
        let empty = FileAuth::default();
        let file = file.unwrap_or(&empty);

        let client_id = match self.auth_client_id.clone() {
            Some(id) => Some(id),
            None => match (env.var(ENV_CLIENT_ID), env.var(ENV_CLIENT_ID_FILE)) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::Conflict(format!(
                        "both {ENV_CLIENT_ID} and {ENV_CLIENT_ID_FILE} are set"
                    )));
                }
                (Some(id), None) => Some(id),
                (None, Some(path)) => Some(
                    read_secret(&SecretSource::File(path.into()), "the client id")?
                        .expose()
                        .trim()
                        .to_owned(),
                ),
                (None, None) => match (&file.client_id, &file.client_id_file) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::Conflict(
                            "[auth] has both client_id and client_id_file".into(),
                        ));
                    }
                    (Some(id), None) => Some(id.clone()),
                    (None, Some(path)) => Some(
                        read_secret(&SecretSource::File(path.clone()), "the client id")?
                            .expose()
                            .trim()
                            .to_owned(),
                    ),
                    (None, None) => None,
                },
            },
        };

        let flag_key = self
            .auth_private_key
            .clone()
            .or_else(|| self.auth_private_key_file.clone())
            .map(SecretSource::File)
            .or_else(|| {
                self.auth_private_key_command
                    .clone()
                    .map(SecretSource::Command)
            });
        let private_key = match flag_key {
            Some(k) => Some(k),
            None => match env_secret(env, ENV_PRIVATE_KEY, ENV_PRIVATE_KEY_FILE)? {
                Some(k) => Some(k),
                None => file_secret(
                    "auth_private_key",
                    [
                        (
                            "private_key_jwk",
                            file.private_key_jwk
                                .clone()
                                .map(|v| SecretSource::Inline(Secret::new(v))),
                        ),
                        (
                            "auth_private_key_file",
                            file.private_key_file.clone().map(SecretSource::File),
                        ),
                        (
                            "private_key_env",
                            file.private_key_env.clone().map(SecretSource::Env),
                        ),
                        (
                            "auth_private_key_command",
                            file.private_key_command.clone().map(SecretSource::Command),
                        ),
                    ],
                )?,
            },
        };

        let flag_secret = self
            .auth_client_secret
            .clone()
            .map(|s| SecretSource::Inline(Secret::new(s)))
            .or_else(|| self.auth_client_secret_file.clone().map(SecretSource::File))
            .or_else(|| {
                self.auth_client_secret_command
                    .clone()
                    .map(SecretSource::Command)
            });
        let client_secret = match flag_secret {
            Some(s) => Some(s),
            None => match env_secret(env, ENV_CLIENT_SECRET, ENV_CLIENT_SECRET_FILE)? {
                Some(s) => Some(s),
                None => file_secret(
                    "auth_client_secret",
                    [
                        (
                            "auth_client_secret",
                            file.client_secret
                                .clone()
                                .map(|v| SecretSource::Inline(Secret::new(v))),
                        ),
                        (
                            "auth_client_secret_file",
                            file.client_secret_file.clone().map(SecretSource::File),
                        ),
                        (
                            "client_secret_env",
                            file.client_secret_env.clone().map(SecretSource::Env),
                        ),
                        (
                            "auth_client_secret_command",
                            file.client_secret_command
                                .clone()
                                .map(SecretSource::Command),
                        ),
                    ],
                )?,
            },
        };

        let use_smart = file.use_smart.unwrap_or(true);
        let token_endpoint = match self
            .auth_token_endpoint
            .as_ref()
            .or(file.token_endpoint.as_ref())
        {
            Some(u) => Some(parse_endpoint(u, "auth token_endpoint")?),
            None => None,
        };
        let scope = self.auth_scope.clone().or_else(|| file.scope.clone());
        let use_form_for_basic_auth = self
            .auth_use_form_for_basic_auth
            .or(file.use_form_for_basic_auth)
            .unwrap_or(false);
        let token_expiry_tolerance = match (
            self.auth_token_expiry_tolerance,
            &file.token_expiry_tolerance,
        ) {
            (Some(t), _) => t,
            (None, Some(t)) => t.get("auth token_expiry_tolerance")?,
            (None, None) => DEFAULT_TOKEN_EXPIRY_TOLERANCE,
        };
        let algorithm = match self.auth_algorithm.as_ref().or(file.algorithm.as_ref()) {
            Some(a) => Some(
                SigningAlgorithm::from_str(a.trim()).map_err(|e| invalid("auth algorithm", e))?,
            ),
            None => None,
        };
        let key_id = self.auth_key_id.clone().or_else(|| file.key_id.clone());

        // A client id given anywhere turns authentication on unless the file says otherwise.
        let enabled = match file.enabled {
            Some(false) if self.auth_client_id.is_none() => false,
            Some(e) => e || client_id.is_some(),
            None => client_id.is_some(),
        };
        let a = AuthOptions {
            enabled,
            client_id,
            private_key,
            client_secret,
            use_smart,
            token_endpoint,
            scope,
            use_form_for_basic_auth,
            token_expiry_tolerance,
            algorithm,
            key_id,
        };
        if a.enabled {
            if a.client_id.is_none() {
                return Err(ConfigError::Missing {
                    option: "auth client_id",
                    flag: "auth-client-id",
                    env: Some(ENV_CLIENT_ID),
                });
            }
            if a.private_key.is_none() && a.client_secret.is_none() {
                return Err(invalid(
                    "auth",
                    "authentication needs a private key (--auth-private-key, FHIR_PRIVATE_KEY) \
                     or a client secret (--auth-client-secret-file, FHIR_CLIENT_SECRET)",
                ));
            }
            if a.private_key.is_some() && a.client_secret.is_some() {
                return Err(ConfigError::Conflict(
                    "give either a private key or a client secret, not both".into(),
                ));
            }
            if !a.use_smart && a.token_endpoint.is_none() {
                return Err(invalid("auth", "use_smart = false needs a token_endpoint"));
            }
        }
        Ok(a)
    }
}

/// The options of one sync as command-line flags (flattened into `sync` and `daemon`).
///
/// Every flag is optional here; precedence is applied by [`SyncArgs::resolve`]:
/// flag > environment variable > config file > default.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct SyncArgs {
    /// FHIR server base URL offering `$export` [env: FHIR_ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub fhir_endpoint: Option<String>,

    /// Where the Delta tables live: a directory or `s3://bucket/prefix` [env: DELTA_PATH]
    #[arg(long, value_name = "PATH")]
    pub delta_path: Option<String>,

    /// Sync state file [default: <delta-path>/_fhirsync/state.json]
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Resource types to sync, space- or comma-separated
    /// [default: Patient Condition Observation Encounter]
    #[arg(long, value_name = "TYPE", num_args = 1.., value_delimiter = ',')]
    pub resource_types: Option<Vec<String>>,

    /// Export the members of this Group (`Group/<id>/$export`)
    #[arg(long, value_name = "ID")]
    pub group_id: Option<String>,

    /// Restrict a patient-level export to these patients (`Patient/123`)
    #[arg(long, value_name = "REF", num_args = 1.., value_delimiter = ',')]
    pub patients: Option<Vec<String>>,

    /// Ignore the cursor: export everything and rewrite the tables
    #[arg(long)]
    pub full_refresh: bool,

    /// With --full-refresh --group-id: delete rows of the group's patients that the
    /// server no longer returns (system-level full refreshes always do)
    #[arg(long)]
    pub reconcile: bool,

    /// Export resources changed since this instant (overrides the stored cursor)
    #[arg(long, value_name = "INSTANT", value_parser = parse_instant)]
    pub since: Option<DateTime<FixedOffset>>,

    /// Export resources changed up to this instant (`_until`)
    #[arg(long, value_name = "INSTANT", value_parser = parse_instant)]
    pub until: Option<DateTime<FixedOffset>>,

    /// `_typeFilter` search query, e.g. `Observation?status=final` (repeatable)
    #[arg(long = "type-filter", value_name = "QUERY")]
    pub type_filters: Vec<String>,

    /// `_elements` to export, comma-separated
    #[arg(long, value_name = "ELEMENT", num_args = 1.., value_delimiter = ',')]
    pub elements: Option<Vec<String>>,

    /// Give up an export after this long (`3600`, `90m`, `4h`) [default: no limit]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Parallel NDJSON downloads [default: 10]
    #[arg(long, value_name = "N")]
    pub max_concurrent_downloads: Option<usize>,

    /// Ask for gzip-compressed files (`--gzip=false` for a server on the same host or a fast
    /// LAN, where compressing costs both ends more CPU than it saves) [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub gzip: Option<bool>,

    /// How rows are written to the tables [default: merge]
    #[arg(long, value_enum)]
    pub save_mode: Option<SaveMode>,

    /// Fail when more resources than this are rejected as invalid [default: no limit]
    #[arg(long, value_name = "N")]
    pub max_rejects: Option<u64>,

    /// Merge by marking replaced rows in deletion vectors instead of rewriting the files
    /// that hold them (much faster incremental syncs of large tables; readers must support
    /// deletion vectors, e.g. Spark with Delta 2.3+, delta-rs, DuckDB) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub deletion_vectors: Option<bool>,

    /// Depth to which recursive elements are encoded [default: 3]
    #[arg(long, value_name = "N")]
    pub max_nesting_level: Option<usize>,

    /// Encode extensions (`--extensions` or `--extensions=false`) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub extensions: Option<bool>,

    /// Object store option for `s3://` paths, e.g. `AWS_REGION=eu-central-1` (repeatable)
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
        let fhir_endpoint = self
            .fhir_endpoint
            .clone()
            .or_else(|| env.var(ENV_FHIR_ENDPOINT))
            .or_else(|| file.fhir_endpoint.clone())
            .ok_or(ConfigError::Missing {
                option: "fhir_endpoint",
                flag: "fhir-endpoint",
                env: Some(ENV_FHIR_ENDPOINT),
            })?;
        let fhir_endpoint = parse_endpoint(&fhir_endpoint, "fhir_endpoint")?;
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

        let mut o = SyncOptions::new(fhir_endpoint, delta_path);
        o.state_file = self.state_file.clone().or_else(|| file.state_file.clone());
        if let Some(types) = self
            .resource_types
            .as_deref()
            .map(split_list)
            .or_else(|| file.resource_types.as_ref().map(FileList::items))
        {
            if types.is_empty() {
                return Err(invalid(
                    "resource_types",
                    "at least one resource type is needed",
                ));
            }
            for t in &types {
                if !is_resource_type_name(t) {
                    return Err(invalid(
                        "resource_types",
                        format!("{t:?} is not a FHIR resource type name (e.g. Patient)"),
                    ));
                }
            }
            o.resource_types = dedup(types);
        }
        o.group_id = self.group_id.clone().or_else(|| file.group_id.clone());
        o.patients = self
            .patients
            .as_deref()
            .map(split_list)
            .or_else(|| file.patients.as_ref().map(FileList::items))
            .unwrap_or_default();
        o.full_refresh = self.full_refresh || file.full_refresh.unwrap_or(false);
        o.reconcile = self.reconcile || file.reconcile.unwrap_or(false);
        o.since = match (self.since, &file.since) {
            (Some(s), _) => Some(s),
            (None, Some(s)) => Some(parse_instant(s).map_err(|e| invalid("since", e))?),
            (None, None) => None,
        };
        o.until = match (self.until, &file.until) {
            (Some(s), _) => Some(s),
            (None, Some(s)) => Some(parse_instant(s).map_err(|e| invalid("until", e))?),
            (None, None) => None,
        };
        if let (Some(since), Some(until)) = (o.since, o.until)
            && since >= until
        {
            return Err(ConfigError::Conflict(format!(
                "since ({since}) must be before until ({until})"
            )));
        }
        o.type_filters = if self.type_filters.is_empty() {
            file.type_filters.clone().unwrap_or_default()
        } else {
            self.type_filters.clone()
        };
        o.elements = self
            .elements
            .as_deref()
            .map(split_list)
            .or_else(|| file.elements.as_ref().map(FileList::items))
            .unwrap_or_default();
        o.timeout = match (self.timeout, &file.timeout) {
            (Some(t), _) => Some(t),
            (None, Some(t)) => Some(t.get("timeout")?),
            (None, None) => None,
        };
        if o.timeout == Some(Duration::ZERO) {
            return Err(invalid("timeout", "must be greater than zero"));
        }
        o.max_concurrent_downloads = self
            .max_concurrent_downloads
            .or(file.max_concurrent_downloads)
            .unwrap_or(DEFAULT_MAX_CONCURRENT_DOWNLOADS);
        if o.max_concurrent_downloads == 0 {
            return Err(invalid("max_concurrent_downloads", "must be at least 1"));
        }
        o.gzip = self.gzip.or(file.gzip).unwrap_or(true);
        o.save_mode = self.save_mode.or(file.save_mode).unwrap_or_default();
        o.max_rejects = self.max_rejects.or(file.max_rejects);
        o.deletion_vectors = self
            .deletion_vectors
            .or(file.deletion_vectors)
            .unwrap_or(false);
        o.max_nesting_level = self
            .max_nesting_level
            .or(file.max_nesting_level)
            .unwrap_or(DEFAULT_MAX_NESTING_LEVEL);
        o.extensions = self.extensions.or(file.extensions).unwrap_or(false);
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

fn env_secret(
    env: &dyn Environment,
    value_var: &str,
    file_var: &str,
) -> Result<Option<SecretSource>, ConfigError> {
    match (env.var(value_var), env.var(file_var)) {
        (Some(_), Some(_)) => Err(ConfigError::Conflict(format!(
            "both {value_var} and {file_var} are set"
        ))),
        // Referenced, not copied: the value is read from the environment when used.
        (Some(_), None) => Ok(Some(SecretSource::Env(value_var.to_owned()))),
        (None, Some(path)) => Ok(Some(SecretSource::File(path.into()))),
        (None, None) => Ok(None),
    }
}

fn file_secret<const N: usize>(
    what: &str,
    candidates: [(&str, Option<SecretSource>); N],
) -> Result<Option<SecretSource>, ConfigError> {
    let given: Vec<(&str, SecretSource)> = candidates
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    match given.len() {
        0 => Ok(None),
        1 => Ok(given.into_iter().next().map(|(_, v)| v)),
        _ => Err(ConfigError::Conflict(format!(
            "[auth] sets the {what} more than once ({})",
            given.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn is_resource_type_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Config file

/// The `[auth]` table; keys mirror the replaced tool's auth settings.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    pub enabled: Option<bool>,
    pub client_id: Option<String>,
    pub client_id_file: Option<PathBuf>,
    pub private_key_jwk: Option<String>,
    pub private_key_file: Option<PathBuf>,
    pub private_key_env: Option<String>,
    pub private_key_command: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    pub client_secret_command: Option<String>,
    pub use_smart: Option<bool>,
    pub token_endpoint: Option<String>,
    pub scope: Option<String>,
    pub use_form_for_basic_auth: Option<bool>,
    pub token_expiry_tolerance: Option<FileDuration>,
    pub algorithm: Option<String>,
    pub key_id: Option<String>,
}

/// The options of one sync (and its schedule) as written in the config file.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileOptions {
    pub fhir_endpoint: Option<String>,
    pub delta_path: Option<String>,
    pub state_file: Option<PathBuf>,
    pub resource_types: Option<FileList>,
    pub group_id: Option<String>,
    pub patients: Option<FileList>,
    pub full_refresh: Option<bool>,
    pub reconcile: Option<bool>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub type_filters: Option<Vec<String>>,
    pub elements: Option<FileList>,
    pub timeout: Option<FileDuration>,
    pub max_concurrent_downloads: Option<usize>,
    pub gzip: Option<bool>,
    pub save_mode: Option<SaveMode>,
    pub max_rejects: Option<u64>,
    pub deletion_vectors: Option<bool>,
    pub max_nesting_level: Option<usize>,
    pub extensions: Option<bool>,
    pub storage_options: Option<BTreeMap<String, String>>,
    pub auth: Option<FileAuth>,
    // Scheduling (daemon only; ignored by `sync`).
    pub name: Option<String>,
    pub schedule: Option<String>,
    pub full_refresh_schedule: Option<String>,
    pub timezone: Option<String>,
    pub jitter: Option<FileDuration>,
    pub run_on_start: Option<bool>,
    pub on_overlap: Option<OverlapPolicy>,
}

/// The `[daemon]` table.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileDaemon {
    pub listen: Option<String>,
    pub stale_after: Option<FileDuration>,
    pub grace_period: Option<FileDuration>,
}

/// A parsed config file: top-level options, `[daemon]`, and `[[jobs]]` (each already merged over
/// the top-level options).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub options: FileOptions,
    pub daemon: FileDaemon,
    pub jobs: Vec<FileOptions>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is used in messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::ParseFile {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let section_err = |section: &str, message: String| ConfigError::FileSection {
            path: path.to_owned(),
            section: section.to_owned(),
            message,
        };
        let daemon = match table.remove("daemon") {
            Some(v) => {
                FileDaemon::deserialize(v).map_err(|e| section_err("[daemon]", e.to_string()))?
            }
            None => FileDaemon::default(),
        };
        let job_tables = match table.remove("jobs") {
            Some(toml::Value::Array(items)) => items,
            Some(_) => return Err(section_err("jobs", "expected [[jobs]] tables".into())),
            None => Vec::new(),
        };
        let options = FileOptions::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| section_err("top level", e.to_string()))?;
        let mut jobs = Vec::with_capacity(job_tables.len());
        for (i, job) in job_tables.into_iter().enumerate() {
            let toml::Value::Table(job) = job else {
                return Err(section_err(
                    &format!("jobs[{i}]"),
                    "expected a table".into(),
                ));
            };
            let label = match job.get("name").and_then(|v| v.as_str()) {
                Some(name) => format!("job {name:?}"),
                None => format!("jobs[{i}]"),
            };
            let mut merged = table.clone();
            deep_merge(&mut merged, job);
            let opts = FileOptions::deserialize(toml::Value::Table(merged))
                .map_err(|e| section_err(&label, e.to_string()))?;
            jobs.push(opts);
        }
        Ok(Self {
            path: path.to_owned(),
            options,
            daemon,
            jobs,
        })
    }
}

/// Overlays `over` on `base`; nested tables (`[auth]`, `[storage_options]`) merge key by key.
fn deep_merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => deep_merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Daemon configuration

/// One scheduled sync of the daemon.
#[derive(Clone, Debug, PartialEq)]
pub struct JobConfig {
    pub name: String,
    pub sync: SyncOptions,
    pub schedule: ScheduleConfig,
}

/// Everything the daemon runs with.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    pub stale_after: Duration,
    pub grace_period: Duration,
    pub jobs: Vec<JobConfig>,
    /// The file the configuration came from (re-read on SIGHUP).
    pub config_file: Option<PathBuf>,
}

/// Flags of `fhirsync daemon`: the sync options of a single job plus scheduling and server.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub sync: SyncArgs,

    /// Cron expression (5 or 6 fields, or @hourly/@daily) for incremental syncs
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,

    /// Cron expression for full refreshes (take precedence over an incremental sync due at the same time)
    #[arg(long, value_name = "CRON")]
    pub full_refresh_schedule: Option<String>,

    /// IANA time zone the cron expressions are read in, e.g. Europe/Berlin [default: UTC]
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,

    /// Delay each scheduled run by a random amount up to this (`30s`) [default: 0]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub jitter: Option<Duration>,

    /// Run an incremental sync as soon as the daemon starts
    #[arg(long)]
    pub run_on_start: bool,

    /// What a tick does while the previous sync still runs [default: skip]
    #[arg(long, value_enum)]
    pub on_overlap: Option<OverlapPolicy>,

    /// Name of the job in logs, `/health` and metrics [default: default]
    #[arg(long, value_name = "NAME")]
    pub job_name: Option<String>,

    /// Address of the `/health` and `/metrics` server [default: 127.0.0.1:9464]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// `/health` turns unhealthy when the last successful sync is older than this [default: 2h]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stale_after: Option<Duration>,

    /// On shutdown, how long to wait for a cancelled sync to return [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub grace_period: Option<Duration>,
}

impl DaemonArgs {
    fn has_job_options(&self) -> bool {
        !self.sync.has_no_options()
            || self.schedule.is_some()
            || self.full_refresh_schedule.is_some()
            || self.timezone.is_some()
            || self.jitter.is_some()
            || self.run_on_start
            || self.on_overlap.is_some()
            || self.job_name.is_some()
    }

    /// Resolves the daemon configuration from flags, the environment and the config file.
    pub fn resolve(&self, env: &dyn Environment) -> Result<DaemonConfig, ConfigError> {
        let config_file = self.sync.config_path(env);
        let file = match &config_file {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::default(),
        };
        self.resolve_with(env, file, config_file)
    }

    /// Like [`DaemonArgs::resolve`] with the config file already parsed.
    pub fn resolve_with(
        &self,
        env: &dyn Environment,
        file: ConfigFile,
        config_file: Option<PathBuf>,
    ) -> Result<DaemonConfig, ConfigError> {
        let listen = match (self.listen, &file.daemon.listen) {
            (Some(a), _) => a,
            (None, Some(a)) => SocketAddr::from_str(a.trim()).map_err(|e| {
                invalid(
                    "daemon listen",
                    format!("{e}: {a:?} (expected e.g. 127.0.0.1:9464)"),
                )
            })?,
            (None, None) => SocketAddr::from(([127, 0, 0, 1], 9464)),
        };
        let stale_after = match (self.stale_after, &file.daemon.stale_after) {
            (Some(d), _) => d,
            (None, Some(d)) => d.get("daemon stale_after")?,
            (None, None) => DEFAULT_STALE_AFTER,
        };
        if stale_after.is_zero() {
            return Err(invalid("stale_after", "must be greater than zero"));
        }
        let grace_period = match (self.grace_period, &file.daemon.grace_period) {
            (Some(d), _) => d,
            (None, Some(d)) => d.get("daemon grace_period")?,
            (None, None) => DEFAULT_GRACE_PERIOD,
        };

        let jobs = if file.jobs.is_empty() {
            let mut fo = file.options.clone();
            // Flags win over the file's top level.
            if let Some(s) = &self.schedule {
                fo.schedule = Some(s.clone());
            }
            if let Some(s) = &self.full_refresh_schedule {
                fo.full_refresh_schedule = Some(s.clone());
            }
            if let Some(s) = &self.timezone {
                fo.timezone = Some(s.clone());
            }
            vec![resolve_job(
                &self.sync,
                env,
                &fo,
                self.job_name.clone(),
                self.jitter,
                self,
            )?]
        } else {
            if self.has_job_options() {
                return Err(ConfigError::Conflict(format!(
                    "{} defines [[jobs]]: set job options there, not as flags",
                    file.path.display()
                )));
            }
            let mut jobs = Vec::with_capacity(file.jobs.len());
            for (i, fo) in file.jobs.iter().enumerate() {
                let label = fo.name.clone().unwrap_or_else(|| format!("jobs[{i}]"));
                let job = resolve_job(
                    &SyncArgs::default(),
                    &NoEnv,
                    fo,
                    None,
                    None,
                    &DaemonArgs::default(),
                )
                .map_err(|e| ConfigError::FileSection {
                    path: file.path.clone(),
                    section: format!("job {label:?}"),
                    message: e.to_string(),
                })?;
                jobs.push(job);
            }
            jobs
        };
        check_jobs(&jobs)?;
        Ok(DaemonConfig {
            listen,
            stale_after,
            grace_period,
            jobs,
            config_file,
        })
    }
}

fn resolve_job(
    args: &SyncArgs,
    env: &dyn Environment,
    fo: &FileOptions,
    name_flag: Option<String>,
    jitter_flag: Option<Duration>,
    daemon_flags: &DaemonArgs,
) -> Result<JobConfig, ConfigError> {
    let sync = args.resolve(env, Some(fo))?;
    let name = name_flag
        .or_else(|| fo.name.clone())
        .unwrap_or_else(|| "default".to_owned());
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(
            "job name",
            format!("{name:?}: use letters, digits, '-', '_' or '.'"),
        ));
    }
    let incremental = fo
        .schedule
        .as_deref()
        .map(|s| Schedule::parse(s).map_err(|e| invalid("schedule", e)))
        .transpose()?;
    let full_refresh = fo
        .full_refresh_schedule
        .as_deref()
        .map(|s| Schedule::parse(s).map_err(|e| invalid("full_refresh_schedule", e)))
        .transpose()?;
    if incremental.is_none() && full_refresh.is_none() {
        return Err(ConfigError::Missing {
            option: "schedule",
            flag: "schedule",
            env: None,
        });
    }
    let timezone = match &fo.timezone {
        Some(tz) => chrono_tz::Tz::from_str(tz.trim()).map_err(|_| {
            invalid(
                "timezone",
                format!("{tz:?} is not an IANA time zone (e.g. Europe/Berlin)"),
            )
        })?,
        None => chrono_tz::Tz::UTC,
    };
    let jitter = match (jitter_flag, &fo.jitter) {
        (Some(j), _) => j,
        (None, Some(j)) => j.get("jitter")?,
        (None, None) => Duration::ZERO,
    };
    let schedule = ScheduleConfig {
        incremental,
        full_refresh,
        timezone,
        jitter,
        run_on_start: daemon_flags.run_on_start || fo.run_on_start.unwrap_or(false),
        on_overlap: daemon_flags
            .on_overlap
            .or(fo.on_overlap)
            .unwrap_or_default(),
    };
    Ok(JobConfig {
        name,
        sync,
        schedule,
    })
}

fn check_jobs(jobs: &[JobConfig]) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    let mut paths = BTreeMap::new();
    for job in jobs {
        if !names.insert(job.name.as_str()) {
            return Err(ConfigError::Conflict(format!(
                "two jobs are named {:?}",
                job.name
            )));
        }
        let key = job.sync.delta_path.trim_end_matches('/').to_owned();
        if let Some(other) = paths.insert(key, job.name.as_str()) {
            return Err(ConfigError::Conflict(format!(
                "jobs {other:?} and {:?} write to the same delta path {}",
                job.name, job.sync.delta_path
            )));
        }
    }
    Ok(())
}
