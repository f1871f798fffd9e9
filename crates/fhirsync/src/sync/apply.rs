//! Applying files to the tables: each file is encoded on a blocking thread as soon as it is
//! added (as many at once as there are cores) into the writer pool, and [`Applier::finish`]
//! commits every table with its deletions and the cursor.
//!
//! A run that fails leaves nothing behind ([`Applier::abandon`]): its threads are waited for
//! (one still opening a table must not outlive the runtime it blocks on), the rows it wrote
//! are deleted, and the folders and the list of rejects it created are removed.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, anyhow};
use chrono::{DateTime, SecondsFormat, Utc};
use delta_sink::{DeltaSink, IdSet, IdSetBuilder, WriteStatus};
use fhir_encoder::Encoder;

use super::commit::{self, Changes};
use super::input::{ApplyInput, InputFile};
use super::pool::Pool;
use super::view_slots::{ViewSlot, ViewSlots};
use crate::run::{SyncEvent, SyncReport};
use crate::views::{self, MaintainedView};

pub(crate) struct Applier {
    pool: Arc<Pool>,
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
    /// The list of rejects outlives a failure (see [`Applier::abandon`]).
    keep_rejects: bool,
}

impl Applier {
    pub async fn new(
        sink: &DeltaSink,
        encoder: Encoder,
        input: ApplyInput,
    ) -> anyhow::Result<Self> {
        let parallel = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let types = input.types.clone();
        let (views, created) = open_views(sink, &input.views).await?;
        let pool = Arc::new(Pool::new(sink, encoder, input, parallel, views));
        for dir in created {
            pool.created_dir(dir);
        }
        // Tables of every requested type take part, so each gets the cursor even with no rows.
        for t in types.into_iter().flatten() {
            if let Err(e) = open_table(&pool, t).await {
                pool.remove_new_table_dirs();
                return Err(e);
            }
        }
        Ok(Self {
            pool,
            permits: Arc::new(tokio::sync::Semaphore::new(parallel)),
            tasks: tokio::task::JoinSet::new(),
            resources: 0,
            started: Instant::now(),
            group_members: None,
            parallel,
            remove_inputs: None,
            keep_rejects: false,
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
        let pool = self.pool.clone();
        self.tasks.spawn_blocking(move || {
            let _permit = permit;
            let resources = pool
                .encode_file(&file)
                .with_context(|| format!("encoding {}", file.path.display()))?;
            pool.input.events.emit(SyncEvent::FileEncoded { resources });
            Ok(resources)
        });
        Ok(())
    }

    /// How many files of each type the export has (from the manifest): a type's data files
    /// are closed as soon as its last file is encoded. Call before adding files.
    pub fn expect_files(&self, per_type: &BTreeMap<String, usize>) -> anyhow::Result<()> {
        self.pool.expect_files(per_type)
    }

    /// Limits reconciliation to the rows of these patients (a Group's members): `Patient`
    /// rows by id, other types by their patient references (the Patient compartment).
    pub fn reconcile_within_group(&mut self, members: IdSet) {
        self.group_members = Some(members);
    }

    /// The ids of `resource_type` encoded so far when reconciling (else `None`).
    pub fn exported_ids(&self, resource_type: &str) -> anyhow::Result<Option<IdSetBuilder>> {
        match self.pool.existing_slot(resource_type)? {
            Some(slot) => Ok(slot.lock()?.exported_ids.clone()),
            None => Ok(None),
        }
    }

    /// Records the lines the bulk client set aside while downloading `file`.
    pub fn add_download_rejects(&self, file: &InputFile) -> anyhow::Result<()> {
        self.pool.add_download_rejects(file)
    }

    /// Waits for every file, then commits each table with its deletions and the cursor of the
    /// export whose `transactionTime` is given. A table that already has this export is skipped.
    pub async fn finish(
        mut self,
        deletions: Vec<(String, String)>,
        transaction_time: DateTime<Utc>,
    ) -> anyhow::Result<SyncReport> {
        let cancel = self.pool.input.cancel.clone();
        let mut resources = self.resources;
        loop {
            let joined = tokio::select! {
                joined = self.tasks.join_next() => joined,
                _ = cancel.cancelled() => {
                    let e = anyhow!("sync cancelled while encoding files; the next run finishes it");
                    return Err(self.abandon(e).await);
                }
            };
            let Some(joined) = joined else { break };
            match joined.map_err(|e| anyhow!("an encoding thread failed: {e}")) {
                Ok(Ok(n)) => resources += n,
                Ok(Err(e)) | Err(e) => return Err(self.abandon(e).await),
            }
        }
        crate::memory::release_free_memory();
        let pool = self.pool.clone();
        let (rejects, rejects_file) = match pool.finish_rejects() {
            Ok(r) => r,
            Err(e) => return Err(self.abandon(e).await),
        };
        if let Some(max) = pool.input.max_rejects
            && rejects > max
        {
            let e = anyhow!(
                "{rejects} resources were rejected, more than --max-rejects {max}; nothing was committed{}",
                rejects_file
                    .as_ref()
                    .map(|p| format!(" (see {})", p.display()))
                    .unwrap_or_default()
            );
            // The list is what the message points to: it stays.
            self.keep_rejects = true;
            return Err(self.abandon(e).await);
        }
        for (t, n) in pool.skipped_types().unwrap_or_default() {
            tracing::warn!(resource_type = %t, resources = n, "resources of a type that was not requested were skipped");
        }

        let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (t, id) in deletions {
            by_type.entry(t).or_default().push(id);
        }
        for t in by_type.keys() {
            if let Err(e) = open_table(&pool, t.clone()).await {
                return Err(self.abandon(e).await);
            }
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
        let changes = Changes {
            deletions: by_type,
            group_members: self.group_members.take(),
            transaction_time,
        };
        let (committed, failed) = commit::commit_all(&pool, changes, self.parallel, &cancel).await;
        let commit::Committed { tables, views } = committed;
        if let Some(removal) = removal {
            let _ = removal.await;
        }
        if let Some(e) = failed {
            // The tables that did commit carry their rejects in the list.
            self.keep_rejects = tables
                .values()
                .any(|t| t.status != Some(WriteStatus::AlreadyApplied));
            return Err(self.abandon(e).await);
        }
        Ok(SyncReport {
            sync_id: pool.input.app_id.clone(),
            transaction_time: Some(transaction_time.to_rfc3339_opts(SecondsFormat::Millis, true)),
            tables,
            views,
            resources,
            rejects,
            rejects_file,
            duration: self.started.elapsed(),
            ..Default::default()
        })
    }

    /// Ends a failed run and returns its error: the encoding threads stop at their next batch
    /// and are waited for, the rows written and not committed are deleted, and the folders of
    /// tables it created and its list of rejects (unless something was committed, or the
    /// list explains the failure) are removed.
    pub async fn abandon(&mut self, error: anyhow::Error) -> anyhow::Error {
        self.pool.stop();
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok(Err(e)) = joined {
                tracing::debug!(error = %format!("{e:#}"), "an encoding thread stopped");
            }
        }
        self.pool.discard().await;
        self.pool.remove_new_table_dirs();
        if !self.keep_rejects {
            self.pool.discard_rejects();
        }
        error
    }
}

impl Drop for Applier {
    /// An applier dropped with files still encoding (its run was abandoned from outside)
    /// stops their threads at the next batch.
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            self.pool.stop();
        }
    }
}

/// Opens the tables of `views` (under `<delta-path>/views/`); also returns the folders of
/// local ones that do not exist yet (removed again if the run fails).
async fn open_views(
    sink: &DeltaSink,
    views: &[Arc<MaintainedView>],
) -> anyhow::Result<(ViewSlots, Vec<PathBuf>)> {
    let mut slots = Vec::new();
    let mut created = Vec::new();
    for view in views {
        let table = views::open_table(sink, &view.name)
            .await
            .with_context(|| format!("opening the table of the view {}", view.name))?;
        if let Ok(dir) = table.url().to_file_path()
            && table.url().scheme() == "file"
            && !dir.exists()
        {
            created.push(dir);
        }
        slots.push(Arc::new(ViewSlot::new(view.clone(), table)));
    }
    Ok((ViewSlots::new(slots), created))
}

/// Opens the table of `resource_type` (on a blocking thread: opening blocks on the runtime).
async fn open_table(pool: &Arc<Pool>, resource_type: String) -> anyhow::Result<()> {
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || pool.slot(&resource_type)).await??;
    Ok(())
}

/// Applies local files in one go (imports).
pub(crate) async fn apply_files(
    sink: &DeltaSink,
    encoder: Encoder,
    files: Vec<InputFile>,
    deletions: Vec<(String, String)>,
    input: ApplyInput,
    transaction_time: DateTime<Utc>,
) -> anyhow::Result<SyncReport> {
    input
        .events
        .emit(SyncEvent::EncodingStarted { files: files.len() });
    let mut applier = Applier::new(sink, encoder, input).await?;
    for file in files {
        if let Err(e) = applier.add(file).await {
            return Err(applier.abandon(e).await);
        }
    }
    applier.finish(deletions, transaction_time).await
}
