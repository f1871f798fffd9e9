//! The whole export into a directory: kick-off (or resume), wait, download, record, close.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::atomic::write_atomically;
use crate::client::BulkClient;
use crate::download::{DownloadOptions, DownloadedFile, plan};
use crate::error::{BulkError, FileFailure};
use crate::events::{BulkEvent, FileKind};
use crate::job::ExportJob;
use crate::lock::{FileLock, LockError};
use crate::manifest::Manifest;
use crate::request::ExportRequest;
use crate::state::JobState;

pub const MANIFEST_FILE: &str = "manifest.json";

/// The lock an export holds in its directory while it runs, so that a second export (a
/// resume started while the first still runs, say) refuses instead of writing the same files.
pub const EXPORT_LOCK_FILE: &str = "export.lock";

#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Continue the export recorded in the directory, if any.
    pub resume: bool,
    /// `DELETE` the job once every file is downloaded, so the server can free its files.
    pub delete_job_on_success: bool,
    /// `DELETE` the job when the export fails for good (not when the run is aborted).
    pub delete_job_on_failure: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            resume: false,
            delete_job_on_success: true,
            delete_job_on_failure: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ExportSummary {
    pub job: ExportJob,
    pub manifest: Manifest,
    pub dir: PathBuf,
    /// Every file, in manifest order.
    pub files: Vec<DownloadedFile>,
    pub resources: u64,
    pub bytes: u64,
    pub rejected_lines: u64,
    /// Files taken over from an earlier run.
    pub resumed_files: usize,
    pub duration: Duration,
}

impl ExportSummary {
    pub fn outputs(&self) -> impl Iterator<Item = &DownloadedFile> {
        self.files.iter().filter(|f| f.kind == FileKind::Output)
    }

    pub fn deletions(&self) -> impl Iterator<Item = &crate::outcome::Deletion> {
        self.files.iter().flat_map(|f| f.deletions.iter())
    }
}

impl BulkClient {
    /// Runs an export into `dir`: NDJSON files, `manifest.json`, `deleted/`, `error/`,
    /// `rejects/`, and `export-state.json` (what a resumed run needs). The directory is locked
    /// ([`EXPORT_LOCK_FILE`]) while it runs: with another export running into it, this one
    /// fails at once ([`BulkError::DirLocked`]) and touches nothing.
    pub async fn export_to_dir(
        &self,
        request: &ExportRequest,
        dir: &Path,
        options: &ExportOptions,
    ) -> Result<ExportSummary, BulkError> {
        let started = Instant::now();
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| BulkError::io(dir, e))?;
        let lock = dir.join(EXPORT_LOCK_FILE);
        let _lock = FileLock::try_acquire(&lock).map_err(|e| match e {
            LockError::Held { .. } => BulkError::DirLocked {
                dir: dir.to_path_buf(),
                lock: lock.clone(),
            },
            LockError::Open { path, source } => BulkError::io(path, source),
        })?;
        let previous = JobState::load(dir).await?;
        let mut state = match previous {
            Some(state) if options.resume => {
                if &state.job.request != request {
                    return Err(BulkError::State {
                        path: JobState::path(dir),
                        message: "it records a different export request; use another directory or run without resume".into(),
                    });
                }
                tracing::info!(status_url = %state.job.status_url, finished = state.finished.len(), "resuming export");
                state
            }
            previous => {
                if let Some(old) = previous {
                    remove_previous_files(dir, &old).await;
                }
                let job = self.kick_off(request).await?;
                let state = JobState::new(job);
                state.save(dir).await?;
                state
            }
        };
        let result = self.finish_export(&mut state, dir).await;
        match result {
            Ok((files, manifest)) => {
                state.completed = true;
                state.save(dir).await?;
                if options.delete_job_on_success {
                    self.cancel_quietly(&state.job).await;
                }
                let summary = summarize(state.job.clone(), manifest, dir, files, started.elapsed());
                self.emit(BulkEvent::ExportComplete {
                    files: summary.files.len(),
                    resources: summary.resources,
                    bytes: summary.bytes,
                    rejected: summary.rejected_lines,
                    duration: summary.duration,
                });
                Ok(summary)
            }
            Err(e) => {
                if options.delete_job_on_failure && !matches!(e, BulkError::JobGone { .. }) {
                    self.cancel_quietly(&state.job).await;
                }
                Err(e)
            }
        }
    }

    async fn finish_export(
        &self,
        state: &mut JobState,
        dir: &Path,
    ) -> Result<(Vec<DownloadedFile>, Manifest), BulkError> {
        let manifest = if state.completed
            && let Some(m) = &state.manifest
        {
            m.clone()
        } else {
            let fresh = self.wait_for_manifest(&state.job).await?;
            // A resumed run keeps finished files only if the server still describes the same export.
            if state
                .manifest
                .as_ref()
                .is_some_and(|old| plan(old) != plan(&fresh))
            {
                tracing::warn!(
                    "the server's manifest changed since the last run; downloading every file again"
                );
                state.finished.clear();
            }
            state.manifest = Some(fresh.clone());
            state.save(dir).await?;
            fresh
        };
        let body = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| BulkError::io(dir.join(MANIFEST_FILE), e.into()))?;
        write_atomically(&dir.join(MANIFEST_FILE), &body).await?;

        let planned = plan(&manifest);
        let mut downloads = self.download(
            &manifest,
            dir,
            DownloadOptions {
                finished: state.finished.clone(),
            },
        );
        let mut failures: Vec<FileFailure> = Vec::new();
        let mut done: HashMap<String, DownloadedFile> = HashMap::new();
        while let Some(item) = downloads.next().await {
            match item {
                Ok(file) => {
                    if !file.resumed {
                        state.finished.insert(file.name.clone(), file.clone());
                        state.save(dir).await?;
                    }
                    done.insert(file.name.clone(), file);
                }
                Err(failure) => failures.push(failure),
            }
        }
        if !failures.is_empty() {
            return Err(BulkError::DownloadsFailed {
                total: planned.len(),
                failures,
            });
        }
        let files = planned
            .iter()
            .filter_map(|p| done.remove(&p.name))
            .collect();
        Ok((files, manifest))
    }

    async fn cancel_quietly(&self, job: &ExportJob) {
        if let Err(e) = self.cancel(job).await {
            self.emit(BulkEvent::Warning {
                url: Some(job.status_url.clone()),
                message: format!("could not delete the export job: {e}"),
            });
        }
    }
}

/// A new export into a directory replaces the files an earlier one left there.
async fn remove_previous_files(dir: &Path, old: &JobState) {
    let Some(manifest) = &old.manifest else {
        return;
    };
    for f in plan(manifest) {
        for path in [
            dir.join(&f.name),
            dir.join(format!("{}.part", f.name)),
            dir.join("rejects").join(&f.name),
        ] {
            let _ = tokio::fs::remove_file(path).await;
        }
    }
}

fn summarize(
    job: ExportJob,
    manifest: Manifest,
    dir: &Path,
    files: Vec<DownloadedFile>,
    duration: Duration,
) -> ExportSummary {
    let outputs = files.iter().filter(|f| f.kind == FileKind::Output);
    let resources = outputs.clone().map(|f| f.lines).sum();
    let bytes = outputs.map(|f| f.bytes).sum();
    let rejected_lines = files.iter().map(|f| f.rejected_lines).sum();
    let resumed_files = files.iter().filter(|f| f.resumed).count();
    ExportSummary {
        job,
        manifest,
        dir: dir.to_path_buf(),
        files,
        resources,
        bytes,
        rejected_lines,
        resumed_files,
        duration,
    }
}
