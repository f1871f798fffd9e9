//! One commit, step by step: prepare the table, match the input against it by id, plan
//! what happens to every file, rewrite and mark, then write everything to the log as
//! one Delta commit and delete the new files it did not take.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::Schema;
use chrono::{DateTime, Utc};
use deltalake::TableProperty;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, LogicalFileView, Remove, StructType};
use deltalake::protocol::DeltaOperation;

use super::actions::{self, count_files};
use super::index::bucket_count;
use super::matching::{KeyMatch, Matched, StoredFiles};
use super::options::{CommitOptions, Cursor, SaveMode};
use super::outcome::{WriteOutcome, WriteStatus};
use super::plan::{NewPlan, PlanRules, ResolvedPlan, StoredFile, StoredPlan};
use super::stage::{Staged, describe_difference};
use super::writer::{CommitInput, TableWriter};
use super::{ResourceTable, load_table};
use crate::error::{Result, SinkError};
use crate::keys::IdSet;

/// How far a commit got, for cleaning up after it.
#[derive(Default)]
struct CommitProgress {
    /// New files the commit adds as written.
    keep: HashSet<String>,
    /// Set once the commit was attempted: it may have landed, so its files must stay.
    committing: bool,
}

/// Whether a commit goes ahead, once the table is loaded and the input checked.
enum Prepared {
    /// No commit: this is the outcome.
    Done(WriteOutcome),
    /// The table (created on disk if new) is ready; `schema` is the input's in Delta terms.
    Ready { exists: bool, schema: StructType },
}

/// Whether a planned commit writes to the log.
enum Planned {
    Done(WriteOutcome),
    Commit(Box<PlannedCommit>),
}

/// Everything the log write needs.
#[derive(Clone)]
struct PlannedCommit {
    /// Creates the table (with `schema`) instead of committing `operation` to it.
    create: bool,
    schema: StructType,
    operation: DeltaOperation,
    actions: Vec<Action>,
    properties: CommitProperties,
    /// New files adopted as written.
    adopted: HashSet<String>,
    out: WriteOutcome,
    /// The commit's `fhirsync.commitId`.
    commit_id: String,
}

impl ResourceTable {
    /// Applies a staged write as ONE Delta commit (data, deletes, reconciliation and the
    /// cursor together), so a crash leaves either the old or the new state.
    ///
    /// Merge semantics: rows are deduplicated by key (`SinkConfig::keys`, `id` by
    /// default; newest wins: later `meta.lastUpdated`, then higher `meta.versionId`); new
    /// keys are appended without touching existing files; a stored row is replaced only by
    /// a newer incoming row (for grouped keys: every stored row of a key by a newer group),
    /// and only the files holding replaced or removed rows are rewritten.
    pub async fn commit(
        &mut self,
        writer: TableWriter,
        options: CommitOptions,
    ) -> Result<WriteOutcome> {
        let (stage, input) = writer.into_commit_input();
        let staged = stage.finish().await?;
        let mut progress = CommitProgress::default();
        let result = self
            .commit_staged(&staged, input, options, &mut progress)
            .await;
        match &result {
            // Written files the commit did not take (rewritten or all rows lost) go.
            Ok(_) => {
                let unused = staged
                    .files
                    .iter()
                    .filter(|f| !progress.keep.contains(&f.add.path))
                    .map(|f| f.path())
                    .collect();
                staged.delete(unused, &self.name).await;
            }
            Err(_) if !progress.committing => staged.discard(&self.name).await,
            // The commit may have landed: its files must stay (vacuum takes them otherwise).
            Err(_) => {}
        }
        result
    }

    /// Removes `ids` whose stored `meta.lastUpdated` is not newer than
    /// `transaction_time`, in one commit (with the cursor, if given).
    pub async fn delete_ids<I, S>(
        &mut self,
        ids: I,
        transaction_time: DateTime<Utc>,
        cursor: Option<Cursor>,
    ) -> Result<WriteOutcome>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut w = self.writer(self.table_schema()?);
        w.delete(ids, transaction_time);
        self.commit(w, merge_with(cursor)).await
    }

    /// Removes every stored row whose id is not in `keep` (restricted to ids in
    /// `candidates` when given, for Group-scoped exports); one commit. Returns the count.
    pub async fn reconcile(
        &mut self,
        keep: IdSet,
        candidates: Option<IdSet>,
        cursor: Option<Cursor>,
    ) -> Result<u64> {
        if !self.exists() {
            return Ok(0);
        }
        let mut w = self.writer(self.table_schema()?);
        w.reconcile(keep, candidates);
        let out = self.commit(w, merge_with(cursor)).await?;
        Ok(out.reconciled)
    }

    /// The table's schema; an empty one when there is no table.
    fn table_schema(&self) -> Result<arrow::datatypes::SchemaRef> {
        Ok(self
            .arrow_schema()?
            .unwrap_or_else(|| Arc::new(Schema::empty())))
    }

    /// [`ResourceTable::commit`] once the writer's files are closed; `progress` tells the
    /// caller, whatever the result, which new files to keep.
    async fn commit_staged(
        &mut self,
        staged: &Staged,
        input: CommitInput,
        options: CommitOptions,
        progress: &mut CommitProgress,
    ) -> Result<WriteOutcome> {
        match self.plan_commit(staged, input, options).await? {
            Planned::Done(out) => Ok(out),
            Planned::Commit(commit) => {
                progress.keep = commit.adopted.clone();
                progress.committing = true;
                self.write_commit(*commit).await
            }
        }
    }

    /// Everything up to the log write: checks, matching, the file plan, rewrites and
    /// deletion vectors, and the log entry.
    async fn plan_commit(
        &mut self,
        staged: &Staged,
        input: CommitInput,
        options: CommitOptions,
    ) -> Result<Planned> {
        let (exists, schema) = match self.prepare(&input, &options).await? {
            Prepared::Done(out) => return Ok(Planned::Done(out)),
            Prepared::Ready { exists, schema } => (exists, schema),
        };
        let mode = options.mode;
        let mut out = WriteOutcome::empty(WriteStatus::Committed, None);
        let files = self.files(exists)?;
        let scan = exists && needs_scan(mode, &input);
        let deleted_rows = if scan {
            self.read_deletion_vectors(&files).await?
        } else {
            vec![None; files.len()]
        };
        let stored = scan.then(|| StoredFiles {
            store: self.table.object_store(),
            files: &files,
            deleted_rows: &deleted_rows,
        });
        let matched = self
            .match_input(staged, &input, mode, stored, &mut out)
            .await?;
        let stored = if exists && mode == SaveMode::Overwrite {
            StoredPlan::remove_all(files.len())
        } else if scan {
            let rules = PlanRules::new(&self.config, self.marks_rows()?);
            let facts: Vec<StoredFile> = files.iter().map(StoredFile::of).collect();
            StoredPlan::new(
                &facts,
                matched.removed,
                deleted_rows,
                out.inserted > 0,
                &rules,
            )
        } else {
            StoredPlan::default()
        };
        let new = NewPlan::new(&staged.files, &matched.winners);
        drop(matched.winners);
        let adopted: HashSet<String> = new.adopted.iter().map(|a| a.path.clone()).collect();
        let (adds, removes) = self
            .write_files(stored.resolve(&files), new, &mut out)
            .await?;
        if adds.is_empty() && removes.is_empty() && options.cursor.is_none() && exists {
            // Nothing to record: avoid an empty commit.
            out.status = WriteStatus::NothingToDo;
            out.version = self.version();
            return Ok(Planned::Done(out));
        }
        // Marking rows where the table lacks deletion vectors enables them in this commit,
        // beside its first vectors (protocol and property), never in a commit of its own.
        let mut log = if out.files_marked > 0 {
            self.enabling_actions()?
        } else {
            Vec::new()
        };
        log.extend(actions::actions(adds, removes));
        let filters = !input.deletes.is_empty() || input.reconcile.is_some();
        let commit_id = uuid::Uuid::new_v4().to_string();
        let properties = actions::commit_properties(
            mode,
            options.cursor.as_ref(),
            &out,
            self.version(),
            Utc::now().timestamp_millis(),
            &commit_id,
        );
        Ok(Planned::Commit(Box::new(PlannedCommit {
            commit_id,
            create: !exists,
            schema,
            operation: actions::operation(mode, filters, input.input_rows),
            actions: log,
            properties,
            adopted,
            out,
        })))
    }

    /// Matches the staged rows against the `stored` ones (none: the input is only
    /// deduplicated), counting into `out`.
    async fn match_input(
        &self,
        staged: &Staged,
        input: &CommitInput,
        mode: SaveMode,
        stored: Option<StoredFiles<'_>>,
        out: &mut WriteOutcome,
    ) -> Result<Matched> {
        KeyMatch {
            table: &self.name,
            keys: &self.config.keys,
            mode,
            deletes: &input.deletes,
            reconcile: input.reconcile.as_ref(),
            stored,
            buckets: bucket_count(input.input_rows, self.config.index_bucket_rows),
            spill_dir: self.config.spill_dir.as_deref(),
        }
        .run(staged, out)
        .await
    }

    /// Carries out the plans' rewrites and marks; returns the commit's add and remove
    /// actions and counts its files into `out`.
    async fn write_files(
        &self,
        stored: ResolvedPlan,
        new: NewPlan,
        out: &mut WriteOutcome,
    ) -> Result<(Vec<Add>, Vec<Remove>)> {
        let ResolvedPlan {
            removes,
            mut rewrites,
            marks,
            compacted,
        } = stored;
        out.files_compacted = compacted;
        let stored_rewrites = rewrites.len() as u64;
        rewrites.extend(new.rewrites);
        let mut adds = new.adopted;
        if !rewrites.is_empty() {
            out.files_rewritten = stored_rewrites - compacted;
            adds.extend(self.rewrite(rewrites).await?);
        }
        count_files(out, &adds, removes.len(), marks.len());
        // The marked files stay, re-added with their new deletion vectors.
        adds.extend(self.mark_rows(marks).await?);
        Ok((adds, removes))
    }

    /// Reloads the table and settles whether a commit happens at all (save mode, cursor,
    /// an empty input without a table); checks the input's schema against the table's;
    /// creates a new table's directory.
    async fn prepare(&mut self, input: &CommitInput, options: &CommitOptions) -> Result<Prepared> {
        self.reload().await?;
        let exists = self.exists();
        match options.mode {
            SaveMode::Ignore if exists => {
                let out = WriteOutcome::empty(WriteStatus::IgnoredExisting, self.version());
                return Ok(Prepared::Done(out));
            }
            SaveMode::ErrorIfExists if exists => {
                return Err(SinkError::TableExists {
                    table: self.name.clone(),
                });
            }
            _ => {}
        }
        if let (Some(cursor), true) = (&options.cursor, exists)
            && let Some(done) = self.committed_version(&cursor.app_id).await?
            && done >= cursor.version
        {
            tracing::info!(table = %self.name, app_id = %cursor.app_id, committed = done,
                requested = cursor.version, "export already applied; skipping");
            let out = WriteOutcome::empty(WriteStatus::AlreadyApplied, self.version());
            return Ok(Prepared::Done(out));
        }
        if !exists && input.input_rows == 0 && input.schema.fields().is_empty() {
            let out = WriteOutcome::empty(WriteStatus::NothingToDo, None);
            return Ok(Prepared::Done(out));
        }
        let schema = self.check_schema(input, exists)?;
        if !exists {
            self.table = load_table(&self.url, &self.storage, true)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(Prepared::Ready { exists, schema })
    }

    /// The input's schema in Delta terms; it must be the table's when rows are written to
    /// an existing table.
    fn check_schema(&self, input: &CommitInput, exists: bool) -> Result<StructType> {
        let mismatch = |detail: String| SinkError::SchemaMismatch {
            table: self.name.clone(),
            detail,
        };
        let schema: StructType = input
            .schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| mismatch(format!("schema cannot be stored in Delta: {e}")))?;
        if exists
            && input.input_rows > 0
            && let Some(difference) = self.difference(&schema, &input.schema)?
        {
            return Err(mismatch(format!(
                "input does not match the table: {difference}"
            )));
        }
        Ok(schema)
    }

    /// How rows of `schema` differ from the table's, if they do: `None` when they can be
    /// written to it, or when there is no table yet.
    pub fn schema_difference(
        &self,
        schema: &arrow::datatypes::SchemaRef,
    ) -> Result<Option<String>> {
        if !self.exists() {
            return Ok(None);
        }
        let kernel: StructType =
            schema
                .as_ref()
                .try_into_kernel()
                .map_err(|e| SinkError::SchemaMismatch {
                    table: self.name.clone(),
                    detail: format!("schema cannot be stored in Delta: {e}"),
                })?;
        self.difference(&kernel, schema)
    }

    /// [`ResourceTable::schema_difference`] of an existing table, `schema` in both forms.
    fn difference(
        &self,
        schema: &StructType,
        arrow_schema: &arrow::datatypes::SchemaRef,
    ) -> Result<Option<String>> {
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        if snapshot.schema().as_ref() == schema {
            return Ok(None);
        }
        let table_arrow = snapshot.snapshot().arrow_schema();
        Ok(Some(describe_difference(&table_arrow, arrow_schema)))
    }

    /// The table's data files (none when there is no table).
    fn files(&self, exists: bool) -> Result<Vec<LogicalFileView>> {
        if !exists {
            return Ok(Vec::new());
        }
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        Ok(snapshot.log_data().iter().collect())
    }

    /// Writes a planned commit to the log: creates the table, or commits to it.
    ///
    /// A conflict may be this commit itself: the store wrote the log entry but its answer was
    /// lost, and the retried write met the entry it had made. The log is then read for the
    /// commit's id; found, the commit succeeded.
    async fn write_commit(&mut self, commit: PlannedCommit) -> Result<WriteOutcome> {
        let first_version = match commit.create {
            true => 0,
            false => self.version().map_or(0, |v| v + 1),
        };
        let commit_id = commit.commit_id.clone();
        let mut out = commit.out.clone();
        match self.try_write_commit(commit).await {
            Ok(()) => {}
            Err(e) if e.is_conflict() && self.holds_commit(first_version, &commit_id).await? => {
                tracing::warn!(table = %self.name, commit_id = %commit_id,
                    "the store lost the answer to a commit that landed: taken as committed");
            }
            Err(e) => return Err(e),
        }
        out.version = self.version();
        tracing::info!(table = %self.name, version = ?out.version, inserted = out.inserted,
            updated = out.updated, unchanged = out.unchanged, deleted = out.deleted,
            reconciled = out.reconciled, files_added = out.files_added,
            files_removed = out.files_removed, "committed");
        Ok(out)
    }

    /// Whether the log, from version `from` on, holds the commit `commit_id` (the table
    /// reloaded).
    async fn holds_commit(&mut self, from: u64, commit_id: &str) -> Result<bool> {
        self.reload().await?;
        let Some(latest) = self.version() else {
            return Ok(false);
        };
        let store = self.table.log_store();
        for version in from..=latest {
            let entry = store
                .read_commit_entry(version)
                .await
                .map_err(|e| self.err(e))?;
            if entry.is_some_and(|e| actions::is_commit(&e, commit_id)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The log write of [`ResourceTable::write_commit`].
    async fn try_write_commit(&mut self, commit: PlannedCommit) -> Result<()> {
        let PlannedCommit {
            create,
            schema,
            operation,
            actions,
            properties,
            ..
        } = commit;
        if create {
            let mut builder = self.table.create();
            if self.config.deletion_vectors {
                builder = builder.with_configuration_property(
                    TableProperty::EnableDeletionVectors,
                    Some("true"),
                );
            }
            let table = builder
                .with_columns(schema.fields().cloned())
                .with_save_mode(deltalake::protocol::SaveMode::ErrorIfExists)
                .with_actions(actions)
                .with_commit_properties(properties)
                .await
                .map_err(|e| match e {
                    // Another writer created the table since it was loaded.
                    e if e.to_string().contains("already exists") => SinkError::Conflict {
                        table: self.name.clone(),
                        source: e,
                    },
                    e => self.err(e),
                })?;
            self.table = table;
        } else {
            let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
            CommitBuilder::from(properties)
                .with_actions(actions)
                .build(Some(snapshot), self.table.log_store(), operation)
                .await
                .map_err(|e| self.err(e))?;
            self.reload().await?;
        }
        Ok(())
    }
}

/// Whether the stored rows must be read: to match the input (merge), or to apply deletes
/// or a reconciliation. An overwrite replaces them all unread.
fn needs_scan(mode: SaveMode, input: &CommitInput) -> bool {
    mode != SaveMode::Overwrite
        && (mode == SaveMode::Merge && input.input_rows > 0
            || !input.deletes.is_empty()
            || input.reconcile.is_some())
}

fn merge_with(cursor: Option<Cursor>) -> CommitOptions {
    CommitOptions {
        mode: SaveMode::Merge,
        cursor,
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::generator::{RowSpec, observation_batch, observation_schema};
    use crate::{DeltaSink, StorageOptions};

    /// Plans a merge of one version of row `a` with a cursor of app id `app`.
    async fn plan(table: &mut ResourceTable, version: u64, cursor_ms: i64) -> PlannedCommit {
        let mut w = table.writer(observation_schema());
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let row = RowSpec::new("a", version, version as i64);
        w.push(&observation_batch(&[row], &mut rng)).await.unwrap();
        let (stage, input) = w.into_commit_input();
        let staged = stage.finish().await.unwrap();
        let at = DateTime::from_timestamp_millis(cursor_ms).unwrap();
        let options = merge_with(Some(Cursor::new("app", at, "s")));
        match table.plan_commit(&staged, input, options).await.unwrap() {
            Planned::Commit(commit) => *commit,
            Planned::Done(out) => panic!("no commit planned: {out:?}"),
        }
    }

    /// The race the concurrent-writers test can only provoke, played in a fixed order.
    #[tokio::test]
    async fn of_two_commits_planned_on_one_version_the_second_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let sink = DeltaSink::new(dir.path().to_str().unwrap(), StorageOptions::new()).unwrap();
        let mut t = sink.table("Observation").await.unwrap();
        let first = plan(&mut t, 1, 1).await;
        assert!(first.create);
        t.write_commit(first).await.unwrap();

        let mut t1 = sink.table("Observation").await.unwrap();
        let mut t2 = sink.table("Observation").await.unwrap();
        let p1 = plan(&mut t1, 2, 10).await;
        let p2 = plan(&mut t2, 3, 20).await;
        assert!(!p1.create && !p2.create);
        assert_eq!((p1.out.updated, p2.out.updated), (1, 1));
        assert_eq!(t1.write_commit(p1).await.unwrap().version, Some(1));
        let err = t2.write_commit(p2).await.unwrap_err();
        assert!(err.is_conflict(), "{err}");
        t2.reload().await.unwrap();
        assert_eq!(t2.version(), Some(1));
        assert_eq!(t2.committed_version("app").await.unwrap(), Some(10));
    }

    /// The store wrote a commit but its answer was lost: the writer's retry meets the entry it
    /// made itself, and must take it as its own, not as a conflict.
    #[tokio::test]
    async fn a_commit_that_landed_unanswered_is_found_by_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let sink = DeltaSink::new(dir.path().to_str().unwrap(), StorageOptions::new()).unwrap();
        let mut t = sink.table("Observation").await.unwrap();
        let first = plan(&mut t, 1, 1).await;
        t.write_commit(first).await.unwrap();

        let mut unanswered = sink.table("Observation").await.unwrap();
        let planned = plan(&mut unanswered, 2, 10).await;
        let retry = planned.clone();
        // The write lands through another handle; `unanswered` still knows version 0 only.
        let mut store = sink.table("Observation").await.unwrap();
        assert_eq!(store.write_commit(planned).await.unwrap().version, Some(1));
        assert_eq!(unanswered.version(), Some(0));
        let out = unanswered.write_commit(retry).await.unwrap();
        assert_eq!(
            out.version,
            Some(1),
            "taken as committed, not committed twice"
        );
        assert_eq!(out.updated, 1);
        assert_eq!(unanswered.committed_version("app").await.unwrap(), Some(10));
    }

    #[test]
    fn stored_rows_are_read_only_when_something_can_touch_them() {
        let input = |rows: u64, deletes: &[&str], reconcile: bool| CommitInput {
            schema: observation_schema(),
            deletes: deletes.iter().map(|id| (Box::from(*id), 0)).collect(),
            reconcile: reconcile.then(|| (IdSet::default(), super::super::ReconcileScope::All)),
            input_rows: rows,
        };
        assert!(needs_scan(SaveMode::Merge, &input(1, &[], false)));
        assert!(!needs_scan(SaveMode::Merge, &input(0, &[], false)));
        assert!(needs_scan(SaveMode::Merge, &input(0, &["x"], false)));
        assert!(needs_scan(SaveMode::Merge, &input(0, &[], true)));
        assert!(!needs_scan(SaveMode::Append, &input(5, &[], false)));
        assert!(needs_scan(SaveMode::Append, &input(5, &["x"], false)));
        assert!(!needs_scan(SaveMode::Overwrite, &input(5, &["x"], true)));
        assert!(!needs_scan(SaveMode::Ignore, &input(5, &[], false)));
        assert!(needs_scan(SaveMode::ErrorIfExists, &input(5, &[], true)));
    }
}
