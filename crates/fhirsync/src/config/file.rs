//! The TOML config file: the options of one sync at the top level, `[auth]`, `[daemon]`, and
//! `[[jobs]]` that inherit the top-level options. Unknown keys are errors, so that a typo does
//! not silently fall back to a default.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, invalid};
use super::options::SaveMode;
use super::parsers::{at_most_100_years, parse_duration, split_list};
use crate::schedule::OverlapPolicy;

/// A duration in the file: `"2h"` or a number of seconds.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(
    untagged,
    expecting = "expected a duration: a number of seconds or text such as \"90s\" or \"2h\""
)]
pub enum FileDuration {
    Seconds(u64),
    Text(String),
}

impl FileDuration {
    pub(crate) fn get(&self, option: &str) -> Result<Duration, ConfigError> {
        match self {
            Self::Seconds(s) => {
                at_most_100_years(Duration::from_secs(*s)).map_err(|e| invalid(option, e))
            }
            Self::Text(t) => parse_duration(t).map_err(|e| invalid(option, e)),
        }
    }
}

/// A list in the file: an array, or one string of space/comma-separated items.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(
    untagged,
    expecting = "expected a list: an array of strings or one string of space- or comma-separated items"
)]
pub enum FileList {
    Items(Vec<String>),
    Text(String),
}

impl FileList {
    pub(crate) fn items(&self) -> Vec<String> {
        match self {
            Self::Items(v) => v.clone(),
            Self::Text(t) => split_list(std::slice::from_ref(t)),
        }
    }
}

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
    pub patients_per_export: Option<usize>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub until_parameter: Option<String>,
    pub type_filters: Option<Vec<String>>,
    pub elements: Option<FileList>,
    pub timeout: Option<FileDuration>,
    pub max_retry_after: Option<FileDuration>,
    pub max_concurrent_downloads: Option<usize>,
    pub gzip: Option<bool>,
    pub save_mode: Option<SaveMode>,
    pub max_rejects: Option<u64>,
    pub deletion_vectors: Option<bool>,
    pub max_nesting_level: Option<usize>,
    pub extensions: Option<bool>,
    pub keep_json: Option<bool>,
    pub views: Option<Vec<PathBuf>>,
    pub storage_options: Option<BTreeMap<String, String>>,
    pub export_storage_options: Option<BTreeMap<String, String>>,
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
            message: one_line(&message),
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

/// A deserializer's message (`invalid type …` then `in `key`` on a line of its own) as one line.
fn one_line(message: &str) -> String {
    let mut out = String::new();
    for line in message.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if out.is_empty() {
            out.push_str(line);
        } else {
            out.push_str(&format!(" ({line})"));
        }
    }
    out
}

/// Overlays `over` on `base`; nested tables (`[auth]`, `[storage_options]`,
/// `[export_storage_options]`) merge key by key.
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
