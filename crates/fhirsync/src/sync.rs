//! One sync: a Bulk Data export (or a local NDJSON directory), encoded and committed into one
//! Delta table per resource type, with the export's `transactionTime` committed in the same
//! Delta commit as the data.
//!
//! Crash safety rests on three facts:
//! - every table commit carries a Delta `txn` (app id = the sync's identity, version = the
//!   export's `transactionTime` in epoch ms), so re-applying an export to a table that already
//!   has it is skipped;
//! - the next `_since` is the oldest cursor committed across the requested tables (the state
//!   file is written only after all of them committed), so the cursor is never ahead of data;
//! - the export's job (status URL, manifest, finished files) is persisted by the bulk client in
//!   the work directory, so an interrupted export is resumed while the server still has it.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use arrow::array::RecordBatch;
use chrono::{DateTime, SecondsFormat, Utc};
use delta_sink::{
    CommitOptions, Cursor, DeltaSink, IdSet, ReconcileScope, ResourceTable, SinkConfig,
    StorageOptions, TableWriter, WriteOutcome, WriteStatus,
};
use fhir_bulk::{
    BulkClient, BulkError, ClientConfig, ExportOptions, ExportRequest, ExportSummary, JobState,
};
use fhir_encoder::{Encoder, EncoderOptions};
use tokio_util::sync::CancellationToken;

use crate::compartment;
use crate::config::{SaveMode, SyncOptions};
use crate::daemon::{RunKind, SyncOutcome, TypeCounts};
use crate::encode::{self, EncodeReject};
use crate::state::{SyncLock, SyncState};

/// What one table got from one sync.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TableReport {
    pub status: Option<WriteStatus>,
    pub version: Option<u64>,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub reconciled: u64,
    pub rejected: u64,
    pub resources: u64,
}

/// The whole result of a sync or import, for summaries and the daemon.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncReport {
    pub sync_id: String,
    pub transaction_time: Option<String>,
    /// `_since` used for the export (`None`: a full export).
    pub since: Option<String>,
    pub tables: BTreeMap<String, TableReport>,
    pub bytes_downloaded: u64,
    pub resources: u64,
    pub rejects: u64,
    pub rejects_file: Option<PathBuf>,
    pub resumed_files: usize,
    pub duration: Duration,
    /// HTTP retries by reason: `429`, `5xx`, `network`, `401`.
    pub http_retries: BTreeMap<String, u64>,
    pub token_refreshes: u64,
}

impl SyncReport {
    pub fn to_outcome(&self) -> SyncOutcome {
        SyncOutcome {
            transaction_time: self.transaction_time.clone(),
            per_type: self
                .tables
                .iter()
                .map(|(t, r)| {
                    let counts = TypeCounts {
                        inserted: r.inserted,
                        updated: r.updated,
                        unchanged: r.unchanged,
                        deleted: r.deleted + r.reconciled,
                        rejected: r.rejected,
                    };
                    (t.clone(), counts)
                })
                .collect(),
            bytes_downloaded: self.bytes_downloaded,
            duration: self.duration,
            http_retries: self.http_retries.clone(),
            token_refreshes: self.token_refreshes,
        }
    }
}

/// Where a sync keeps its lock, state and the files of the export in progress.
#[derive(Clone, Debug)]
pub struct WorkDir {
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

    pub fn rejects_dir(&self) -> PathBuf {
        self.dir.join("rejects")
    }
}

/// The sync's identity: the Delta `txn` app id under which cursors are committed. Stable for a
/// given endpoint and group, so every run of the same sync recognises its own commits.
pub fn sync_identity(endpoint: &url::Url, group_id: Option<&str>) -> String {
    let base = endpoint.as_str().trim_end_matches('/');
    match group_id {
        Some(g) => format!("fhirsync:{base}#Group/{g}"),
        None => format!("fhirsync:{base}"),
    }
}

pub fn sink_for(opts: &SyncOptions) -> anyhow::Result<DeltaSink> {
    let mut storage = StorageOptions::from_env();
    for (k, v) in &opts.storage_options {
        storage = storage.with(k.clone(), v.clone());
    }
    Ok(DeltaSink::new(&opts.delta_path, storage)
        .with_context(|| format!("delta path {}", opts.delta_path))?
        .with_config(sink_config(opts.deletion_vectors)))
}

/// The sink's settings: its defaults, deletion vectors as asked.
pub fn sink_config(deletion_vectors: bool) -> SinkConfig {
    SinkConfig {
        deletion_vectors,
        ..SinkConfig::default()
    }
}

pub fn encoder_for(opts: &SyncOptions) -> Encoder {
    Encoder::new(EncoderOptions {
        max_nesting_level: opts.max_nesting_level,
        enable_extensions: opts.extensions,
        ..EncoderOptions::default()
    })
}

/// The cursor the next incremental export starts from: the oldest `transactionTime` committed
/// under `app_id` across the requested tables; the state file's (e.g. written by the replaced
/// script) when no table has one yet; `None` (a full export) when a requested table has none.
pub async fn resume_cursor(
    sink: &DeltaSink,
    app_id: &str,
    types: &[String],
    state: &SyncState,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let mut oldest: Option<DateTime<Utc>> = None;
    let mut missing = Vec::new();
    for t in types {
        let table = sink
            .table(t)
            .await
            .with_context(|| format!("opening the {t} table"))?;
        let committed = if table.exists() {
            table_cursor(&table, app_id).await?
        } else {
            None
        };
        match committed {
            Some(tt) => oldest = Some(oldest.map_or(tt, |o| o.min(tt))),
            None => missing.push(t.clone()),
        }
    }
    if missing.is_empty() {
        return Ok(oldest);
    }
    if oldest.is_none()
        && let Some(last) = &state.last_sync_time
    {
        let tt = DateTime::parse_from_rfc3339(last).with_context(|| {
            format!("state file last_sync_time {last:?} is not an RFC 3339 instant")
        })?;
        tracing::info!(since = %last, "no table carries a cursor yet: continuing from the state file");
        return Ok(Some(tt.with_timezone(&Utc)));
    }
    if oldest.is_some() {
        tracing::info!(types = ?missing, "tables without a committed cursor: running a full export");
    }
    Ok(None)
}

async fn table_cursor(
    table: &ResourceTable,
    app_id: &str,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let Some(version) = table.committed_version(app_id).await? else {
        return Ok(None);
    };
    // The txn version is the transactionTime in epoch ms; the metadata has the exact instant.
    if let Some(meta) = table.last_sync_metadata(50).await?
        && meta.app_id.as_deref() == Some(app_id)
        && meta.cursor_version == Some(version)
        && let Some(tt) = meta.transaction_time
    {
        return Ok(Some(tt));
    }
    Ok(DateTime::<Utc>::from_timestamp_millis(version))
}

/// Runs one sync as configured: lock, export (resuming an interrupted one), encode, commit,
/// state file. Returns when every table has committed, or with the first error.
pub async fn run_sync(
    opts: &SyncOptions,
    kind: RunKind,
    client: SyncClient,
    cancel: CancellationToken,
) -> anyhow::Result<SyncReport> {
    let started = Instant::now();
    let SyncClient {
        config: mut client_config,
        tokens,
    } = client;
    let retries: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    client_config.events = Some(count_retries(client_config.events.take(), retries.clone()));
    let work = WorkDir::for_options(opts)?;
    let _lock = SyncLock::try_acquire(&work.lock_path())?;
    let mut state = SyncState::load(&work.state_file)?;
    let mut result = sync_locked(opts, kind, client_config, cancel, &work, &state, started).await;
    if let Ok(report) = result.as_mut() {
        report.http_retries = retries.lock().map(|r| r.clone()).unwrap_or_default();
        report.token_refreshes = tokens.as_ref().map_or(0, |t| t.token_refreshes());
    }
    match &result {
        Ok(report) => {
            state.last_sync_time = report.transaction_time.clone();
            state.last_success_at = Some(Utc::now());
            state.fhir_endpoint = Some(opts.fhir_endpoint.to_string());
            state.sync_id = Some(report.sync_id.clone());
            state.tables = report
                .tables
                .iter()
                .filter_map(|(t, r)| r.version.map(|v| (t.clone(), v)))
                .collect();
            state.last_error = None;
            state.last_error_at = None;
        }
        Err(e) => {
            state.last_error = Some(format!("{e:#}"));
            state.last_error_at = Some(Utc::now());
        }
    }
    if let Err(e) = state.store(&work.state_file) {
        // The tables carry the cursor; a lost state write costs nothing but this warning.
        tracing::warn!(error = %e, "could not write the state file");
        if result.is_ok() {
            return Err(e.into());
        }
    }
    result
}

async fn sync_locked(
    opts: &SyncOptions,
    kind: RunKind,
    client_config: ClientConfig,
    cancel: CancellationToken,
    work: &WorkDir,
    state: &SyncState,
    started: Instant,
) -> anyhow::Result<SyncReport> {
    let sink = sink_for(opts)?;
    let app_id = sync_identity(&opts.fhir_endpoint, opts.group_id.as_deref());
    let full = kind == RunKind::FullRefresh || opts.full_refresh;
    let since = match (opts.since, full) {
        (Some(s), _) => Some(s.with_timezone(&Utc)),
        (None, true) => None,
        (None, false) => resume_cursor(&sink, &app_id, &opts.resource_types, state).await?,
    };

    let mut request = match (&opts.group_id, opts.patients.is_empty()) {
        (Some(g), _) => ExportRequest::group(g.clone()),
        (None, false) => ExportRequest::patient(),
        (None, true) => ExportRequest::system(),
    };
    request.types = opts.resource_types.clone();
    request.since = since.map(|s| s.fixed_offset());
    request.until = opts.until;
    request.type_filters = opts.type_filters.clone();
    request.elements = opts.elements.clone();
    request.patients = opts.patients.clone();

    let reconcile = full
        && opts.save_mode == SaveMode::Merge
        && opts.type_filters.is_empty()
        && (opts.group_id.is_none() || opts.reconcile)
        && opts.patients.is_empty();
    let apply = ApplyInput {
        app_id: app_id.clone(),
        mode: opts.save_mode,
        types: Some(opts.resource_types.iter().cloned().collect()),
        reconcile,
        max_rejects: opts.max_rejects,
        rejects_dir: rejects_dir(opts, work),
    };
    let mut applier = Applier::new(&sink, encoder_for(opts), apply).await?;
    applier.remove_inputs_once_encoded();

    // Files are encoded as they finish downloading, while the others still download.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<InputFile>();
    let mut client_config = client_config;
    let inner = client_config.events.take();
    let files_per_type: Arc<Mutex<Option<BTreeMap<String, usize>>>> = Arc::default();
    let announced = files_per_type.clone();
    client_config.events = Some(Arc::new(move |event: &fhir_bulk::BulkEvent| {
        if let fhir_bulk::BulkEvent::StatusComplete {
            output_files_by_type,
            ..
        } = event
            && let Ok(mut a) = announced.lock()
        {
            *a = Some(output_files_by_type.clone());
        }
        if let fhir_bulk::BulkEvent::DownloadComplete {
            kind: fhir_bulk::FileKind::Output,
            path,
            resource_type,
            ..
        } = event
        {
            let _ = done_tx.send(InputFile {
                path: path.clone(),
                label: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                expected_type: Some(resource_type.clone()),
                download_rejects: 0,
                download_rejects_path: None,
            });
        }
        if let Some(h) = &inner {
            h(event);
        }
    }));
    let export_dir = work.export_dir();
    let client = BulkClient::new(client_config).context("configuring the Bulk Data client")?;
    let mut encoding: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let export = run_export(&client, &request, &export_dir, opts.timeout);
    tokio::pin!(export);
    let summary = loop {
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
        };
        if encoding.contains(&f.path) {
            if f.rejected_lines > 0 {
                applier.add_download_rejects(&file)?;
            }
        } else {
            applier.add(file).await?;
        }
    }
    if reconcile && let Some(group_id) = &opts.group_id {
        let members = group_members(&client, group_id, &applier).await?;
        applier.reconcile_within_group(members);
    }
    let transaction_time = summary.manifest.transaction_time.with_timezone(&Utc);
    let deletions: Vec<(String, String)> = summary
        .deletions()
        .map(|d| (d.resource_type.clone(), d.id.clone()))
        .collect();
    let mut report = tokio::select! {
        r = applier.finish(deletions, transaction_time) => r?,
        _ = cancel.cancelled() => bail!("sync cancelled while writing tables; the next run finishes it"),
    };
    report.since = since.map(|s| s.to_rfc3339_opts(SecondsFormat::Millis, true));
    report.bytes_downloaded = summary.bytes;
    report.resumed_files = summary.resumed_files;
    report.duration = started.elapsed();

    // Every table has the data: the server may now drop the job and we our copy of the files.
    if let Err(e) = client.cancel(&summary.job).await {
        tracing::debug!(error = %e, "could not delete the finished export job on the server");
    }
    if let Err(e) = std::fs::remove_dir_all(&export_dir) {
        tracing::warn!(dir = %export_dir.display(), error = %e, "could not remove the downloaded files");
    }
    Ok(report)
}

fn rejects_dir(opts: &SyncOptions, work: &WorkDir) -> PathBuf {
    if opts.is_remote() {
        work.rejects_dir()
    } else {
        Path::new(
            opts.delta_path
                .strip_prefix("file://")
                .unwrap_or(&opts.delta_path),
        )
        .join("_rejects")
    }
}

/// Wraps the client's event handler so retries are counted by reason (for `/metrics`).
fn count_retries(
    inner: Option<fhir_bulk::EventHandler>,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
) -> fhir_bulk::EventHandler {
    Arc::new(move |event: &fhir_bulk::BulkEvent| {
        if let fhir_bulk::BulkEvent::Retry { reason, .. } = event {
            let key = match reason {
                fhir_bulk::RetryReason::RateLimited => "429",
                fhir_bulk::RetryReason::ServerError(_) => "5xx",
                fhir_bulk::RetryReason::Network(_) => "network",
                fhir_bulk::RetryReason::Unauthorized => "401",
            };
            if let Ok(mut c) = counts.lock() {
                *c.entry(key.to_string()).or_default() += 1;
            }
        }
        if let Some(h) = &inner {
            h(event);
        }
    })
}

/// The export into `dir`, resuming the one recorded there when it is the same request; when the
/// server no longer has that job, a new export is started.
async fn run_export(
    client: &BulkClient,
    request: &ExportRequest,
    dir: &Path,
    timeout: Option<Duration>,
) -> anyhow::Result<ExportSummary> {
    let previous = JobState::load(dir).await.ok().flatten();
    let resume = previous.as_ref().is_some_and(|s| &s.job.request == request);
    if previous.is_some() && !resume {
        tracing::info!("discarding an interrupted export made with other parameters");
    }
    // The job is deleted on the server only after the tables committed (see sync_locked).
    let mut options = ExportOptions {
        resume,
        delete_job_on_success: false,
        delete_job_on_failure: false,
    };
    let run = async {
        match client.export_to_dir(request, dir, &options).await {
            Err(BulkError::JobGone { url, status }) if options.resume => {
                tracing::warn!(%url, status, "the server no longer has the interrupted export: starting a new one");
                options.resume = false;
                client.export_to_dir(request, dir, &options).await
            }
            other => other,
        }
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

/// A local NDJSON file to apply.
#[derive(Clone, Debug)]
pub struct InputFile {
    pub path: PathBuf,
    /// Name used in reject records.
    pub label: String,
    /// The type the manifest announced; other types in the file are rejected.
    pub expected_type: Option<String>,
    pub download_rejects: u64,
    pub download_rejects_path: Option<PathBuf>,
}

/// How to apply a set of files to the tables.
#[derive(Clone, Debug)]
pub struct ApplyInput {
    pub app_id: String,
    pub mode: SaveMode,
    /// Types to write (others are counted and skipped); `None` takes every type found.
    pub types: Option<BTreeSet<String>>,
    /// Remove rows whose id the export no longer has (full exports only).
    pub reconcile: bool,
    pub max_rejects: Option<u64>,
    pub rejects_dir: PathBuf,
}

/// One resource type's table while an export is being applied.
struct TypeSlot {
    table: Option<ResourceTable>,
    schema: arrow::datatypes::SchemaRef,
    /// Writers not in use. An encoding thread takes one for each batch; when another thread
    /// holds the type's writer, it may open an extra one (see [`Shared::push`]) so that
    /// neither waits for the other's Parquet encoding. The commit joins them all.
    idle: Vec<TableWriter>,
    /// Writers in use or idle.
    writers: usize,
    /// Extra writers whose file closed: only their list of files remains.
    retired: Vec<TableWriter>,
    exported_ids: Option<IdSet>,
    resources: u64,
    rejected: u64,
}

/// A type's writers and counters, and a signal for threads waiting for a writer.
struct Slot {
    state: Mutex<TypeSlot>,
    returned: Condvar,
}

impl Slot {
    fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, TypeSlot>> {
        self.state.lock()
    }
}

struct Shared {
    sink: DeltaSink,
    encoder: Encoder,
    input: ApplyInput,
    runtime: tokio::runtime::Handle,
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
    rejects: Mutex<RejectLog>,
    skipped_types: Mutex<BTreeMap<String, u64>>,
    /// Extra writers open now, over all types, and how many may be: each open writer holds
    /// a row group of buffered rows, so only as many as there are threads to fill them.
    extra_writers: AtomicUsize,
    max_extra_writers: usize,
    /// Files of each type still to encode, when the manifest said how many there are: once
    /// a type's last file is encoded its open data files are closed, so the Parquet writers'
    /// buffers of types already done do not stay in memory until the commit.
    files_left: Mutex<HashMap<String, usize>>,
}

impl Shared {
    /// The slot of `resource_type`, opening its table on first use (from a blocking thread).
    fn slot(&self, resource_type: &str) -> anyhow::Result<Option<Arc<Slot>>> {
        if let Some(types) = &self.input.types
            && !types.contains(resource_type)
        {
            return Ok(None);
        }
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| anyhow!("a writer thread panicked"))?;
        if let Some(slot) = slots.get(resource_type) {
            return Ok(Some(slot.clone()));
        }
        let schema = self
            .encoder
            .schema(resource_type)
            .with_context(|| format!("resource type {resource_type}"))?;
        let table = self
            .runtime
            .block_on(self.sink.table(resource_type))
            .with_context(|| format!("opening the {resource_type} table"))?;
        let writer = table.writer(schema.clone());
        let slot = Arc::new(Slot {
            state: Mutex::new(TypeSlot {
                table: Some(table),
                schema,
                idle: vec![writer],
                writers: 1,
                retired: Vec::new(),
                exported_ids: self.input.reconcile.then(IdSet::new),
                resources: 0,
                rejected: 0,
            }),
            returned: Condvar::new(),
        });
        slots.insert(resource_type.to_string(), slot.clone());
        Ok(Some(slot))
    }

    fn push(&self, resource_type: &str, batch: &RecordBatch) -> anyhow::Result<()> {
        let Some(slot) = self.slot(resource_type)? else {
            *self
                .skipped_types
                .lock()
                .map_err(|_| anyhow!("poisoned"))?
                .entry(resource_type.to_string())
                .or_default() += batch.num_rows() as u64;
            return Ok(());
        };
        let mut writer = {
            let mut s = slot
                .lock()
                .map_err(|_| anyhow!("a writer thread panicked"))?;
            s.resources += batch.num_rows() as u64;
            if let Some(ids) = s.exported_ids.as_mut()
                && let Some(col) = batch.column_by_name("id")
            {
                ids.extend_from_array(col.as_ref());
            }
            loop {
                if let Some(w) = s.idle.pop() {
                    break w;
                }
                let table = s
                    .table
                    .as_ref()
                    .ok_or_else(|| anyhow!("{resource_type} table already committed"))?;
                if self.take_extra_writer() {
                    let w = table.writer(s.schema.clone());
                    s.writers += 1;
                    break w;
                }
                s = slot
                    .returned
                    .wait(s)
                    .map_err(|_| anyhow!("a writer thread panicked"))?;
            }
        };
        // Called from an encoding thread (blocking pool): the write's uploads run on the runtime.
        let pushed = self.runtime.block_on(writer.push(batch));
        {
            let mut s = slot
                .lock()
                .map_err(|_| anyhow!("a writer thread panicked"))?;
            self.put_back(&mut s, writer);
        }
        slot.returned.notify_all();
        pushed.with_context(|| format!("writing {resource_type} rows"))
    }

    /// Counts one encoded file of `resource_type`; after its last one, closes the type's
    /// data files (no thread uses its writers any more).
    fn file_done(&self, resource_type: &str) -> anyhow::Result<()> {
        {
            let mut left = self.files_left.lock().map_err(|_| anyhow!("poisoned"))?;
            match left.get_mut(resource_type) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    return Ok(());
                }
                Some(_) => {
                    left.remove(resource_type);
                }
                None => return Ok(()),
            }
        }
        let Some(slot) = self.slot(resource_type)? else {
            return Ok(());
        };
        let mut s = slot
            .lock()
            .map_err(|_| anyhow!("a writer thread panicked"))?;
        for mut w in std::mem::take(&mut s.idle) {
            self.runtime
                .block_on(w.close_file())
                .with_context(|| format!("writing {resource_type} rows"))?;
            self.put_back(&mut s, w);
        }
        drop(s);
        slot.returned.notify_all();
        // The closed writers' buffers are free now, scattered over the heap.
        crate::memory::release_free_memory();
        Ok(())
    }

    /// Returns a writer to its type. If its file just closed and the type has an extra
    /// writer, it retires instead, so the extra writer's memory and turn go to whichever
    /// type needs one next.
    fn put_back(&self, s: &mut TypeSlot, writer: TableWriter) {
        if s.writers > 1 && !writer.has_open_file() {
            s.writers -= 1;
            s.retired.push(writer);
            self.extra_writers.fetch_sub(1, Ordering::SeqCst);
        } else {
            s.idle.push(writer);
        }
    }

    fn take_extra_writer(&self) -> bool {
        self.extra_writers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_extra_writers).then_some(n + 1)
            })
            .is_ok()
    }

    fn reject(&self, r: EncodeReject) -> anyhow::Result<()> {
        if let Some(t) = r.resource_type.as_deref()
            && let Ok(Some(slot)) = self.slot(t)
            && let Ok(mut slot) = slot.lock()
        {
            slot.rejected += 1;
        }
        self.rejects
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .write(&r)
    }
}

/// Applies files to the tables: each file is encoded on a blocking thread as soon as it is
/// added (as many at once as there are cores), batches are staged by the tables' writers, and
/// [`Applier::finish`] commits every table with its deletions and the cursor.
pub struct Applier {
    shared: Arc<Shared>,
    permits: Arc<tokio::sync::Semaphore>,
    tasks: tokio::task::JoinSet<anyhow::Result<u64>>,
    /// Resources encoded by files whose task has already been joined.
    resources: u64,
    started: Instant,
    /// For a Group-scoped reconciliation: the group's patient ids.
    group_members: Option<IdSet>,
    /// Cores: files encoded at once, tables committed at once.
    parallel: usize,
    /// Input files to delete once all are encoded (see [`Applier::remove_inputs_once_encoded`]).
    remove_inputs: Option<Vec<PathBuf>>,
}

impl Applier {
    pub async fn new(
        sink: &DeltaSink,
        encoder: Encoder,
        input: ApplyInput,
    ) -> anyhow::Result<Self> {
        let rejects = RejectLog::new(input.rejects_dir.clone(), &input);
        let parallel = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let shared = Arc::new(Shared {
            sink: sink.clone(),
            encoder,
            input: input.clone(),
            runtime: tokio::runtime::Handle::current(),
            slots: Mutex::new(BTreeMap::new()),
            rejects: Mutex::new(rejects),
            skipped_types: Mutex::new(BTreeMap::new()),
            extra_writers: AtomicUsize::new(0),
            max_extra_writers: parallel.saturating_sub(1),
            files_left: Mutex::new(HashMap::new()),
        });
        // Tables of every requested type take part, so each gets the cursor even with no rows.
        if let Some(types) = &input.types {
            for t in types {
                let shared = shared.clone();
                let t = t.clone();
                tokio::task::spawn_blocking(move || shared.slot(&t)).await??;
            }
        }
        Ok(Self {
            shared,
            permits: Arc::new(tokio::sync::Semaphore::new(parallel)),
            tasks: tokio::task::JoinSet::new(),
            resources: 0,
            started: Instant::now(),
            group_members: None,
            parallel,
            remove_inputs: None,
        })
    }

    /// Deletes the added files once every one is encoded, while the tables commit: for
    /// downloaded copies. Deleting gigabytes can take seconds (on file systems that discard
    /// freed blocks at once) that are better spent beside the commits' work than after it.
    /// A run killed during the commits downloads them again if it resumes the export.
    pub fn remove_inputs_once_encoded(&mut self) {
        self.remove_inputs.get_or_insert_with(Vec::new);
    }

    /// Starts encoding `file`; waits while every core is busy. Errors of earlier files surface here.
    pub async fn add(&mut self, file: InputFile) -> anyhow::Result<()> {
        while let Some(done) = self.tasks.try_join_next() {
            self.resources += done.map_err(|e| anyhow!("an encoding thread failed: {e}"))??;
        }
        let permit = self.permits.clone().acquire_owned().await?;
        if let Some(paths) = &mut self.remove_inputs {
            paths.push(file.path.clone());
        }
        let shared = self.shared.clone();
        self.tasks.spawn_blocking(move || {
            let _permit = permit;
            encode_one(&shared, &file).with_context(|| format!("encoding {}", file.path.display()))
        });
        Ok(())
    }

    /// How many files of each type the export has (from the manifest): a type's data files
    /// are closed as soon as its last file is encoded. Call before adding files.
    pub fn expect_files(&self, per_type: &BTreeMap<String, usize>) -> anyhow::Result<()> {
        let mut left = self
            .shared
            .files_left
            .lock()
            .map_err(|_| anyhow!("poisoned"))?;
        left.extend(per_type.iter().map(|(t, n)| (t.clone(), *n)));
        Ok(())
    }

    /// Limits reconciliation to the rows of these patients (a Group's members): `Patient`
    /// rows by id, other types by their patient references (the Patient compartment).
    pub fn reconcile_within_group(&mut self, members: IdSet) {
        self.group_members = Some(members);
    }

    /// The ids of `resource_type` encoded so far when reconciling (else `None`).
    pub fn exported_ids(&self, resource_type: &str) -> anyhow::Result<Option<IdSet>> {
        let slots = self
            .shared
            .slots
            .lock()
            .map_err(|_| anyhow!("a writer thread panicked"))?;
        let Some(slot) = slots.get(resource_type) else {
            return Ok(None);
        };
        let slot = slot
            .lock()
            .map_err(|_| anyhow!("a writer thread panicked"))?;
        Ok(slot.exported_ids.clone())
    }

    /// Records the lines the bulk client set aside while downloading `file`.
    pub fn add_download_rejects(&self, file: &InputFile) -> anyhow::Result<()> {
        add_download_rejects(&self.shared, file)
    }

    /// Waits for every file, then commits each table with its deletions and the cursor of the
    /// export whose `transactionTime` is given. A table that already has this export is skipped.
    pub async fn finish(
        mut self,
        deletions: Vec<(String, String)>,
        transaction_time: DateTime<Utc>,
    ) -> anyhow::Result<SyncReport> {
        let mut resources = self.resources;
        while let Some(joined) = self.tasks.join_next().await {
            resources += joined.map_err(|e| anyhow!("an encoding thread failed: {e}"))??;
        }
        let group_members = self.group_members.take();
        crate::memory::release_free_memory();
        let shared = self.shared;
        let input = &shared.input;
        let (total_rejects, rejects_file) = {
            let mut log = shared.rejects.lock().map_err(|_| anyhow!("poisoned"))?;
            (log.count, log.finish()?)
        };
        if let Some(max) = input.max_rejects
            && total_rejects > max
        {
            discard_writers(&shared).await;
            bail!(
                "{total_rejects} resources were rejected, more than --max-rejects {max}; nothing was committed{}",
                rejects_file
                    .as_ref()
                    .map(|p| format!(" (see {})", p.display()))
                    .unwrap_or_default()
            );
        }
        for (t, n) in shared
            .skipped_types
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .iter()
        {
            tracing::warn!(resource_type = %t, resources = n, "resources of a type that was not requested were skipped");
        }

        // Commits follow: the inputs are no longer needed (a run that fails before this
        // point keeps them for the next).
        let removal = self.remove_inputs.take().map(|paths| {
            tokio::task::spawn_blocking(move || {
                for p in paths {
                    if let Err(e) = std::fs::remove_file(&p) {
                        tracing::debug!(path = %p.display(), error = %e, "could not remove an encoded file");
                    }
                }
            })
        });

        let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (t, id) in deletions {
            by_type.entry(t).or_default().push(id);
        }
        for t in by_type.keys() {
            let shared = shared.clone();
            let t = t.clone();
            tokio::task::spawn_blocking(move || shared.slot(&t)).await??;
        }

        let slots: Vec<(String, Arc<Slot>)> = shared
            .slots
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut report = SyncReport {
            sync_id: input.app_id.clone(),
            transaction_time: Some(transaction_time.to_rfc3339_opts(SecondsFormat::Millis, true)),
            resources,
            rejects: total_rejects,
            rejects_file,
            ..Default::default()
        };
        // As many tables at once as there are cores: a commit is mostly one thread's work
        // (key scans, the log); memory stays bounded, since each commit's id index is, and
        // the file rewrites of all tables share one slot per core (in delta-sink).
        let group_members = group_members.map(Arc::new);
        use futures::StreamExt as _;
        let mut commits = futures::stream::iter(slots.into_iter().map(|(resource_type, slot)| {
            let deletions = by_type.remove(&resource_type);
            let (shared, members) = (shared.clone(), group_members.clone());
            // A thread of its own that drives the commit (a blocking thread may block on
            // the runtime, and the commit's future need not be `Send`).
            tokio::task::spawn_blocking(move || {
                shared.runtime.block_on(commit_table(
                    &shared.input,
                    resource_type,
                    slot,
                    deletions,
                    members.as_deref(),
                    transaction_time,
                ))
            })
        }))
        .buffer_unordered(self.parallel);
        // Every started commit finishes (a commit is never cut off half-way); the first
        // error is reported.
        let mut failed = None;
        while let Some(joined) = commits.next().await {
            match joined.map_err(|e| anyhow!("a commit task failed: {e}")) {
                Ok(Ok(Some((resource_type, entry)))) => {
                    report.tables.insert(resource_type, entry);
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) | Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some(removal) = removal {
            let _ = removal.await;
        }
        report.duration = self.started.elapsed();
        Ok(report)
    }
}

/// Commits one type's writer with its deletions, reconciliation and the cursor; `None` for
/// a slot without a table.
async fn commit_table(
    input: &ApplyInput,
    resource_type: String,
    slot: Arc<Slot>,
    deletions: Option<Vec<String>>,
    group_members: Option<&IdSet>,
    transaction_time: DateTime<Utc>,
) -> anyhow::Result<Option<(String, TableReport)>> {
    let version = transaction_time.timestamp_millis();
    let (table, writers, ids, res, rej) = {
        let mut s = slot.lock().map_err(|_| anyhow!("poisoned"))?;
        (
            s.table.take(),
            std::mem::take(&mut s.idle)
                .into_iter()
                .chain(std::mem::take(&mut s.retired))
                .collect::<Vec<_>>(),
            s.exported_ids.take(),
            s.resources,
            s.rejected,
        )
    };
    let mut writers = writers.into_iter();
    let mut writer = writers.next();
    if let Some(w) = writer.as_mut() {
        for other in writers {
            w.absorb(other)
                .await
                .with_context(|| format!("joining the {resource_type} writers"))?;
        }
    }
    let mut entry = TableReport {
        resources: res,
        rejected: rej,
        ..Default::default()
    };
    let (Some(mut table), Some(mut writer)) = (table, writer) else {
        return Ok(None);
    };
    if input.mode == SaveMode::Merge
        && table
            .committed_version(&input.app_id)
            .await?
            .is_some_and(|v| v >= version)
    {
        tracing::info!(resource_type = %resource_type, "this export is already in the table: skipped");
        if let Err(e) = writer.discard().await {
            tracing::warn!(resource_type = %resource_type, error = %e, "could not delete the rows written again");
        }
        entry.status = Some(WriteStatus::AlreadyApplied);
        entry.version = table.version();
        return Ok(Some((resource_type, entry)));
    }
    if input.mode == SaveMode::Merge {
        if let Some(ids) = deletions {
            writer.delete(ids, transaction_time);
        }
        if let Some(mut ids) = ids {
            ids.seal();
            match reconcile_scope(&resource_type, writer.schema(), group_members) {
                Some(scope) => writer.reconcile_within(ids, scope),
                None => tracing::warn!(resource_type = %resource_type,
                    "not reconciled: no top-level element ties its rows to a patient of the group"),
            }
        }
    }
    let cursor = Cursor::new(input.app_id.clone(), transaction_time, input.app_id.clone());
    let options = CommitOptions {
        mode: sink_mode(input.mode),
        cursor: Some(cursor),
    };
    let outcome: WriteOutcome = table
        .commit(writer, options)
        .await
        .with_context(|| format!("committing the {resource_type} table"))?;
    entry.status = Some(outcome.status);
    entry.version = outcome.version;
    entry.inserted = outcome.inserted;
    entry.updated = outcome.updated;
    entry.unchanged = outcome.unchanged + outcome.duplicates;
    entry.deleted = outcome.deleted;
    entry.reconciled = outcome.reconciled;
    Ok(Some((resource_type, entry)))
}

/// Deletes the data files the writers wrote: nothing of this export will be committed.
async fn discard_writers(shared: &Shared) {
    let slots: Vec<(String, Arc<Slot>)> = match shared.slots.lock() {
        Ok(slots) => slots.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Err(_) => return,
    };
    for (resource_type, slot) in slots {
        let writers = slot
            .lock()
            .map(|mut s| {
                let mut all = std::mem::take(&mut s.idle);
                all.append(&mut s.retired);
                all
            })
            .unwrap_or_default();
        for writer in writers {
            if let Err(e) = writer.discard().await {
                tracing::warn!(resource_type = %resource_type, error = %e, "could not delete uncommitted rows");
            }
        }
    }
}

/// Which stored rows of `resource_type` a reconciliation may remove: all of them, or with
/// `group_members` those of the group's patients (`None` when nothing ties the type's rows
/// to a patient, so none may go).
fn reconcile_scope(
    resource_type: &str,
    schema: &arrow::datatypes::SchemaRef,
    group_members: Option<&IdSet>,
) -> Option<ReconcileScope> {
    let Some(members) = group_members else {
        return Some(ReconcileScope::All);
    };
    if resource_type == "Patient" {
        return Some(ReconcileScope::Ids(members.clone()));
    }
    let columns = compartment::patient_link_columns(resource_type, schema);
    (!columns.is_empty()).then(|| ReconcileScope::References {
        columns,
        target_type: "Patient".to_string(),
        targets: members.clone(),
    })
}

/// The patient ids of Group `group_id`: its `member[].entity` references read from the
/// server, plus the Patient resources of the group's export (when Patient was exported).
/// Fails when neither is available, rather than guess which rows belong to the group.
async fn group_members(
    client: &BulkClient,
    group_id: &str,
    applier: &Applier,
) -> anyhow::Result<IdSet> {
    let exported = applier.exported_ids("Patient")?;
    let mut members = IdSet::new();
    match client.read_resource("Group", group_id).await {
        Ok(group) => {
            let refs = group
                .get("member")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| m.pointer("/entity/reference")?.as_str());
            let (mut patients, mut others) = (0u64, 0u64);
            for r in refs {
                match delta_sink::reference_id(r, "Patient") {
                    Some(id) => {
                        members.insert(id);
                        patients += 1;
                    }
                    None => others += 1,
                }
            }
            if others > 0 {
                tracing::warn!(
                    group = group_id,
                    members = others,
                    "group members that are not Patient references are not reconciled"
                );
            }
            tracing::info!(
                group = group_id,
                patients,
                "group members read for reconciliation"
            );
        }
        Err(e) if exported.is_some() => {
            tracing::warn!(group = group_id, error = %e,
                "could not read the Group; reconciling within the exported Patient resources");
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "--reconcile with --group-id needs the group's members: reading Group/{group_id} \
                 failed and Patient is not among the exported types"
            )));
        }
    }
    if let Some(mut ids) = exported {
        ids.seal();
        members.merge(&ids);
    }
    members.seal();
    Ok(members)
}

/// Applies local files in one go (imports).
pub async fn apply_files(
    sink: &DeltaSink,
    encoder: Encoder,
    files: Vec<InputFile>,
    deletions: Vec<(String, String)>,
    input: ApplyInput,
    transaction_time: DateTime<Utc>,
) -> anyhow::Result<SyncReport> {
    let mut applier = Applier::new(sink, encoder, input).await?;
    for file in files {
        applier.add(file).await?;
    }
    applier.finish(deletions, transaction_time).await
}

fn sink_mode(mode: SaveMode) -> delta_sink::SaveMode {
    match mode {
        SaveMode::Merge => delta_sink::SaveMode::Merge,
        SaveMode::Overwrite => delta_sink::SaveMode::Overwrite,
        SaveMode::Append => delta_sink::SaveMode::Append,
        SaveMode::Ignore => delta_sink::SaveMode::Ignore,
        SaveMode::Error => delta_sink::SaveMode::ErrorIfExists,
    }
}

/// Encodes one file into the writers; returns the resources read.
fn encode_one(shared: &Shared, file: &InputFile) -> anyhow::Result<u64> {
    let reader = open_ndjson(&file.path)?;
    let mut resources = 0u64;
    encode::encode_ndjson(
        &shared.encoder,
        reader,
        &file.label,
        file.expected_type.as_deref(),
        &mut |resource_type: &str, batch: RecordBatch| {
            resources += batch.num_rows() as u64;
            shared.push(resource_type, &batch)
        },
        &mut |r: EncodeReject| shared.reject(r),
    )?;
    add_download_rejects(shared, file)?;
    if let Some(t) = &file.expected_type {
        shared.file_done(t)?;
    }
    Ok(resources)
}

/// Records the lines the bulk client set aside while downloading `file`.
fn add_download_rejects(shared: &Shared, file: &InputFile) -> anyhow::Result<()> {
    if let Some(path) = &file.download_rejects_path
        && file.download_rejects > 0
    {
        for r in encode::read_download_rejects(path, file.expected_type.as_deref())? {
            shared.reject(r)?;
        }
    }
    Ok(())
}

/// Opens an NDJSON file, gunzipping `.gz` files.
pub fn open_ndjson(path: &Path) -> anyhow::Result<Box<dyn BufRead + Send>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    Ok(if gz {
        Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(f),
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, f))
    })
}

/// Rejected resources, one JSON object per line, in a file created on the first reject.
struct RejectLog {
    dir: PathBuf,
    name: String,
    sync_id: String,
    started_at: String,
    out: Option<std::io::BufWriter<File>>,
    count: u64,
}

impl RejectLog {
    fn new(dir: PathBuf, input: &ApplyInput) -> Self {
        let now = Utc::now();
        let stamp = now.format("%Y%m%dT%H%M%S%.3fZ");
        Self {
            dir,
            name: format!("rejects-{stamp}.ndjson"),
            sync_id: input.app_id.clone(),
            started_at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
            out: None,
            count: 0,
        }
    }

    fn write(&mut self, r: &EncodeReject) -> anyhow::Result<()> {
        if self.out.is_none() {
            std::fs::create_dir_all(&self.dir)
                .with_context(|| format!("creating {}", self.dir.display()))?;
            let path = self.dir.join(&self.name);
            // Truncate: a re-run of the same export rewrites the same list.
            let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            self.out = Some(std::io::BufWriter::new(f));
        }
        let record = serde_json::json!({
            "sync_id": self.sync_id,
            "sync_started_at": self.started_at,
            "resource_type": r.resource_type,
            "id": r.id,
            "file": r.file,
            "line": r.line,
            "reason": r.reason,
        });
        if let Some(out) = self.out.as_mut() {
            serde_json::to_writer(&mut *out, &record)?;
            out.write_all(b"\n")?;
        }
        self.count += 1;
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<Option<PathBuf>> {
        match self.out.take() {
            Some(mut out) => {
                out.flush()?;
                Ok(Some(self.dir.join(&self.name)))
            }
            None => Ok(None),
        }
    }
}

/// The Bulk Data client's settings for a sync, and the token provider (kept for its refresh count).
pub struct SyncClient {
    pub config: ClientConfig,
    pub tokens: Option<smart_auth::TokenProvider>,
}

impl std::ops::Deref for SyncClient {
    type Target = ClientConfig;
    fn deref(&self) -> &ClientConfig {
        &self.config
    }
}

impl std::ops::DerefMut for SyncClient {
    fn deref_mut(&mut self) -> &mut ClientConfig {
        &mut self.config
    }
}

/// The Bulk Data client's settings for a sync.
pub async fn client_config(
    opts: &SyncOptions,
    _mode: crate::logging::LogMode,
) -> anyhow::Result<SyncClient> {
    let mut config = ClientConfig::new(opts.fhir_endpoint.clone());
    config.max_concurrent_downloads = opts.max_concurrent_downloads.max(1);
    config.gzip = opts.gzip;
    // The encoder parses and checks every line (and rejects what is not a resource of its
    // file's type with an id): the download need not parse them too.
    config.full_line_checks = false;
    if let Some(t) = opts.timeout {
        config.poll.timeout = t;
    }
    if opts.auth.enabled {
        // The token endpoint gets its own client: it never follows redirects with credentials.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .build()
            .context("building the HTTP client for the token endpoint")?;
        let provider =
            smart_auth::TokenProvider::new(&opts.fhir_endpoint, opts.auth.to_auth_config(), http)
                .context("configuring SMART Backend Services authentication")?;
        config.bearer = Some(std::sync::Arc::new(provider.clone()));
        return Ok(SyncClient {
            config,
            tokens: Some(provider),
        });
    }
    Ok(SyncClient {
        config,
        tokens: None,
    })
}

/// `fhirsync import`: a local directory of NDJSON files applied like an export.
#[derive(Clone, Debug)]
pub struct ImportRequest {
    pub input: PathBuf,
    pub delta_path: String,
    pub save_mode: SaveMode,
    pub resource_types: Option<Vec<String>>,
    pub max_rejects: Option<u64>,
    pub max_nesting_level: usize,
    pub extensions: bool,
    /// See [`SyncOptions::deletion_vectors`].
    pub deletion_vectors: bool,
}

/// The identity under which imports commit their cursor.
pub const IMPORT_APP_ID: &str = "fhirsync:import";

pub async fn run_import(request: &ImportRequest) -> anyhow::Result<SyncReport> {
    let started = Instant::now();
    let dir = &request.input;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_file()
            && (name.ends_with(".ndjson")
                || name.ends_with(".ndjson.gz")
                || name.ends_with(".jsonl"))
        {
            files.push(InputFile {
                path,
                label: name,
                expected_type: None,
                download_rejects: 0,
                download_rejects_path: None,
            });
        }
    }
    files.sort_by(|a, b| a.label.cmp(&b.label));
    if files.is_empty() {
        bail!("{} holds no .ndjson or .ndjson.gz files", dir.display());
    }

    // A previous `fhirsync export` left its manifest: its transactionTime is the cursor.
    let manifest_path = dir.join(fhir_bulk::MANIFEST_FILE);
    let transaction_time = match std::fs::read(&manifest_path) {
        Ok(bytes) => {
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not JSON", manifest_path.display()))?;
            let tt = v
                .get("transactionTime")
                .and_then(|t| t.as_str())
                .ok_or_else(|| anyhow!("{} has no transactionTime", manifest_path.display()))?;
            DateTime::parse_from_rfc3339(tt)
                .with_context(|| format!("{}: transactionTime {tt:?}", manifest_path.display()))?
                .with_timezone(&Utc)
        }
        Err(_) => Utc::now(),
    };

    let mut deletions = Vec::new();
    let deleted_dir = dir.join("deleted");
    if deleted_dir.is_dir() {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&deleted_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        paths.sort();
        for path in paths.into_iter().filter(|p| p.is_file()) {
            let reader = open_ndjson(&path)?;
            for (n, line) in reader.lines().enumerate() {
                let line = line.with_context(|| format!("reading {}", path.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let bundle: serde_json::Value = serde_json::from_str(&line).with_context(|| {
                    format!("{} line {}: not a JSON Bundle", path.display(), n + 1)
                })?;
                let (found, problems) = fhir_bulk::deletions(&bundle);
                for p in problems {
                    tracing::warn!(file = %path.display(), line = n + 1, problem = %p, "ignored a deletion entry");
                }
                deletions.extend(found.into_iter().map(|d| (d.resource_type, d.id)));
            }
        }
    }

    let sink = DeltaSink::new(&request.delta_path, StorageOptions::from_env())
        .with_context(|| format!("delta path {}", request.delta_path))?
        .with_config(sink_config(request.deletion_vectors));
    let options = EncoderOptions {
        max_nesting_level: request.max_nesting_level,
        enable_extensions: request.extensions,
        ..EncoderOptions::default()
    };
    let local = !crate::config::is_remote_path(&request.delta_path);
    let rejects_dir = if local {
        Path::new(
            request
                .delta_path
                .strip_prefix("file://")
                .unwrap_or(&request.delta_path),
        )
        .join("_rejects")
    } else {
        PathBuf::from("_rejects")
    };
    let input = ApplyInput {
        app_id: IMPORT_APP_ID.to_string(),
        mode: request.save_mode,
        types: request
            .resource_types
            .as_ref()
            .map(|t| t.iter().cloned().collect()),
        reconcile: false,
        max_rejects: request.max_rejects,
        rejects_dir,
    };
    let mut report = apply_files(
        &sink,
        Encoder::new(options),
        files,
        deletions,
        input,
        transaction_time,
    )
    .await?;
    report.duration = started.elapsed();
    Ok(report)
}
