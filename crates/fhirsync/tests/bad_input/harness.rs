//! Runs a family's cases one by one, each under a timeout, and checks what each run left: the
//! run's result, every table read back, the rejects list, and the panics of every thread.
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use fhirsync::run::SyncReport;

/// How long one case (the run and reading its tables back) may take before it counts as hung.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// An entry of a case's input directory.
pub enum Entry {
    File(Vec<u8>),
    /// A symbolic link to this target (a file that cannot be read, a dangling link).
    Link(&'static str),
    Dir,
}

/// What the run must do with the case's bad item.
pub enum Expect {
    /// The run succeeds and rejects exactly this line, naming its file, line and reason.
    Rejected {
        file: &'static str,
        line: u64,
        reason: &'static str,
    },
    /// The run succeeds and keeps the resource `table/id` (elements it could not encode stored
    /// as null); each check is a query over the tables answering one value.
    Kept {
        table: &'static str,
        id: &'static str,
        checks: Vec<(String, &'static str)>,
    },
    /// The run succeeds; the bad item is neither kept nor rejected (blank lines, files that are
    /// not input).
    Skipped,
    /// The run fails with one line saying this, and has written nothing.
    Refused { reason: &'static str },
    /// The file cannot be read to its end. Either the run refuses with one line naming it and
    /// has written nothing, or it succeeds: the other files' resources land, the file is
    /// rejected by name with the reason, and of its own resources at most those in `partial`
    /// (read before the break) land.
    FileFails {
        file: &'static str,
        reason: &'static str,
        partial: &'static [&'static str],
    },
}

/// One kind of bad input.
pub struct Case {
    /// The kind, named in every failure message.
    pub kind: &'static str,
    /// The behaviour decided for it.
    pub decided: &'static str,
    /// The input directory: path (relative) → entry.
    pub input: Vec<(PathBuf, Entry)>,
    /// `(table, id)` of every valid resource in the input: each must land.
    pub neighbours: Vec<(&'static str, &'static str)>,
    pub expect: Expect,
}

impl Case {
    pub fn new(kind: &'static str, decided: &'static str, expect: Expect) -> Case {
        Case {
            kind,
            decided,
            input: Vec::new(),
            neighbours: Vec::new(),
            expect,
        }
    }

    pub fn file(self, path: impl AsRef<OsStr>, bytes: impl Into<Vec<u8>>) -> Case {
        self.entry(path, Entry::File(bytes.into()))
    }

    pub fn entry(mut self, path: impl AsRef<OsStr>, entry: Entry) -> Case {
        self.input.push((PathBuf::from(path.as_ref()), entry));
        self
    }

    pub fn neighbours(mut self, ids: &[(&'static str, &'static str)]) -> Case {
        self.neighbours.extend_from_slice(ids);
        self
    }
}

/// One record of the rejects list.
#[derive(Debug, serde::Deserialize)]
pub struct RejectRecord {
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// What a run left behind.
struct Outcome {
    result: Result<SyncReport, String>,
    tables: BTreeMap<String, BTreeSet<String>>,
    rejects: Vec<RejectRecord>,
    /// Names directly under the delta path.
    written: Vec<String>,
}

/// Families run one at a time: panics are counted process-wide.
static SERIAL: Mutex<()> = Mutex::new(());
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn panics() -> MutexGuard<'static, Vec<String>> {
    PANICS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records every panic of every thread (and still prints it).
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_string();
            panics().push(format!("thread {thread}: {info}"));
            previous(info);
        }));
    });
}

/// Runs `cases` with `run`, which is given the input directory and the delta path; fails naming
/// every failing kind.
pub fn run_family<F, Fut>(family: &str, cases: Vec<Case>, run: F)
where
    F: Fn(PathBuf, PathBuf) -> Fut,
    Fut: Future<Output = anyhow::Result<SyncReport>> + Send + 'static,
{
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    count_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in cases {
        ran += 1;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (input, delta) = (dir.path().join("input"), dir.path().join("delta"));
        write_input(&input, &case.input);
        let panics_before = panics().len();
        let run = run(input, delta.clone());
        let outcome = rt.block_on(async {
            tokio::time::timeout(CASE_TIMEOUT, async {
                let result = match tokio::spawn(run).await {
                    Ok(r) => r.map_err(|e| format!("{e:#}")),
                    Err(e) => Err(format!("the run panicked: {e}")),
                };
                let outcome = read_outcome(&delta, result).await;
                check(&case, &delta, &outcome).await
            })
            .await
        });
        let mut problems =
            outcome.unwrap_or_else(|_| vec![format!("no result within {CASE_TIMEOUT:?} (a hang)")]);
        problems.extend(
            panics()[panics_before..]
                .iter()
                .map(|p| format!("panic: {p}")),
        );
        if !problems.is_empty() {
            failures.push(format!(
                "[{family}] {}: {}\n    decided: {}",
                case.kind,
                problems.join("; "),
                case.decided,
            ));
        }
    }
    rt.shutdown_timeout(Duration::from_secs(10));
    assert!(ran > 0, "[{family}] no case ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn write_input(dir: &Path, input: &[(PathBuf, Entry)]) {
    std::fs::create_dir_all(dir).expect("the input directory");
    for (path, entry) in input {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("an input subdirectory");
        }
        match entry {
            Entry::File(bytes) => std::fs::write(&path, bytes).expect("an input file"),
            Entry::Link(target) => std::os::unix::fs::symlink(target, &path).expect("a link"),
            Entry::Dir => std::fs::create_dir_all(&path).expect("an input directory"),
        }
    }
}

async fn read_outcome(delta: &Path, result: Result<SyncReport, String>) -> Outcome {
    let written: Vec<String> = std::fs::read_dir(delta)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let mut tables = BTreeMap::new();
    for name in &written {
        if let Some(t) = name.strip_suffix(".parquet")
            && delta.join(name).join("_delta_log").is_dir()
        {
            let ids = match query(delta, t, &format!("SELECT id FROM {t}")).await {
                Ok(values) => values.into_iter().collect(),
                Err(e) => BTreeSet::from([format!("(unreadable table: {e:#})")]),
            };
            tables.insert(t.to_string(), ids);
        }
    }
    let mut rejects = Vec::new();
    if let Ok(entries) = std::fs::read_dir(delta.join("_rejects")) {
        for e in entries.filter_map(|e| e.ok()) {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                match serde_json::from_str(line) {
                    Ok(r) => rejects.push(r),
                    Err(e) => rejects.push(RejectRecord {
                        resource_type: None,
                        id: None,
                        file: "(rejects list)".into(),
                        line: 0,
                        reason: format!("unreadable reject record {line:?}: {e}"),
                    }),
                }
            }
        }
    }
    Outcome {
        result,
        tables,
        rejects,
        written,
    }
}

/// The first column of `sql`'s rows as text, over the table `table` of `delta`.
async fn query(delta: &Path, table: &str, sql: &str) -> anyhow::Result<Vec<String>> {
    let types = [table.to_string()];
    let batches = fhirsync::tables::query(&delta.display().to_string(), sql, Some(&types)).await?;
    let mut values = Vec::new();
    for b in batches {
        let f = ArrayFormatter::try_new(b.column(0).as_ref(), &FormatOptions::default())?;
        values.extend((0..b.num_rows()).map(|i| f.value(i).to_string()));
    }
    Ok(values)
}

/// The problems with a refusal that should say each of `says` in one line, having written
/// nothing.
fn refusal(message: &str, says: &[&str], outcome: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    if says.iter().any(|s| !message.contains(s)) || message.contains('\n') {
        problems.push(format!(
            "refused with {message:?}, not one line saying {says:?}"
        ));
    }
    if !outcome.written.is_empty() {
        problems.push(format!(
            "a refused run wrote {:?} under the delta path",
            outcome.written
        ));
    }
    problems
}

/// The problems with `outcome` for `case` (none when it behaved as decided).
async fn check(case: &Case, delta: &Path, outcome: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    let report = match (&case.expect, &outcome.result) {
        (Expect::Refused { reason }, Err(message)) => return refusal(message, &[reason], outcome),
        (Expect::Refused { reason }, Ok(_)) => {
            return vec![format!(
                "the run succeeded; it should refuse saying {reason:?}"
            )];
        }
        (Expect::FileFails { file, reason, .. }, Err(message)) => {
            return refusal(message, &[file, reason], outcome);
        }
        (_, Err(message)) => return vec![format!("the run failed: {message}")],
        (_, Ok(report)) => report,
    };

    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (t, id) in &case.neighbours {
        expected
            .entry(t.to_string())
            .or_default()
            .insert(id.to_string());
    }
    if let Expect::Kept { table, id, .. } = &case.expect {
        expected
            .entry(table.to_string())
            .or_default()
            .insert(id.to_string());
    }
    let partial: BTreeSet<String> = match &case.expect {
        Expect::FileFails { partial, .. } => partial.iter().map(|s| s.to_string()).collect(),
        _ => BTreeSet::new(),
    };
    for (t, ids) in &expected {
        let mut got = outcome.tables.get(t).cloned().unwrap_or_default();
        got.retain(|id| ids.contains(id) || !partial.contains(id));
        if &got != ids {
            problems.push(format!("table {t} holds {got:?}, expected {ids:?}"));
        }
    }
    for (t, got) in &outcome.tables {
        let unexpected: BTreeSet<&String> =
            got.iter().filter(|id| !partial.contains(*id)).collect();
        if !expected.contains_key(t) && !unexpected.is_empty() {
            problems.push(format!("unexpected rows in table {t}: {unexpected:?}"));
        }
    }

    let rejects = &outcome.rejects;
    if report.rejects != rejects.len() as u64 {
        problems.push(format!(
            "the report counts {} rejects, the list holds {}",
            report.rejects,
            rejects.len()
        ));
    }
    match &case.expect {
        Expect::Rejected { file, line, reason } => match rejects.as_slice() {
            [r] => {
                if (r.file.as_str(), r.line) != (*file, *line) {
                    problems.push(format!(
                        "rejected at {}:{}, expected {file}:{line}",
                        r.file, r.line
                    ));
                }
                if !r.reason.contains(reason) {
                    problems.push(format!(
                        "rejected for {:?}, not for {reason:?} (type {:?}, id {:?})",
                        r.reason, r.resource_type, r.id
                    ));
                }
            }
            other => problems.push(format!("expected one reject, got {other:?}")),
        },
        Expect::Kept { table, checks, .. } => {
            if !rejects.is_empty() {
                problems.push(format!("nothing should be rejected, got {rejects:?}"));
            }
            for (sql, want) in checks {
                match query(delta, table, sql).await {
                    Ok(got) if got == [*want] => {}
                    Ok(got) => problems.push(format!("{sql} answered {got:?}, expected {want:?}")),
                    Err(e) => problems.push(format!("{sql} failed: {e:#}")),
                }
            }
        }
        Expect::FileFails { file, reason, .. } => {
            if !rejects
                .iter()
                .any(|r| r.file.contains(file) && r.reason.contains(reason))
            {
                problems.push(format!(
                    "no reject names {file:?} with {reason:?}: {rejects:?}"
                ));
            }
        }
        Expect::Skipped if !rejects.is_empty() => {
            problems.push(format!("nothing should be rejected, got {rejects:?}"));
        }
        Expect::Skipped | Expect::Refused { .. } => {}
    }
    problems
}
