//! Incremental Group syncs as the group's membership changes. The test server leaves out of a
//! Group's `_since` export what patients who joined since had before `_since` (as most servers
//! do); the sync exports that data too, so the tables end as a full export of the group
//! leaves them.
mod common;

use std::path::Path;
use std::process::Command;

use bulk_test_server::{
    DataSource, Fault, FaultRule, FaultTarget, PatientParameter, RequestRecord, ServerConfig,
    StoreHandle, TestServer,
};
use common::{
    TYPES, assert_same_rows, group_members, local, observation_of, options, python_reader,
    read_back_in_python, run, server, server_config, versions,
};
use fhirsync::config::SyncOptions;
use fhirsync::run::RunKind;
use serde_json::json;

const GROUP: &str = "grp-0";
const GROUP_EXPORT: &str = "/Group/grp-0/$export";
const PATIENTS: usize = 12;

fn data() -> DataSource {
    DataSource::Synthetic {
        patients: PATIENTS,
        seed: 11,
    }
}

fn group_options(server: &TestServer, delta: &Path) -> SyncOptions {
    let mut opts = options(server, delta);
    opts.group_id = Some(GROUP.into());
    opts
}

/// Patients of the server who are not in the group.
fn outsiders(store: &StoreHandle) -> Vec<String> {
    let members = group_members(store, GROUP);
    (0..PATIENTS)
        .map(|p| format!("pat-{p}"))
        .filter(|p| !members.contains(p))
        .collect()
}

/// Adds `patients` to the group, referenced each in another form: relative, absolute,
/// versioned.
fn add_members(server: &TestServer, patients: &[String]) {
    let store = server.store();
    let mut group = store.get("Group", GROUP).unwrap();
    let base = server.base_url();
    let base = base.as_str().trim_end_matches('/');
    let member = group["member"].as_array_mut().unwrap();
    for (i, p) in patients.iter().enumerate() {
        let reference = match i % 3 {
            0 => format!("Patient/{p}"),
            1 => format!("{base}/Patient/{p}"),
            _ => format!("Patient/{p}/_history/1"),
        };
        member.push(json!({"entity": {"reference": reference}}));
    }
    store.upsert(group).unwrap();
}

fn remove_member(store: &StoreHandle, patient: &str) {
    let mut group = store.get("Group", GROUP).unwrap();
    let reference = format!("Patient/{patient}");
    group["member"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m.pointer("/entity/reference").and_then(|r| r.as_str()) != Some(&reference));
    store.upsert(group).unwrap();
}

/// A new version of Observation `id` on the server.
fn update_observation(store: &StoreHandle, id: &str) {
    let mut obs = store.get("Observation", id).unwrap();
    obs["status"] = json!("amended");
    store.upsert(obs).unwrap();
}

/// A server, and a first (full) sync of its group into `<dir>/delta`.
async fn synced_group() -> (TestServer, tempfile::TempDir, SyncOptions) {
    let server = server(data()).await;
    let dir = tempfile::tempdir().unwrap();
    let opts = group_options(&server, &dir.path().join("delta"));
    run(&opts, RunKind::Incremental).await.unwrap();
    (server, dir, opts)
}

/// Asserts that `delta` holds the rows a full sync of the group into the new directory
/// `fresh` writes.
async fn assert_as_a_full_sync(server: &TestServer, delta: &Path, fresh: &Path) {
    run(&group_options(server, fresh), RunKind::Incremental)
        .await
        .unwrap();
    assert_same_rows(delta, fresh, &TYPES).await;
}

/// Kick-offs answered `status` whose path ends with `path`.
fn kick_offs(requests: &[RequestRecord], method: &str, path: &str, status: u16) -> usize {
    requests
        .iter()
        .filter(|r| r.method == method && r.status == status)
        .filter(|r| {
            r.path_and_query
                .split('?')
                .next()
                .unwrap_or("")
                .ends_with(path)
        })
        .count()
}

/// A Group sync, then three outsiders (with their older data) join the group while resources
/// of members and newcomers change, are added and deleted; the incremental sync must leave the
/// tables as a fresh full sync of the group does. Returns the requests the incremental sync
/// made.
async fn sync_as_members_join(
    patient_parameter: PatientParameter,
    patients_per_export: usize,
) -> Vec<RequestRecord> {
    let running = TestServer::start(ServerConfig {
        patient_parameter,
        ..server_config(data())
    })
    .await
    .unwrap();
    let server = &running;
    let store = server.store();
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let mut opts = group_options(server, &delta);
    opts.patients_per_export = patients_per_export;
    let first = run(&opts, RunKind::Incremental).await.unwrap();
    assert_eq!(first.new_group_members, 0);

    let members = group_members(&store, GROUP);
    let newcomers: Vec<String> = outsiders(&store).into_iter().take(3).collect();
    let untouched = observation_of(&store, &newcomers[1]);
    update_observation(&store, &observation_of(&store, &members[0]));
    // In the `_since` export and in the newcomers' own: one row of it, the newest.
    update_observation(&store, &observation_of(&store, &newcomers[0]));
    assert!(store.delete("Observation", &observation_of(&store, &members[1])));
    assert!(store.delete("Observation", &observation_of(&store, &newcomers[2])));
    store
        .upsert(json!({"resourceType": "Observation", "id": "obs-new", "status": "final",
            "code": {"text": "new"}, "subject": {"reference": format!("Patient/{}", newcomers[1])}}))
        .unwrap();
    add_members(server, &newcomers);
    let before = server.requests().len();

    let report = run(&opts, RunKind::Incremental).await.unwrap();
    let requests = server.requests().split_off(before);
    assert_eq!(report.since, first.transaction_time);
    assert_eq!(report.new_group_members, 3, "{report:?}");
    assert!(
        versions(&delta, "Observation")
            .await
            .contains_key(&untouched),
        "a newcomer's Observation from before the cursor is in the table"
    );
    let fresh = dir.path().join("fresh");
    assert_as_a_full_sync(server, &delta, &fresh).await;
    if python_reader() {
        read_back_in_python(&local(&delta), &[]).await;
    }

    // Recorded: the next sync finds no new member and makes one export.
    let before = server.requests().len();
    let again = run(&opts, RunKind::Incremental).await.unwrap();
    assert_eq!(again.new_group_members, 0);
    let later = server.requests().split_off(before);
    let all_kick_offs =
        kick_offs(&later, "GET", "/$export", 202) + kick_offs(&later, "POST", "/$export", 202);
    assert_eq!(all_kick_offs, 1, "{later:?}");
    assert_same_rows(&delta, &fresh, &TYPES).await;
    running.shutdown().await;
    requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patients_who_join_the_group_bring_their_earlier_data() {
    let requests = sync_as_members_join(PatientParameter::PatientAndGroup, 2).await;
    assert_eq!(
        kick_offs(&requests, "POST", GROUP_EXPORT, 202),
        2,
        "three new members, two per export: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_patient_in_group_exports_is_asked_at_the_patient_level() {
    let requests = sync_as_members_join(PatientParameter::PatientLevelOnly, 500).await;
    let refused = kick_offs(&requests, "POST", GROUP_EXPORT, 400);
    let asked = kick_offs(&requests, "POST", "/Patient/$export", 202);
    assert_eq!((refused, asked), (1, 1), "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_the_patient_parameter_exports_the_whole_group_again() {
    let requests = sync_as_members_join(PatientParameter::Refused, 500).await;
    let refused = kick_offs(&requests, "POST", GROUP_EXPORT, 400)
        + kick_offs(&requests, "POST", "/Patient/$export", 400);
    // The `_since` export and the whole group's.
    let group_exports = kick_offs(&requests, "GET", GROUP_EXPORT, 202);
    assert_eq!((refused, group_exports), (2, 2), "{requests:?}");
}

/// A member who leaves keeps their rows (as in a Group's full refresh with `--reconcile`); once
/// back, they count as new, and their data is brought up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_leaves_keeps_their_rows_and_is_brought_up_to_date_on_return() {
    let (server, dir, opts) = synced_group().await;
    let (store, delta) = (server.store(), dir.path().join("delta"));
    let leaver = group_members(&store, GROUP)[1].clone();
    let obs = observation_of(&store, &leaver);
    let stored = versions(&delta, "Observation").await[&obs].clone();

    remove_member(&store, &leaver);
    update_observation(&store, &obs);
    let report = run(&opts, RunKind::Incremental).await.unwrap();
    assert_eq!(report.new_group_members, 0);
    assert_eq!(
        versions(&delta, "Observation").await[&obs],
        stored,
        "the leaver's row stays as it was"
    );

    add_members(&server, std::slice::from_ref(&leaver));
    let report = run(&opts, RunKind::Incremental).await.unwrap();
    assert_eq!(report.new_group_members, 1);
    let fresh = dir.path().join("fresh");
    assert_as_a_full_sync(&server, &delta, &fresh).await;
    assert_ne!(versions(&fresh, "Observation").await[&obs], stored);
    server.shutdown().await;
}

/// A descriptive group lists no members: an incremental sync says so, once, and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_lists_no_members_is_said_once() {
    let server = server(data()).await;
    server
        .store()
        .upsert(
            json!({"resourceType": "Group", "id": "described", "type": "person",
            "actual": false, "characteristic": [{"code": {"text": "diabetic"},
            "valueBoolean": true, "exclude": false}]}),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let mut opts = options(&server, &delta);
    opts.group_id = Some("described".into());
    run(&opts, RunKind::Incremental).await.unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fhirsync"));
    cmd.args(["--log-format", "json", "sync", "--group-id", "described"])
        .arg("--fhir-endpoint")
        .arg(server.base_url().as_str())
        .arg("--delta-path")
        .arg(&delta)
        .args(["--resource-types", &TYPES.join(",")]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("does not list its members"))
        .collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(said[0].contains("--full-refresh"), "{}", said[0]);
    server.shutdown().await;
}

/// Tables written before the record was kept (or a lost state directory): the members with a
/// row in the Patient table count as known, so only the others' earlier data is exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_record_the_patient_table_tells_the_known_members() {
    let (server, dir, opts) = synced_group().await;
    let (store, delta) = (server.store(), dir.path().join("delta"));
    let record = delta.join("_fhirsync/group-members.json");
    std::fs::remove_file(&record).expect("a Group sync records the members");

    let newcomers: Vec<String> = outsiders(&store).into_iter().take(2).collect();
    add_members(&server, &newcomers);
    let report = run(&opts, RunKind::Incremental).await.unwrap();
    assert_eq!(report.new_group_members, 2);
    assert!(record.exists());
    assert_as_a_full_sync(&server, &delta, &dir.path().join("fresh")).await;
    server.shutdown().await;
}

/// A Group that cannot be read (no permission, say) leaves the record as it was: the sync goes
/// on, and the next one that reads the Group brings in whoever joined in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_cannot_be_read_is_caught_up_by_the_next_run() {
    let (server, dir, opts) = synced_group().await;
    let delta = dir.path().join("delta");
    let newcomers: Vec<String> = outsiders(&server.store()).into_iter().take(2).collect();
    add_members(&server, &newcomers);
    server.faults().add(FaultRule::always(
        FaultTarget::Read,
        Fault::Fatal { status: 403 },
    ));
    let blind = run(&opts, RunKind::Incremental).await.unwrap();
    assert_eq!(blind.new_group_members, 0);
    server.faults().clear();
    let report = run(&opts, RunKind::Incremental).await.unwrap();
    assert_eq!(report.new_group_members, 2);
    assert_as_a_full_sync(&server, &delta, &dir.path().join("fresh")).await;
    server.shutdown().await;
}
