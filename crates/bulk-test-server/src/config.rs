//! What a test server serves and how: the data, addresses, paths, auth and the knobs tests
//! turn (file size, polls before completion, concurrent jobs, the vendor profile).
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::profiles::Profile;
use crate::smart;

/// What resources the server holds.
#[derive(Clone, Debug, Default)]
pub enum DataSource {
    /// The bundled Synthea export of 100 patients (38,483 resources in 19 types).
    Synthea,
    /// Deterministic synthetic patients, generated while being sent (no memory per resource):
    /// resource `i` of patient `p` is a pure function of `(seed, p, i)`. Roughly 10-15 KB of
    /// NDJSON per patient.
    Synthetic { patients: usize, seed: u64 },
    /// A directory of `.ndjson` / `.ndjson.gz` files (any number per type; the type is taken
    /// from each resource's `resourceType`).
    Dir(PathBuf),
    /// No resources at all (only what tests add through [`StoreHandle::upsert`]).
    #[default]
    Empty,
}

/// Where file URLs in the manifest point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileServing {
    /// Same host and port as the FHIR base, under [`ServerConfig::file_path`].
    #[default]
    SameOrigin,
    /// A second listener (another port, hence another origin), as with files on a CDN or
    /// object store. Clients must not send the FHIR server's token there unless
    /// `requiresAccessToken` says so.
    OtherOrigin,
}

/// Where a kick-off may carry the `patient` parameter (always in a POST `Parameters` body).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PatientParameter {
    /// Patient- and Group-level kick-offs (the IG, v2).
    #[default]
    PatientAndGroup,
    /// Patient-level kick-offs only; a Group-level one with `patient` gets 400.
    PatientLevelOnly,
    /// Nowhere: any kick-off with `patient` gets 400, as servers of the IG's v1 answer.
    Refused,
}

/// Where the server writes output files: a bucket URL (`az://container/prefix`,
/// `abfss://container@account.dfs.core.windows.net/prefix`, `gs://bucket/prefix`,
/// `s3://bucket/prefix`) and object_store settings over the cloud's environment variables
/// (`AZURE_*`, `GOOGLE_*`, `AWS_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputStore {
    pub url: String,
    pub options: BTreeMap<String, String>,
}

/// Server settings. `ServerConfig::default()` serves no data on `127.0.0.1:0` at `/fhir`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// What resources the server has.
    pub data: DataSource,
    /// Listen address of the FHIR endpoint (port 0 = any free port).
    pub bind: SocketAddr,
    /// FHIR base path, e.g. `/fhir` (no trailing slash).
    pub base_path: String,
    /// Path prefix of output files, deliberately apart from the FHIR base (default `/files`).
    pub file_path: String,
    /// Same origin (default) or a second listener for output files.
    pub files: FileServing,
    /// File URLs in the manifest answer 307 to the real location.
    pub redirect_files: bool,
    /// `requiresAccessToken` in the manifest; when true and `smart` is set, file downloads
    /// need a valid bearer token.
    pub requires_access_token: bool,
    /// When `Some`, bearer tokens are required on kick-off and status (and files, see
    /// `requires_access_token`), `.well-known/smart-configuration` and `auth/token` are served.
    pub smart: Option<smart::SmartServerConfig>,
    /// Maximum resources per output file; a type's output is split into several files.
    pub resources_per_file: usize,
    /// Kick-offs while this many jobs are in progress get 429 + OperationOutcome.
    pub max_concurrent_jobs: usize,
    /// The status URL answers 202 (with `X-Progress`, `Retry-After`) this many times before
    /// the manifest.
    pub polls_before_complete: u32,
    /// `Retry-After` (seconds) on 202 status responses and 429s, unless the profile sets its
    /// own.
    pub retry_after_secs: u64,
    /// Output entries per manifest page when the client sets `allowPartialManifests`.
    pub manifest_page_size: usize,
    /// Which kick-offs accept the `patient` parameter.
    pub patient_parameter: PatientParameter,
    /// Which server to behave like: the IG as written (default) or a vendor's departures
    /// from it. A profile may fix settings above (where files are served, for instance).
    pub profile: Profile,
    /// A bucket the output files are written to and listed from, as cloud servers do
    /// (required by the `azure`, `gcp` and `aws` profiles; with any other profile, files
    /// are written there too when it is set).
    pub output_store: Option<OutputStore>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data: DataSource::Empty,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            base_path: "/fhir".to_string(),
            file_path: "/files".to_string(),
            files: FileServing::SameOrigin,
            redirect_files: false,
            requires_access_token: false,
            smart: None,
            resources_per_file: 10_000,
            max_concurrent_jobs: 4,
            polls_before_complete: 1,
            retry_after_secs: 1,
            manifest_page_size: 2,
            patient_parameter: PatientParameter::PatientAndGroup,
            profile: Profile::Spec,
            output_store: None,
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid server configuration: {0}")]
    Config(String),
    #[error("cannot load data from {path}: {message}")]
    Data { path: String, message: String },
}
