//! Export files kept in cloud storage: S3, Azure Blob / Data Lake and Google Cloud Storage
//! URLs (their own schemes and their HTTPS forms) are read through `object_store` with that
//! cloud's credentials, from the environment (`AWS_*`, `AZURE_*`, `GOOGLE_*`) or from the
//! client's store settings; never with the FHIR server's token. An HTTPS URL that carries its
//! own signature (SAS, presigned) stays a plain HTTP GET.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use url::Url;

use crate::error::BulkError;

/// The query parameters of self-signed URLs (Azure SAS, S3 and GCS V4 signatures).
const SIGNATURE_PARAMS: [&str; 4] = ["sig", "x-amz-signature", "x-goog-signature", "signature"];

/// Which cloud stores a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cloud {
    Aws,
    Azure,
    Google,
}

impl Cloud {
    /// The prefix of the cloud's environment variables and settings keys.
    fn env_prefix(self) -> &'static str {
        match self {
            Cloud::Aws => "AWS_",
            Cloud::Azure => "AZURE_",
            Cloud::Google => "GOOGLE_",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Cloud::Aws => "S3",
            Cloud::Azure => "Azure storage",
            Cloud::Google => "Google Cloud Storage",
        }
    }

    /// Settings that give the store a credential (any one, or the group, will do).
    fn credential_settings(self) -> &'static [&'static str] {
        match self {
            Cloud::Aws => &[
                "AWS_ACCESS_KEY_ID",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_SKIP_SIGNATURE",
            ],
            Cloud::Azure => &[
                "AZURE_STORAGE_ACCOUNT_KEY",
                "AZURE_STORAGE_SAS_KEY",
                "AZURE_STORAGE_TOKEN",
                "AZURE_CLIENT_ID",
                "AZURE_FEDERATED_TOKEN_FILE",
                "AZURE_STORAGE_USE_EMULATOR",
                "AZURE_SKIP_SIGNATURE",
            ],
            Cloud::Google => &[
                "GOOGLE_SERVICE_ACCOUNT",
                "GOOGLE_SERVICE_ACCOUNT_KEY",
                "GOOGLE_APPLICATION_CREDENTIALS",
                "GOOGLE_SKIP_SIGNATURE",
            ],
        }
    }
}

/// Where a file URL lives in a store: the cloud, the store's own URL (bucket or container)
/// and the object's path in it.
#[derive(Debug, PartialEq, Eq)]
pub struct StoreLocation {
    pub cloud: Cloud,
    /// A URL the cloud's builder takes (`s3://bucket`, `gs://bucket`, `az://container`,
    /// `https://account.blob.core.windows.net/container`, ...).
    pub store_url: String,
    /// Extra settings the URL implies (the emulator, a region).
    pub implied: Vec<(&'static str, String)>,
    pub path: String,
}

/// A setting by name: the client's settings first, then the environment. Keys compare
/// case-insensitively (`AZURE_STORAGE_USE_EMULATOR` = `azure_storage_use_emulator`).
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn is_true(v: Option<String>) -> bool {
    v.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// The store holding `url`, or `None` for a file fetched over plain HTTP.
pub fn locate(url: &Url, lookup: Lookup<'_>) -> Option<StoreLocation> {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let path = url.path().trim_start_matches('/');
    let at = |cloud, store_url: String, path: &str| {
        Some(StoreLocation {
            cloud,
            store_url,
            implied: Vec::new(),
            path: percent_decode(path),
        })
    };
    // `bucket/rest` of a path-style URL.
    let split = |p: &str| -> Option<(String, String)> {
        let (first, rest) = p.split_once('/').unwrap_or((p, ""));
        (!first.is_empty()).then(|| (first.to_string(), rest.to_string()))
    };
    match url.scheme() {
        "s3" | "s3a" => return at(Cloud::Aws, format!("s3://{host}"), path),
        "gs" => return at(Cloud::Google, format!("gs://{host}"), path),
        "az" | "adl" | "azure" | "abfs" | "abfss" => {
            let store_url = format!("{}://{}", url.scheme(), url.authority());
            return at(Cloud::Azure, store_url, path);
        }
        "http" | "https" => {}
        _ => return None,
    }
    let signed = url
        .query_pairs()
        .any(|(k, _)| SIGNATURE_PARAMS.contains(&k.to_ascii_lowercase().as_str()));
    if signed {
        return None;
    }
    if is_true(lookup("AZURE_STORAGE_USE_EMULATOR"))
        && let Some(base) = lookup("AZURITE_BLOB_STORAGE_URL")
            .or_else(|| Some("http://127.0.0.1:10000".into()))
            .and_then(|b| Url::parse(&b).ok())
        && url.origin() == base.origin()
    {
        // `{emulator}/{account}/{container}/{blob}`
        let (account, rest) = split(path)?;
        let (container, blob) = split(&rest)?;
        let mut at = at(Cloud::Azure, format!("az://{container}"), &blob)?;
        at.implied = vec![
            ("azure_storage_use_emulator", "true".into()),
            ("azure_storage_account_name", account),
        ];
        return Some(at);
    }
    if url.scheme() != "https" {
        return None;
    }
    if host.ends_with(".blob.core.windows.net") || host.ends_with(".dfs.core.windows.net") {
        let (container, blob) = split(path)?;
        return at(Cloud::Azure, format!("https://{host}/{container}"), &blob);
    }
    if host == "storage.googleapis.com" {
        let (bucket, object) = split(path)?;
        return at(Cloud::Google, format!("gs://{bucket}"), &object);
    }
    if let Some(bucket_and_region) = host.strip_suffix(".amazonaws.com") {
        // Virtual-hosted `bucket.s3[.-]region.amazonaws.com/key`, or path-style
        // `s3[.-]region.amazonaws.com/bucket/key`.
        let (bucket, s3_part) = match bucket_and_region.split_once(".s3") {
            Some((bucket, rest)) => (Some(bucket.to_string()), format!("s3{rest}")),
            None => (None, bucket_and_region.to_string()),
        };
        let region = s3_part
            .strip_prefix("s3.")
            .or_else(|| s3_part.strip_prefix("s3-"))
            .filter(|r| !r.is_empty() && !r.contains('.'));
        if !s3_part.starts_with("s3") {
            return None;
        }
        let (bucket, key) = match bucket {
            Some(b) => (b, path.to_string()),
            None => split(path)?,
        };
        let mut at = at(Cloud::Aws, format!("s3://{bucket}"), &key)?;
        if let Some(r) = region {
            at.implied = vec![("aws_region", r.to_string())];
        }
        return Some(at);
    }
    None
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The stores of a client's cloud files, built once per bucket or container.
pub(crate) struct CloudStores {
    settings: BTreeMap<String, String>,
    connect_timeout: Duration,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl CloudStores {
    pub fn new(settings: BTreeMap<String, String>, connect_timeout: Duration) -> Self {
        let settings = settings
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        Self {
            settings,
            connect_timeout,
            stores: Mutex::default(),
        }
    }

    /// A setting from the client's settings, else the environment.
    fn lookup(&self, key: &str) -> Option<String> {
        let key = key.to_ascii_uppercase();
        self.settings
            .get(&key)
            .cloned()
            .or_else(|| std::env::var(&key).ok())
    }

    /// Where `url` is stored, or `None` for plain HTTP.
    pub fn locate(&self, url: &Url) -> Option<StoreLocation> {
        locate(url, &|k| self.lookup(k))
    }

    /// The cloud's settings: its environment variables, then the client's settings over them,
    /// then what the URL implies.
    fn options(&self, at: &StoreLocation) -> Vec<(String, String)> {
        let prefix = at.cloud.env_prefix();
        let mut merged: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        merged.extend(
            self.settings
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let mut out: Vec<(String, String)> = merged
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        out.extend(at.implied.iter().map(|(k, v)| (k.to_string(), v.clone())));
        out
    }

    /// The store for `at` (built at first use).
    pub fn store(&self, url: &Url, at: &StoreLocation) -> Result<Arc<dyn ObjectStore>, BulkError> {
        let cache_key = format!("{}|{:?}", at.store_url, at.implied);
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stores.get(&cache_key) {
            return Ok(s.clone());
        }
        // Long files stream for minutes: no whole-request timeout. Retries are the
        // download's own (with its events and resume), so the store makes one attempt.
        let client = ClientOptions::new()
            .with_timeout_disabled()
            .with_connect_timeout(self.connect_timeout);
        let retry = RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        };
        let options = self.options(at);
        // Each builder takes the keys of its cloud; others are not its settings.
        macro_rules! build {
            ($builder:expr) => {
                options
                    .iter()
                    .fold($builder.with_client_options(client), |b, (k, v)| {
                        match k.parse() {
                            Ok(key) => b.with_config(key, v),
                            Err(_) => b,
                        }
                    })
                    .with_url(&at.store_url)
                    .with_retry(retry)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            };
        }
        let built = match at.cloud {
            Cloud::Aws => build!(AmazonS3Builder::new()),
            Cloud::Azure => build!(MicrosoftAzureBuilder::new()),
            Cloud::Google => build!(GoogleCloudStorageBuilder::new()),
        };
        let store = built.map_err(|e| self.error(url, at, &e))?;
        stores.insert(cache_key, store.clone());
        Ok(store)
    }

    /// A store error with the URL and, where credentials may be the cause, the settings that
    /// provide them and whether any is set.
    pub fn error(&self, url: &Url, at: &StoreLocation, e: &object_store::Error) -> BulkError {
        let mut message = format!("{}: {}", at.cloud.name(), crate::error::error_chain(e));
        let credential_error = !matches!(
            e,
            object_store::Error::NotFound { .. } | object_store::Error::InvalidPath { .. }
        );
        if credential_error {
            message.push_str(&self.credential_hint(at.cloud));
        }
        BulkError::CloudStorage {
            url: url.clone(),
            message,
        }
    }

    fn credential_hint(&self, cloud: Cloud) -> String {
        let names = cloud.credential_settings();
        let set: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| self.lookup(n).is_some())
            .collect();
        let listed = names.join(", ");
        if set.is_empty() {
            format!(
                " (no {} credential is set: set one of {listed} in the environment or as \
                 --export-storage-option KEY=VALUE; without one only the machine's own \
                 identity is tried)",
                cloud.name()
            )
        } else {
            format!(" (credential settings in use: {})", set.join(", "))
        }
    }
}

/// The object path of a located file.
pub(crate) fn object_path(url: &Url, at: &StoreLocation) -> Result<Path, BulkError> {
    Path::parse(&at.path).map_err(|e| BulkError::CloudStorage {
        url: url.clone(),
        message: format!("not a valid object path {:?}: {e}", at.path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.to_string())
        }
    }

    fn at(url: &str, vars: &[(&str, &str)]) -> Option<(Cloud, String, String)> {
        let lookup = env(vars);
        locate(&Url::parse(url).unwrap(), &lookup).map(|l| (l.cloud, l.store_url, l.path))
    }

    fn some(cloud: Cloud, store: &str, path: &str) -> Option<(Cloud, String, String)> {
        Some((cloud, store.to_string(), path.to_string()))
    }

    #[test]
    fn cloud_urls_are_read_from_their_store() {
        use Cloud::*;
        let none: &[(&str, &str)] = &[];
        for (url, want) in [
            (
                "s3://exports/job/Patient-1.ndjson",
                some(Aws, "s3://exports", "job/Patient-1.ndjson"),
            ),
            (
                "gs://exports/a/b.ndjson",
                some(Google, "gs://exports", "a/b.ndjson"),
            ),
            ("az://c/x/y.ndjson", some(Azure, "az://c", "x/y.ndjson")),
            (
                "abfss://c@acct.dfs.core.windows.net/x.ndjson",
                some(Azure, "abfss://c@acct.dfs.core.windows.net", "x.ndjson"),
            ),
            (
                "https://acct.blob.core.windows.net/fhir/2024/Patient-1.ndjson",
                some(
                    Azure,
                    "https://acct.blob.core.windows.net/fhir",
                    "2024/Patient-1.ndjson",
                ),
            ),
            (
                "https://acct.dfs.core.windows.net/fhir/Patient.ndjson",
                some(
                    Azure,
                    "https://acct.dfs.core.windows.net/fhir",
                    "Patient.ndjson",
                ),
            ),
            (
                "https://storage.googleapis.com/bkt/exp/Observation%20a.ndjson",
                some(Google, "gs://bkt", "exp/Observation a.ndjson"),
            ),
            (
                "https://bkt.s3.eu-west-1.amazonaws.com/out/Patient.ndjson",
                some(Aws, "s3://bkt", "out/Patient.ndjson"),
            ),
            (
                "https://s3.us-east-2.amazonaws.com/bkt/out/Patient.ndjson",
                some(Aws, "s3://bkt", "out/Patient.ndjson"),
            ),
            // Signed URLs carry their own credentials; plain servers are plain HTTP.
            (
                "https://acct.blob.core.windows.net/fhir/P.ndjson?sv=2022&sig=abc",
                None,
            ),
            (
                "https://bkt.s3.amazonaws.com/P.ndjson?X-Amz-Signature=ab&X-Amz-Date=1",
                None,
            ),
            (
                "https://storage.googleapis.com/bkt/P.ndjson?X-Goog-Signature=ab",
                None,
            ),
            ("https://fhir.example.org/files/P.ndjson", None),
            ("http://acct.blob.core.windows.net/fhir/P.ndjson", None),
            ("https://ec2.us-east-1.amazonaws.com/x", None),
        ] {
            assert_eq!(at(url, none), want, "{url}");
        }
    }

    #[test]
    fn emulator_blobs_count_as_azure_only_in_emulator_mode() {
        let url = "http://127.0.0.1:10100/devstoreaccount1/exports/job/P.ndjson";
        let vars = [
            ("AZURE_STORAGE_USE_EMULATOR", "true"),
            ("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10100"),
        ];
        let lookup = env(&vars);
        let found = locate(&Url::parse(url).unwrap(), &lookup).unwrap();
        assert_eq!(
            (found.cloud, found.store_url.as_str(), found.path.as_str()),
            (Cloud::Azure, "az://exports", "job/P.ndjson")
        );
        assert!(
            found
                .implied
                .contains(&("azure_storage_account_name", "devstoreaccount1".into()))
        );
        assert_eq!(at(url, &vars[1..]), None);
        assert_eq!(
            at("http://127.0.0.1:9999/devstoreaccount1/c/p", &vars),
            None,
            "another server"
        );
    }

    #[test]
    fn credential_hints_name_the_settings() {
        let stores = CloudStores::new(
            BTreeMap::from([("google_service_account_key".into(), "{}".into())]),
            Duration::from_secs(1),
        );
        let hint = stores.credential_hint(Cloud::Google);
        assert!(
            hint.contains("in use: ") && hint.contains("GOOGLE_SERVICE_ACCOUNT_KEY"),
            "{hint}"
        );
    }
}
