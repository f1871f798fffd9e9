//! An in-memory Google Cloud Storage server for tests, speaking the XML API the way
//! `object_store`'s GCS client (and so delta-rs) uses it: path-style objects at
//! `{base}/{bucket}/{name}`, `x-goog-if-generation-match` preconditions, ranged reads,
//! `list-type=2` listings, `x-goog-copy-source` copies and XML multipart uploads.
//!
//! It takes no credentials: point a client at [`GcsEmulator::base_url`] with OAuth disabled
//! ([`GcsEmulator::service_account_key`]) and plain HTTP allowed.

mod routes;
mod store;
mod xml;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use store::{Object, WriteError};

/// A running emulator; stops when dropped.
pub struct GcsEmulator {
    addr: SocketAddr,
    state: routes::Shared,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl GcsEmulator {
    /// Starts on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr` (port 0: a free one).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = routes::Shared::new(format!("http://{addr}"));
        let app = routes::router(state.clone());
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { signal.cancelled().await })
                .await;
            if let Err(e) = served {
                eprintln!("gcs-emulator stopped: {e}");
            }
        });
        Ok(Self {
            addr,
            state,
            shutdown,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`: the client's base URL (`google_base_url`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket (a no-op when it exists); objects in unknown buckets answer 404.
    pub fn create_bucket(&self, name: &str) {
        self.state.buckets().create_bucket(name);
    }

    /// A copy of one stored object, if present.
    pub fn object(&self, bucket: &str, name: &str) -> Option<Object> {
        self.state.buckets().get(bucket, name).ok().cloned()
    }

    /// The names stored in `bucket` (sorted).
    pub fn names(&self, bucket: &str) -> Vec<String> {
        self.state
            .buckets()
            .bucket(bucket)
            .map(|b| b.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A service-account key (`google_service_account_key`) that turns OAuth off and points
    /// the client at this server.
    pub fn service_account_key(&self) -> String {
        service_account_key(&self.base_url())
    }

    /// A client's settings for this server, as object_store and delta-rs take them (and as
    /// environment variables name them): the service-account key above and plain HTTP.
    pub fn client_settings(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "GOOGLE_SERVICE_ACCOUNT_KEY".to_string(),
                self.service_account_key(),
            ),
            ("GOOGLE_ALLOW_HTTP".to_string(), "true".to_string()),
        ])
    }

    /// Stops serving and waits for the server task.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for GcsEmulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The `google_service_account_key` value for an emulator at `base_url`: no OAuth, no signing.
pub fn service_account_key(base_url: &str) -> String {
    format!(
        r#"{{"gcs_base_url":"{base_url}","disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}}"#
    )
}
