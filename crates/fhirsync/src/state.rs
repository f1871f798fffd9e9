//! The sync state file and the per-delta-path lock.
//!
//! The tables are the source of truth for the cursor (each commit carries the export's
//! `transactionTime`); the state file is written atomically after every table has committed, in
//! the shape the replaced sync script wrote (`{"last_sync_time": ...}`) plus what cron users and
//! `/health` need.
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid JSON: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open lock file {path}: {source}")]
    LockOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another fhirsync run holds the lock {path} (a sync on the same delta path is in progress); \
         try again when it has finished"
    )]
    Locked { path: PathBuf },
}

/// Contents of the state file. Unknown fields are kept out; missing ones default, so files
/// written by the replaced script (only `last_sync_time`) are read as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncState {
    /// The last fully committed export's `transactionTime` (the next `_since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// When that sync finished (local clock; for health checks only, never as a cursor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<DateTime<Utc>>,
    /// The FHIR endpoint the cursor belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_endpoint: Option<String>,
    /// Identity of the sync (the Delta `txn` app id used in every table commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_id: Option<String>,
    /// Delta table version per resource type after the last sync.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tables: std::collections::BTreeMap<String, u64>,
    /// The last failure, message only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<DateTime<Utc>>,
    /// What syncs found the server cannot do.
    #[serde(default, skip_serializing_if = "ServerLimits::is_empty")]
    pub server_limits: ServerLimits,
}

/// What syncs found the server cannot do, kept so that each finding is told once.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerLimits {
    /// The server's words when it refused `_since`: every sync is then a full refresh with
    /// reconciliation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_refused: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_refused_at: Option<DateTime<Utc>>,
    /// The note on servers that list no deletions was shown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deletions_noted: bool,
}

impl ServerLimits {
    pub fn is_empty(&self) -> bool {
        *self == ServerLimits::default()
    }
}

impl SyncState {
    /// Reads the state file; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Parse {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(StateError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the state atomically: a temporary file in the same directory, fsync, rename.
    pub fn store(&self, path: &Path) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: path.to_owned(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        write_atomically(path, &json).map_err(err)
    }
}

use fhir_bulk::write_file_atomically as write_atomically;
use fhir_bulk::{FileLock, LockError};

/// An exclusive advisory lock held for the lifetime of a sync; released on drop or process death.
#[derive(Debug)]
pub struct SyncLock {
    _lock: FileLock,
}

impl SyncLock {
    /// Takes the lock without waiting; fails with [`StateError::Locked`] if another run holds it.
    pub fn try_acquire(path: &Path) -> Result<Self, StateError> {
        match FileLock::try_acquire(path) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err(LockError::Held { path }) => Err(StateError::Locked { path }),
            Err(LockError::Open { path, source }) => Err(StateError::LockOpen { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_replaced_scripts_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, r#"{"last_sync_time": "2024-01-02T03:04:05.678Z"}"#).unwrap();
        let state = SyncState::load(&path).unwrap();
        assert_eq!(
            state.last_sync_time.as_deref(),
            Some("2024-01-02T03:04:05.678Z")
        );
        assert!(state.tables.is_empty());
    }

    #[test]
    fn missing_file_is_empty_and_store_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/state.json");
        assert_eq!(SyncState::load(&path).unwrap(), SyncState::default());
        let mut state = SyncState {
            last_sync_time: Some("2025-05-05T00:00:00Z".into()),
            ..Default::default()
        };
        state.tables.insert("Patient".into(), 3);
        state.store(&path).unwrap();
        assert_eq!(SyncState::load(&path).unwrap(), state);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn corrupt_state_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "{not json").unwrap();
        let err = SyncState::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("not valid JSON") && err.contains("state.json"),
            "{err}"
        );
    }
}
