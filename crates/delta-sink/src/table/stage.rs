//! Incoming batches written straight into new, not yet committed data files of the table,
//! so that a row is encoded once: the commit adopts every file whose rows all win as it
//! is and rewrites only files that hold losing rows (duplicates, stale or deleted rows).
//! Files of a write that never commits are deleted (or left to `vacuum` after a crash).

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::ObjectStore;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::Add;
use futures::StreamExt;
use std::sync::Arc;
use url::Url;

use super::load_table;
use crate::error::SinkError;
use crate::location::StorageOptions;

/// One data file written by a [`Stage`], not yet part of the table.
#[derive(Debug, Clone)]
pub(crate) struct NewFile {
    pub(crate) add: Add,
    pub(crate) rows: u64,
}

/// How a stage sizes its files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileSizing {
    /// Rows of the first file, and the fewest rows any file gets.
    pub(crate) min_rows: u64,
    /// Compressed bytes a file aims at (later files are sized from the bytes per row seen).
    pub(crate) target_bytes: u64,
}

/// The new data files of one write, in the order their rows arrived.
pub(crate) struct Stage {
    table: String,
    url: Url,
    storage: StorageOptions,
    schema: SchemaRef,
    config: WriterConfig,
    sizing: FileSizing,
    store: Option<Arc<dyn ObjectStore>>,
    current: Option<DeltaWriter>,
    current_rows: u64,
    file_rows: u64,
    files: Vec<NewFile>,
    rows: u64,
}

impl Stage {
    pub(crate) fn new(
        table: String,
        url: Url,
        storage: StorageOptions,
        config: WriterConfig,
        schema: SchemaRef,
        sizing: FileSizing,
    ) -> Self {
        let sizing = FileSizing {
            min_rows: sizing.min_rows.max(1),
            ..sizing
        };
        Self {
            table,
            url,
            storage,
            schema,
            config,
            sizing,
            store: None,
            current: None,
            current_rows: 0,
            file_rows: sizing.min_rows,
            files: Vec::new(),
            rows: 0,
        }
    }

    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether a data file is open (holding buffered rows).
    pub(crate) fn has_open_file(&self) -> bool {
        self.current.is_some()
    }

    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    fn delta(&self, source: deltalake::DeltaTableError) -> SinkError {
        SinkError::delta(&self.table, source)
    }

    /// The table's object store. A local table directory is created here: files go in
    /// before the first commit.
    async fn store(&mut self) -> Result<Arc<dyn ObjectStore>, SinkError> {
        if let Some(store) = &self.store {
            return Ok(store.clone());
        }
        let table = load_table(&self.url, &self.storage, true)
            .await
            .map_err(|e| self.delta(e))?;
        let store = table.object_store();
        self.store = Some(store.clone());
        Ok(store)
    }

    pub(crate) async fn push(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if batch.schema().fields() != self.schema.fields() {
            return Err(SinkError::SchemaMismatch {
                table: self.table.clone(),
                detail: format!(
                    "batch schema differs from the declared schema: {}",
                    describe_difference(&self.schema, &batch.schema())
                ),
            });
        }
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec()).map_err(
            |source| SinkError::Arrow {
                table: self.table.clone(),
                source,
            },
        )?;
        if self.current.is_none() {
            let store = self.store().await?;
            self.current = Some(DeltaWriter::new(store, self.config.clone()));
            self.current_rows = 0;
        }
        let Some(writer) = self.current.as_mut() else {
            return Ok(());
        };
        if let Err(e) = writer.write(&batch).await {
            return Err(self.delta(e));
        }
        self.current_rows += batch.num_rows() as u64;
        self.rows += batch.num_rows() as u64;
        if self.current_rows >= self.file_rows {
            self.close_current().await?;
        }
        Ok(())
    }

    pub(crate) async fn close_current(&mut self) -> Result<(), SinkError> {
        let Some(writer) = self.current.take() else {
            return Ok(());
        };
        let adds = writer.close().await.map_err(|e| self.delta(e))?;
        // One writer without a target size writes exactly one file.
        let [add] = <[Add; 1]>::try_from(adds).map_err(|adds| SinkError::InvalidData {
            table: self.table.clone(),
            detail: format!("expected one data file per write, got {}", adds.len()),
        })?;
        let rows = self.current_rows;
        // Size the next file from this one's bytes per row.
        let size = u64::try_from(add.size).unwrap_or(0).max(1);
        self.file_rows = (self.sizing.target_bytes.saturating_mul(rows) / size)
            .clamp(self.sizing.min_rows, u64::from(u32::MAX));
        self.files.push(NewFile { add, rows });
        Ok(())
    }

    /// Closes `other`'s last file and takes its files over (a second stage of the same table).
    pub(crate) async fn absorb(&mut self, other: Stage) -> Result<(), SinkError> {
        let rows = other.rows;
        let staged = other.finish().await?;
        if self.store.is_none() {
            self.store = staged.store;
        }
        self.files.extend(staged.files);
        self.rows += rows;
        Ok(())
    }

    /// Closes the last file and returns them all.
    pub(crate) async fn finish(mut self) -> Result<Staged, SinkError> {
        self.close_current().await?;
        Ok(Staged {
            store: self.store.take(),
            files: std::mem::take(&mut self.files),
        })
    }
}

/// The files a finished [`Stage`] wrote.
pub(crate) struct Staged {
    pub(crate) store: Option<Arc<dyn ObjectStore>>,
    pub(crate) files: Vec<NewFile>,
}

impl Staged {
    /// Deletes the files in `paths` (best effort: a file left behind is not part of the
    /// table, and `vacuum` removes it).
    pub(crate) async fn delete(&self, paths: Vec<deltalake::Path>, table: &str) {
        let Some(store) = &self.store else { return };
        if paths.is_empty() {
            return;
        }
        let stream = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
        let mut results = store.delete_stream(stream);
        while let Some(r) = results.next().await {
            if let Err(e) = r {
                tracing::warn!(table, error = %e, "could not delete an uncommitted data file");
            }
        }
    }

    /// Deletes every file (the write did not commit).
    pub(crate) async fn discard(&self, table: &str) {
        let paths = self.files.iter().map(|f| f.path()).collect();
        self.delete(paths, table).await;
    }
}

impl NewFile {
    pub(crate) fn path(&self) -> deltalake::Path {
        deltalake::Path::from(self.add.path.as_str())
    }
}

/// A short human description of how two schemas differ.
pub(crate) fn describe_difference(expected: &SchemaRef, actual: &SchemaRef) -> String {
    for f in expected.fields() {
        match actual.field_with_name(f.name()) {
            Err(_) => return format!("missing column `{}`", f.name()),
            Ok(a) if a != f.as_ref() => {
                return format!(
                    "column `{}` is {} (nullable: {}), expected {} (nullable: {})",
                    f.name(),
                    a.data_type(),
                    a.is_nullable(),
                    f.data_type(),
                    f.is_nullable()
                );
            }
            Ok(_) => {}
        }
    }
    for a in actual.fields() {
        if expected.field_with_name(a.name()).is_err() {
            return format!("unexpected column `{}`", a.name());
        }
    }
    "column order differs".to_string()
}
