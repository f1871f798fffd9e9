//! The writer pool: each resource type's table writers, shared by the threads that encode
//! files. A thread takes an idle writer of the type for each batch, or opens an extra one
//! when another thread holds it, so neither waits for the other's Parquet encoding.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{Context, anyhow, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use delta_sink::{DeltaSink, IdSetBuilder, ResourceTable, TableWriter};
use fhir_encoder::Encoder;

use super::input::{ApplyInput, InputFile};
use super::rejects::{FileRejects, RejectLog};
use super::view_slots::{FileViews, ViewSlots};
use crate::encode::{self, EncodeReject};
use crate::files;

/// One resource type's table while an export is being applied.
pub(super) struct TypeSlot {
    /// Taken by the commit.
    pub table: Option<ResourceTable>,
    schema: SchemaRef,
    /// Writers not in use. The commit joins them all, with the retired ones.
    pub idle: Vec<TableWriter>,
    /// Writers in use or idle.
    writers: usize,
    /// Extra writers whose file closed: only their list of files remains.
    pub retired: Vec<TableWriter>,
    /// Ids of the rows written, when reconciling, and of rejected resources whose id could
    /// be read.
    pub exported_ids: Option<IdSetBuilder>,
    /// A rejected line's id could not be read: which row it was is unknown, so none of the
    /// type's rows may be removed for not being exported.
    pub reconcile_stopped: bool,
    pub resources: u64,
    pub rejected: u64,
}

impl TypeSlot {
    /// Keeps every row of the type in this run, because of the rejected line `line` of `file`.
    fn stop_reconciling(&mut self, resource_type: &str, file: &str, line: u64) {
        if self.exported_ids.is_some() && !self.reconcile_stopped {
            self.reconcile_stopped = true;
            tracing::warn!(resource_type = %resource_type, file = %file, line,
                "not reconciled in this run: the id of a rejected line could not be read, so no {resource_type} row is removed for missing from the export");
        }
    }

    /// Every writer of the type, for the commit or for discarding; none remain.
    pub fn take_writers(&mut self) -> Vec<TableWriter> {
        let mut all = std::mem::take(&mut self.idle);
        all.append(&mut self.retired);
        all
    }
}

/// A type's writers and counters, and a signal for threads waiting for a writer.
pub(super) struct Slot {
    state: Mutex<TypeSlot>,
    returned: Condvar,
}

impl Slot {
    pub fn lock(&self) -> anyhow::Result<MutexGuard<'_, TypeSlot>> {
        self.state
            .lock()
            .map_err(|_| anyhow!("a writer thread panicked"))
    }
}

/// The pool: every type's slot, the rejects, and the limit on extra writers.
pub(super) struct Pool {
    sink: DeltaSink,
    encoder: Encoder,
    pub input: ApplyInput,
    pub runtime: tokio::runtime::Handle,
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
    /// Set when the run fails: encoding threads stop at their next batch.
    stopping: AtomicBool,
    /// Folders of local tables that did not exist before this run opened them.
    new_table_dirs: Mutex<Vec<PathBuf>>,
    /// The views kept current, by the type they read.
    pub views: ViewSlots,
}

fn poisoned<T>(_: T) -> anyhow::Error {
    anyhow!("a writer thread panicked")
}

impl Pool {
    pub fn new(
        sink: &DeltaSink,
        encoder: Encoder,
        input: ApplyInput,
        threads: usize,
        views: ViewSlots,
    ) -> Self {
        let rejects = RejectLog::new(input.rejects_dir.clone(), &input.app_id);
        Self {
            sink: sink.clone(),
            encoder,
            input,
            runtime: tokio::runtime::Handle::current(),
            slots: Mutex::new(BTreeMap::new()),
            rejects: Mutex::new(rejects),
            skipped_types: Mutex::new(BTreeMap::new()),
            extra_writers: AtomicUsize::new(0),
            max_extra_writers: threads.saturating_sub(1),
            files_left: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            new_table_dirs: Mutex::new(Vec::new()),
            views,
        }
    }

    /// The slot of `resource_type`, opening its table on first use (from a blocking thread);
    /// `None` for a type that was not requested.
    pub fn slot(&self, resource_type: &str) -> anyhow::Result<Option<Arc<Slot>>> {
        if let Some(types) = &self.input.types
            && !types.contains(resource_type)
        {
            return Ok(None);
        }
        let mut slots = self.slots.lock().map_err(poisoned)?;
        if let Some(slot) = slots.get(resource_type) {
            return Ok(Some(slot.clone()));
        }
        let schema = self
            .encoder
            .schema(resource_type)
            .with_context(|| format!("resource type {resource_type}"))?;
        if let Some(dir) = self.local_table_dir(resource_type)
            && !dir.exists()
        {
            self.new_table_dirs.lock().map_err(poisoned)?.push(dir);
        }
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
                exported_ids: self.input.reconcile.then(IdSetBuilder::new),
                reconcile_stopped: false,
                resources: 0,
                rejected: 0,
            }),
            returned: Condvar::new(),
        });
        slots.insert(resource_type.to_string(), slot.clone());
        Ok(Some(slot))
    }

    /// Every slot opened so far, by type.
    pub fn slots(&self) -> anyhow::Result<Vec<(String, Arc<Slot>)>> {
        Ok(self
            .slots
            .lock()
            .map_err(poisoned)?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    /// The slot of `resource_type` if its table is open already.
    pub fn existing_slot(&self, resource_type: &str) -> anyhow::Result<Option<Arc<Slot>>> {
        Ok(self
            .slots
            .lock()
            .map_err(poisoned)?
            .get(resource_type)
            .cloned())
    }

    /// How many more files of each type are to come (from a manifest; a Group's new members
    /// bring a second export's).
    pub fn expect_files(&self, per_type: &BTreeMap<String, usize>) -> anyhow::Result<()> {
        let mut left = self.files_left.lock().map_err(poisoned)?;
        for (t, n) in per_type {
            *left.entry(t.clone()).or_default() += n;
        }
        Ok(())
    }

    /// The rejects so far, and the list's path (the list is closed).
    pub fn finish_rejects(&self) -> anyhow::Result<(u64, Option<std::path::PathBuf>)> {
        let mut log = self.rejects.lock().map_err(poisoned)?;
        Ok((log.count(), log.finish()?))
    }

    /// Resources of types that were not requested, by type.
    pub fn skipped_types(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        Ok(self.skipped_types.lock().map_err(poisoned)?.clone())
    }

    fn push(&self, resource_type: &str, batch: &RecordBatch) -> anyhow::Result<()> {
        if self.stopping.load(Ordering::SeqCst) {
            bail!("stopped: the run failed");
        }
        let Some(slot) = self.slot(resource_type)? else {
            *self
                .skipped_types
                .lock()
                .map_err(poisoned)?
                .entry(resource_type.to_string())
                .or_default() += batch.num_rows() as u64;
            return Ok(());
        };
        let mut writer = {
            let mut s = slot.lock()?;
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
                s = slot.returned.wait(s).map_err(poisoned)?;
            }
        };
        // Called from an encoding thread (blocking pool): the write's uploads run on the runtime.
        let pushed = self.runtime.block_on(writer.push(batch));
        self.put_back(&mut *slot.lock()?, writer);
        slot.returned.notify_all();
        pushed.with_context(|| format!("writing {resource_type} rows"))
    }

    /// Counts one encoded file of `resource_type`; after its last one, closes the type's
    /// data files (no thread uses its writers any more).
    fn file_done(&self, resource_type: &str) -> anyhow::Result<()> {
        {
            let mut left = self.files_left.lock().map_err(poisoned)?;
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
        let mut s = slot.lock()?;
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

    /// Records a rejected resource of `file` (see [`FileRejects`] for the type it counts under).
    fn reject(&self, r: EncodeReject, file: &mut FileRejects) -> anyhow::Result<()> {
        self.rejects.lock().map_err(poisoned)?.write(&r)?;
        if let Some((table, r)) = file.place(r) {
            self.account(Some(&table), &r)?;
        }
        Ok(())
    }

    /// Counts `r` under `table` and tells reconciliation what it means: a readable id keeps
    /// its row (in `table` and in the table of the line's own type); an unreadable one stops
    /// the reconciliation of both. Without any type, either applies to every table.
    fn account(&self, table: Option<&str>, r: &EncodeReject) -> anyhow::Result<()> {
        if let Some(t) = table
            && let Ok(Some(slot)) = self.slot(t)
        {
            slot.lock()?.rejected += 1;
        }
        let affected: Vec<(String, Arc<Slot>)> = match table {
            None => self.slots()?,
            Some(table) => {
                let own = r.resource_type.as_deref().filter(|t| *t != table);
                let mut found = Vec::new();
                for t in std::iter::once(table).chain(own) {
                    if let Some(slot) = self.existing_slot(t)? {
                        found.push((t.to_owned(), slot));
                    }
                }
                found
            }
        };
        for (t, slot) in affected {
            let mut s = slot.lock()?;
            match r.id.as_deref().filter(|id| !id.is_empty()) {
                Some(id) => {
                    if let Some(ids) = s.exported_ids.as_mut() {
                        ids.insert(id);
                    }
                }
                None => s.stop_reconciling(&t, &r.file, r.line),
            }
        }
        Ok(())
    }

    /// Encodes one file into the writers (on a blocking thread); returns the resources read.
    /// A file of the user's that cannot be opened or read to its end is a reject, like a bad
    /// line; a downloaded copy that cannot is deleted and fails the run (see
    /// [`InputFile::downloaded`]).
    pub fn encode_file(&self, file: &InputFile) -> anyhow::Result<u64> {
        let mut rejects = FileRejects::new(file.expected_type.clone(), self.name_type(&file.label));
        let mut types = std::collections::BTreeSet::new();
        let mut resources = 0u64;
        let views = self.views.for_file();
        let opened = files::open_ndjson(&file.path);
        if file.downloaded
            && let Err(e) = &opened
        {
            return Err(self.refetch(file, e));
        }
        match opened {
            Ok(reader) => encode::encode_ndjson(
                &self.encoder,
                reader,
                &file.label,
                file.expected_type.as_deref(),
                if file.downloaded {
                    encode::Unreadable::Fail
                } else {
                    encode::Unreadable::Reject
                },
                views.as_ref().map(FileViews::observer),
                &mut |resource_type: &str, batch: RecordBatch| {
                    resources += batch.num_rows() as u64;
                    if !types.contains(resource_type) {
                        types.insert(resource_type.to_owned());
                    }
                    self.push(resource_type, &batch)?;
                    match &views {
                        Some(v) => v.flush(false, &self.runtime),
                        None => Ok(()),
                    }
                },
                &mut |r: EncodeReject| self.reject(r, &mut rejects),
            )
            .map_err(|e| match file.downloaded {
                true => self.refetch(file, &e),
                false => e,
            })?,
            Err(e) => {
                let reject = EncodeReject {
                    resource_type: file.expected_type.clone(),
                    id: None,
                    file: file.label.clone(),
                    line: 1,
                    reason: format!("the file could not be read: {e:#}"),
                };
                tracing::warn!(file = %file.label, error = %format!("{e:#}"), "the file could not be read");
                self.reject(reject, &mut rejects)?;
            }
        }
        if let Some(v) = &views {
            v.flush(true, &self.runtime)?;
        }
        for t in &types {
            rejects.saw(t);
        }
        self.settle(rejects)?;
        self.add_download_rejects(file)?;
        if let Some(t) = &file.expected_type {
            self.file_done(t)?;
        }
        Ok(resources)
    }

    /// Deletes a downloaded copy that could not be read, so that the next run (resuming the
    /// export) downloads it again; the error says so.
    fn refetch(&self, file: &InputFile, e: &anyhow::Error) -> anyhow::Error {
        let removed = match std::fs::remove_file(&file.path) {
            Ok(()) => "deleted; the next run downloads it again",
            Err(_) => "delete it before the next run, which then downloads it again",
        };
        anyhow!("the downloaded file {}: {e:#} ({removed})", file.label)
    }

    /// The resource type a file's name starts with (`Patient.1.ndjson`), if it names one.
    fn name_type(&self, name: &str) -> Option<String> {
        let stem = name.split('.').next()?;
        let supported = self.encoder.supported_types();
        supported.binary_search(&stem).ok().map(|_| stem.to_owned())
    }

    /// Records the lines the bulk client set aside while downloading `file`.
    pub fn add_download_rejects(&self, file: &InputFile) -> anyhow::Result<()> {
        if let Some(path) = &file.download_rejects_path
            && file.download_rejects > 0
        {
            let mut rejects = FileRejects::new(file.expected_type.clone(), None);
            for r in encode::read_download_rejects(path, file.expected_type.as_deref())? {
                self.reject(r, &mut rejects)?;
            }
            self.settle(rejects)?;
        }
        Ok(())
    }

    /// The file is read: its rejects that waited for the file's type count now.
    fn settle(&self, rejects: FileRejects) -> anyhow::Result<()> {
        let (table, waiting) = rejects.finish();
        for r in &waiting {
            self.account(table.as_deref(), r)?;
        }
        Ok(())
    }

    /// Makes the encoding threads stop at their next batch: the run has failed.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The folder of a local table, `None` on an object store.
    fn local_table_dir(&self, resource_type: &str) -> Option<PathBuf> {
        let url = self.sink.table_url(resource_type).ok()?;
        (url.scheme() == "file")
            .then(|| url.to_file_path().ok())
            .flatten()
    }

    /// Removes the list of rejects: nothing of the run was committed.
    pub fn discard_rejects(&self) {
        if let Ok(mut log) = self.rejects.lock() {
            log.discard();
        }
    }

    /// Records the folder of a local table this run creates (removed if the run fails).
    pub fn created_dir(&self, dir: PathBuf) {
        if let Ok(mut dirs) = self.new_table_dirs.lock() {
            dirs.push(dir);
        }
    }

    /// Removes the folders of tables this run created and left without a file.
    pub fn remove_new_table_dirs(&self) {
        let dirs = self
            .new_table_dirs
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        for dir in dirs {
            remove_empty_tree(&dir);
        }
    }

    /// Deletes the data files the writers wrote: nothing of this export will be committed.
    pub async fn discard(&self) {
        for slot in self.views.all() {
            for writer in slot.take_writers().unwrap_or_default() {
                if let Err(e) = writer.discard().await {
                    tracing::warn!(view = %slot.view.name, error = %e, "could not delete uncommitted rows");
                }
            }
        }
        let Ok(slots) = self.slots() else { return };
        for (resource_type, slot) in slots {
            let writers = slot
                .lock()
                .map(|mut s| s.take_writers())
                .unwrap_or_default();
            for writer in writers {
                if let Err(e) = writer.discard().await {
                    tracing::warn!(resource_type = %resource_type, error = %e, "could not delete uncommitted rows");
                }
            }
        }
    }
}

/// Removes `dir` and the folders in it, bottom up, as long as they hold no file.
fn remove_empty_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_tree(&entry.path());
            }
        }
    }
    // Fails, as it should, while anything is left in it.
    let _ = std::fs::remove_dir(dir);
}
