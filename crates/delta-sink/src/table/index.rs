//! The input indexed by key, and the rules that meet it with the stored rows: newest wins
//! (a row, or a group of rows for grouped keys), deletes by transaction time, and which new
//! rows are written.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::outcome::WriteOutcome;
use super::writer::Deletes;
use crate::keys::Recency;

/// Per-key state of the deduplicated input.
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

/// Where the winning input rows of one key were staged (file and row positions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rows {
    /// None: a group of placeholders only.
    Empty,
    One(u32, u32),
    /// A group of several rows.
    Many(Vec<(u32, u32)>),
}

impl Rows {
    fn append(&mut self, other: Rows) {
        let mut all = match std::mem::replace(self, Rows::Empty) {
            Rows::Empty => {
                *self = other;
                return;
            }
            Rows::One(f, r) => vec![(f, r)],
            Rows::Many(rows) => rows,
        };
        match other {
            Rows::Empty => {}
            Rows::One(f, r) => all.push((f, r)),
            Rows::Many(rows) => all.extend(rows),
        }
        *self = Rows::Many(all);
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Rows::Empty)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let (one, many) = match self {
            Rows::Empty => (None, &[][..]),
            Rows::One(f, r) => (Some((*f, *r)), &[][..]),
            Rows::Many(rows) => (None, rows.as_slice()),
        };
        one.into_iter().chain(many.iter().copied())
    }
}

/// The newest input of one key (a row, or a group of rows of one recency), and where it
/// was staged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Incoming {
    pub(crate) recency: Recency,
    pub(crate) rows: Rows,
    pub(crate) fate: Fate,
}

impl Incoming {
    /// An input row staged at `row` of new file `file`.
    pub(crate) fn new(recency: Recency, file: u32, row: u32) -> Self {
        Self {
            recency,
            rows: Rows::One(file, row),
            fate: Fate::Insert,
        }
    }

    /// A placeholder row of a grouped key: the group is there, but has no row to write.
    pub(crate) fn placeholder(recency: Recency) -> Self {
        Self {
            recency,
            rows: Rows::Empty,
            fate: Fate::Insert,
        }
    }
}

/// The input of one id bucket (or the whole input), by key.
#[derive(Debug, Default)]
pub(crate) struct InputIndex {
    keys: HashMap<Box<str>, Incoming>,
    /// Grouped keys: input rows of one key and recency form one group.
    grouped: bool,
    /// Grouped keys: the recencies of the groups a newer one beat, per key, so that a
    /// beaten group counts as one duplicate however many rows it has (rare: empty).
    beaten: HashMap<Box<str>, Vec<Recency>>,
}

impl InputIndex {
    pub(crate) fn new(grouped: bool) -> Self {
        Self {
            grouped,
            ..Self::default()
        }
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Incoming> {
        self.keys.get_mut(id)
    }

    /// Counts one duplicate for the group of `id` at `recency`, once.
    fn beat(&mut self, id: &str, recency: Recency, out: &mut WriteOutcome) {
        let groups = self.beaten.entry(id.into()).or_default();
        if !groups.contains(&recency) {
            groups.push(recency);
            out.duplicates += 1;
        }
    }
}

/// Adds an input row to the index. One row per key: of two rows the newer wins (later
/// rows win ties: "not older" replaces), and the other is counted as a duplicate. Grouped
/// keys: a row of the winning group's recency joins it; a newer one starts a new group
/// that replaces it; an older one loses; each losing group counts as one duplicate.
pub(crate) fn add_incoming(
    index: &mut InputIndex,
    id: &str,
    incoming: Incoming,
    out: &mut WriteOutcome,
) {
    let Some(prev) = index.keys.get_mut(id) else {
        index.keys.insert(id.into(), incoming);
        return;
    };
    let order = incoming.recency.compare(&prev.recency);
    if !index.grouped {
        out.duplicates += 1;
        if order != Ordering::Less {
            *prev = incoming;
        }
        return;
    }
    match order {
        Ordering::Equal => prev.rows.append(incoming.rows),
        Ordering::Greater => {
            let beaten = std::mem::replace(prev, incoming).recency;
            index.beat(id, beaten, out);
        }
        Ordering::Less => index.beat(id, incoming.recency, out),
    }
}

/// Marks the input keys the delete list removes: those not newer than the delete.
pub(crate) fn apply_deletes(index: &mut InputIndex, deletes: &Deletes) {
    for (id, inc) in index.keys.iter_mut() {
        if let Some(tt) = deletes.get(id.as_ref())
            && inc.recency.last_updated.is_none_or(|lu| lu <= *tt)
        {
            inc.fate = Fate::Deleted;
        }
    }
}

/// Meets the input of a key with a stored row of the key; returns whether the stored row
/// goes. For grouped keys this runs for every stored row of the key, so a newer group
/// removes them all.
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

/// Counts the fates of a matched index (one per key) and marks the input rows that are
/// written. A group of placeholders only for a key the table lacks changes nothing: it
/// counts as unchanged.
pub(crate) fn tally(index: &InputIndex, winners: &mut RowMarks, out: &mut WriteOutcome) {
    for inc in index.keys.values() {
        match inc.fate {
            Fate::Insert if inc.rows.is_empty() => out.unchanged += 1,
            Fate::Insert => out.inserted += 1,
            Fate::Update => out.updated += 1,
            Fate::Unchanged | Fate::Deleted => out.unchanged += 1,
        }
        if matches!(inc.fate, Fate::Insert | Fate::Update) {
            for (file, row) in inc.rows.iter() {
                winners.set(file, row);
            }
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
        let mut index = InputIndex::new(false);
        let mut out = empty();
        add_incoming(&mut index, "a", Incoming::new(r(2, "1"), 0, 0), &mut out);
        add_incoming(&mut index, "a", Incoming::new(r(1, "9"), 0, 1), &mut out);
        assert_eq!(index.keys["a"].rows, Rows::One(0, 0), "older row loses");
        add_incoming(&mut index, "a", Incoming::new(r(2, "1"), 1, 4), &mut out);
        assert_eq!(index.keys["a"].rows, Rows::One(1, 4), "tie: later row wins");
        add_incoming(&mut index, "b", Incoming::new(r(0, "1"), 1, 5), &mut out);
        assert_eq!((index.keys.len(), out.duplicates), (2, 2));
    }

    #[test]
    fn deletes_remove_input_rows_not_newer_than_the_delete() {
        let mut index = InputIndex::new(false);
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
        let fate = |id: &str| index.keys[id].fate;
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
        let mut index = InputIndex::new(false);
        let fates = [Fate::Insert, Fate::Update, Fate::Unchanged, Fate::Deleted];
        for (i, fate) in fates.into_iter().enumerate() {
            let mut inc = Incoming::new(r(1, "1"), 1, 70 + i as u32);
            inc.fate = fate;
            index.keys.insert(format!("id{i}").into(), inc);
        }
        let (mut winners, mut out) = (RowMarks::default(), empty());
        tally(&index, &mut winners, &mut out);
        assert_eq!((out.inserted, out.updated, out.unchanged), (1, 1, 2));
        assert!(winners.get(1, 70) && winners.get(1, 71));
        assert!(!winners.get(1, 72) && !winners.get(1, 73));
        assert_eq!((winners.count_in(0), winners.count_in(1)), (0, 2));
    }

    /// An input row: id, recency, and where it was staged (`None`: a placeholder).
    type Row<'a> = (&'a str, Recency, Option<(u32, u32)>);

    /// Adds `rows` to a grouped index.
    fn grouped(rows: &[Row<'_>]) -> (InputIndex, WriteOutcome) {
        let (mut index, mut out) = (InputIndex::new(true), empty());
        for (id, recency, at) in rows {
            let inc = match at {
                Some((file, row)) => Incoming::new(recency.clone(), *file, *row),
                None => Incoming::placeholder(recency.clone()),
            };
            add_incoming(&mut index, id, inc, &mut out);
        }
        (index, out)
    }

    fn rows_of(index: &InputIndex, id: &str) -> Vec<(u32, u32)> {
        index.keys[id].rows.iter().collect()
    }

    #[test]
    fn rows_of_one_key_and_recency_form_one_group_that_wins_together() {
        let (index, out) = grouped(&[
            ("a", r(1, "1"), Some((0, 0))),
            ("b", r(1, "1"), Some((0, 1))),
            ("a", r(1, "1"), Some((0, 2))),
            ("a", r(1, "1"), Some((1, 0))),
        ]);
        assert_eq!(rows_of(&index, "a"), [(0, 0), (0, 2), (1, 0)]);
        assert_eq!(rows_of(&index, "b"), [(0, 1)]);
        assert_eq!(out.duplicates, 0, "rows of one group are no duplicates");
        let (mut winners, mut out) = (RowMarks::default(), empty());
        tally(&index, &mut winners, &mut out);
        assert_eq!(out.inserted, 2, "groups are counted, not rows");
        assert_eq!((winners.count_in(0), winners.count_in(1)), (3, 1));
    }

    #[test]
    fn a_newer_group_replaces_an_older_one_whole_and_each_loser_counts_once() {
        let (index, out) = grouped(&[
            ("a", r(1, "1"), Some((0, 0))),
            ("a", r(1, "1"), Some((0, 1))),
            ("a", r(2, "1"), Some((0, 2))),
            // More rows of the beaten group, and an older group of two rows.
            ("a", r(1, "1"), Some((0, 3))),
            ("a", r(0, "1"), Some((0, 4))),
            ("a", r(0, "1"), Some((0, 5))),
            ("a", r(2, "1"), Some((0, 6))),
        ]);
        assert_eq!(rows_of(&index, "a"), [(0, 2), (0, 6)]);
        assert_eq!(out.duplicates, 2, "two beaten groups, whatever their rows");
        let (mut winners, mut out) = (RowMarks::default(), empty());
        tally(&index, &mut winners, &mut out);
        let won: Vec<u32> = (0..7).filter(|r| winners.get(0, *r)).collect();
        assert_eq!(won, [2, 6]);
        assert_eq!(out.inserted, 1);
    }

    #[test]
    fn placeholders_make_a_group_without_rows() {
        let (mut index, _) = grouped(&[
            ("a", r(1, "1"), Some((0, 0))),
            ("a", r(2, "1"), None),
            ("new", r(1, "1"), None),
            ("b", r(1, "1"), None),
            ("b", r(1, "1"), Some((0, 4))),
        ]);
        assert!(
            index.keys["a"].rows.is_empty(),
            "the newer empty group wins"
        );
        assert!(index.keys["new"].rows.is_empty());
        assert_eq!(
            rows_of(&index, "b"),
            [(0, 4)],
            "placeholders are never written"
        );
        // The empty group replaces a's stored rows: an update.
        let a = index.get_mut("a").unwrap();
        assert!(settle(a, &r(1, "1")) && settle(a, &r(1, "1")));
        let (mut winners, mut out) = (RowMarks::default(), empty());
        tally(&index, &mut winners, &mut out);
        assert_eq!((out.inserted, out.updated, out.unchanged), (1, 1, 1));
        assert_eq!(winners.count_in(0), 1, "only b's row is written");
    }

    #[test]
    fn one_row_keys_never_group() {
        let mut index = InputIndex::new(false);
        let mut out = empty();
        add_incoming(&mut index, "a", Incoming::new(r(1, "1"), 0, 0), &mut out);
        add_incoming(&mut index, "a", Incoming::new(r(1, "1"), 0, 1), &mut out);
        assert_eq!(rows_of(&index, "a"), [(0, 1)], "a tie replaces");
        assert_eq!(out.duplicates, 1);
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
