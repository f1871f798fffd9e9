//! Opening one data file of the table for ranged reads through its object store.

// ParquetObjectReader is deprecated in favour of hand-written readers, but it is the
// ranged-read object-store reader delta-rs itself uses; it reads only the needed columns.
#![allow(deprecated)]

use std::sync::Arc;

use deltalake::ObjectStore;
use parquet::arrow::async_reader::{
    ParquetObjectReader, ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder,
};

use crate::error::{Result, SinkError};

/// A data file's reader, its footer read.
pub(crate) type FileReader = ParquetRecordBatchStreamBuilder<ParquetObjectReader>;

/// The batches of a data file.
pub(crate) type FileStream = ParquetRecordBatchStream<ParquetObjectReader>;

/// Reads the footer of the file at `path` (`size` bytes) of `table`.
pub(crate) async fn open(
    store: &Arc<dyn ObjectStore>,
    path: &deltalake::Path,
    size: i64,
    table: &str,
) -> Result<FileReader> {
    let reader = ParquetObjectReader::new(store.clone(), path.clone())
        .with_file_size(u64::try_from(size).unwrap_or(0));
    ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| SinkError::parquet(table, e))
}
