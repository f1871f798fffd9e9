//! What every handler shares: the configuration, the store, fault rules, SMART auth, the
//! jobs, and the log of requests; and the URLs the server hands out.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::ServerConfig;
use crate::export::Job;
use crate::faults::FaultHandle;
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
}

impl State {
    pub fn base_url(&self) -> String {
        format!("{}{}", self.base_origin, self.cfg.base_path)
    }
    pub fn token_url(&self) -> String {
        format!("{}/auth/token", self.base_url())
    }
    pub fn status_url(&self, job: &str) -> String {
        format!("{}/bulkstatus/{job}", self.base_url())
    }
    pub fn file_url(&self, job: &str, n: usize) -> String {
        if self.cfg.redirect_files {
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
    pub fn job(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().ok()?.get(id).cloned()
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
