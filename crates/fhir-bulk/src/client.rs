//! The Bulk Data client: its checked configuration and HTTP connection pool. Its operations
//! live with their jobs: `job` (kick-off, cancel), `status` (polling), `download`, `export`
//! (the whole export into a directory) and `resource` (single reads), all over `transport`.
use std::sync::Arc;

use url::Url;

use crate::config::ClientConfig;
use crate::download::CloudStores;
use crate::error::BulkError;
use crate::events::{BulkEvent, emit};

/// A Bulk Data client. Cheap to clone.
#[derive(Clone)]
pub struct BulkClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    pub(crate) http: reqwest::Client,
    /// The same, leaving bodies as sent (no inflating): to see a file's `Content-Encoding`.
    pub(crate) raw_http: reqwest::Client,
    /// Stores of export files kept in buckets.
    pub(crate) stores: CloudStores,
}

impl BulkClient {
    pub fn new(config: ClientConfig) -> Result<Self, BulkError> {
        if !matches!(config.fhir_base_url.scheme(), "http" | "https")
            || config.fhir_base_url.cannot_be_a_base()
        {
            return Err(BulkError::Config(format!(
                "FHIR base URL {} must be an http(s) URL",
                config.fhir_base_url
            )));
        }
        if config.max_concurrent_downloads == 0 {
            return Err(BulkError::Config(
                "max_concurrent_downloads must be at least 1".into(),
            ));
        }
        if config.poll.min_delay > config.poll.max_delay {
            return Err(BulkError::Config(
                "poll min_delay is above max_delay".into(),
            ));
        }
        if config.max_line_bytes < 1024 {
            return Err(BulkError::Config(
                "max_line_bytes must be at least 1024".into(),
            ));
        }
        let http = |inflate: bool| {
            reqwest::Client::builder()
                // Redirects are followed by hand so the token never leaves the FHIR origin.
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(config.connect_timeout)
                .read_timeout(config.read_timeout)
                .user_agent(config.user_agent.clone())
                .gzip(inflate)
                .build()
                .map_err(|e| BulkError::Config(format!("cannot build the HTTP client: {e}")))
        };
        let (http, raw_http) = (http(true)?, http(false)?);
        let stores = CloudStores::new(config.storage_options.clone(), config.connect_timeout);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                http,
                raw_http,
                stores,
            }),
        })
    }

    /// The cloud storage a file URL is read from with that cloud's credentials (`"S3"`,
    /// `"Azure storage"`, `"Google Cloud Storage"`); `None` for a plain HTTP download.
    pub fn storage_of(&self, url: &Url) -> Option<&'static str> {
        self.inner.stores.locate(url).map(|at| at.cloud.name())
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn emit(&self, event: BulkEvent) {
        emit(&self.inner.config.events, event)
    }

    /// Whether a bearer token may be sent to `url`: the FHIR server's own origin only.
    pub(crate) fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.inner.config.fhir_base_url.origin()
    }
}
