//! What a sync or import is set up with: its work directory, its Delta sink, its encoder.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use delta_sink::{DeltaSink, SinkConfig, StorageOptions};
use fhir_encoder::{Encoder, EncoderOptions};

use crate::config::SyncOptions;

/// Where a sync keeps its lock, state and the files of the export in progress.
#[derive(Clone, Debug)]
pub(super) struct WorkDir {
    pub state_file: PathBuf,
    pub dir: PathBuf,
}

impl WorkDir {
    pub fn for_options(opts: &SyncOptions) -> anyhow::Result<Self> {
        let state_file = opts.state_file_path().ok_or_else(|| {
            anyhow!(
                "delta path {} is an object store URL: give --state-file (a local path) so the \
                 lock, state and in-progress export have a home",
                opts.delta_path
            )
        })?;
        let dir = state_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Self { state_file, dir })
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("fhirsync.lock")
    }

    pub fn export_dir(&self) -> PathBuf {
        self.dir.join("export")
    }

    /// Where the exports of a Group's new members' earlier data go, one folder each.
    pub fn new_members_dir(&self) -> PathBuf {
        self.dir.join("export-new-members")
    }
}

/// The Delta sink at `delta_path`: object store settings from the environment, then
/// `storage_options`; the sink's defaults, deletion vectors as asked.
pub(super) fn sink(
    delta_path: &str,
    storage_options: &BTreeMap<String, String>,
    deletion_vectors: bool,
) -> anyhow::Result<DeltaSink> {
    let mut storage = StorageOptions::from_env();
    for (k, v) in storage_options {
        storage = storage.with(k.clone(), v.clone());
    }
    let config = SinkConfig {
        deletion_vectors,
        ..SinkConfig::default()
    };
    Ok(DeltaSink::new(delta_path, storage)
        .with_context(|| format!("delta path {delta_path}"))?
        .with_config(config))
}

/// The encoder: its defaults, nesting, extensions and the original JSON as asked.
pub(super) fn encoder(max_nesting_level: usize, extensions: bool, keep_json: bool) -> Encoder {
    Encoder::new(EncoderOptions {
        max_nesting_level,
        enable_extensions: extensions,
        keep_json,
        ..EncoderOptions::default()
    })
}
