//! Matching the input against the table by key: which new rows are written and which
//! stored rows go (replaced, deleted or reconciled away).
//!
//! The input is indexed by key at once when it is small enough; otherwise its keys, and
//! those of the stored rows that may match, are read once into a spill by key bucket and
//! matched one bucket at a time, so memory stays bounded whatever the export's size.
//! Each pass reads only key columns. Grouped keys go the same way: the index gathers a
//! key's group, and every stored row of a key meets it.

use std::path::Path;
use std::sync::Arc;

use deltalake::ObjectStore;
use deltalake::kernel::LogicalFileView;
use roaring::RoaringTreemap;

use super::config::KeySpec;
use super::index::{Incoming, InputIndex, RowMarks, add_incoming, apply_deletes, settle, tally};
use super::keyscan::{KeyBatch, KeyRead, scan_keys};
use super::options::SaveMode;
use super::outcome::WriteOutcome;
use super::spill::{FingerprintFilter, Spill};
use super::stage::Staged;
use super::writer::{Deletes, Reconcile, ReconcileScope};
use crate::error::{Result, SinkError};
use crate::keys::{Recency, RefColumn, fingerprint};

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
    pub(crate) keys: &'a KeySpec,
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
        let mut removals = Removals::new(self.keys.is_grouped());
        if self.buckets == 1 {
            self.match_at_once(staged, &mut matched, &mut removals, out)
                .await?;
        } else {
            self.match_by_bucket(staged, &mut matched, &mut removals, out)
                .await?;
        }
        out.deleted += removals.deleted.total();
        out.reconciled += removals.reconciled.total();
        Ok(matched)
    }

    fn index(&self) -> InputIndex {
        InputIndex::new(self.keys.is_grouped())
    }

    async fn match_at_once(
        &self,
        staged: &Staged,
        matched: &mut Matched,
        removals: &mut Removals,
        out: &mut WriteOutcome,
    ) -> Result<()> {
        let mut incoming = self.index();
        read_input_keys(staged, self.table, self.keys, out, |id, key, out| {
            add_incoming(&mut incoming, id, key.incoming(), out);
            Ok(())
        })
        .await?;
        apply_deletes(&mut incoming, self.deletes);
        if let Some(stored) = &self.stored {
            let matcher = Matcher::Direct(&mut incoming);
            self.scan_stored(stored, matcher, &mut matched.removed, removals)
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
        removals: &mut Removals,
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
        // An input record's flag: a placeholder.
        read_input_keys(staged, self.table, self.keys, out, |id, key, _| {
            let fp = fingerprint(id);
            filter.insert(fp);
            let r = &key.recency;
            input
                .push(
                    (fp % buckets) as usize,
                    id,
                    r.last_updated,
                    r.version_id.as_deref(),
                    key.file,
                    key.row,
                    key.placeholder,
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
            self.scan_stored(files, matcher, &mut matched.removed, removals)
                .await?;
            stored.finish().map_err(spill_err)?;
        }
        drop(filter);
        for bucket in 0..count {
            let mut incoming = self.index();
            input
                .for_each(bucket, |rec| {
                    let key = InputKey {
                        recency: rec.recency,
                        file: rec.file,
                        row: rec.row,
                        placeholder: rec.flag,
                    };
                    add_incoming(&mut incoming, &rec.id, key.incoming(), out);
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
                        removals.reconciled.add(&rec.id);
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
        removals: &mut Removals,
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
        let read = KeyRead {
            spec: self.keys,
            placeholders: false,
            ref_columns: &scope_columns,
        };
        scan_keys(&stored.store, files, read, self.table, |batch| {
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
                    removals.deleted.add(id);
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
                    removals.reconciled.add(id);
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

/// The key of one input row besides its id.
struct InputKey {
    recency: Recency,
    file: u32,
    row: u32,
    /// A grouped key's placeholder: the group is there, without this row.
    placeholder: bool,
}

impl InputKey {
    fn incoming(self) -> Incoming {
        if self.placeholder {
            Incoming::placeholder(self.recency)
        } else {
            Incoming::new(self.recency, self.file, self.row)
        }
    }
}

/// Stored rows removed by deletes and by reconciliation, counted by key (see [`KeyCount`]).
struct Removals {
    deleted: KeyCount,
    reconciled: KeyCount,
}

impl Removals {
    fn new(grouped: bool) -> Self {
        Self {
            deleted: KeyCount::new(grouped),
            reconciled: KeyCount::new(grouped),
        }
    }
}

/// Counts the keys of removed stored rows: one per row for one-row keys (as many as keys),
/// distinct keys (by fingerprint, 8 bytes each) for grouped ones.
struct KeyCount {
    grouped: bool,
    rows: u64,
    fingerprints: Vec<u64>,
}

impl KeyCount {
    fn new(grouped: bool) -> Self {
        Self {
            grouped,
            rows: 0,
            fingerprints: Vec::new(),
        }
    }

    fn add(&mut self, id: &str) {
        if !self.grouped {
            self.rows += 1;
            return;
        }
        let fp = fingerprint(id);
        // A group's rows usually follow one another: keep one entry for them.
        if self.fingerprints.last() != Some(&fp) {
            self.fingerprints.push(fp);
        }
    }

    fn total(mut self) -> u64 {
        if !self.grouped {
            return self.rows;
        }
        self.fingerprints.sort_unstable();
        self.fingerprints.dedup();
        self.fingerprints.len() as u64
    }
}

/// Streams the key columns of the new files (placeholder flags included), calling `f`
/// with every row that has a key (in file and row order); rows without one are counted
/// as rejected.
async fn read_input_keys(
    staged: &Staged,
    table: &str,
    keys: &KeySpec,
    out: &mut WriteOutcome,
    mut f: impl FnMut(&str, InputKey, &mut WriteOutcome) -> Result<()>,
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
    let read = KeyRead {
        spec: keys,
        placeholders: true,
        ref_columns: &[],
    };
    scan_keys(store, files, read, table, |batch| {
        let keys = &batch.keys;
        for i in 0..keys.len() {
            let Some(id) = keys.id(i) else {
                out.rejected += 1;
                continue;
            };
            let key = InputKey {
                recency: keys.recency(i),
                file: batch.file as u32,
                row: batch.first_row + i as u32,
                placeholder: keys.is_placeholder(i),
            };
            f(id, key, out)?;
        }
        Ok(())
    })
    .await?;
    if out.rejected > rejected_before {
        tracing::warn!(
            table,
            rows = out.rejected - rejected_before,
            "input rows without a key were skipped"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IdSet;

    #[test]
    fn removed_stored_rows_count_by_key() {
        let ids = ["a", "a", "b", "a", "c", "c"];
        let mut rows = KeyCount::new(false);
        let mut groups = KeyCount::new(true);
        for id in ids {
            rows.add(id);
            groups.add(id);
        }
        assert_eq!(rows.total(), 6, "one-row keys: a row is a key");
        assert_eq!(groups.total(), 3, "grouped keys: distinct keys");
        assert_eq!(KeyCount::new(true).total(), 0);
    }

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
