//! Deciding, per file, what a commit does with it. A stored file that loses rows is
//! removed (all rows gone), rewritten without them, or kept with them marked in a
//! deletion vector; small untouched files may be folded into the rewrite. A new file is
//! adopted as written (all its rows win), rewritten without its losing rows, or dropped.

use deltalake::kernel::{Add, LogicalFileView, Remove};
use roaring::RoaringTreemap;

use super::config::SinkConfig;
use super::index::RowMarks;
use super::rewrite::FileRewrite;
use super::stage::NewFile;

/// What planning needs to know of a stored file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredFile {
    /// Bytes.
    pub(crate) size: i64,
    /// Rows, deleted ones included (`None`: the log does not say).
    pub(crate) rows: Option<u64>,
}

impl StoredFile {
    pub(crate) fn of(file: &LogicalFileView) -> Self {
        Self {
            size: file.size(),
            rows: file.num_records().map(|n| n as u64),
        }
    }
}

/// The settings that shape a plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PlanRules {
    /// Files under this size are small (an eighth of the target size).
    pub(crate) small_size: u64,
    /// See [`SinkConfig::compact_small_files`].
    pub(crate) compact_small_files: usize,
    /// See [`SinkConfig::max_deleted_fraction`].
    pub(crate) max_deleted_fraction: f64,
    /// Whether rows may be marked in deletion vectors instead of rewriting.
    pub(crate) mark: bool,
}

impl PlanRules {
    pub(crate) fn new(config: &SinkConfig, mark: bool) -> Self {
        Self {
            small_size: config.target_file_size / 8,
            compact_small_files: config.compact_small_files,
            max_deleted_fraction: config.max_deleted_fraction,
            mark,
        }
    }

    fn is_small(&self, file: &StoredFile) -> bool {
        (file.size as u64) < self.small_size
    }
}

/// What happens to a stored file some of whose rows go.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Touched {
    /// Every row goes: the file is removed.
    Remove,
    /// The file stays, these rows (old and new) marked deleted.
    Mark(RoaringTreemap),
    /// The file is copied without these rows (sorted positions).
    Rewrite(Vec<u32>),
}

/// Decides for a stored file of `rows` rows of which `gone` go (including rows an
/// existing deletion vector marks). A file whose row count the log does not give is
/// rewritten: it is never taken as emptied, and the Delta protocol requires the count
/// (`numRecords`) on every file with a deletion vector.
pub(crate) fn touched(rows: Option<u64>, gone: RoaringTreemap, rules: &PlanRules) -> Touched {
    match rows {
        Some(total) if gone.len() >= total => Touched::Remove,
        Some(total)
            if rules.mark && (gone.len() as f64) <= total as f64 * rules.max_deleted_fraction =>
        {
            Touched::Mark(gone)
        }
        _ => Touched::Rewrite(positions(&gone)),
    }
}

/// What a commit does with the stored files, by their position.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct StoredPlan {
    /// Files whose entry is removed (all rows gone, rewritten or marked), in action order.
    pub(crate) removes: Vec<usize>,
    /// Files copied without the listed rows.
    pub(crate) rewrites: Vec<(usize, Vec<u32>)>,
    /// Files that stay, with the rows to mark deleted (old and new).
    pub(crate) marks: Vec<(usize, RoaringTreemap)>,
    /// Small untouched files folded into the rewrite.
    pub(crate) compacted: u64,
}

impl StoredPlan {
    /// Every one of `files` stored files is removed (an overwrite).
    pub(crate) fn remove_all(files: usize) -> Self {
        Self {
            removes: (0..files).collect(),
            ..Self::default()
        }
    }

    /// Turns the removed rows per stored file (`removed`, with `deleted_rows` from their
    /// deletion vectors) into a plan; folds small untouched files into the rewrite when
    /// there are many and a commit happens anyway (`inserting`, or a file is touched).
    pub(crate) fn new(
        files: &[StoredFile],
        removed: Vec<Vec<u32>>,
        deleted_rows: Vec<Option<RoaringTreemap>>,
        inserting: bool,
        rules: &PlanRules,
    ) -> Self {
        let mut plan = StoredPlan::default();
        let small_limit = rules.compact_small_files;
        let small_total = files.iter().filter(|f| rules.is_small(f)).count();
        let mut small_untouched = Vec::new();
        for (i, (rows, before)) in removed.into_iter().zip(deleted_rows).enumerate() {
            let mut gone = before.unwrap_or_default();
            if rows.is_empty() {
                if small_limit > 0 && rules.is_small(&files[i]) {
                    small_untouched.push((i, gone));
                }
                continue;
            }
            gone.extend(rows.into_iter().map(u64::from));
            plan.removes.push(i);
            match touched(files[i].rows, gone, rules) {
                Touched::Remove => {}
                Touched::Mark(gone) => plan.marks.push((i, gone)),
                Touched::Rewrite(kept_out) => plan.rewrites.push((i, kept_out)),
            }
        }
        // Only worth it once there is something to compact and a commit happens anyway.
        let committing = !plan.removes.is_empty() || inserting;
        if small_limit > 0 && small_total >= small_limit && small_untouched.len() > 1 && committing
        {
            for (i, gone) in small_untouched {
                plan.removes.push(i);
                plan.rewrites.push((i, positions(&gone)));
                plan.compacted += 1;
            }
        }
        plan
    }

    /// The plan as remove actions, rewrites and marked files of `files`.
    pub(crate) fn resolve(self, files: &[LogicalFileView]) -> ResolvedPlan {
        ResolvedPlan {
            removes: self
                .removes
                .into_iter()
                .map(|i| files[i].remove_action(true))
                .collect(),
            rewrites: self
                .rewrites
                .into_iter()
                .map(|(i, rows)| (files[i].object_store_path(), files[i].size(), rows))
                .collect(),
            marks: self
                .marks
                .into_iter()
                .map(|(i, rows)| (files[i].clone(), rows))
                .collect(),
            compacted: self.compacted,
        }
    }
}

/// A [`StoredPlan`] in the terms of the log and the rewrite.
pub(crate) struct ResolvedPlan {
    pub(crate) removes: Vec<Remove>,
    pub(crate) rewrites: Vec<FileRewrite>,
    pub(crate) marks: Vec<(LogicalFileView, RoaringTreemap)>,
    pub(crate) compacted: u64,
}

/// What happens to a new file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NewFate {
    /// All its rows win: added as written.
    Adopt,
    /// Copied without these losing rows (sorted positions).
    Rewrite(Vec<u32>),
    /// No row wins.
    Drop,
}

/// Decides for new file `file` of `rows` rows by the rows that win.
pub(crate) fn new_fate(file: u32, rows: u64, winners: &RowMarks) -> NewFate {
    let won = winners.count_in(file);
    if won == rows {
        NewFate::Adopt
    } else if won > 0 {
        let rows = u32::try_from(rows).unwrap_or(u32::MAX);
        NewFate::Rewrite((0..rows).filter(|r| !winners.get(file, *r)).collect())
    } else {
        NewFate::Drop
    }
}

/// What the commit takes of the new files.
#[derive(Debug, Default)]
pub(crate) struct NewPlan {
    /// Files added as written.
    pub(crate) adopted: Vec<Add>,
    pub(crate) rewrites: Vec<FileRewrite>,
}

impl NewPlan {
    pub(crate) fn new(files: &[NewFile], winners: &RowMarks) -> Self {
        let mut plan = NewPlan::default();
        for (fi, f) in files.iter().enumerate() {
            match new_fate(fi as u32, f.rows, winners) {
                NewFate::Adopt => plan.adopted.push(f.add.clone()),
                NewFate::Rewrite(losers) => plan.rewrites.push((f.path(), f.add.size, losers)),
                NewFate::Drop => {}
            }
        }
        plan
    }
}

/// Sorted row positions of a file (files have fewer than 2^32 rows).
fn positions(rows: &RoaringTreemap) -> Vec<u32> {
    rows.iter().filter_map(|r| u32::try_from(r).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: PlanRules = PlanRules {
        small_size: 100,
        compact_small_files: 3,
        max_deleted_fraction: 0.5,
        mark: false,
    };

    fn marking() -> PlanRules {
        PlanRules {
            mark: true,
            ..RULES
        }
    }

    fn rows(r: impl IntoIterator<Item = u64>) -> RoaringTreemap {
        r.into_iter().collect()
    }

    fn file(size: i64, rows: u64) -> StoredFile {
        StoredFile {
            size,
            rows: Some(rows),
        }
    }

    #[test]
    fn a_touched_file_is_removed_marked_or_rewritten() {
        assert_eq!(touched(Some(4), rows(0..4), &RULES), Touched::Remove);
        assert_eq!(touched(Some(4), rows(0..4), &marking()), Touched::Remove);
        assert_eq!(
            touched(Some(4), rows([1, 3]), &RULES),
            Touched::Rewrite(vec![1, 3])
        );
        assert_eq!(
            touched(Some(4), rows([1, 3]), &marking()),
            Touched::Mark(rows([1, 3]))
        );
        assert_eq!(
            touched(Some(4), rows([0, 1, 3]), &marking()),
            Touched::Rewrite(vec![0, 1, 3]),
            "more than the fraction marked: rewritten"
        );
        // Without a row count a file is never taken as emptied.
        assert_eq!(
            touched(None, rows(0..4), &RULES),
            Touched::Rewrite(vec![0, 1, 2, 3])
        );
    }

    #[test]
    fn a_file_without_a_row_count_is_rewritten_never_marked() {
        // A deletion vector needs the file's `numRecords`: rewritten however few rows go.
        assert_eq!(
            touched(None, rows([2]), &marking()),
            Touched::Rewrite(vec![2])
        );
        assert_eq!(
            touched(None, rows(0..4), &marking()),
            Touched::Rewrite(vec![0, 1, 2, 3])
        );
        let files = [
            StoredFile {
                size: 1000,
                rows: None,
            },
            file(1000, 10),
        ];
        let removed = vec![vec![3], vec![3]];
        let plan = StoredPlan::new(&files, removed, vec![None, None], false, &marking());
        assert_eq!(plan.removes, [0, 1]);
        assert_eq!(plan.rewrites, [(0, vec![3])]);
        assert_eq!(plan.marks, [(1, rows([3]))]);
    }

    #[test]
    fn stored_plan_keeps_untouched_files_and_counts_existing_marks() {
        let files = [
            file(1000, 10),
            file(1000, 10),
            file(1000, 4),
            file(1000, 10),
        ];
        let removed = vec![vec![], vec![2, 5], vec![0, 1], vec![7]];
        let deleted = vec![None, Some(rows([9])), Some(rows([2, 3])), None];
        let plan = StoredPlan::new(&files, removed, deleted, false, &RULES);
        assert_eq!(
            plan,
            StoredPlan {
                removes: vec![1, 2, 3],
                rewrites: vec![(1, vec![2, 5, 9]), (3, vec![7])],
                marks: vec![],
                compacted: 0,
            }
        );
        let removed = vec![vec![], vec![2, 5], vec![], vec![7]];
        let plan = StoredPlan::new(&files, removed, vec![None; 4], false, &marking());
        assert_eq!(plan.removes, [1, 3]);
        assert_eq!(plan.marks, [(1, rows([2, 5])), (3, rows([7]))]);
        assert!(plan.rewrites.is_empty());
    }

    #[test]
    fn small_untouched_files_are_folded_in_only_when_many_and_committing() {
        let files = [file(10, 5), file(10, 5), file(10, 5), file(1000, 5)];
        let touch_big = || vec![vec![], vec![], vec![], vec![0]];
        let plan = StoredPlan::new(&files, touch_big(), vec![None; 4], false, &RULES);
        assert_eq!(plan.removes, [3, 0, 1, 2]);
        assert_eq!(plan.rewrites.len(), 4);
        assert_eq!(plan.rewrites[1], (0, vec![]));
        assert_eq!(plan.compacted, 3);

        // Nothing else happens: no commit to fold them into.
        let untouched = vec![vec![]; 4];
        let plan = StoredPlan::new(&files, untouched.clone(), vec![None; 4], false, &RULES);
        assert_eq!(plan, StoredPlan::default());
        // Inserts alone are a commit.
        let plan = StoredPlan::new(&files, untouched.clone(), vec![None; 4], true, &RULES);
        assert_eq!((plan.removes.len(), plan.compacted), (3, 3));
        // Marked rows of a compacted file are left out of its copy.
        let deleted = vec![Some(rows([4])), None, None, None];
        let plan = StoredPlan::new(&files, untouched.clone(), deleted, true, &RULES);
        assert_eq!(plan.rewrites[0], (0, vec![4]));
        // Under the threshold, or disabled: nothing folded.
        let few = PlanRules {
            compact_small_files: 4,
            ..RULES
        };
        let plan = StoredPlan::new(&files, touch_big(), vec![None; 4], true, &few);
        assert_eq!((plan.removes.len(), plan.compacted), (1, 0));
        let off = PlanRules {
            compact_small_files: 0,
            ..RULES
        };
        let plan = StoredPlan::new(&files, untouched, vec![None; 4], true, &off);
        assert_eq!(plan, StoredPlan::default());
    }

    #[test]
    fn an_overwrite_removes_every_file() {
        assert_eq!(StoredPlan::remove_all(3).removes, [0, 1, 2]);
        assert_eq!(StoredPlan::remove_all(0), StoredPlan::default());
    }

    #[test]
    fn a_new_file_is_adopted_rewritten_or_dropped_by_its_winners() {
        let mut winners = RowMarks::default();
        for row in 0..3 {
            winners.set(0, row);
        }
        winners.set(1, 1);
        assert_eq!(new_fate(0, 3, &winners), NewFate::Adopt);
        assert_eq!(new_fate(1, 4, &winners), NewFate::Rewrite(vec![0, 2, 3]));
        assert_eq!(new_fate(2, 5, &winners), NewFate::Drop);
        assert_eq!(new_fate(3, 0, &winners), NewFate::Adopt, "an empty file");
    }

    #[test]
    fn new_plan_keeps_file_order() {
        let new = |path: &str, rows: u64| NewFile {
            add: Add {
                path: path.into(),
                size: 10 * rows as i64,
                ..Add::default()
            },
            rows,
        };
        let files = [new("a", 2), new("b", 2), new("c", 2), new("d", 1)];
        let mut winners = RowMarks::default();
        for (file, row) in [(0, 0), (0, 1), (1, 1), (3, 0)] {
            winners.set(file, row);
        }
        let plan = NewPlan::new(&files, &winners);
        let adopted: Vec<&str> = plan.adopted.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(adopted, ["a", "d"]);
        assert_eq!(plan.rewrites, [(deltalake::Path::from("b"), 20, vec![0])]);
    }
}
