//! The export: the request a sync makes, and the run that downloads its files (resuming an
//! interrupted one) while handing each finished file to the applier.
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use fhir_bulk::{
    BulkClient, BulkError, BulkEvent, ClientConfig, ExportOptions, ExportRequest, ExportSummary,
    FileKind, JobState,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::apply::Applier;
use super::input::InputFile;
use crate::config::SyncOptions;

/// The export request of a sync, `_since` the given cursor.
pub(super) fn export_request(opts: &SyncOptions, since: Option<DateTime<Utc>>) -> ExportRequest {
    let mut request = match (&opts.group_id, opts.patients.is_empty()) {
        (Some(g), _) => ExportRequest::group(g.clone()),
        (None, false) => ExportRequest::patient(),
        (None, true) => ExportRequest::system(),
    };
    request.types = opts.resource_types.clone();
    request.since = since.map(|s| s.fixed_offset());
    request.until = opts.until;
    request.until_parameter = opts.until_parameter;
    request.type_filters = opts.type_filters.clone();
    request.elements = opts.elements.clone();
    request.patients = opts.patients.clone();
    request
}

/// Runs the export into `dir`, handing each file to `applier` as soon as it is downloaded
/// (it is encoded while the others still download), then the files an interrupted run had
/// downloaded. Returns the client, for what follows on the server, and the export's summary.
pub(super) async fn export_into(
    applier: &mut Applier,
    mut config: ClientConfig,
    request: &ExportRequest,
    dir: &Path,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
) -> anyhow::Result<(BulkClient, ExportSummary)> {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<InputFile>();
    let files_per_type: Arc<Mutex<Option<BTreeMap<String, usize>>>> = Arc::default();
    let announced = files_per_type.clone();
    let inner = config.events.take();
    config.events = Some(Arc::new(move |event: &BulkEvent| {
        match event {
            BulkEvent::StatusComplete {
                output_files_by_type,
                ..
            } => {
                if let Ok(mut a) = announced.lock() {
                    *a = Some(output_files_by_type.clone());
                }
            }
            BulkEvent::DownloadComplete {
                kind: FileKind::Output,
                path,
                resource_type,
                ..
            } => {
                let file = InputFile {
                    downloaded: true,
                    ..InputFile::of_type(path.clone(), Some(resource_type.clone()))
                };
                let _ = done_tx.send(file);
            }
            _ => {}
        }
        if let Some(h) = &inner {
            h(event);
        }
    }));
    let client = BulkClient::new(config).context("configuring the Bulk Data client")?;
    let mut encoding: HashSet<PathBuf> = HashSet::new();
    let summary = {
        let export = run_export(&client, request, dir, timeout);
        tokio::pin!(export);
        loop {
            tokio::select! {
                r = &mut export => break r?,
                Some(file) = done_rx.recv() => {
                    // The manifest comes before its files.
                    if let Some(counts) = files_per_type.lock().ok().and_then(|mut c| c.take()) {
                        applier.expect_files(&counts)?;
                    }
                    encoding.insert(file.path.clone());
                    applier.add(file).await?;
                }
                _ = cancel.cancelled() => bail!("sync cancelled during the export; the next run resumes it"),
            }
        }
    };
    while let Ok(file) = done_rx.try_recv() {
        encoding.insert(file.path.clone());
        applier.add(file).await?;
    }
    // Files taken over from an interrupted run were not downloaded now: encode them too; the
    // lines the client set aside are recorded for every file once its counts are known.
    for f in summary.outputs() {
        let file = InputFile {
            path: f.path.clone(),
            label: f.name.clone(),
            expected_type: Some(f.resource_type.clone()),
            download_rejects: f.rejected_lines,
            download_rejects_path: f.rejects_path.clone(),
            downloaded: true,
        };
        if encoding.contains(&f.path) {
            if f.rejected_lines > 0 {
                applier.add_download_rejects(&file)?;
            }
        } else {
            applier.add(file).await?;
        }
    }
    Ok((client, summary))
}

/// The export into `dir`, resuming the one recorded there when it is the same request. A job
/// that can no longer deliver fails the run; [`discard`] then clears it for a new export with
/// a fresh set of writers, so that nothing of the dead job reaches the tables.
async fn run_export(
    client: &BulkClient,
    request: &ExportRequest,
    dir: &Path,
    timeout: Option<Duration>,
) -> anyhow::Result<ExportSummary> {
    let previous = JobState::load(dir).await.ok().flatten();
    let resume = previous.as_ref().is_some_and(|s| &s.job.request == request);
    if let Some(old) = previous.as_ref().filter(|_| !resume) {
        tracing::info!("discarding an interrupted export made with other parameters");
        cancel_quietly(client, &old.job).await;
    }
    // The job is deleted on the server only after the tables committed.
    let options = ExportOptions {
        resume,
        delete_job_on_success: false,
        delete_job_on_failure: false,
    };
    let run = async {
        client
            .export_to_dir(request, dir, &options)
            .await
            .map_err(|e| match e {
                e if resume && e.needs_new_export() => anyhow::Error::new(ResumedJobDead(e)),
                e => anyhow::Error::new(e),
            })
    };
    let summary = match timeout {
        Some(t) => tokio::time::timeout(t, run).await.map_err(|_| {
            anyhow!(
                "the export did not finish within {}",
                humantime::format_duration(t)
            )
        })?,
        None => run.await,
    }
    .context("bulk export")?;
    Ok(summary)
}

/// An interrupted export taken up again whose job can no longer deliver (the server forgot or
/// failed it, or dropped its files): only a new export brings the data.
#[derive(Debug, thiserror::Error)]
#[error("the interrupted export cannot be resumed: {0}")]
pub(super) struct ResumedJobDead(#[source] pub BulkError);

/// Removes the exports recorded in `dir` and in its immediate subfolders (a Group's new
/// members' exports), then deletes their jobs on the server: ours go first, so that a run
/// killed in between starts new exports instead of resuming jobs the server has dropped.
pub(super) async fn discard(config: &ClientConfig, dir: &Path) {
    let mut jobs = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for d in &dirs {
        if let Ok(Some(state)) = JobState::load(d).await {
            jobs.push(state.job);
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the downloaded files");
    }
    if jobs.is_empty() {
        return;
    }
    match BulkClient::new(config.clone()) {
        Ok(client) => {
            for job in &jobs {
                cancel_quietly(&client, job).await;
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot delete export jobs on the server"),
    }
}

async fn cancel_quietly(client: &BulkClient, job: &fhir_bulk::ExportJob) {
    if let Err(e) = client.cancel(job).await {
        tracing::debug!(error = %e, status_url = %job.status_url, "could not delete an export job on the server");
    }
}
