//! The export's state on disk, so a crashed or killed run can continue the same export:
//! written to a temporary file, synced, then renamed over the old one.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::ExportJob;
use crate::download::DownloadedFile;
use crate::error::BulkError;
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

/// Writes `bytes` to `path` so that readers see the old or the new content, never a mix.
pub async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BulkError> {
    let (bytes, target) = (bytes.to_vec(), path.to_path_buf());
    tokio::task::spawn_blocking(move || write_file_atomically(&target, &bytes))
        .await
        .map_err(|e| BulkError::io(path, std::io::Error::other(e)))?
        .map_err(|e| BulkError::io(path, e))
}

/// Blocking [`write_atomically`]: a temporary file in the same directory (created if
/// missing), fsync, rename, fsync of the directory.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
