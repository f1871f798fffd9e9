//! Streaming the key columns (`id`, `meta.versionId`, `meta.lastUpdated`, and the
//! `reference` leaves a reconciliation scope needs) of data files, one batch at a time.

use std::sync::Arc;

use deltalake::ObjectStore;
use futures::StreamExt;
use parquet::arrow::ProjectionMask;

use super::files::{self, FileStream};
use crate::error::{Result, SinkError};
use crate::keys::{KeyColumns, RefColumn};

/// Rows per batch when reading key columns.
const KEY_BATCH_ROWS: usize = 64 * 1024;

/// Files whose footers are fetched ahead of the one being read (latency matters on S3).
const OPEN_AHEAD: usize = 4;

/// The keys of consecutive rows of one file.
pub(crate) struct KeyBatch {
    /// Position of the file in the list scanned.
    pub(crate) file: usize,
    /// Row position of the batch's first row in its file.
    pub(crate) first_row: u32,
    pub(crate) keys: KeyColumns,
    /// One per requested reference column present in the file.
    pub(crate) refs: Vec<RefColumn>,
}

/// Calls `f` with every key batch of `files` (path and size), in file and row order.
/// Memory is one batch whatever the file sizes.
pub(crate) async fn scan_keys(
    store: &Arc<dyn ObjectStore>,
    files: Vec<(deltalake::Path, i64)>,
    ref_columns: &[String],
    table: &str,
    mut f: impl FnMut(KeyBatch) -> Result<()>,
) -> Result<()> {
    let mut opened = futures::stream::iter(files.into_iter().enumerate().map(
        |(fi, (path, size))| async move {
            let stream = open_keys(store, &path, size, ref_columns, table).await?;
            Ok::<_, SinkError>((fi, path, stream))
        },
    ))
    .buffered(OPEN_AHEAD);
    while let Some(item) = opened.next().await {
        let (file, path, mut stream) = item?;
        let mut first_row = 0u32;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| SinkError::parquet(table, e))?;
            let keys = KeyColumns::from_batch(&batch)
                .map_err(|d| SinkError::invalid(table, format!("file {path}: {d}")))?;
            let refs = ref_columns
                .iter()
                .filter_map(|c| RefColumn::from_batch(&batch, c))
                .collect();
            let rows = keys.len() as u32;
            f(KeyBatch {
                file,
                first_row,
                keys,
                refs,
            })?;
            first_row += rows;
        }
    }
    Ok(())
}

/// Opens a stream of the key columns of one table file, plus the `reference` leaves of
/// `ref_columns`.
async fn open_keys(
    store: &Arc<dyn ObjectStore>,
    path: &deltalake::Path,
    size: i64,
    ref_columns: &[String],
    table: &str,
) -> Result<FileStream> {
    let builder = files::open(store, path, size, table).await?;
    let leaves: Vec<usize> = builder
        .parquet_schema()
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let parts: Vec<&str> = c.path().parts().iter().map(String::as_str).collect();
            is_key_leaf(&parts, ref_columns)
        })
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::leaves(builder.parquet_schema(), leaves);
    builder
        .with_projection(mask)
        .with_batch_size(KEY_BATCH_ROWS)
        .build()
        .map_err(|e| SinkError::parquet(table, e))
}

/// Whether a leaf column (by its path) is a key, or the `reference` of a Reference (or
/// list of References) in one of `ref_columns`, not one nested in an `identifier`.
fn is_key_leaf(parts: &[&str], ref_columns: &[String]) -> bool {
    let key = matches!(
        parts,
        ["id"] | ["meta", "versionId"] | ["meta", "lastUpdated"]
    );
    let reference = parts.len() <= 4
        && parts.last() == Some(&"reference")
        && ref_columns.iter().any(|c| c == parts[0])
        && !parts.contains(&"identifier");
    key || reference
}

#[cfg(test)]
mod tests {
    use super::is_key_leaf;

    #[test]
    fn only_key_and_scoped_reference_leaves_are_read() {
        let refs = ["subject".to_string()];
        let read = |path: &str| is_key_leaf(&path.split('.').collect::<Vec<_>>(), &refs);
        assert!(read("id"));
        assert!(read("meta.versionId"));
        assert!(read("meta.lastUpdated"));
        assert!(read("subject.reference"));
        assert!(read("subject.list.element.reference"), "list of References");
        assert!(!read("meta.id"));
        assert!(!read("id_versioned"));
        assert!(!read("performer.reference"), "not in scope");
        assert!(!read("subject.identifier.assigner.reference"));
        assert!(!read("subject.a.b.c.reference"), "too deep");
        assert!(!is_key_leaf(&["subject", "reference"], &[]));
    }
}
