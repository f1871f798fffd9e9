//! What every handler shares: the configuration, the store, fault rules, SMART auth, the
//! jobs, and the log of requests; and the URLs the server hands out.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::config::ServerConfig;
use crate::export::Job;
use crate::faults::FaultHandle;
use crate::output_store::Outputs;
use crate::profiles::{Behaviour, FilePath};
use crate::smart::SmartAuth;
use crate::store::StoreHandle;

/// Which listener a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The FHIR server's listener (kick-off, status, token, and files when same-origin).
    Fhir,
    /// The second listener used by [`crate::FileServing::OtherOrigin`].
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

pub(crate) struct State {
    pub cfg: ServerConfig,
    pub base_origin: String,
    pub file_origin: String,
    pub store: StoreHandle,
    pub faults: FaultHandle,
    pub requests: Arc<Mutex<Vec<RequestRecord>>>,
    pub smart: Option<SmartAuth>,
    pub jobs: Mutex<HashMap<String, Arc<Job>>>,
    /// Jobs cancelled with `DELETE`, for profiles that answer them differently from unknown ones.
    pub cancelled: Mutex<HashSet<String>>,
    pub behaviour: Behaviour,
    /// Becomes true when the server stops.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Draws the token endpoint's failures (see [`Behaviour::token_failures`]).
    pub token_rng: Option<Mutex<rand::rngs::StdRng>>,
    /// Requests received and not yet answered.
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// The bucket output files are written to, when the profile or configuration says so.
    pub outputs: Option<Arc<Outputs>>,
}

impl State {
    pub fn base_url(&self) -> String {
        format!("{}{}", self.base_origin, self.cfg.base_path)
    }
    pub fn token_url(&self) -> String {
        format!("{}/auth/token", self.base_url())
    }
    pub fn status_url(&self, job: &str) -> String {
        self.behaviour.status_path.url(&self.base_url(), job)
    }
    pub fn file_url(&self, job: &str, n: usize, resource_type: &str) -> String {
        if self.behaviour.file_path == FilePath::ExportFileRequest {
            format!(
                "{}/$exportfilerequest/?_id={job}&filename=content{resource_type}-{n}.ndjson",
                self.base_url()
            )
        } else if self.cfg.redirect_files {
            format!(
                "{}/redirect{}/{job}/{n}.ndjson",
                self.base_origin, self.cfg.file_path
            )
        } else {
            format!(
                "{}{}/{job}/{n}.ndjson",
                self.file_origin, self.cfg.file_path
            )
        }
    }
    pub fn real_file_url(&self, job: &str, n: &str) -> String {
        format!("{}{}/{job}/{n}", self.file_origin, self.cfg.file_path)
    }
    /// `Retry-After` (seconds) on 202s and 429s.
    pub fn retry_after(&self) -> u64 {
        self.behaviour
            .retry_after_secs
            .unwrap_or(self.cfg.retry_after_secs)
    }
    pub fn job(&self, id: &str) -> Option<Arc<Job>> {
        self.purge_expired();
        self.jobs.lock().ok()?.get(id).cloned()
    }
    /// Whether the token endpoint fails this request (see [`Behaviour::token_failures`]).
    pub fn token_fails(&self) -> bool {
        use rand::Rng;
        match (&self.token_rng, self.behaviour.token_failures) {
            (Some(rng), Some(f)) if f.one_in > 0 => {
                let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
                rng.random_ratio(1, f.one_in)
            }
            _ => false,
        }
    }
    /// Drops the jobs whose retention ran out (see [`Behaviour::retention`]).
    pub fn purge_expired(&self) {
        let Some(retention) = self.behaviour.retention else {
            return;
        };
        let Ok(retention) = chrono::TimeDelta::from_std(retention) else {
            return;
        };
        let now = self.store.inner.clock.now();
        let expired: Vec<String> = match self.jobs.lock() {
            Ok(jobs) => jobs
                .values()
                .filter(|j| j.completed_at.get().is_some_and(|t| *t + retention <= now))
                .map(|j| j.id.clone())
                .collect(),
            Err(_) => return,
        };
        for id in expired {
            self.expire_job(&id);
        }
    }
    /// Drops a job as a server does whose files expired: its status and files are gone.
    pub fn expire_job(&self, id: &str) {
        if let Ok(mut jobs) = self.jobs.lock()
            && let Some(job) = jobs.remove(id)
        {
            job.cancelled
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
