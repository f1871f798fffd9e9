//! Local staging of incoming batches as Parquet, so memory does not grow with the export.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;

/// Encoded bytes a staged row group may buffer before it is written out.
const STAGE_ROW_GROUP_BYTES: usize = 4 << 20;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::SinkError;

/// Batches staged on local disk, in arrival order.
pub(crate) struct Stage {
    table: String,
    parent: Option<PathBuf>,
    dir: Option<tempfile::TempDir>,
    schema: SchemaRef,
    files: Vec<PathBuf>,
    current: Option<ArrowWriter<File>>,
    current_rows: usize,
    rows_per_file: usize,
    rows: u64,
}

impl Stage {
    pub(crate) fn new(
        table: String,
        schema: SchemaRef,
        parent: Option<PathBuf>,
        rows_per_file: usize,
    ) -> Self {
        Self {
            table,
            parent,
            dir: None,
            schema,
            files: Vec::new(),
            current: None,
            current_rows: 0,
            rows_per_file: rows_per_file.max(1),
            rows: 0,
        }
    }

    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    fn io(&self, context: String, source: std::io::Error) -> SinkError {
        SinkError::Io {
            table: self.table.clone(),
            context,
            source,
        }
    }

    fn pq(&self, source: parquet::errors::ParquetError) -> SinkError {
        SinkError::Parquet {
            table: self.table.clone(),
            source,
        }
    }

    pub(crate) fn push(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
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
        if self.current.is_none() {
            self.open_next()?;
        }
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec()).map_err(
            |source| SinkError::Arrow {
                table: self.table.clone(),
                source,
            },
        )?;
        let Some(writer) = self.current.as_mut() else {
            return Ok(());
        };
        if let Err(e) = writer.write(&batch) {
            return Err(self.pq(e));
        }
        // A row group is buffered in memory until it is flushed; with one writer per resource
        // type alive during a sync, bound it by bytes rather than rows.
        if writer.in_progress_size() > STAGE_ROW_GROUP_BYTES
            && let Err(e) = writer.flush()
        {
            return Err(self.pq(e));
        }
        self.current_rows += batch.num_rows();
        self.rows += batch.num_rows() as u64;
        if self.current_rows >= self.rows_per_file {
            self.close_current()?;
        }
        Ok(())
    }

    fn open_next(&mut self) -> Result<(), SinkError> {
        if self.dir.is_none() {
            let builder = tempfile::Builder::new()
                .prefix("fhirsync-stage-")
                .tempdir_in(self.parent.clone().unwrap_or_else(std::env::temp_dir));
            let dir = builder.map_err(|e| self.io("creating staging directory".into(), e))?;
            self.dir = Some(dir);
        }
        let Some(dir) = self.dir.as_ref() else {
            return Ok(());
        };
        let path = dir
            .path()
            .join(format!("stage-{:05}.parquet", self.files.len()));
        let file =
            File::create(&path).map_err(|e| self.io(format!("creating {}", path.display()), e))?;
        // Snappy: staged files live only until the commit, and every column writer of a
        // zstd file holds its own zstd contexts (about 1 MB each once used), which across
        // the wide FHIR schemas of all types staged at once came to hundreds of MB.
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            // A writer keeps the metadata of every row group (and page indexes) until it
            // closes: with a thousand leaf columns per type that grew with the export.
            // Chunk statistics stay (the commit reads null counts); no page indexes.
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk)
            .set_offset_index_disabled(true)
            .set_max_row_group_row_count(Some(16 * 1024))
            .build();
        let writer =
            ArrowWriter::try_new(file, self.schema.clone(), Some(props)).map_err(|e| self.pq(e))?;
        self.files.push(path);
        self.current = Some(writer);
        self.current_rows = 0;
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), SinkError> {
        if let Some(w) = self.current.take() {
            w.close().map_err(|e| self.pq(e))?;
        }
        Ok(())
    }

    /// Flushes and returns the staged files (kept alive by the returned guard).
    pub(crate) fn finish(mut self) -> Result<Staged, SinkError> {
        self.close_current()?;
        Ok(Staged {
            _dir: self.dir.take(),
            files: std::mem::take(&mut self.files),
        })
    }
}

/// Finished staging files; the directory is removed on drop.
pub(crate) struct Staged {
    _dir: Option<tempfile::TempDir>,
    pub(crate) files: Vec<PathBuf>,
}

impl Staged {
    pub(crate) fn open(&self, path: &Path) -> std::io::Result<File> {
        File::open(path)
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
