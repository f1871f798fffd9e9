//! The input of one commit: rows (written into new data files as they come), deletes and
//! a reconciliation set.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};

use super::ResourceTable;
use super::stage::{FileSizing, Stage, describe_difference};
use crate::error::{Result, SinkError};
use crate::keys::IdSet;

/// Ids deleted on the server, with the transaction time (epoch µs) of the delete.
pub(crate) type Deletes = HashMap<Box<str>, i64>;

/// The ids to keep, and which stored rows may go when their id is not among them.
pub(crate) type Reconcile = (IdSet, ReconcileScope);

/// Input of one commit: rows (written into new files as they come), deletes and an
/// optional reconciliation set.
pub struct TableWriter {
    stage: Stage,
    schema: SchemaRef,
    deletes: Deletes,
    reconcile: Option<Reconcile>,
}

/// Which stored rows a reconciliation may remove (those whose id the export lacks).
#[derive(Debug, Clone)]
pub enum ReconcileScope {
    /// Every stored row.
    All,
    /// Stored rows whose id is in the set.
    Ids(IdSet),
    /// Stored rows that reference `<target_type>/<id>`, id in `targets`, in one of
    /// `columns` (top-level Reference or list-of-Reference columns), e.g. the rows of a
    /// Group's patients.
    References {
        columns: Vec<String>,
        target_type: String,
        targets: IdSet,
    },
}

impl ReconcileScope {
    /// Columns the scan must read besides the keys.
    pub(crate) fn columns(&self) -> &[String] {
        match self {
            ReconcileScope::References { columns, .. } => columns,
            _ => &[],
        }
    }
}

/// What a [`TableWriter`] hands to the commit besides its files.
pub(crate) struct CommitInput {
    pub(crate) schema: SchemaRef,
    pub(crate) deletes: Deletes,
    pub(crate) reconcile: Option<Reconcile>,
    pub(crate) input_rows: u64,
}

impl ResourceTable {
    /// Starts a write whose batches must have `schema` (the Pathling encoding of the
    /// resource type: `id`, `meta{versionId, lastUpdated}`, ...; in general the key columns
    /// `SinkConfig::keys` names, and grouped keys' placeholder flag). Batches are written
    /// into new data files in the table's location as they come; the table sees them only
    /// once [`ResourceTable::commit`] commits.
    pub fn writer(&self, schema: SchemaRef) -> TableWriter {
        let config = self.writer_configs(self.config.new_file_properties(), None)(schema.clone());
        TableWriter {
            stage: Stage::new(
                self.name.clone(),
                self.url.clone(),
                self.storage.clone(),
                config,
                schema.clone(),
                FileSizing {
                    min_rows: self.config.new_file_rows,
                    target_bytes: self.config.new_file_bytes,
                },
            ),
            schema,
            deletes: HashMap::new(),
            reconcile: None,
        }
    }
}

impl TableWriter {
    /// Writes one batch into the write's current new data file (memory stays at about one
    /// row group per writer).
    pub async fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        self.stage.push(batch).await
    }

    /// Takes over the rows of `other`, a writer of the same table: several writers can be
    /// filled in parallel (each encodes its own files) and committed as one.
    pub async fn absorb(&mut self, other: TableWriter) -> Result<()> {
        if other.schema != self.schema {
            let detail = format!(
                "writers of one table with different schemas: {}",
                describe_difference(&self.schema, &other.schema)
            );
            let name = other.stage.table().to_string();
            other.discard().await?;
            return Err(SinkError::SchemaMismatch {
                table: name,
                detail,
            });
        }
        for (id, tt) in other.deletes {
            let e = self.deletes.entry(id).or_insert(tt);
            *e = (*e).max(tt);
        }
        if self.reconcile.is_none() {
            self.reconcile = other.reconcile;
        }
        self.stage.absorb(other.stage).await
    }

    /// Abandons the write: deletes the data files written so far.
    pub async fn discard(self) -> Result<()> {
        let name = self.stage.table().to_string();
        self.stage.finish().await?.discard(&name).await;
        Ok(())
    }

    /// Whether the writer has a data file open, i.e. holds rows in memory. It closes a file
    /// once the file has its rows; the next batch starts a new one.
    pub fn has_open_file(&self) -> bool {
        self.stage.has_open_file()
    }

    /// Closes the data file being written now (e.g. when no more rows of this type are
    /// coming), which releases its Parquet writer's buffers; a later push opens a new file.
    pub async fn close_file(&mut self) -> Result<()> {
        self.stage.close_current().await
    }

    /// Rows staged so far.
    pub fn staged_rows(&self) -> u64 {
        self.stage.rows()
    }

    /// The declared schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Adds ids deleted on the server as of `transaction_time`: a stored (or incoming)
    /// row is removed only if its `meta.lastUpdated` is not newer (null is not newer).
    pub fn delete<I, S>(&mut self, ids: I, transaction_time: DateTime<Utc>)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let tt = transaction_time.timestamp_micros();
        for id in ids {
            let e = self.deletes.entry(Box::from(id.as_ref())).or_insert(tt);
            *e = (*e).max(tt);
        }
    }

    /// Removes stored rows whose id is not in `keep` (only those in `candidates`, if
    /// given). `keep` should be every id the server exported for the type.
    pub fn reconcile(&mut self, keep: IdSet, candidates: Option<IdSet>) {
        self.reconcile_within(
            keep,
            candidates.map_or(ReconcileScope::All, ReconcileScope::Ids),
        );
    }

    /// Removes stored rows within `scope` whose id is not in `keep`.
    pub fn reconcile_within(&mut self, keep: IdSet, scope: ReconcileScope) {
        self.reconcile = Some((keep, scope));
    }

    /// The write's files, still open, and the rest of what the commit needs.
    pub(crate) fn into_commit_input(self) -> (Stage, CommitInput) {
        let input = CommitInput {
            input_rows: self.stage.rows(),
            schema: self.schema,
            deletes: self.deletes,
            reconcile: self.reconcile,
        };
        (self.stage, input)
    }
}
