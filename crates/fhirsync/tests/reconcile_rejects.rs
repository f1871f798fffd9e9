//! A full refresh removes only rows whose resources the server no longer has: a line the
//! server sent and the sync rejected keeps its row when its id can be read, and stops the
//! reconciliation of its type (only) when it cannot.
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use bulk_test_server::{DataSource, TestServer};
use common::{options, run, server, versions};
use fhirsync::config::SyncOptions;
use fhirsync::run::RunKind;
use serde_json::{Value, json};

fn patient(id: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": "Family"}]})
}

fn observation(id: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"text": "weight"}, "subject": {"reference": "Patient/r1"}})
}

/// The server's line with an unpaired surrogate escape for a name, which no JSON parser takes.
fn unpaired_surrogate(line: &str) -> String {
    line.replace(r#""Family""#, r#""\ud800""#)
}

/// The server's line broken before any of its members: neither type nor id can be read.
fn broken_at_the_start(line: &str) -> String {
    format!(r#"{{"broken":[}},{}"#, &line[1..])
}

fn ids(versions: std::collections::BTreeMap<String, Option<String>>) -> BTreeSet<String> {
    versions.into_keys().collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// A server with Patients r1..r3 and Observations o1..o3, synced once (`types`) into a
/// fresh delta path; the options of that sync.
async fn synced(types: &[&str]) -> (TestServer, tempfile::TempDir, SyncOptions) {
    let server = server(DataSource::Empty).await;
    let store = server.store();
    for id in ["r1", "r2", "r3"] {
        store.upsert(patient(id)).unwrap();
    }
    for id in ["o1", "o2", "o3"] {
        store.upsert(observation(id)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&server, &dir.path().join("delta"));
    opts.resource_types = types.iter().map(|t| t.to_string()).collect();
    run(&opts, RunKind::Incremental).await.unwrap();
    (server, dir, opts)
}

/// The records of the list of rejects at `path`.
fn reject_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_line_whose_id_can_be_read_keeps_its_row_on_a_full_refresh() {
    let (server, dir, mut opts) = synced(&["Patient"]).await;
    let (store, delta) = (server.store(), dir.path().join("delta"));
    assert_eq!(
        ids(versions(&delta, "Patient").await),
        set(&["r1", "r2", "r3"])
    );

    // r2 comes back unreadable; r3 is gone from the server.
    store
        .upsert_garbled(patient("r2"), unpaired_surrogate)
        .unwrap();
    store.delete("Patient", "r3");
    opts.full_refresh = true;
    let report = run(&opts, RunKind::FullRefresh).await.unwrap();

    let p = &report.tables["Patient"];
    assert_eq!((p.rejected, report.rejects), (1, 1), "{p:?}");
    assert_eq!(p.reconciled, 1, "r3 only: {p:?}");
    assert_eq!(
        ids(versions(&delta, "Patient").await),
        set(&["r1", "r2"]),
        "the rejected r2 stays"
    );
    let records = reject_records(report.rejects_file.as_ref().unwrap());
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["id"], "r2", "{records:?}");
    assert_eq!(records[0]["resource_type"], "Patient", "{records:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_line_whose_id_cannot_be_read_stops_the_reconciliation_of_its_type_only() {
    let (server, dir, _) = synced(&["Patient", "Observation"]).await;
    let (store, delta) = (server.store(), dir.path().join("delta"));

    store
        .upsert_garbled(patient("r2"), broken_at_the_start)
        .unwrap();
    store.delete("Patient", "r3");
    store.delete("Observation", "o3");

    // The real binary, for its summary and its warning.
    let mut sync = Command::new(env!("CARGO_BIN_EXE_fhirsync"));
    sync.args(["--log-format", "json", "sync", "--fhir-endpoint"])
        .arg(server.base_url().as_str())
        .arg("--delta-path")
        .arg(&delta)
        .args(["--resource-types", "Patient,Observation", "--full-refresh"])
        .arg("--json")
        .env_remove("FHIR_ENDPOINT")
        .env_remove("FHIRSYNC_LOG");
    let out = tokio::task::spawn_blocking(move || sync.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sync failed: {stderr}");

    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tables = &report["tables"];
    assert_eq!(tables["Patient"]["rejected"], 1, "{report}");
    assert_eq!(tables["Patient"]["reconciled"], 0, "{report}");
    assert_eq!(tables["Observation"]["reconciled"], 1, "{report}");
    assert_eq!(
        ids(versions(&delta, "Patient").await),
        set(&["r1", "r2", "r3"]),
        "no Patient row is removed by reconciliation"
    );
    assert_eq!(
        ids(versions(&delta, "Observation").await),
        set(&["o1", "o2"]),
        "other types still reconcile"
    );

    // The warning names the file and line the rejects list has for the line.
    let rejects_file = report["rejects_file"].as_str().unwrap();
    let records = reject_records(Path::new(rejects_file));
    assert_eq!(records.len(), 1, "{records:?}");
    let (file, line) = (&records[0]["file"], &records[0]["line"]);
    assert!(records[0]["id"].is_null(), "{records:?}");
    let warned = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|l| {
            l["level"] == "WARN"
                && l["file"] == *file
                && l["line"] == *line
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("not reconciled"))
        });
    assert!(warned, "no warning naming {file}:{line} in:\n{stderr}");
    server.shutdown().await;
}
