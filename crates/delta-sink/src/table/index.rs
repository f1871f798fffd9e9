//! The input indexed by id, and the rules that meet it with the stored rows: newest wins,
//! deletes by transaction time, and which new rows are written.

use std::collections::HashMap;

use super::outcome::WriteOutcome;
use super::writer::Deletes;
use crate::keys::Recency;

/// Per-id state of the deduplicated input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Not (yet) found in the table.
    Insert,
    /// Replaces a stored row.
    Update,
    /// Stored row is newer or the same version.
    Unchanged,
    /// Removed by the delete list.
    Deleted,
}

/// The newest input row of one id, and where it was staged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Incoming {
    pub(crate) recency: Recency,
    pub(crate) file: u32,
    pub(crate) row: u32,
    pub(crate) fate: Fate,
}

impl Incoming {
    pub(crate) fn new(recency: Recency, file: u32, row: u32) -> Self {
        Self {
            recency,
            file,
            row,
            fate: Fate::Insert,
        }
    }
}

/// The input rows of one id bucket (or the whole input), by id.
pub(crate) type InputIndex = HashMap<Box<str>, Incoming>;

/// Adds an input row to the index: of two rows with one id the newer wins (later rows
/// win ties: "not older" replaces), and the other is counted as a duplicate.
pub(crate) fn add_incoming(
    index: &mut InputIndex,
    id: &str,
    incoming: Incoming,
    out: &mut WriteOutcome,
) {
    match index.get_mut(id) {
        Some(prev) => {
            out.duplicates += 1;
            if incoming.recency.compare(&prev.recency) != std::cmp::Ordering::Less {
                *prev = incoming;
            }
        }
        None => {
            index.insert(id.into(), incoming);
        }
    }
}

/// Marks the input rows the delete list removes: those not newer than the delete.
pub(crate) fn apply_deletes(index: &mut InputIndex, deletes: &Deletes) {
    for (id, inc) in index.iter_mut() {
        if let Some(tt) = deletes.get(id.as_ref())
            && inc.recency.last_updated.is_none_or(|lu| lu <= *tt)
        {
            inc.fate = Fate::Deleted;
        }
    }
}

/// Meets an input row with a stored row of its id; returns whether the stored row goes.
pub(crate) fn settle(inc: &mut Incoming, stored: &Recency) -> bool {
    // A deleted id keeps its stored row unless the delete list removed it.
    if inc.fate == Fate::Deleted {
        return false;
    }
    if inc.recency.supersedes(stored) {
        if inc.fate == Fate::Insert {
            inc.fate = Fate::Update;
        }
        true
    } else {
        // A stored row at least as new wins (if the table held duplicates, older copies
        // beaten before are still dropped).
        inc.fate = Fate::Unchanged;
        false
    }
}

/// Counts the fates of a matched index and marks the input rows that are written.
pub(crate) fn tally(index: &InputIndex, winners: &mut RowMarks, out: &mut WriteOutcome) {
    for inc in index.values() {
        match inc.fate {
            Fate::Insert => out.inserted += 1,
            Fate::Update => out.updated += 1,
            Fate::Unchanged | Fate::Deleted => out.unchanged += 1,
        }
        if matches!(inc.fate, Fate::Insert | Fate::Update) {
            winners.set(inc.file, inc.row);
        }
    }
}

/// How many buckets an input of `rows` rows is matched in so that one bucket indexes
/// about `bucket_rows` ids.
pub(crate) fn bucket_count(rows: u64, bucket_rows: usize) -> u64 {
    rows.div_ceil(bucket_rows.max(1) as u64).max(1)
}

/// One bit per staged row: whether it is written.
#[derive(Debug, Default)]
pub(crate) struct RowMarks {
    files: Vec<Vec<u64>>,
}

impl RowMarks {
    pub(crate) fn set(&mut self, file: u32, row: u32) {
        let (f, w) = (file as usize, row as usize / 64);
        if self.files.len() <= f {
            self.files.resize_with(f + 1, Vec::new);
        }
        let bits = &mut self.files[f];
        if bits.len() <= w {
            bits.resize(w + 1, 0);
        }
        bits[w] |= 1 << (row % 64);
    }

    pub(crate) fn get(&self, file: u32, row: u32) -> bool {
        self.files
            .get(file as usize)
            .and_then(|bits| bits.get(row as usize / 64))
            .is_some_and(|w| w & (1 << (row % 64)) != 0)
    }

    pub(crate) fn count_in(&self, file: u32) -> u64 {
        self.files.get(file as usize).map_or(0, |bits| {
            bits.iter().map(|w| u64::from(w.count_ones())).sum()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(last_updated: i64, version: &str) -> Recency {
        Recency {
            last_updated: Some(last_updated),
            version_id: Some(version.into()),
        }
    }

    fn empty() -> WriteOutcome {
        WriteOutcome::empty(super::super::outcome::WriteStatus::Committed, None)
    }

    #[test]
    fn the_newest_input_row_of_an_id_wins_and_ties_go_to_the_later() {
        let mut index = InputIndex::new();
        let mut out = empty();
        add_incoming(&mut index, "a", Incoming::new(r(2, "1"), 0, 0), &mut out);
        add_incoming(&mut index, "a", Incoming::new(r(1, "9"), 0, 1), &mut out);
        assert_eq!(index["a"].row, 0, "older row loses");
        add_incoming(&mut index, "a", Incoming::new(r(2, "1"), 1, 4), &mut out);
        assert_eq!(
            (index["a"].file, index["a"].row),
            (1, 4),
            "tie: later row wins"
        );
        add_incoming(&mut index, "b", Incoming::new(r(0, "1"), 1, 5), &mut out);
        assert_eq!((index.len(), out.duplicates), (2, 2));
    }

    #[test]
    fn deletes_remove_input_rows_not_newer_than_the_delete() {
        let mut index = InputIndex::new();
        let mut out = empty();
        for (i, (id, lu)) in [
            ("old", Some(5)),
            ("same", Some(10)),
            ("new", Some(11)),
            ("null", None),
        ]
        .into_iter()
        .enumerate()
        {
            let recency = Recency {
                last_updated: lu,
                version_id: None,
            };
            add_incoming(
                &mut index,
                id,
                Incoming::new(recency, 0, i as u32),
                &mut out,
            );
        }
        add_incoming(&mut index, "kept", Incoming::new(r(1, "1"), 0, 9), &mut out);
        let deletes: Deletes = ["old", "same", "new", "null", "absent"]
            .into_iter()
            .map(|id| (Box::from(id), 10))
            .collect();
        apply_deletes(&mut index, &deletes);
        let fate = |id: &str| index[id].fate;
        assert_eq!(fate("old"), Fate::Deleted);
        assert_eq!(fate("same"), Fate::Deleted);
        assert_eq!(fate("null"), Fate::Deleted);
        assert_eq!(fate("new"), Fate::Insert);
        assert_eq!(fate("kept"), Fate::Insert);
    }

    #[test]
    fn settling_decides_which_of_stored_and_input_row_stays() {
        let mut inc = Incoming::new(r(5, "2"), 0, 0);
        assert!(settle(&mut inc, &r(4, "9")), "newer input replaces");
        assert_eq!(inc.fate, Fate::Update);
        // A second, older stored copy of the id goes too and the fate stays.
        assert!(settle(&mut inc, &r(3, "1")));
        assert_eq!(inc.fate, Fate::Update);

        let mut same = Incoming::new(r(5, "2"), 0, 0);
        assert!(!settle(&mut same, &r(5, "2")), "same version: stored stays");
        assert_eq!(same.fate, Fate::Unchanged);

        let mut stale = Incoming::new(r(5, "2"), 0, 0);
        assert!(!settle(&mut stale, &r(6, "1")));
        assert_eq!(stale.fate, Fate::Unchanged);

        let mut deleted = Incoming::new(r(5, "2"), 0, 0);
        deleted.fate = Fate::Deleted;
        assert!(!settle(&mut deleted, &r(1, "1")), "the delete list decides");
        assert_eq!(deleted.fate, Fate::Deleted);
    }

    #[test]
    fn tally_counts_fates_and_marks_only_rows_that_are_written() {
        let mut index = InputIndex::new();
        let fates = [Fate::Insert, Fate::Update, Fate::Unchanged, Fate::Deleted];
        for (i, fate) in fates.into_iter().enumerate() {
            let mut inc = Incoming::new(r(1, "1"), 1, 70 + i as u32);
            inc.fate = fate;
            index.insert(format!("id{i}").into(), inc);
        }
        let (mut winners, mut out) = (RowMarks::default(), empty());
        tally(&index, &mut winners, &mut out);
        assert_eq!((out.inserted, out.updated, out.unchanged), (1, 1, 2));
        assert!(winners.get(1, 70) && winners.get(1, 71));
        assert!(!winners.get(1, 72) && !winners.get(1, 73));
        assert_eq!((winners.count_in(0), winners.count_in(1)), (0, 2));
    }

    #[test]
    fn row_marks_grow_as_needed() {
        let mut marks = RowMarks::default();
        assert!(!marks.get(3, 1000));
        marks.set(3, 1000);
        marks.set(3, 63);
        marks.set(3, 64);
        marks.set(3, 64);
        assert!(marks.get(3, 1000) && marks.get(3, 63) && marks.get(3, 64));
        assert!(!marks.get(3, 65) && !marks.get(2, 63) && !marks.get(4, 0));
        assert_eq!(
            (marks.count_in(3), marks.count_in(0), marks.count_in(9)),
            (3, 0, 0)
        );
    }

    #[test]
    fn buckets_hold_about_the_configured_rows() {
        assert_eq!(bucket_count(0, 4), 1);
        assert_eq!(bucket_count(4, 4), 1);
        assert_eq!(bucket_count(5, 4), 2);
        assert_eq!(bucket_count(131_072 * 23, 131_072), 23);
        assert_eq!(bucket_count(3, 0), 3, "zero means one row per bucket");
    }
}
