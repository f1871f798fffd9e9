//! End-to-end syncs against the built-in Bulk Data server, read back from real Delta tables.
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, Int64Array, StringArray};
use bulk_test_server::{DataSource, Fault, FaultHandle, FaultRule, FaultTarget};
use common::{
    TYPES, count, group_members, local, observation_of, options, python_reader,
    read_back_in_python, run, server, sql, utf8, versions,
};
use fhirsync::config::{SaveMode, SyncOptions};
use fhirsync::run::RunKind;
use fhirsync::state::SyncState;
use fhirsync::sync::{self, ImportRequest};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_then_incremental_sync_applies_updates_inserts_and_deletes() {
    let server = server(DataSource::Synthetic {
        patients: 12,
        seed: 7,
    })
    .await;
    let store = server.store();
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let opts = options(&server, &delta);

    let first = run(&opts, RunKind::Incremental).await.unwrap();
    assert!(first.since.is_none(), "the first sync is a full export");
    let table_sum: u64 = first.tables.values().map(|t| t.resources).sum();
    assert_eq!(
        first.resources, table_sum,
        "every encoded resource is counted once"
    );
    let server_counts = store.counts();
    for t in TYPES {
        let expected = *server_counts.get(t).unwrap_or(&0) as i64;
        assert_eq!(
            count(&delta, t).await,
            expected,
            "{t} rows after the full sync"
        );
        assert_eq!(first.tables[t].inserted as i64, expected);
    }
    let state = SyncState::load(&delta.join("_fhirsync/state.json")).unwrap();
    assert_eq!(
        state.last_sync_time, first.transaction_time,
        "state holds the manifest's transactionTime"
    );

    // Change the server: update a patient, add one, delete an observation.
    let patient_id = store.ids("Patient")[0].clone();
    let mut patient = store.get("Patient", &patient_id).unwrap();
    patient["gender"] = json!("other");
    store.upsert(patient).unwrap();
    store
        .upsert(json!({"resourceType": "Patient", "id": "added-1", "gender": "female", "birthDate": "2001-01-01"}))
        .unwrap();
    let gone = store.ids("Observation")[3].clone();
    assert!(store.delete("Observation", &gone));

    let second = run(&opts, RunKind::Incremental).await.unwrap();
    assert_eq!(
        second.since, first.transaction_time,
        "incremental export starts at the last cursor"
    );
    assert_eq!(second.tables["Patient"].inserted, 1);
    assert_eq!(second.tables["Patient"].updated, 1);
    assert_eq!(second.tables["Observation"].deleted, 1);
    assert_eq!(
        count(&delta, "Patient").await,
        server_counts["Patient"] as i64 + 1
    );
    assert_eq!(
        count(&delta, "Observation").await,
        server_counts["Observation"] as i64 - 1
    );
    let g = sql(
        &delta,
        &format!("SELECT gender FROM Patient WHERE id = '{patient_id}'"),
    )
    .await;
    assert_eq!(
        utf8(g[0].column(0))
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .value(0),
        "other"
    );
    let v = versions(&delta, "Observation").await;
    assert!(!v.contains_key(&gone));

    // Nothing changed: the third sync writes nothing but moves the cursor.
    let third = run(&opts, RunKind::Incremental).await.unwrap();
    assert_eq!(third.since, second.transaction_time);
    for t in TYPES {
        let r = &third.tables[t];
        assert_eq!((r.inserted, r.updated, r.deleted), (0, 0, 0), "{t}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_ids_across_files_keep_the_newest_version() {
    let server = server(DataSource::Synthetic {
        patients: 6,
        seed: 3,
    })
    .await;
    server.faults().add(FaultRule::once(
        FaultTarget::KickOff,
        Fault::DuplicateIds { count: 5 },
    ));
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let opts = options(&server, &delta);
    run(&opts, RunKind::Incremental).await.unwrap();
    for t in TYPES {
        let expected = server.store().counts().get(t).copied().unwrap_or(0) as usize;
        let v = versions(&delta, t).await;
        assert_eq!(v.len(), expected, "{t}: one row per id");
    }
    // The stale copies carry an older version: the stored one must be the server's current one.
    for id in server.store().ids("Patient") {
        let current = server.store().get("Patient", &id).unwrap();
        let stored = versions(&delta, "Patient").await;
        assert_eq!(
            stored[&id].as_deref(),
            current["meta"]["versionId"].as_str(),
            "Patient/{id}"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_in_downloads_are_rejected_with_the_servers_line_numbers() {
    let server = server(DataSource::Synthetic {
        patients: 4,
        seed: 5,
    })
    .await;
    server
        .faults()
        .add(FaultRule::once(FaultTarget::KickOff, Fault::BadLines));
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let mut opts = options(&server, &delta);
    opts.gzip = false;
    let report = run(&opts, RunKind::Incremental).await.unwrap();
    for t in TYPES {
        let expected = server.store().counts().get(t).copied().unwrap_or(0) as usize;
        assert_eq!(
            versions(&delta, t).await.len(),
            expected,
            "{t}: all good rows"
        );
    }
    // Each type's file of bad lines: cut-off JSON, malformed JSON, no id, unknown type.
    assert_eq!(report.rejects, 4 * TYPES.len() as u64);
    let text = std::fs::read_to_string(report.rejects_file.as_ref().unwrap()).unwrap();
    let mut by_file: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for l in text.lines() {
        let r: serde_json::Value = serde_json::from_str(l).unwrap();
        by_file
            .entry(r["file"].as_str().unwrap().to_string())
            .or_default()
            .push((
                r["line"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().into(),
            ));
    }
    assert_eq!(by_file.len(), TYPES.len(), "{by_file:?}");
    for (file, mut rejects) in by_file {
        rejects.sort();
        let lines: Vec<u64> = rejects.iter().map(|r| r.0).collect();
        assert_eq!(lines, [1, 2, 3, 4], "{file}: {rejects:?}");
        assert!(rejects[2].1.contains("no id"), "{file}: {rejects:?}");
        assert!(rejects[3].1.contains("NoSuchType"), "{file}: {rejects:?}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_refresh_reconciles_rows_the_server_no_longer_has() {
    let server = server(DataSource::Synthetic {
        patients: 8,
        seed: 11,
    })
    .await;
    let store = server.store();
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let mut opts = options(&server, &delta);
    run(&opts, RunKind::Incremental).await.unwrap();
    let before = count(&delta, "Condition").await;
    let victim = store.ids("Condition")[0].clone();
    store.delete("Condition", &victim);
    opts.full_refresh = true;
    let report = run(&opts, RunKind::FullRefresh).await.unwrap();
    assert!(report.since.is_none());
    assert_eq!(report.tables["Condition"].reconciled, 1);
    assert_eq!(count(&delta, "Condition").await, before - 1);
    assert!(!versions(&delta, "Condition").await.contains_key(&victim));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_do_not_change_the_tables() {
    let clean_server = server(DataSource::Synthetic {
        patients: 6,
        seed: 5,
    })
    .await;
    let faulty_server = server(DataSource::Synthetic {
        patients: 6,
        seed: 5,
    })
    .await;
    let faults: FaultHandle = faulty_server.faults();
    faults.add(FaultRule::once(
        FaultTarget::Status,
        Fault::Transient { status: 503 },
    ));
    faults.add(FaultRule::once(
        FaultTarget::AnyFile,
        Fault::ResetAfter { bytes: 1000 },
    ));
    faults.add(FaultRule::once(
        FaultTarget::FileType("Observation".into()),
        Fault::Truncate {
            bytes: 500,
            chunked: false,
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("clean"), dir.path().join("faulty"));
    run(&options(&clean_server, &a), RunKind::Incremental)
        .await
        .unwrap();
    let report = run(&options(&faulty_server, &b), RunKind::Incremental)
        .await
        .unwrap();
    assert!(
        report.http_retries.get("5xx").copied().unwrap_or(0) >= 1,
        "{:?}",
        report.http_retries
    );
    assert!(
        report.http_retries.get("network").copied().unwrap_or(0) >= 1,
        "{:?}",
        report.http_retries
    );
    for t in TYPES {
        assert_eq!(versions(&a, t).await, versions(&b, t).await, "{t}");
    }
    clean_server.shutdown().await;
    faulty_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_on_the_same_path_is_refused_while_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let lock =
        fhirsync::state::SyncLock::try_acquire(&delta.join("_fhirsync/fhirsync.lock")).unwrap();
    let server = server(DataSource::Synthetic {
        patients: 2,
        seed: 1,
    })
    .await;
    let err = run(&options(&server, &delta), RunKind::Incremental)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("another fhirsync run holds the lock"),
        "{err:#}"
    );
    drop(lock);
    run(&options(&server, &delta), RunKind::Incremental)
        .await
        .unwrap();
    server.shutdown().await;

    // Maintenance (whose vacuum could delete a running sync's files) takes the same lock.
    let maintain = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_fhirsync"))
            .args(["maintain", "--checkpoint", "--delta-path"])
            .arg(&delta)
            .output()
            .unwrap()
    };
    let lock =
        fhirsync::state::SyncLock::try_acquire(&delta.join("_fhirsync/fhirsync.lock")).unwrap();
    let out = maintain();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("another fhirsync run holds the lock"),
        "{stderr}"
    );
    drop(lock);
    let out = maintain();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_ndjson(path: &Path, lines: &[serde_json::Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn patient(id: &str, version: u32, last_updated: &str, gender: &str) -> serde_json::Value {
    json!({"resourceType": "Patient", "id": id, "meta": {"versionId": version.to_string(), "lastUpdated": last_updated}, "gender": gender})
}

fn import(input: &Path, delta: &Path, mode: SaveMode) -> ImportRequest {
    ImportRequest {
        input: input.to_path_buf(),
        delta_path: delta.display().to_string(),
        save_mode: mode,
        resource_types: None,
        max_rejects: None,
        max_nesting_level: 3,
        extensions: false,
        keep_json: false,
        deletion_vectors: false,
        events: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_merges_by_id_and_never_lets_an_older_version_win() {
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let first = dir.path().join("first");
    std::fs::create_dir_all(&first).unwrap();
    write_ndjson(
        &first.join("Patient.ndjson"),
        &[
            patient("a", 2, "2024-02-01T00:00:00Z", "female"),
            patient("b", 1, "2024-01-01T00:00:00Z", "male"),
        ],
    );
    sync::run_import(&import(&first, &delta, SaveMode::Merge))
        .await
        .unwrap();

    let second = dir.path().join("second");
    std::fs::create_dir_all(&second).unwrap();
    // a: older lastUpdated (stale) — must not win; b: newer — wins; c: new;
    // c twice in two files, the newer in the first file.
    write_ndjson(
        &second.join("one.ndjson"),
        &[
            patient("a", 1, "2024-01-15T00:00:00Z", "unknown"),
            patient("b", 2, "2024-03-01T00:00:00+02:00", "other"),
            patient("c", 3, "2024-05-01T00:00:00Z", "female"),
        ],
    );
    write_ndjson(
        &second.join("two.ndjson"),
        &[patient("c", 2, "2024-04-01T00:00:00Z", "male")],
    );
    let report = sync::run_import(&import(&second, &delta, SaveMode::Merge))
        .await
        .unwrap();
    let p = &report.tables["Patient"];
    assert_eq!((p.inserted, p.updated), (1, 1), "{p:?}");
    let v = versions(&delta, "Patient").await;
    assert_eq!(v["a"].as_deref(), Some("2"));
    assert_eq!(v["b"].as_deref(), Some("2"));
    assert_eq!(v["c"].as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_rejected_with_their_place_and_good_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let text = format!(
        "{}\n{{not json\n{}\n{{\"resourceType\":\"Patient\"}}\n{}\n",
        patient("ok-1", 1, "2024-01-01T00:00:00Z", "male"),
        json!({"resourceType": "NoSuchType", "id": "x"}),
        patient("ok-2", 1, "2024-01-01T00:00:00Z", "female"),
    );
    std::fs::write(input.join("mixed.ndjson"), text).unwrap();

    let mut strict = import(&input, &delta, SaveMode::Merge);
    strict.max_rejects = Some(2);
    let err = sync::run_import(&strict).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("more than --max-rejects 2"),
        "{err:#}"
    );
    assert!(
        !delta.join("Patient.parquet/_delta_log").exists(),
        "nothing committed"
    );

    let report = sync::run_import(&import(&input, &delta, SaveMode::Merge))
        .await
        .unwrap();
    assert_eq!(report.rejects, 3);
    assert_eq!(count(&delta, "Patient").await, 2);
    let rejects = std::fs::read_to_string(report.rejects_file.unwrap()).unwrap();
    let records: Vec<serde_json::Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines: Vec<u64> = records
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 3, 4]);
    assert!(records.iter().all(|r| r["file"] == "mixed.ndjson"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_modes_behave_as_delta_users_expect() {
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    write_ndjson(
        &a.join("p.ndjson"),
        &[
            patient("1", 1, "2024-01-01T00:00:00Z", "male"),
            patient("2", 1, "2024-01-01T00:00:00Z", "male"),
        ],
    );
    write_ndjson(
        &b.join("p.ndjson"),
        &[patient("3", 1, "2024-01-01T00:00:00Z", "female")],
    );

    sync::run_import(&import(&a, &delta, SaveMode::ErrorIfExists))
        .await
        .unwrap();
    assert_eq!(count(&delta, "Patient").await, 2);
    assert!(
        sync::run_import(&import(&b, &delta, SaveMode::ErrorIfExists))
            .await
            .is_err(),
        "error mode refuses an existing table"
    );
    sync::run_import(&import(&b, &delta, SaveMode::Ignore))
        .await
        .unwrap();
    assert_eq!(
        count(&delta, "Patient").await,
        2,
        "ignore leaves an existing table alone"
    );
    sync::run_import(&import(&b, &delta, SaveMode::Append))
        .await
        .unwrap();
    assert_eq!(count(&delta, "Patient").await, 3);
    sync::run_import(&import(&b, &delta, SaveMode::Overwrite))
        .await
        .unwrap();
    assert_eq!(count(&delta, "Patient").await, 1);
    assert!(versions(&delta, "Patient").await.contains_key("3"));
}

/// Python's `deltalake` (delta-rs's Python binding, a separate reader) must see the same rows:
/// through pyarrow for plain tables, through its DataFusion `QueryBuilder` once the tables
/// carry deletion vectors (its pyarrow path refuses them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_read_back_by_an_independent_reader() {
    if !python_reader() {
        return;
    }
    let server = server(DataSource::Synthetic {
        patients: 5,
        seed: 21,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let mut opts = options(&server, &delta);
    run(&opts, RunKind::Incremental).await.unwrap();
    read_back_in_python(&local(&delta), &[]).await;

    // An incremental sync with deletion vectors: stored files keep their rows, marked.
    let store = server.store();
    let patient_id = store.ids("Patient")[0].clone();
    let mut patient = store.get("Patient", &patient_id).unwrap();
    patient["gender"] = json!("other");
    store.upsert(patient).unwrap();
    let gone = store.ids("Observation")[1].clone();
    assert!(store.delete("Observation", &gone));
    opts.deletion_vectors = true;
    run(&opts, RunKind::Incremental).await.unwrap();
    for t in ["Patient", "Observation"] {
        let log = std::fs::read_dir(delta.join(format!("{t}.parquet/_delta_log")))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
            .collect::<String>();
        assert!(
            log.contains(r#""deletionVector":{"storageType":"u""#),
            "{t}: a stored file got a deletion vector"
        );
    }
    // Only the tables that got a vector have deletion vectors turned on (in that commit).
    read_back_in_python(&local(&delta), &["Patient", "Observation"]).await;
    assert!(!versions(&delta, "Observation").await.contains_key(&gone));
    server.shutdown().await;
}

/// The same sync into an S3 bucket (a local S3-compatible server started by `.ci/run`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_into_s3_then_incremental() {
    if !common::service("FHIRSYNC_TEST_S3_ENDPOINT") {
        return;
    }
    let server = server(DataSource::Synthetic {
        patients: 4,
        seed: 2,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("s3://fhirsync-test/sync-{}", uuid::Uuid::new_v4());
    let mut opts = SyncOptions::new(server.base_url(), prefix.clone());
    opts.resource_types = TYPES.iter().map(|t| t.to_string()).collect();
    opts.state_file = Some(dir.path().join("state.json"));
    run(&opts, RunKind::Incremental).await.unwrap();
    let store = server.store();
    store
        .upsert(json!({"resourceType": "Patient", "id": "s3-new", "gender": "female"}))
        .unwrap();
    let second = run(&opts, RunKind::Incremental).await.unwrap();
    assert_eq!(second.tables["Patient"].inserted, 1);
    let rows = fhirsync::tables::query(
        &prefix,
        "SELECT count(*) FROM Patient",
        Some(&["Patient".to_string()]),
    )
    .await
    .unwrap();
    let n = rows[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n as u64, store.counts()["Patient"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_full_refresh_reconciles_only_the_groups_patients() {
    let server = server(DataSource::Synthetic {
        patients: 8,
        seed: 5,
    })
    .await;
    let store = server.store();
    let members = group_members(&store, "grp-0");
    let outsider = (0..8)
        .map(|p| format!("pat-{p}"))
        .find(|p| !members.contains(p))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let mut opts = options(&server, &delta);
    run(&opts, RunKind::Incremental).await.unwrap();
    let (patients, observations) = (
        count(&delta, "Patient").await,
        count(&delta, "Observation").await,
    );

    // Gone from the server: an Observation of a member, one of a non-member, and a member.
    let member_obs = observation_of(&store, &members[0]);
    let outsider_obs = observation_of(&store, &outsider);
    store.delete("Observation", &member_obs);
    store.delete("Observation", &outsider_obs);
    store.delete("Patient", &members[1]);

    opts.group_id = Some("grp-0".into());
    opts.full_refresh = true;
    // Without --reconcile a Group refresh removes nothing.
    let report = run(&opts, RunKind::FullRefresh).await.unwrap();
    assert!(
        report.tables.values().all(|t| t.reconciled == 0),
        "{report:?}"
    );
    assert_eq!(count(&delta, "Observation").await, observations);

    // The Group cannot be read: the members are the patients the group's export returned,
    // which leaves out the deleted member (their rows stay until the Group can be read).
    opts.reconcile = true;
    server.faults().add(FaultRule::always(
        FaultTarget::Read,
        Fault::Fatal { status: 403 },
    ));
    let report = run(&opts, RunKind::FullRefresh).await.unwrap();
    assert_eq!(report.tables["Observation"].reconciled, 1, "{report:?}");
    assert_eq!(report.tables["Patient"].reconciled, 0, "{report:?}");
    // Without Patient among the types nothing tells the members: refuse.
    let mut no_patients = opts.clone();
    no_patients.resource_types.retain(|t| t != "Patient");
    let err = run(&no_patients, RunKind::FullRefresh).await.unwrap_err();
    assert!(format!("{err:#}").contains("Group/grp-0"), "{err:#}");
    server.faults().clear();

    let report = run(&opts, RunKind::FullRefresh).await.unwrap();
    assert_eq!(report.tables["Observation"].reconciled, 0, "{report:?}");
    assert_eq!(report.tables["Patient"].reconciled, 1, "{report:?}");
    let stored = versions(&delta, "Observation").await;
    assert!(
        !stored.contains_key(&member_obs),
        "the member's deleted row goes"
    );
    assert!(
        stored.contains_key(&outsider_obs),
        "a non-member's row stays: it is outside the group's data"
    );
    assert!(!versions(&delta, "Patient").await.contains_key(&members[1]));
    assert_eq!(count(&delta, "Patient").await, patients - 1);
    assert_eq!(count(&delta, "Observation").await, observations - 1);
    server.shutdown().await;
}
