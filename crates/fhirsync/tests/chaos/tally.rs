//! What the suite counts while it runs, and the summary table it prints at the end: the
//! figures of docs/reliability.md come from this table.
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Counters shared by every scenario of a run.
#[derive(Default)]
pub struct Tally {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// `scenario -> (seeds run, seeds passed, seeds skipped)`.
    seeds: BTreeMap<String, (u64, u64, u64)>,
    /// `kind -> count` of faults injected.
    faults: BTreeMap<String, u64>,
    /// Named counters (runs, failed runs, converged, lost, duplicates, ...).
    counts: BTreeMap<String, u64>,
    /// Named maxima (peak RSS, fds).
    peaks: BTreeMap<String, u64>,
}

/// The counters every summary shows, zero or not: the invariants the suite checks.
pub const INVARIANTS: [&str; 8] = [
    LOST,
    MIXED,
    DUPLICATE_IDS,
    CURSORS_AHEAD,
    ORPHAN_FILES,
    UNLISTED_REJECTS,
    PANICS,
    UNCLEAR_ERRORS,
];
/// Rows the fault-free run has and the checked table lacks, or holds in another version.
pub const LOST: &str = "resources lost";
pub const DUPLICATE_IDS: &str = "duplicate ids";
/// Tables synced with a changed encoding that hold rows of both.
pub const MIXED: &str = "tables silently mixing encodings";
/// Tables whose committed cursor is ahead of their data (or a state file ahead of a table).
pub const CURSORS_AHEAD: &str = "cursors ahead of data";
/// Files in a table's directory that its log does not reference, after a vacuum.
pub const ORPHAN_FILES: &str = "orphan files after vacuum";
/// Lines rejected by the server's bad-line fault that the rejects do not list.
pub const UNLISTED_REJECTS: &str = "rejected lines not in _rejects";
/// Staged files a failed run left unreferenced (removed by the next vacuum; not an invariant).
pub const LEFT_BEHIND: &str = "files left unreferenced by failed runs";
/// Panics of fhirsync (the binary's stderr, or a sync task of the library).
pub const PANICS: &str = "panics";
/// Failed runs whose error was not one line naming what happened.
pub const UNCLEAR_ERRORS: &str = "unclear error messages";

impl Tally {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn fault(&self, kind: impl Into<String>) {
        *self.lock().faults.entry(kind.into()).or_default() += 1;
    }

    pub fn add(&self, counter: &str, n: u64) {
        *self.lock().counts.entry(counter.to_string()).or_default() += n;
    }

    pub fn count(&self, counter: &str) -> u64 {
        self.lock().counts.get(counter).copied().unwrap_or(0)
    }

    pub fn peak(&self, name: &str, value: u64) {
        let mut inner = self.lock();
        let p = inner.peaks.entry(name.to_string()).or_default();
        *p = (*p).max(value);
    }

    pub fn seed_done(&self, scenario: &str, passed: bool, skipped: bool) {
        let mut inner = self.lock();
        let s = inner.seeds.entry(scenario.to_string()).or_default();
        s.0 += 1;
        s.1 += u64::from(passed && !skipped);
        s.2 += u64::from(skipped);
    }

    /// The summary table.
    pub fn summary(&self) -> String {
        let inner = self.lock();
        let mut out = String::from("\n== chaos summary\n");
        out += &format!(
            "{:<28} {:>6} {:>7} {:>8}\n",
            "scenario", "seeds", "passed", "skipped"
        );
        let (mut seeds, mut passed) = (0, 0);
        for (name, (n, p, s)) in &inner.seeds {
            out += &format!("{name:<28} {n:>6} {p:>7} {s:>8}\n");
            seeds += n;
            passed += p;
        }
        out += &format!(
            "{:<28} {seeds:>6} {passed:>7}\n\nfaults injected by kind\n",
            "total"
        );
        let mut total = 0;
        for (kind, n) in &inner.faults {
            out += &format!("  {kind:<40} {n:>8}\n");
            total += n;
        }
        out += &format!("  {:<40} {total:>8}\n\ncounts\n", "total");
        for (name, n) in &inner.counts {
            if !INVARIANTS.contains(&name.as_str()) {
                out += &format!("  {name:<40} {n:>8}\n");
            }
        }
        out += "\ninvariants (each must be 0)\n";
        for name in INVARIANTS {
            let n = inner.counts.get(name).copied().unwrap_or(0);
            out += &format!("  {name:<40} {n:>8}\n");
        }
        if !inner.peaks.is_empty() {
            out += "\npeaks\n";
            for (name, n) in &inner.peaks {
                out += &format!("  {name:<40} {n:>8}\n");
            }
        }
        out
    }
}
