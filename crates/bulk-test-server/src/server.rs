//! A running test server: data loaded, listeners bound (one, or two for files on another
//! origin), requests served until shutdown.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::config::{DataSource, FileServing, ServerConfig, ServerError};
use crate::faults::FaultHandle;
use crate::http::{self, Origin, RequestRecord};
use crate::output_store::Outputs;
use crate::smart;
use crate::store::{self, StoreHandle};

/// A running server. Dropping it without [`TestServer::shutdown`] stops it too.
pub struct TestServer {
    base_url: url::Url,
    file_origin: url::Url,
    faults: FaultHandle,
    store: StoreHandle,
    requests: Arc<Mutex<Vec<RequestRecord>>>,
    smart: Option<smart::SmartAuth>,
    state: Arc<http::State>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Loads the data and starts listening.
    pub async fn start(mut config: ServerConfig) -> Result<TestServer, ServerError> {
        let profile = config.profile.clone();
        profile.apply(&mut config);
        let behaviour = profile.behaviour();
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
        let outputs = match (&config.output_store, behaviour.output_in_store) {
            (Some(store), _) => Some(Arc::new(Outputs::open(store)?)),
            (None, true) => {
                return Err(ServerError::Config(format!(
                    "the {profile} profile writes output files to a bucket: configure an output \
                     store (an az://, gs:// or s3:// URL)"
                )));
            }
            (None, false) => None,
        };
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
        let (tx, rx) = tokio::sync::watch::channel(false);
        let token_rng = behaviour.token_failures.map(|f| {
            use rand::SeedableRng;
            Mutex::new(rand::rngs::StdRng::seed_from_u64(f.seed))
        });
        let state = Arc::new(http::State {
            cfg,
            base_origin,
            file_origin,
            store: store.clone(),
            faults: faults.clone(),
            requests: requests.clone(),
            smart: smart.clone(),
            jobs: Mutex::new(Default::default()),
            cancelled: Mutex::new(Default::default()),
            behaviour,
            stopping: rx.clone(),
            token_rng,
            in_flight: Default::default(),
            outputs,
        });

        let mut tasks = Vec::new();
        let mut listeners = vec![(main, Origin::Fhir)];
        if let Some((l, _)) = second {
            listeners.push((l, Origin::Files));
        }
        for (listener, origin) in listeners {
            let st = state.clone();
            let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                let st = st.clone();
                async move { http::dispatch(st, origin, req).await }
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
            state,
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

    /// Moves the server's clock forward, as if `by` had passed: job retention runs out, and
    /// later `transactionTime`s and `meta.lastUpdated`s are that much later.
    pub fn advance_clock(&self, by: std::time::Duration) {
        self.store.inner.clock.advance(by);
    }

    /// Requests the server has received and not yet answered (an answer still streaming its
    /// body counts as answered).
    pub fn requests_in_flight(&self) -> usize {
        self.state
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
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
