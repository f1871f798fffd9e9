//! The export's state on disk, so a crashed or killed run can continue the same export:
//! replaced whole (an [`crate::AtomicFile`]) each time it changes.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomically;
use crate::download::DownloadedFile;
use crate::error::BulkError;
use crate::job::ExportJob;
use crate::manifest::Manifest;

pub const STATE_FILE: &str = "export-state.json";
const STATE_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    pub version: u32,
    pub job: ExportJob,
    /// Known once the server completed the export.
    pub manifest: Option<Manifest>,
    /// Files downloaded completely, by name relative to the output directory.
    pub finished: BTreeMap<String, DownloadedFile>,
    /// All files downloaded and the export closed.
    pub completed: bool,
}

impl JobState {
    pub fn new(job: ExportJob) -> Self {
        Self {
            version: STATE_VERSION,
            job,
            manifest: None,
            finished: BTreeMap::new(),
            completed: false,
        }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Reads the state of `dir`, `None` when there is none.
    pub async fn load(dir: &Path) -> Result<Option<JobState>, BulkError> {
        let path = Self::path(dir);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BulkError::io(&path, e)),
        };
        let state: JobState = serde_json::from_slice(&bytes).map_err(|e| BulkError::State {
            path: path.clone(),
            message: format!("unreadable ({e}); remove it to start a new export"),
        })?;
        if state.version != STATE_VERSION {
            return Err(BulkError::State {
                path,
                message: format!("version {} is not supported", state.version),
            });
        }
        Ok(Some(state))
    }

    pub async fn save(&self, dir: &Path) -> Result<(), BulkError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| BulkError::State {
            path: Self::path(dir),
            message: e.to_string(),
        })?;
        write_atomically(&Self::path(dir), &bytes).await
    }
}
