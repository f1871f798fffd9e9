//! A spec-faithful FHIR Bulk Data test server with fault injection, SMART auth and a synthetic
//! data generator.
//!
//! URL layout (base path `/fhir` by default):
//! - `GET|POST [base]/$export`, `[base]/Patient/$export`, `[base]/Group/[id]/$export`: kick-off
//!   (`Accept: application/fhir+json` and `Prefer: respond-async` required).
//! - `GET [base]/bulkstatus/[job]`: 202 + `X-Progress` + `Retry-After` while in progress, then
//!   the manifest (`?page=N` for partial manifests); `DELETE` cancels and removes the job.
//! - `GET|HEAD /files/[job]/[n].ndjson`: output, deleted and error files (gzip on request,
//!   `Range`); on a second listener with [`FileServing::OtherOrigin`]; with
//!   [`ServerConfig::redirect_files`] the manifest lists `/redirect/files/...` URLs that answer
//!   307 to the real location.
//! - `GET [base]/metadata`, `GET [base]/.well-known/smart-configuration`,
//!   `POST [base]/auth/token`.
//!
//! Every resource carries `meta.versionId` and `meta.lastUpdated`; an export includes
//! resources with `_since < lastUpdated <= transactionTime` (and `<= _until`). Changes made
//! through [`StoreHandle`] after a kick-off are not part of that export.
//!
//! ```no_run
//! # async fn demo() -> Result<(), bulk_test_server::ServerError> {
//! use bulk_test_server::{DataSource, ServerConfig, TestServer};
//! let server = TestServer::start(ServerConfig {
//!     data: DataSource::Synthetic { patients: 10, seed: 7 },
//!     ..ServerConfig::default()
//! })
//! .await?;
//! println!("{}", server.base_url()); // http://127.0.0.1:PORT/fhir
//! server.shutdown().await;
//! # Ok(()) }
//! ```
pub mod smart;

mod body;
mod export;
mod faults;
mod server;
mod store;
mod synthetic;

pub use faults::{Fault, FaultHandle, FaultRule, FaultTarget, RetryAfter};
pub use store::{StoreError, StoreHandle};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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

/// Which listener a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The FHIR server's listener (kick-off, status, token, and files when same-origin).
    Fhir,
    /// The second listener used by [`FileServing::OtherOrigin`].
    Files,
}

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub origin: Origin,
    /// Path and query, e.g. `/fhir/$export?_type=Patient`.
    pub path_and_query: String,
    /// Whether an `Authorization` header was present.
    pub authorization: bool,
    /// Response status code (for streamed bodies, the status sent before the body).
    pub status: u16,
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
    /// `Retry-After` (seconds) on 202 status responses and 429s.
    pub retry_after_secs: u64,
    /// Output entries per manifest page when the client sets `allowPartialManifests`.
    pub manifest_page_size: usize,
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

/// A running server. Dropping it without [`TestServer::shutdown`] stops it too.
pub struct TestServer {
    base_url: url::Url,
    file_origin: url::Url,
    faults: FaultHandle,
    store: StoreHandle,
    requests: Arc<Mutex<Vec<RequestRecord>>>,
    smart: Option<smart::SmartAuth>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Loads the data and starts listening.
    pub async fn start(config: ServerConfig) -> Result<TestServer, ServerError> {
        let base_path = normalize_path(&config.base_path);
        let file_path = normalize_path(&config.file_path);
        if file_path.is_empty() {
            return Err(ServerError::Config("file_path must not be empty".into()));
        }
        if !base_path.is_empty()
            && (file_path == base_path || file_path.starts_with(&format!("{base_path}/")))
        {
            return Err(ServerError::Config(format!(
                "file_path {file_path:?} must lie outside the base path {base_path:?}"
            )));
        }
        if config.max_concurrent_jobs == 0 {
            return Err(ServerError::Config(
                "max_concurrent_jobs must be at least 1".into(),
            ));
        }
        let load_time = chrono::Utc::now();
        let source = config.data.clone();
        let base = tokio::task::spawn_blocking(move || store::Base::load(&source, load_time))
            .await
            .map_err(|e| ServerError::Config(format!("data loading panicked: {e}")))??;
        let store = StoreHandle::new(base);

        let bind = |addr: SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })
        };
        let main = bind(config.bind).await?;
        let main_addr = main.local_addr().map_err(|source| ServerError::Bind {
            addr: config.bind,
            source,
        })?;
        let second = match config.files {
            FileServing::OtherOrigin => {
                let addr = SocketAddr::new(config.bind.ip(), 0);
                let l = bind(addr).await?;
                let a = l
                    .local_addr()
                    .map_err(|source| ServerError::Bind { addr, source })?;
                Some((l, a))
            }
            FileServing::SameOrigin => None,
        };
        let origin_of = |addr: SocketAddr| {
            let ip = if addr.ip().is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                addr.ip()
            };
            format!("http://{}", SocketAddr::new(ip, addr.port()))
        };
        let base_origin = origin_of(main_addr);
        let file_origin = second
            .as_ref()
            .map(|(_, a)| origin_of(*a))
            .unwrap_or_else(|| base_origin.clone());
        let base_url = url::Url::parse(&format!("{base_origin}{base_path}")).map_err(|e| {
            ServerError::Config(format!("base path {base_path:?} does not make a URL: {e}"))
        })?;
        let file_origin_url =
            url::Url::parse(&file_origin).map_err(|e| ServerError::Config(e.to_string()))?;

        let smart = config.smart.clone().map(smart::SmartAuth::new);
        let faults = FaultHandle::default();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let mut cfg = config;
        cfg.base_path = base_path;
        cfg.file_path = file_path;
        cfg.data = DataSource::Empty;
        let state = Arc::new(server::State {
            cfg,
            base_origin,
            file_origin,
            store: store.clone(),
            faults: faults.clone(),
            requests: requests.clone(),
            smart: smart.clone(),
            jobs: Mutex::new(Default::default()),
        });

        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        let mut listeners = vec![(main, Origin::Fhir)];
        if let Some((l, _)) = second {
            listeners.push((l, Origin::Files));
        }
        for (listener, origin) in listeners {
            let st = state.clone();
            let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                let st = st.clone();
                async move { server::dispatch(st, origin, req).await }
            });
            let mut rx = rx.clone();
            tasks.push(tokio::spawn(async move {
                let stop = async move {
                    while !*rx.borrow() {
                        if rx.changed().await.is_err() {
                            break;
                        }
                    }
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
                {
                    tracing::error!(error = %e, "test server listener failed");
                }
            }));
        }
        Ok(TestServer {
            base_url,
            file_origin: file_origin_url,
            faults,
            store,
            requests,
            smart,
            shutdown: Some(tx),
            tasks,
        })
    }

    /// The FHIR base URL, e.g. `http://127.0.0.1:PORT/fhir` (no trailing slash).
    pub fn base_url(&self) -> url::Url {
        self.base_url.clone()
    }

    /// Origin of output files (equal to the base origin unless [`FileServing::OtherOrigin`]).
    pub fn file_origin(&self) -> url::Url {
        self.file_origin.clone()
    }

    /// The token endpoint URL (`[base]/auth/token`).
    pub fn token_url(&self) -> url::Url {
        let mut u = self.base_url.clone();
        let p = format!("{}/auth/token", u.path().trim_end_matches('/'));
        u.set_path(&p);
        u
    }

    /// Fault rules; they apply to requests made after they are added.
    pub fn faults(&self) -> FaultHandle {
        self.faults.clone()
    }

    /// The server's resources: upsert and delete to test incremental exports.
    pub fn store(&self) -> StoreHandle {
        self.store.clone()
    }

    /// All requests seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The SMART auth state, when `smart` was configured.
    pub fn smart(&self) -> Option<smart::SmartAuth> {
        self.smart.clone()
    }

    /// Stops listening and waits for the listeners to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        for mut t in self.tasks.drain(..) {
            // Open downloads keep graceful shutdown waiting; do not wait for them for long.
            if tokio::time::timeout(std::time::Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// `/fhir/` -> `/fhir`, `fhir` -> `/fhir`, `/` -> ``.
fn normalize_path(p: &str) -> String {
    let t = p.trim().trim_matches('/');
    if t.is_empty() {
        String::new()
    } else {
        format!("/{t}")
    }
}
