//! What is applied to the tables: the input files and how they are applied.
use std::collections::BTreeSet;
use std::path::PathBuf;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::SaveMode;
use crate::files;
use crate::run::SyncEvents;
use crate::views::MaintainedView;

/// A local NDJSON file to apply.
#[derive(Clone, Debug)]
pub(crate) struct InputFile {
    pub path: PathBuf,
    /// Name used in reject records.
    pub label: String,
    /// The type the manifest announced; other types in the file are rejected.
    pub expected_type: Option<String>,
    /// Lines the bulk client set aside while downloading the file, and where it put them.
    pub download_rejects: u64,
    pub download_rejects_path: Option<PathBuf>,
    /// A copy of a server's file (a sync's download) rather than the user's own: when it
    /// cannot be read to its end the run fails and the copy is deleted, so the next run
    /// fetches it again; the cursor never passes lines that were not read.
    pub downloaded: bool,
}

impl InputFile {
    /// A file of any types, labelled by its name.
    pub fn local(path: PathBuf) -> Self {
        Self::of_type(path, None)
    }

    /// A file of `expected_type` (when given), labelled by its name.
    pub fn of_type(path: PathBuf, expected_type: Option<String>) -> Self {
        Self {
            label: files::file_name(&path),
            path,
            expected_type,
            download_rejects: 0,
            download_rejects_path: None,
            downloaded: false,
        }
    }
}

/// How to apply a set of files to the tables.
#[derive(Clone, Debug)]
pub(crate) struct ApplyInput {
    /// The Delta `txn` app id the cursor is committed under.
    pub app_id: String,
    pub mode: SaveMode,
    /// Types to write (others are counted and skipped); `None` takes every type found.
    pub types: Option<BTreeSet<String>>,
    /// Remove rows whose id the export no longer has (full exports only).
    pub reconcile: bool,
    pub max_rejects: Option<u64>,
    pub rejects_dir: PathBuf,
    /// Progress of encoding and commits.
    pub events: SyncEvents,
    /// Stops the run: encoding ends, started commits finish, no other commit starts.
    pub cancel: CancellationToken,
    /// Views kept current, each committed with its resource type's table.
    pub views: Vec<Arc<MaintainedView>>,
}
