//! Crash safety: `fhirsync sync` killed with SIGKILL at random points, again and again. After
//! every kill, each table that carries the sync's cursor holds exactly the rows of the export
//! that cursor names (no more, no fewer, none stale), and the cursor of the state file is never
//! ahead of a table's; in the end the syncs converge to the tables an uninterrupted run writes.
//!
//! Kill points are seeded: the seed is printed, and `FHIRSYNC_CRASH_SEED=<seed>` replays it.
//! A kill point is a count of the sync's log lines (its progress), not a time, so a replay
//! kills at the same stage of the sync however fast the machine is.
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bulk_test_server::{DataSource, Fault, FaultRule, FaultTarget, ServerConfig, TestServer};
use chrono::DateTime;
use common::{difference, table_rows};
use delta_sink::{DeltaSink, StorageOptions};
use fhirsync::state::SyncState;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TYPES: &str = "Patient,Condition,Observation,Encounter";

/// The sync's own events, every one (kill points in every phase), and nothing of the libraries
/// underneath (whose messages could move the kill points of a replay).
const LOG_FILTER: &str = "off,fhirsync=debug,fhir_bulk=debug,delta_sink=debug,smart_auth=debug";

const SIGKILL: i32 = 9;

/// `Type -> id -> the row, every column` over every table.
type Contents = BTreeMap<String, BTreeMap<String, String>>;

fn sync_command(server: &TestServer, delta: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fhirsync"));
    cmd.args(["--log-format", "json", "--log-level", LOG_FILTER])
        .args(["sync", "--fhir-endpoint"])
        .arg(server.base_url().as_str())
        .arg("--delta-path")
        .arg(delta)
        .args(["--resource-types", TYPES])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to its end, which must be a success (`what` names it); returns how many log
/// lines it wrote.
async fn run_to_end(mut cmd: Command, what: &str) -> usize {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed: {stderr}");
    stderr.lines().count()
}

/// Runs `cmd` and kills it with SIGKILL once it has written `lines` log lines; true if it was
/// killed, false if it ended first (which must be a success).
async fn kill_after(mut cmd: Command, lines: usize) -> bool {
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        let mut log = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let mut seen = 0;
        while seen < lines && log.read_line(&mut line).unwrap() > 0 {
            seen += 1;
            line.clear();
        }
        if seen == lines {
            // Ends it, unless it has just ended by itself.
            let _ = child.kill();
        }
        // Nothing may block on a full pipe.
        std::io::copy(&mut log, &mut std::io::sink()).unwrap();
        let status = child.wait().unwrap();
        let killed = status.signal() == Some(SIGKILL);
        assert!(
            killed || status.success(),
            "a sync that was not killed failed"
        );
        killed
    })
    .await
    .unwrap()
}

/// Asserts that every table of `delta` holds `expected`'s rows.
async fn assert_contents(delta: &Path, expected: &Contents, context: &str) {
    for (t, rows) in expected {
        let actual = table_rows(delta, t).await;
        assert!(
            actual == *rows,
            "{t}: {} ({context})",
            difference(rows, &actual)
        );
    }
}

async fn contents(delta: &Path) -> Contents {
    let mut out = BTreeMap::new();
    for t in TYPES.split(',') {
        out.insert(t.to_string(), table_rows(delta, t).await);
    }
    out
}

/// The cursor (`txn` version: the export's `transactionTime` in epoch ms) each existing table
/// of `delta` carries under `app_id`. Every table that exists must carry one: the data is
/// never committed without its cursor.
async fn cursors(delta: &Path, app_id: &str) -> BTreeMap<String, i64> {
    let sink = DeltaSink::new(&delta.display().to_string(), StorageOptions::from_env()).unwrap();
    let mut out = BTreeMap::new();
    for t in TYPES.split(',') {
        let table = sink.table(t).await.unwrap();
        if !table.exists() {
            continue;
        }
        let version = table.committed_version(app_id).await.unwrap();
        let version = version.unwrap_or_else(|| panic!("{t} was committed without a cursor"));
        out.insert(t.to_string(), version);
    }
    out
}

/// After a killed run: each table with a cursor holds exactly `expected(cursor)`'s rows, and
/// the state file's cursor is not ahead of any table's.
async fn check_killed_run<'a>(
    delta: &Path,
    app_id: &str,
    expected: impl Fn(i64) -> &'a Contents,
    context: &str,
) {
    let cursors = cursors(delta, app_id).await;
    for (t, cursor) in &cursors {
        let (actual, expected) = (table_rows(delta, t).await, &expected(*cursor)[t]);
        assert!(
            actual == *expected,
            "{t} carries cursor {cursor} but not that export's rows: {} ({context})",
            difference(expected, &actual)
        );
    }
    let state = SyncState::load(&delta.join("_fhirsync/state.json")).unwrap();
    if let Some(last) = state.last_sync_time {
        let last = DateTime::parse_from_rfc3339(&last)
            .unwrap()
            .timestamp_millis();
        for t in TYPES.split(',') {
            assert!(
                cursors.get(t).is_some_and(|c| *c >= last),
                "the state file's cursor {last} is ahead of {t}'s {:?} ({context})",
                cursors.get(t)
            );
        }
    }
}

fn seed() -> u64 {
    match std::env::var("FHIRSYNC_CRASH_SEED") {
        Ok(s) => s.parse().expect("FHIRSYNC_CRASH_SEED is a whole number"),
        Err(_) => rand::random(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_syncs_converge_to_the_uninterrupted_result() {
    let seed = seed();
    println!("crash test seed {seed} (replay: FHIRSYNC_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let server = TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 10,
            seed: 42,
        },
        polls_before_complete: 2,
        retry_after_secs: 1,
        resources_per_file: 150,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    // Slow files stretch the download phase, so kills land while files are half-written too.
    server.faults().add(FaultRule {
        target: FaultTarget::AnyFile,
        fault: Fault::Slow {
            bytes_per_sec: 400_000,
        },
        times: None,
    });
    let app_id = fhirsync::sync::sync_identity(&server.base_url(), None);
    let dir = tempfile::tempdir().unwrap();

    // The reference: one uninterrupted run.
    let reference = dir.path().join("reference");
    let lines = run_to_end(sync_command(&server, &reference), "reference sync").await;
    let full = contents(&reference).await;

    // The same sync into another path, killed at random points of a full run.
    let delta: PathBuf = dir.path().join("killed");
    let mut kills = 0;
    for round in 0..6 {
        let at = rng.random_range(1..lines.max(2));
        let killed = kill_after(sync_command(&server, &delta), at).await;
        kills += usize::from(killed);
        println!("full sync round {round}: kill point {at} of {lines} lines, killed: {killed}");
        let context = format!("seed {seed}, full sync round {round}, killed after {at} lines");
        check_killed_run(&delta, &app_id, |_| &full, &context).await;
    }
    assert!(kills > 0, "no run was interrupted (seed {seed})");

    run_to_end(sync_command(&server, &delta), "the sync after the kills").await;
    assert_contents(&delta, &full, &format!("seed {seed}, after the full syncs")).await;
    let first_cursor = cursors(&delta, &app_id).await;

    // Then an incremental sync that marks replaced rows in deletion vectors, killed the same
    // way: the vectors written before a commit that never landed must not count.
    let store = server.store();
    for id in store.ids("Patient").into_iter().take(3) {
        let mut patient = store.get("Patient", &id).unwrap();
        patient["gender"] = serde_json::json!("other");
        store.upsert(patient).unwrap();
    }
    for id in store.ids("Observation").into_iter().take(2) {
        assert!(store.delete("Observation", &id));
    }
    let incremental = |path: &Path| {
        let mut cmd = sync_command(&server, path);
        cmd.arg("--deletion-vectors");
        cmd
    };
    let lines = run_to_end(incremental(&reference), "reference incremental sync").await;
    let updated = contents(&reference).await;
    assert!(
        std::fs::read_dir(reference.join("Patient.parquet"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("deletion_vector_")),
        "the incremental sync wrote a deletion vector"
    );
    // A table still at the first sync's cursor holds its rows; one past it, the update's.
    let expected = |t_cursor: i64| {
        if first_cursor.values().any(|c| *c == t_cursor) {
            &full
        } else {
            &updated
        }
    };
    for round in 0..4 {
        let at = rng.random_range(1..lines.max(2));
        let killed = kill_after(incremental(&delta), at).await;
        println!("incremental round {round}: kill point {at} of {lines} lines, killed: {killed}");
        let context = format!("seed {seed}, incremental round {round}, killed after {at} lines");
        check_killed_run(&delta, &app_id, expected, &context).await;
    }
    run_to_end(incremental(&delta), "the incremental sync after the kills").await;
    let context = format!("seed {seed}, after the incremental syncs");
    assert_contents(&delta, &updated, &context).await;
    server.shutdown().await;
}
