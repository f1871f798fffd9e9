//! Crash safety: `fhirsync sync` killed with SIGKILL at random moments, again and again, must
//! converge to the tables an uninterrupted run writes, with the cursor never ahead of the data.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, StringArray};
use bulk_test_server::{DataSource, Fault, FaultRule, FaultTarget, ServerConfig, TestServer};
use fhirsync::state::SyncState;
use rand::Rng;

const TYPES: &str = "Patient,Condition,Observation,Encounter";

fn sync_command(server: &TestServer, delta: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fhirsync"));
    cmd.args(["--log-format", "json", "sync", "--fhir-endpoint"])
        .arg(server.base_url().as_str())
        .arg("--delta-path")
        .arg(delta)
        .args(["--resource-types", TYPES])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Runs `cmd` to its end, which must be a success (`what` names it), and returns how long
/// it took.
async fn run_to_end(mut cmd: Command, what: &str) -> Duration {
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{what} failed");
    started.elapsed()
}

/// Starts `cmd` and kills it with SIGKILL after `at` unless it has ended; true if killed.
async fn kill_after(mut cmd: Command, at: Duration) -> bool {
    let mut child = cmd.spawn().unwrap();
    tokio::time::sleep(at).await;
    let killed = child.try_wait().unwrap().is_none();
    if killed {
        child.kill().unwrap();
    }
    let _ = child.wait();
    killed
}

/// `Type -> id -> (versionId, gender-or-status)` over every table.
async fn contents(delta: &Path) -> BTreeMap<String, BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    for t in TYPES.split(',') {
        let batches = fhirsync::tables::query(
            &delta.display().to_string(),
            &format!("SELECT id, meta['versionId'] FROM {t}"),
            None,
        )
        .await
        .unwrap();
        let mut rows = BTreeMap::new();
        for b in batches {
            let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
            let vs = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
            let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
            let vs = vs.as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..b.num_rows() {
                let v = (!vs.is_null(i)).then(|| vs.value(i).to_string());
                assert!(
                    rows.insert(ids.value(i).to_string(), v).is_none(),
                    "duplicate id in {t}"
                );
            }
        }
        out.insert(t.to_string(), rows);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_syncs_converge_to_the_uninterrupted_result() {
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
    // Slow files stretch the download phase so kills land in every phase.
    server.faults().add(FaultRule {
        target: FaultTarget::AnyFile,
        fault: Fault::Slow {
            bytes_per_sec: 400_000,
        },
        times: None,
    });
    let dir = tempfile::tempdir().unwrap();

    // The reference: one uninterrupted run.
    let reference = dir.path().join("reference");
    let full_run = run_to_end(sync_command(&server, &reference), "reference sync").await;
    let expected = contents(&reference).await;

    // The same sync into another path, killed at random moments within a full run's length.
    let delta = dir.path().join("killed");
    let mut rng = rand::rng();
    let mut kills = 0;
    for _ in 0..6 {
        let at = Duration::from_millis(rng.random_range(50..full_run.as_millis().max(100) as u64));
        if kill_after(sync_command(&server, &delta), at).await {
            kills += 1;
        }
        // Whatever state the kill left, the cursor is never ahead of the data: each table that
        // carries a cursor holds every row of the export that cursor names.
        let state = SyncState::load(&delta.join("_fhirsync/state.json")).unwrap();
        if state.last_sync_time.is_some() {
            assert_eq!(
                contents(&delta).await,
                expected,
                "the state file names a cursor whose data is incomplete"
            );
        }
    }
    assert!(kills > 0, "no run was interrupted");

    run_to_end(sync_command(&server, &delta), "the sync after the kills").await;
    assert_eq!(contents(&delta).await, expected);

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
    let run_time = run_to_end(incremental(&reference), "reference incremental sync").await;
    let expected = contents(&reference).await;
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
    for _ in 0..4 {
        let at = Duration::from_millis(rng.random_range(20..run_time.as_millis().max(40) as u64));
        kill_after(incremental(&delta), at).await;
    }
    run_to_end(incremental(&delta), "the incremental sync after the kills").await;
    assert_eq!(contents(&delta).await, expected);
    server.shutdown().await;
}
