//! Incoming batches written straight into new, not yet committed data files of the table,
//! so that a row is encoded once: the commit adopts every file whose rows all win as it
//! is and rewrites only files that hold losing rows (duplicates, stale or deleted rows).
//! Files of a write that never commits are deleted (or left to `vacuum` after a crash).

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, SchemaRef};
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

/// A short human description of how two schemas differ: the first column, nested ones by
/// their dotted path, that is missing, unexpected or of another type.
pub(crate) fn describe_difference(expected: &SchemaRef, actual: &SchemaRef) -> String {
    fields_difference("", expected.fields(), actual.fields())
        .unwrap_or_else(|| "column order differs".to_string())
}

fn fields_difference(prefix: &str, expected: &Fields, actual: &Fields) -> Option<String> {
    for f in expected {
        let path = format!("{prefix}{}", f.name());
        match actual.find(f.name()) {
            None => return Some(format!("missing column `{path}`")),
            Some((_, a)) if a != f => return Some(field_difference(&path, f, a)),
            Some(_) => {}
        }
    }
    actual
        .iter()
        .find(|a| expected.find(a.name()).is_none())
        .map(|a| format!("unexpected column `{prefix}{}`", a.name()))
}

fn field_difference(path: &str, expected: &Field, actual: &Field) -> String {
    use arrow::datatypes::DataType::{LargeList, List, Struct};
    match (expected.data_type(), actual.data_type()) {
        (Struct(e), Struct(a)) if e != a => fields_difference(&format!("{path}."), e, a)
            .unwrap_or_else(|| format!("the fields of `{path}` are in another order")),
        (List(e) | LargeList(e), List(a) | LargeList(a)) if e != a => {
            field_difference(&format!("{path}[]"), e, a)
        }
        (e, a) if e != a => format!(
            "column `{path}` is {}, expected {}",
            short_type(a),
            short_type(e)
        ),
        _ if expected.is_nullable() != actual.is_nullable() => format!(
            "column `{path}` is {}, expected {}",
            nullability(actual),
            nullability(expected)
        ),
        _ => format!("column `{path}` differs in its name or metadata"),
    }
}

fn short_type(t: &DataType) -> String {
    match t {
        DataType::Struct(f) => format!("a struct of {} fields", f.len()),
        DataType::List(_) | DataType::LargeList(_) => "a list".to_string(),
        other => other.to_string(),
    }
}

fn nullability(f: &Field) -> &'static str {
    if f.is_nullable() {
        "nullable"
    } else {
        "not nullable"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::Schema;

    use super::*;

    fn schema(fields: Vec<Field>) -> SchemaRef {
        Arc::new(Schema::new(fields))
    }

    fn meta(extra: Option<Field>) -> Field {
        let mut fields = vec![Field::new("versionId", DataType::Utf8, true)];
        fields.extend(extra);
        Field::new("meta", DataType::Struct(Fields::from(fields)), true)
    }

    #[test]
    fn a_difference_is_named_by_the_path_of_the_first_column_that_differs() {
        let id = Field::new("id", DataType::Utf8, true);
        let table = schema(vec![id.clone(), meta(None)]);
        let ext = Field::new("extension", DataType::Utf8, true);
        let input = schema(vec![id.clone(), meta(Some(ext))]);
        assert_eq!(
            describe_difference(&table, &input),
            "unexpected column `meta.extension`"
        );
        assert_eq!(
            describe_difference(&input, &table),
            "missing column `meta.extension`"
        );
        let list = |t: DataType| {
            let item = Field::new("item", t, true);
            schema(vec![Field::new(
                "given",
                DataType::List(Arc::new(item)),
                true,
            )])
        };
        assert_eq!(
            describe_difference(&list(DataType::Utf8), &list(DataType::Int32)),
            "column `given[]` is Int32, expected Utf8"
        );
        let nullable = schema(vec![id.clone()]);
        let required = schema(vec![Field::new("id", DataType::Utf8, false)]);
        assert_eq!(
            describe_difference(&nullable, &required),
            "column `id` is not nullable, expected nullable"
        );
    }
}
