//! Copying files without their losing rows, in parallel (the rewrite is CPU-bound:
//! decode, filter, encode). Large files are rewritten one to one; small files are packed
//! together up to the target size.

use std::collections::HashSet;
use std::num::NonZeroU64;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use deltalake::ObjectStore;
use deltalake::datafile::writer::DeltaWriter;
use deltalake::kernel::Add;
use futures::StreamExt;
use parquet::arrow::arrow_reader::RowSelection;
use parquet::file::metadata::ParquetMetaData;
use parquet::schema::types::ColumnPath;

use super::ResourceTable;
use super::config::WriterConfigFn;
use super::files;
use crate::error::{Result, SinkError};

/// A table file to copy without the listed (sorted) row positions.
pub(crate) type FileRewrite = (deltalake::Path, i64, Vec<u32>);

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// File rewrites running at once in this process, over all tables: one per core (a rewrite
/// is CPU-bound, and each holds a writer's buffers).
static REWRITE_SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(cores()));

impl ResourceTable {
    /// Rewrites `files` into new files of the target size: zstd for the leaf columns that
    /// hold values in them, Snappy for the rest (see `SinkConfig::writer_properties_for`).
    pub(crate) async fn rewrite(&self, files: Vec<FileRewrite>) -> Result<Vec<Add>> {
        let store = self.table.object_store();
        let mut dense: HashSet<ColumnPath> = HashSet::new();
        for (path, size, _) in &files {
            let reader = files::open(&store, path, *size, &self.name).await?;
            add_dense_columns(reader.metadata(), &mut dense);
        }
        let wcfg = self.writer_configs(
            self.config.writer_properties_for(&dense),
            NonZeroU64::new(self.config.target_file_size),
        );
        let copier = Copier {
            store,
            wcfg,
            batch_rows: self.config.read_batch_rows,
            table: self.name.clone(),
        };
        rewrite_files(copier, files, self.config.target_file_size).await
    }
}

/// Adds the leaf columns of `meta` that hold at least one value (by their chunk statistics;
/// a chunk without statistics counts as holding values).
fn add_dense_columns(meta: &ParquetMetaData, dense: &mut HashSet<ColumnPath>) {
    for rg in meta.row_groups() {
        for col in rg.columns() {
            let all_null = col
                .statistics()
                .and_then(|s| s.null_count_opt())
                .is_some_and(|nulls| i64::try_from(nulls).is_ok_and(|n| n == col.num_values()));
            if !all_null && !dense.contains(col.column_path()) {
                dense.insert(col.column_path().clone());
            }
        }
    }
}

/// Groups the files to rewrite: a file of at least an eighth of `target_size` alone, the
/// smaller ones packed together up to `target_size`.
fn group_files(files: Vec<FileRewrite>, target_size: u64) -> Vec<Vec<FileRewrite>> {
    let small = target_size / 8;
    let mut groups: Vec<Vec<FileRewrite>> = Vec::new();
    let mut pack: Vec<FileRewrite> = Vec::new();
    let mut pack_size = 0u64;
    for f in files {
        let size = u64::try_from(f.1).unwrap_or(0);
        if size >= small {
            groups.push(vec![f]);
            continue;
        }
        if pack_size + size > target_size && !pack.is_empty() {
            groups.push(std::mem::take(&mut pack));
            pack_size = 0;
        }
        pack_size += size;
        pack.push(f);
    }
    if !pack.is_empty() {
        groups.push(pack);
    }
    groups
}

/// Copies the surviving rows of each group of files into new files, groups in parallel.
async fn rewrite_files(
    copier: Copier,
    files: Vec<FileRewrite>,
    target_size: u64,
) -> Result<Vec<Add>> {
    let table = copier.table.clone();
    let mut tasks =
        futures::stream::iter(group_files(files, target_size).into_iter().map(|group| {
            let copier = copier.clone();
            tokio::spawn(async move {
                // Tables may commit concurrently: their rewrites share the cores.
                let _slot = REWRITE_SLOTS.acquire().await;
                copier.rewrite_group(group).await
            })
        }))
        .buffer_unordered(cores());
    let mut adds = Vec::new();
    while let Some(joined) = tasks.next().await {
        let result = joined.map_err(|e| {
            SinkError::io(
                &table,
                "rewriting table files",
                std::io::Error::other(e.to_string()),
            )
        })?;
        adds.extend(result?);
    }
    Ok(adds)
}

/// What copying rows of a table's files needs.
#[derive(Clone)]
struct Copier {
    store: Arc<dyn ObjectStore>,
    wcfg: WriterConfigFn,
    batch_rows: usize,
    table: String,
}

impl Copier {
    /// Copies one group of files into new files (one writer per schema met).
    async fn rewrite_group(&self, group: Vec<FileRewrite>) -> Result<Vec<Add>> {
        let mut writers: Vec<(SchemaRef, DeltaWriter)> = Vec::new();
        for (path, size, removed) in group {
            let copied = self.copy_rows(&path, size, &removed, &mut writers).await;
            if let Err(e) = copied {
                for (_, w) in writers {
                    let _ = w.abort().await;
                }
                return Err(e);
            }
        }
        let mut adds = Vec::new();
        for (_, w) in writers {
            adds.extend(
                w.close()
                    .await
                    .map_err(|e| SinkError::delta(&self.table, e))?,
            );
        }
        Ok(adds)
    }

    /// Streams one file's rows, minus `removed`, into the writer for its schema.
    async fn copy_rows(
        &self,
        path: &deltalake::Path,
        size: i64,
        removed: &[u32],
        writers: &mut Vec<(SchemaRef, DeltaWriter)>,
    ) -> Result<()> {
        let table = self.table.as_str();
        let pq = |source| SinkError::parquet(table, source);
        let builder = files::open(&self.store, path, size, table)
            .await?
            .with_batch_size(self.batch_rows);
        let total = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        // The reader skips the removed rows as it decodes: no filtering copy of every batch.
        let mut stream = builder
            .with_row_selection(kept_rows(removed, total))
            .build()
            .map_err(pq)?;
        while let Some(kept) = stream.next().await {
            let kept = kept.map_err(pq)?;
            if kept.num_rows() == 0 {
                continue;
            }
            let schema = Arc::new(Schema::new(kept.schema().fields().clone()));
            let kept = RecordBatch::try_new(schema.clone(), kept.columns().to_vec()).map_err(
                |source| SinkError::Arrow {
                    table: table.to_string(),
                    source,
                },
            )?;
            let idx = match writers.iter().position(|(s, _)| s == &schema) {
                Some(i) => i,
                None => {
                    writers.push((
                        schema.clone(),
                        DeltaWriter::new(self.store.clone(), (self.wcfg)(schema)),
                    ));
                    writers.len() - 1
                }
            };
            writers[idx]
                .1
                .write(&kept)
                .await
                .map_err(|e| SinkError::delta(table, e))?;
        }
        Ok(())
    }
}

/// The rows of a file of `total` rows that are not in `removed` (sorted positions).
fn kept_rows(removed: &[u32], total: usize) -> RowSelection {
    let mut ranges = Vec::with_capacity(removed.len() + 1);
    let mut start = 0usize;
    for &r in removed {
        let r = r as usize;
        if r >= total {
            break;
        }
        if r > start {
            ranges.push(start..r);
        }
        start = start.max(r + 1);
    }
    if start < total {
        ranges.push(start..total);
    }
    RowSelection::from_consecutive_ranges(ranges.into_iter(), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selected(removed: &[u32], total: usize) -> Vec<usize> {
        let mut rows = Vec::new();
        let mut at = 0;
        for s in kept_rows(removed, total).iter() {
            if !s.skip {
                rows.extend(at..at + s.row_count);
            }
            at += s.row_count;
        }
        assert_eq!(at, total, "the selection covers the whole file");
        rows
    }

    #[test]
    fn kept_rows_select_everything_but_the_removed() {
        assert_eq!(selected(&[], 4), [0, 1, 2, 3]);
        assert_eq!(selected(&[0, 2, 5], 6), [1, 3, 4]);
        assert_eq!(selected(&[1, 1, 2], 4), [0, 3], "duplicates");
        assert_eq!(selected(&[0, 1, 2], 3), Vec::<usize>::new());
        assert_eq!(selected(&[3, 9], 4), [0, 1, 2], "positions past the end");
    }

    #[test]
    fn large_files_are_rewritten_alone_and_small_ones_packed() {
        let f = |name: &str, size: i64| (deltalake::Path::from(name), size, Vec::new());
        let names = |groups: Vec<Vec<FileRewrite>>| -> Vec<Vec<String>> {
            groups
                .into_iter()
                .map(|g| g.into_iter().map(|(p, _, _)| p.to_string()).collect())
                .collect()
        };
        // Target 80: files of 10 or more are large; small ones pack up to 80 bytes.
        let files = vec![f("big", 50), f("a", 5), f("b", 9), f("edge", 10), f("c", 9)];
        assert_eq!(
            names(group_files(files, 80)),
            [vec!["big"], vec!["edge"], vec!["a", "b", "c"]]
        );
        let smalls: Vec<FileRewrite> = (0..20).map(|i| f(&format!("s{i}"), 9)).collect();
        let groups = group_files(smalls, 80);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [8, 8, 4]);
        assert!(group_files(Vec::new(), 80).is_empty());
    }
}
