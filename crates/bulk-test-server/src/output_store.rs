//! Output files in a bucket, as cloud FHIR servers leave them: each file of a job is uploaded
//! to the configured store (Azure storage, GCS or S3) and listed by the URL that cloud's
//! servers put in the manifest.
use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::config::{OutputStore, ServerError};
use crate::export::FileSpec;

/// How manifest URLs name an uploaded file.
#[derive(Debug)]
enum Listing {
    /// `<blob base>/<key>`: `https://<account>.blob.core.windows.net/<container>`, or the
    /// emulator's `<address>/<account>/<container>`.
    Blob(String),
    /// `<scheme>://<bucket>/<key>` (`gs`, `s3`).
    Bucket(String),
}

/// The opened output store.
#[derive(Debug)]
pub(crate) struct Outputs {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    listing: Listing,
}

fn config(message: impl Into<String>) -> ServerError {
    ServerError::Config(message.into())
}

/// Applies `options` (any case) through `with`, refusing keys the cloud does not know.
fn apply<B, K: std::str::FromStr>(
    mut builder: B,
    env_prefix: &str,
    options: &BTreeMap<String, String>,
    with: impl Fn(B, K, &str) -> B,
) -> Result<B, ServerError> {
    let from_env = std::env::vars().filter(|(k, _)| k.starts_with(env_prefix));
    for (k, v) in from_env {
        if let Ok(key) = k.to_ascii_lowercase().parse::<K>() {
            builder = with(builder, key, &v);
        }
    }
    for (k, v) in options {
        let key = k
            .to_ascii_lowercase()
            .parse::<K>()
            .map_err(|_| config(format!("unknown output store option {k:?}")))?;
        builder = with(builder, key, v);
    }
    Ok(builder)
}

/// A setting from the options (any case) or the environment.
fn setting(options: &BTreeMap<String, String>, name: &str) -> Option<String> {
    options
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var(name.to_ascii_uppercase()).ok())
}

impl Outputs {
    pub fn open(cfg: &OutputStore) -> Result<Outputs, ServerError> {
        let url = Url::parse(&cfg.url)
            .map_err(|e| config(format!("output store {:?} is not a URL: {e}", cfg.url)))?;
        let bucket = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| config(format!("output store {url} names no bucket or container")))?;
        let prefix = url.path().trim_matches('/').to_string();
        let opts = &cfg.options;
        let failed = |e: object_store::Error| config(format!("output store {url}: {e}"));
        let (store, listing): (Arc<dyn ObjectStore>, Listing) = match url.scheme() {
            "s3" | "s3a" => {
                let b = apply(AmazonS3Builder::new(), "AWS_", opts, |b, k, v| {
                    b.with_config(k, v)
                })?;
                let store = b.with_url(url.as_str()).build().map_err(failed)?;
                (Arc::new(store), Listing::Bucket(format!("s3://{bucket}")))
            }
            "gs" => {
                let b = apply(
                    GoogleCloudStorageBuilder::new(),
                    "GOOGLE_",
                    opts,
                    |b, k, v| b.with_config(k, v),
                )?;
                let store = b.with_url(url.as_str()).build().map_err(failed)?;
                (Arc::new(store), Listing::Bucket(format!("gs://{bucket}")))
            }
            "az" | "abfs" | "abfss" | "adl" | "azure" => {
                let b = apply(MicrosoftAzureBuilder::new(), "AZURE_", opts, |b, k, v| {
                    b.with_config(k, v)
                })?;
                let store = b.with_url(url.as_str()).build().map_err(failed)?;
                // `container@account.dfs.core.windows.net` names both.
                let (container, account) = match url.username() {
                    "" => (
                        bucket.to_string(),
                        setting(opts, "azure_storage_account_name"),
                    ),
                    c => (c.to_string(), bucket.split('.').next().map(str::to_string)),
                };
                let emulator = setting(opts, "azure_storage_use_emulator")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                let base = if emulator {
                    let address = std::env::var("AZURITE_BLOB_STORAGE_URL")
                        .unwrap_or_else(|_| "http://127.0.0.1:10000".into());
                    let account = account.unwrap_or_else(|| "devstoreaccount1".into());
                    format!("{}/{account}/{container}", address.trim_end_matches('/'))
                } else {
                    let account = account.ok_or_else(|| {
                        config(format!(
                            "output store {url}: the Azure storage account is not known \
                             (set azure_storage_account_name)"
                        ))
                    })?;
                    format!("https://{account}.blob.core.windows.net/{container}")
                };
                (Arc::new(store), Listing::Blob(base))
            }
            other => {
                return Err(config(format!(
                    "output store {url}: unsupported scheme {other:?} (use az://, abfss://, gs:// or s3://)"
                )));
            }
        };
        Ok(Outputs {
            store,
            prefix,
            listing,
        })
    }

    fn key(&self, job: &str, file: &FileSpec) -> String {
        let name = format!("{job}/{}-{}.ndjson", file.resource_type, file.number);
        if self.prefix.is_empty() {
            name
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// The manifest URL of an uploaded file.
    fn url(&self, key: &str) -> String {
        match &self.listing {
            Listing::Blob(base) | Listing::Bucket(base) => format!("{base}/{key}"),
        }
    }

    /// Writes every file of a job; returns their manifest URLs by file number.
    pub async fn upload(&self, job: &str, files: &[Arc<FileSpec>]) -> Result<Vec<String>, String> {
        let mut urls = Vec::with_capacity(files.len());
        for file in files {
            let spec = file.clone();
            let body = tokio::task::spawn_blocking(move || {
                let mut body = Vec::new();
                spec.render(&mut |b| {
                    body.extend_from_slice(b);
                    true
                });
                body
            })
            .await
            .map_err(|e| format!("rendering a file failed: {e}"))?;
            let key = self.key(job, file);
            let path = Path::parse(&key).map_err(|e| format!("object key {key:?}: {e}"))?;
            self.store
                .put(&path, body.into())
                .await
                .map_err(|e| format!("cannot write {}: {e}", self.url(&key)))?;
            urls.push(self.url(&key));
        }
        Ok(urls)
    }
}
