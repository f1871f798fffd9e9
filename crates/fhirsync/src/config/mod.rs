//! Configuration of a sync and of the daemon: command-line flags, environment variables and a TOML
//! file, resolved with the precedence **flag > environment > config file > default**.
//!
//! The same option set ([`SyncArgs`]) is flattened into `fhirsync sync` and `fhirsync daemon`; the
//! flags several subcommands share are defined once in [`vocabulary`]. A config file holds either
//! the options of one sync at the top level, or several `[[jobs]]` (daemon) that inherit the
//! top-level options as defaults. Secrets are never printed: [`Secret`] and [`SecretSource`]
//! redact themselves in `Debug`, and resolved secrets are only read where they are used.
//!
//! | module | job |
//! | --- | --- |
//! | `error` | [`ConfigError`] |
//! | `secrets` | where secrets come from, [`read_secret`] |
//! | `options` | the resolved options ([`SyncOptions`]) and defaults |
//! | `parsers` | value parsers shared by flags and the file |
//! | `environment` | [`Environment`] and the variables read |
//! | [`vocabulary`] | flags shared by several subcommands |
//! | `auth_args`, `sync_args` | the flags of a sync and their resolution |
//! | `file` | the TOML config file |
//! | `daemon` | the daemon's flags, `[daemon]` and jobs |
mod auth_args;
mod daemon;
mod environment;
mod error;
mod file;
mod options;
mod parsers;
mod secrets;
mod sync_args;
pub mod vocabulary;

pub use auth_args::AuthArgs;
pub use daemon::{DaemonArgs, DaemonConfig, JobConfig};
pub use environment::{
    ENV_CLIENT_ID, ENV_CLIENT_ID_FILE, ENV_CLIENT_SECRET, ENV_CLIENT_SECRET_FILE, ENV_CONFIG,
    ENV_DELTA_PATH, ENV_FHIR_ENDPOINT, ENV_FHIR_ENDPOINT_DEPRECATED, ENV_PRIVATE_KEY,
    ENV_PRIVATE_KEY_FILE, Environment, NoEnv, ProcessEnv, fhir_endpoint_var,
};
pub use error::ConfigError;
pub use file::{ConfigFile, FileAuth, FileDaemon, FileDuration, FileList, FileOptions};
pub use options::{
    AuthOptions, DEFAULT_GRACE_PERIOD, DEFAULT_LISTEN, DEFAULT_MAX_CONCURRENT_DOWNLOADS,
    DEFAULT_MAX_NESTING_LEVEL, DEFAULT_RESOURCE_TYPES, DEFAULT_STALE_AFTER,
    DEFAULT_TOKEN_EXPIRY_TOLERANCE, MAX_CONCURRENT_DOWNLOADS, SaveMode, SyncOptions,
    default_state_file, is_remote_path,
};
pub use parsers::{parse_duration, parse_endpoint, parse_instant, parse_key_val};
pub use secrets::{Secret, SecretSource, SigningAlgorithm, read_secret};
pub use sync_args::SyncArgs;
pub use vocabulary::{
    EncodingArgs, EncodingSettings, ExportArgs, ExportSettings, PatientArgs, ResourceTypeArgs,
    TableWriteArgs, TableWriteSettings,
};
