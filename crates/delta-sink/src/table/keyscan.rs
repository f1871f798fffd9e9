//! Streaming the key columns (the key, the recency's `versionId` and `lastUpdated`, grouped
//! keys' placeholder flags where asked, and the `reference` leaves a reconciliation scope
//! needs) of data files, one batch at a time.

use std::sync::Arc;

use deltalake::ObjectStore;
use futures::StreamExt;
use parquet::arrow::ProjectionMask;

use super::config::KeySpec;
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

/// Which key columns a scan reads.
#[derive(Clone, Copy)]
pub(crate) struct KeyRead<'a> {
    pub(crate) spec: &'a KeySpec,
    /// Whether grouped keys' placeholder flags are read (input files: stored rows are never
    /// placeholders).
    pub(crate) placeholders: bool,
    /// Reference columns whose `reference` leaves are read.
    pub(crate) ref_columns: &'a [String],
}

/// Calls `f` with every key batch of `files` (path and size), in file and row order.
/// Memory is one batch whatever the file sizes.
pub(crate) async fn scan_keys(
    store: &Arc<dyn ObjectStore>,
    files: Vec<(deltalake::Path, i64)>,
    read: KeyRead<'_>,
    table: &str,
    mut f: impl FnMut(KeyBatch) -> Result<()>,
) -> Result<()> {
    let mut opened = futures::stream::iter(files.into_iter().enumerate().map(
        |(fi, (path, size))| async move {
            let stream = open_keys(store, &path, size, read, table).await?;
            Ok::<_, SinkError>((fi, path, stream))
        },
    ))
    .buffered(OPEN_AHEAD);
    while let Some(item) = opened.next().await {
        let (file, path, mut stream) = item?;
        let mut first_row = 0u32;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| SinkError::parquet(table, e))?;
            let keys = KeyColumns::from_batch(&batch, read.spec, read.placeholders)
                .map_err(|d| SinkError::invalid(table, format!("file {path}: {d}")))?;
            let refs = read
                .ref_columns
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

/// Opens a stream of the key columns of one table file that `read` names.
async fn open_keys(
    store: &Arc<dyn ObjectStore>,
    path: &deltalake::Path,
    size: i64,
    read: KeyRead<'_>,
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
            is_key_leaf(&parts, read)
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

/// Whether a leaf column (by its path) is a key (the placeholder flag only where `read`
/// asks for it), or the `reference` of a Reference (or list of References) in one of
/// `read.ref_columns`, not one nested in an `identifier`.
fn is_key_leaf(parts: &[&str], read: KeyRead<'_>) -> bool {
    let spec = read.spec;
    let key = match parts {
        [id] => *id == spec.id || read.placeholders && spec.placeholder().is_some_and(|p| p == *id),
        [meta, field] => *meta == spec.meta && matches!(*field, "versionId" | "lastUpdated"),
        _ => false,
    };
    let reference = parts.len() <= 4
        && parts.last() == Some(&"reference")
        && read.ref_columns.iter().any(|c| c == parts[0])
        && !parts.contains(&"identifier");
    key || reference
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(path: &str, read: KeyRead<'_>) -> bool {
        is_key_leaf(&path.split('.').collect::<Vec<_>>(), read)
    }

    #[test]
    fn only_key_and_scoped_reference_leaves_are_read() {
        let refs = ["subject".to_string()];
        let spec = KeySpec::default();
        let keys = KeyRead {
            spec: &spec,
            placeholders: true,
            ref_columns: &refs,
        };
        let read = |path: &str| leaf(path, keys);
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
        let no_refs = KeyRead {
            ref_columns: &[],
            ..keys
        };
        assert!(!is_key_leaf(&["subject", "reference"], no_refs));
    }

    #[test]
    fn named_key_columns_are_read_and_placeholders_only_where_asked() {
        let spec = KeySpec::grouped("_resource_key", "_resource_meta", "_placeholder");
        let input = KeyRead {
            spec: &spec,
            placeholders: true,
            ref_columns: &[],
        };
        let stored = KeyRead {
            placeholders: false,
            ..input
        };
        for path in [
            "_resource_key",
            "_resource_meta.versionId",
            "_resource_meta.lastUpdated",
        ] {
            assert!(leaf(path, input) && leaf(path, stored), "{path}");
        }
        assert!(leaf("_placeholder", input));
        assert!(
            !leaf("_placeholder", stored),
            "stored rows are never placeholders"
        );
        for path in ["id", "meta.versionId", "_resource_meta.id", "value"] {
            assert!(!leaf(path, input), "{path}");
        }
        let one = KeySpec::default();
        let plain = KeyRead {
            spec: &one,
            ..input
        };
        assert!(
            !leaf("_placeholder", plain),
            "no placeholders without groups"
        );
    }
}
