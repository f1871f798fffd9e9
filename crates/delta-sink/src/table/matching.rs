//! Matching the input against the table by id: which new rows are written and which
//! stored rows go (replaced, deleted or reconciled away).
//!
//! The input is indexed by id at once when it is small enough; otherwise its keys, and
//! those of the stored rows that may match, are read once into a spill by id bucket and
//! matched one bucket at a time, so memory stays bounded whatever the export's size.
//! Each pass reads only key columns.

use std::path::Path;
use std::sync::Arc;

use deltalake::ObjectStore;
use deltalake::kernel::LogicalFileView;
use roaring::RoaringTreemap;

use super::index::{Incoming, InputIndex, RowMarks, add_incoming, apply_deletes, settle, tally};
use super::keyscan::{KeyBatch, scan_keys};
use super::options::SaveMode;
use super::outcome::WriteOutcome;
use super::spill::{FingerprintFilter, Spill};
use super::stage::Staged;
use super::writer::{Deletes, Reconcile, ReconcileScope};
use crate::error::{Result, SinkError};
use crate::keys::{RefColumn, fingerprint};

const SPILL_CONTEXT: &str = "spilling key columns to a temporary file";

/// The table's files whose keys are matched against the input.
pub(crate) struct StoredFiles<'a> {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) files: &'a [LogicalFileView],
    /// The rows each file's deletion vector already marks deleted (skipped).
    pub(crate) deleted_rows: &'a [Option<RoaringTreemap>],
}

/// What the input is matched against, and how.
pub(crate) struct KeyMatch<'a> {
    pub(crate) table: &'a str,
    pub(crate) mode: SaveMode,
    pub(crate) deletes: &'a Deletes,
    pub(crate) reconcile: Option<&'a Reconcile>,
    /// `None` when no stored row can be affected: the input is only deduplicated.
    pub(crate) stored: Option<StoredFiles<'a>>,
    /// Id buckets the input is matched in (1: indexed at once).
    pub(crate) buckets: u64,
    /// Directory of the spill; the system's temporary directory when `None`.
    pub(crate) spill_dir: Option<&'a Path>,
}

/// The result of matching.
pub(crate) struct Matched {
    /// The new rows that are written.
    pub(crate) winners: RowMarks,
    /// Per stored file (in the order given), the row positions that go.
    pub(crate) removed: Vec<Vec<u32>>,
}

/// How stored rows meet the input: its whole index, or a spill by id bucket.
enum Matcher<'a> {
    Direct(&'a mut InputIndex),
    Spill {
        filter: &'a FingerprintFilter,
        spill: &'a mut Spill,
        buckets: u64,
    },
}

impl KeyMatch<'_> {
    /// Matches the keys of the staged files against the stored ones, counting into `out`
    /// (rejected, duplicates, inserted, updated, unchanged, deleted, reconciled).
    pub(crate) async fn run(&self, staged: &Staged, out: &mut WriteOutcome) -> Result<Matched> {
        let files = self.stored.as_ref().map_or(0, |s| s.files.len());
        let mut matched = Matched {
            winners: RowMarks::default(),
            removed: vec![Vec::new(); files],
        };
        if self.buckets == 1 {
            self.match_at_once(staged, &mut matched, out).await?;
        } else {
            self.match_by_bucket(staged, &mut matched, out).await?;
        }
        Ok(matched)
    }

    async fn match_at_once(
        &self,
        staged: &Staged,
        matched: &mut Matched,
        out: &mut WriteOutcome,
    ) -> Result<()> {
        let mut incoming = InputIndex::new();
        read_input_keys(staged, self.table, out, |id, record, out| {
            add_incoming(&mut incoming, id, record, out);
            Ok(())
        })
        .await?;
        apply_deletes(&mut incoming, self.deletes);
        if let Some(stored) = &self.stored {
            let matcher = Matcher::Direct(&mut incoming);
            self.scan_stored(stored, matcher, &mut matched.removed, out)
                .await?;
        }
        tally(&incoming, &mut matched.winners, out);
        Ok(())
    }

    /// Too many ids to index at once: the keys of the input (and of stored rows that may
    /// match it) are read once into a spill by id bucket, then matched one bucket at a time.
    async fn match_by_bucket(
        &self,
        staged: &Staged,
        matched: &mut Matched,
        out: &mut WriteOutcome,
    ) -> Result<()> {
        let buckets = self.buckets;
        let count = buckets as usize;
        let spill_err = |e| SinkError::io(self.table, SPILL_CONTEXT, e);
        let dir = self
            .spill_dir
            .map_or_else(std::env::temp_dir, Path::to_path_buf);
        let mut input = Spill::new(&dir, count).map_err(spill_err)?;
        let mut filter = FingerprintFilter::new();
        read_input_keys(staged, self.table, out, |id, record, _| {
            let fp = fingerprint(id);
            filter.insert(fp);
            let r = &record.recency;
            input
                .push(
                    (fp % buckets) as usize,
                    id,
                    r.last_updated,
                    r.version_id.as_deref(),
                    record.file,
                    record.row,
                    false,
                )
                .map_err(spill_err)
        })
        .await?;
        input.finish().map_err(spill_err)?;
        let mut stored = Spill::new(&dir, count).map_err(spill_err)?;
        if let Some(files) = &self.stored {
            let matcher = Matcher::Spill {
                filter: &filter,
                spill: &mut stored,
                buckets,
            };
            self.scan_stored(files, matcher, &mut matched.removed, out)
                .await?;
            stored.finish().map_err(spill_err)?;
        }
        drop(filter);
        for bucket in 0..count {
            let mut incoming = InputIndex::new();
            input
                .for_each(bucket, |rec| {
                    let record = Incoming::new(rec.recency, rec.file, rec.row);
                    add_incoming(&mut incoming, &rec.id, record, out);
                })
                .map_err(spill_err)?;
            apply_deletes(&mut incoming, self.deletes);
            let removed = &mut matched.removed;
            stored
                .for_each(bucket, |rec| {
                    if let Some(inc) = incoming.get_mut(rec.id.as_ref()) {
                        if settle(inc, &rec.recency) {
                            removed[rec.file as usize].push(rec.row);
                        }
                    } else if rec.flag {
                        removed[rec.file as usize].push(rec.row);
                        out.reconciled += 1;
                    }
                })
                .map_err(spill_err)?;
            tally(&incoming, &mut matched.winners, out);
        }
        Ok(())
    }

    /// Streams the key columns of every stored file and records which rows go (deleted,
    /// reconciled, or replaced by an input row) in `removed` (by file position). With a
    /// spill, stored rows that may match an input id are spilled instead, to be matched
    /// bucket by bucket.
    async fn scan_stored(
        &self,
        stored: &StoredFiles<'_>,
        mut matcher: Matcher<'_>,
        removed: &mut [Vec<u32>],
        out: &mut WriteOutcome,
    ) -> Result<()> {
        let reconcile = self.reconcile;
        let scope_columns: Vec<String> = reconcile
            .map(|(_, scope)| scope.columns().to_vec())
            .unwrap_or_default();
        let files = stored
            .files
            .iter()
            .map(|f| (f.object_store_path(), f.size()))
            .collect();
        scan_keys(&stored.store, files, &scope_columns, self.table, |batch| {
            let KeyBatch {
                file: fi,
                first_row,
                keys,
                refs,
            } = batch;
            for i in 0..keys.len() {
                let r = first_row + i as u32;
                if stored.deleted_rows[fi]
                    .as_ref()
                    .is_some_and(|d| d.contains(u64::from(r)))
                {
                    continue;
                }
                let Some(id) = keys.id(i) else { continue };
                if let Some(tt) = self.deletes.get(id)
                    && keys.last_updated(i).is_none_or(|lu| lu <= *tt)
                {
                    removed[fi].push(r);
                    out.deleted += 1;
                    continue;
                }
                let unlisted = || reconciled_away(reconcile, id, &refs, i);
                if self.mode == SaveMode::Merge {
                    match &mut matcher {
                        Matcher::Direct(incoming) => {
                            if let Some(inc) = incoming.get_mut(id) {
                                if settle(inc, &keys.recency(i)) {
                                    removed[fi].push(r);
                                }
                                continue;
                            }
                        }
                        Matcher::Spill {
                            filter,
                            spill,
                            buckets,
                        } => {
                            let fp = fingerprint(id);
                            if filter.may_contain(fp) {
                                spill
                                    .push(
                                        (fp % *buckets) as usize,
                                        id,
                                        keys.last_updated(i),
                                        keys.version_id(i),
                                        fi as u32,
                                        r,
                                        unlisted(),
                                    )
                                    .map_err(|e| SinkError::io(self.table, SPILL_CONTEXT, e))?;
                                continue;
                            }
                        }
                    }
                }
                if unlisted() {
                    removed[fi].push(r);
                    out.reconciled += 1;
                }
            }
            Ok(())
        })
        .await
    }
}

/// Whether reconciliation removes a stored row (`row` of its batch, with the batch's
/// reference columns `refs`) unless the input has its id.
fn reconciled_away(
    reconcile: Option<&Reconcile>,
    id: &str,
    refs: &[RefColumn],
    row: usize,
) -> bool {
    reconcile.is_some_and(|(keep, scope)| {
        let in_scope = match scope {
            ReconcileScope::All => true,
            ReconcileScope::Ids(ids) => ids.contains(id),
            ReconcileScope::References {
                target_type,
                targets,
                ..
            } => refs.iter().any(|r| r.refers_to(row, target_type, targets)),
        };
        in_scope && !keep.contains(id)
    })
}

/// Streams the key columns of the new files, calling `f` with every row that has an id
/// (in file and row order); rows without one are counted as rejected.
async fn read_input_keys(
    staged: &Staged,
    table: &str,
    out: &mut WriteOutcome,
    mut f: impl FnMut(&str, Incoming, &mut WriteOutcome) -> Result<()>,
) -> Result<()> {
    let Some(store) = &staged.store else {
        return Ok(());
    };
    let files = staged
        .files
        .iter()
        .map(|f| (f.path(), f.add.size))
        .collect();
    let rejected_before = out.rejected;
    scan_keys(store, files, &[], table, |batch| {
        let keys = &batch.keys;
        for i in 0..keys.len() {
            let Some(id) = keys.id(i) else {
                out.rejected += 1;
                continue;
            };
            let row = batch.first_row + i as u32;
            f(
                id,
                Incoming::new(keys.recency(i), batch.file as u32, row),
                out,
            )?;
        }
        Ok(())
    })
    .await?;
    if out.rejected > rejected_before {
        tracing::warn!(
            table,
            rows = out.rejected - rejected_before,
            "input rows without id were skipped"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IdSet;

    #[test]
    fn reconciliation_removes_only_unlisted_ids_within_its_scope() {
        let keep: IdSet = ["kept"].into_iter().collect();
        let all: Reconcile = (keep.clone(), ReconcileScope::All);
        let ids: Reconcile = (
            keep.clone(),
            ReconcileScope::Ids(["kept", "in"].into_iter().collect()),
        );
        assert!(!reconciled_away(None, "gone", &[], 0), "no reconciliation");
        assert!(reconciled_away(Some(&all), "gone", &[], 0));
        assert!(!reconciled_away(Some(&all), "kept", &[], 0));
        assert!(reconciled_away(Some(&ids), "in", &[], 0));
        assert!(
            !reconciled_away(Some(&ids), "out", &[], 0),
            "outside the scope"
        );

        let batch = arrow::array::RecordBatch::try_from_iter([(
            "subject",
            std::sync::Arc::new(arrow::array::StructArray::from(vec![(
                std::sync::Arc::new(arrow::datatypes::Field::new(
                    "reference",
                    arrow::datatypes::DataType::Utf8,
                    true,
                )),
                std::sync::Arc::new(arrow::array::StringArray::from(vec![
                    Some("Patient/m1"),
                    Some("Patient/x"),
                ])) as arrow::array::ArrayRef,
            )])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let refs = [RefColumn::from_batch(&batch, "subject").unwrap()];
        let group: Reconcile = (
            keep,
            ReconcileScope::References {
                columns: vec!["subject".into()],
                target_type: "Patient".into(),
                targets: ["m1"].into_iter().collect(),
            },
        );
        assert!(
            reconciled_away(Some(&group), "o1", &refs, 0),
            "a member's row"
        );
        assert!(
            !reconciled_away(Some(&group), "o2", &refs, 1),
            "another patient's row"
        );
        assert!(!reconciled_away(Some(&group), "kept", &refs, 0));
    }
}
