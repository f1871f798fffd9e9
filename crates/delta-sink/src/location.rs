//! Where tables live: `<root>/<Type>.parquet`, on local disk, in S3, Azure storage or GCS.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Once;

use url::Url;

use crate::error::SinkError;

/// AWS environment variables forwarded to the S3 object store when present.
pub(crate) const AWS_ENV_VARS: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ALLOW_HTTP",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_S3_ALLOW_UNSAFE_RENAME",
    "AWS_S3_LOCKING_PROVIDER",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
];

/// Prefixes of the Azure and Google variables forwarded when present: object_store reads every
/// `AZURE_*` / `GOOGLE_*` name it knows (and drops the rest), so none is listed one by one.
/// (`AZURITE_BLOB_STORAGE_URL`, the emulator's address, object_store reads itself.)
pub(crate) const CLOUD_ENV_PREFIXES: &[&str] = &["AZURE_", "GOOGLE_"];

/// Storage options for delta-rs' object store (`AWS_REGION`, `AZURE_STORAGE_ACCOUNT_NAME`,
/// `GOOGLE_SERVICE_ACCOUNT`, ...); each store takes the keys it knows and ignores the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageOptions {
    options: HashMap<String, String>,
}

impl StorageOptions {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }

    /// The variables the sink forwards found in the process environment: the AWS ones
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials, ...) and every `AZURE_*` and `GOOGLE_*`.
    pub fn from_env() -> Self {
        let aws = AWS_ENV_VARS
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)));
        let cloud = std::env::vars().filter(|(k, _)| {
            CLOUD_ENV_PREFIXES
                .iter()
                .any(|p| k.starts_with(p) && k.len() > p.len())
        });
        Self {
            options: aws.chain(cloud).collect(),
        }
    }

    /// Sets one option (explicit options override the environment).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.insert(key.into(), value.into());
        self
    }

    /// Merges `other` over `self`.
    pub fn merged(mut self, other: &StorageOptions) -> Self {
        self.options.extend(other.options.clone());
        self
    }

    /// The options as delta-rs takes them.
    pub fn as_map(&self) -> &HashMap<String, String> {
        &self.options
    }
}

static REGISTER: Once = Once::new();

/// Registers the S3, Azure and GCS object-store and log-store handlers with delta-rs
/// (idempotent; explicit rather than left to delta-rs' load-time registration).
pub(crate) fn register_object_stores() {
    REGISTER.call_once(|| {
        deltalake::aws::register_handlers(None);
        deltalake::azure::register_handlers(None);
        deltalake::gcp::register_handlers(None);
    });
}

/// URL schemes of table locations in object stores: S3, Azure storage (Blob and Data Lake
/// Gen2 URL forms) and Google Cloud Storage.
pub(crate) const CLOUD_SCHEMES: &[&str] =
    &["s3", "s3a", "az", "abfs", "abfss", "adl", "azure", "gs"];

/// Turns a user-facing location (relative or absolute path, `file://`, `s3://`, `az://`,
/// `abfss://`, `gs://`, ... URL) into a directory URL ending in `/`.
pub(crate) fn root_url(location: &str) -> Result<Url, SinkError> {
    let invalid = |reason: String| SinkError::InvalidLocation {
        location: location.to_string(),
        reason,
    };
    if location.trim().is_empty() {
        return Err(invalid("empty location".into()));
    }
    let mut url = if location.contains("://") {
        Url::parse(location).map_err(|e| invalid(e.to_string()))?
    } else {
        let path = Path::new(location);
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| invalid(format!("cannot resolve relative path: {e}")))?
                .join(path)
        };
        Url::from_directory_path(&abs)
            .map_err(|()| invalid(format!("not a usable path: {}", abs.display())))?
    };
    match url.scheme() {
        "file" | "memory" => {}
        s if CLOUD_SCHEMES.contains(&s) => {}
        other => {
            return Err(invalid(format!(
                "unsupported scheme `{other}` (use a path, s3://, az://, abfss:// or gs://)"
            )));
        }
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// The URL of one resource type's table: `<root>/<Type>.parquet`.
pub(crate) fn table_url(root: &Url, resource_type: &str) -> Result<Url, SinkError> {
    let valid = !resource_type.is_empty()
        && resource_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(SinkError::InvalidLocation {
            location: resource_type.to_string(),
            reason: "resource type must be ASCII letters, digits, `_` or `-`".into(),
        });
    }
    root.join(&format!("{resource_type}.parquet"))
        .map_err(|e| SinkError::InvalidLocation {
            location: root.to_string(),
            reason: e.to_string(),
        })
}

/// What messages call a table: its resource type (`Observation` for
/// `<root>/Observation.parquet`), else its last path segment, else its URL.
pub(crate) fn table_label(url: &Url) -> String {
    url.path_segments()
        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
        .map(|last| last.strip_suffix(".parquet").unwrap_or(last).to_string())
        .unwrap_or_else(|| url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_called_by_their_resource_type() {
        let root = Url::parse("s3://bucket/delta/").unwrap();
        let url = table_url(&root, "Observation").unwrap();
        assert_eq!(table_label(&url), "Observation");
        let dir = Url::parse("file:///data/Patient.parquet/").unwrap();
        assert_eq!(table_label(&dir), "Patient");
        let other = Url::parse("file:///data/patients").unwrap();
        assert_eq!(table_label(&other), "patients");
        let bare = Url::parse("memory:///").unwrap();
        assert_eq!(table_label(&bare), "memory:///");
    }

    #[test]
    fn cloud_locations_become_directories() {
        for (given, root) in [
            ("s3://bucket/delta", "s3://bucket/delta/"),
            ("az://container/delta", "az://container/delta/"),
            (
                "abfss://container@account.dfs.core.windows.net/delta",
                "abfss://container@account.dfs.core.windows.net/delta/",
            ),
            ("azure://container/delta/", "azure://container/delta/"),
            ("gs://bucket/a/b", "gs://bucket/a/b/"),
        ] {
            assert_eq!(root_url(given).unwrap().as_str(), root, "{given}");
        }
        let err = root_url("ftp://host/delta").unwrap_err().to_string();
        assert!(err.contains("unsupported scheme `ftp`"), "{err}");
    }
}
