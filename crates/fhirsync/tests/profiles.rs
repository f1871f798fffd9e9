//! The same sync against every server profile of the test server: a full sync, then changes on
//! the server (an update, an insert, a delete), then an incremental sync, followed where the
//! server lists no deletions by a full refresh with reconciliation. The tables must equal
//! those the same steps give against the spec-faithful profile.
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bulk_test_server::{DataSource, Profile, StoreHandle, TestServer};
use common::{TYPES, options, profile_server, run, sql};
use fhirsync::run::RunKind;
use serde_json::{Value, json};

const GROUP: &str = "grp-0";

async fn start(profile: Profile) -> TestServer {
    let data = DataSource::Synthetic {
        patients: 8,
        seed: 5,
    };
    profile_server(profile, data, 50).await
}

fn members(store: &StoreHandle) -> Vec<String> {
    store
        .get("Group", GROUP)
        .and_then(|g| g.get("member").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.pointer("/entity/reference").and_then(Value::as_str))
        .map(|r| r.trim_start_matches("Patient/").to_string())
        .collect()
}

/// The first resource of `ty` whose `subject` or `patient` is `Patient/<patient>`.
fn of_patient(store: &StoreHandle, ty: &str, patient: &str) -> Value {
    let reference = format!("Patient/{patient}");
    store
        .ids(ty)
        .into_iter()
        .filter_map(|id| store.get(ty, &id))
        .find(|r| {
            ["/subject/reference", "/patient/reference"]
                .iter()
                .any(|p| r.pointer(p).and_then(Value::as_str) == Some(reference.as_str()))
        })
        .unwrap_or_else(|| panic!("no {ty} of {patient}"))
}

/// The same changes on any server: a member's Patient updated, an Observation of a member
/// inserted, a Condition of a member deleted.
fn change(store: &StoreHandle) {
    let members = members(store);
    let mut patient = store.get("Patient", &members[0]).expect("a member");
    patient["gender"] = json!("other");
    store.upsert(patient).expect("update");
    let mut observation = of_patient(store, "Observation", &members[1]);
    observation["id"] = json!("obs-new-1");
    observation["valueQuantity"] = json!({"value": 42.5, "unit": "kg"});
    store.upsert(observation).expect("insert");
    let condition = of_patient(store, "Condition", &members[2]);
    let id = condition["id"].as_str().expect("an id").to_string();
    assert!(store.delete("Condition", &id));
}

/// Every table as text rows sorted by id, without `meta` (the servers' clocks differ, and
/// some send no `meta.lastUpdated`).
async fn tables(delta: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for ty in TYPES {
        let batches = sql(delta, &format!("SELECT * FROM {ty} ORDER BY id")).await;
        out.insert(ty.to_string(), rows_without_meta(&batches));
    }
    out
}

fn rows_without_meta(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for b in batches {
        let schema = b.schema();
        let columns: Vec<(String, ArrayFormatter)> = schema
            .fields()
            .iter()
            .zip(b.columns())
            .filter(|(f, _)| f.name() != "meta")
            .map(|(f, c)| {
                let formatter = ArrayFormatter::try_new(c.as_ref(), &options).expect("format");
                (f.name().clone(), formatter)
            })
            .collect();
        for row in 0..b.num_rows() {
            let cells: Vec<String> = columns
                .iter()
                .map(|(name, f)| format!("{name}={}", f.value(row)))
                .collect();
            rows.push(cells.join(" | "));
        }
    }
    rows
}

/// Full sync, changes, incremental sync (and a full refresh with reconciliation where the
/// server lists no deletions); returns the tables and what the runs reported.
async fn sync_through_changes(profile: Profile) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let name = profile.name();
    let server = start(profile).await;
    let dir = tempfile::tempdir().expect("a directory");
    let delta = dir.path().join("delta");
    let mut opts = options(&server, &delta);
    opts.group_id = Some(GROUP.into());
    let mut notes = Vec::new();
    let first = run(&opts, RunKind::Incremental)
        .await
        .unwrap_or_else(|e| panic!("{name}: first sync: {e:#}"));
    assert!(
        first.since.is_none(),
        "{name}: the first sync exports everything"
    );
    change(&server.store());
    let second = run(&opts, RunKind::Incremental)
        .await
        .unwrap_or_else(|e| panic!("{name}: second sync: {e:#}"));
    let reconciled: u64 = second.tables.values().map(|t| t.reconciled).sum();
    notes.push(format!(
        "incremental: since={} deletions listed={} reconciled={reconciled}",
        second.since.is_some(),
        second.deletions_listed
    ));
    if second.deletions_listed == 0 {
        opts.full_refresh = true;
        opts.reconcile = true;
        let third = run(&opts, RunKind::FullRefresh)
            .await
            .unwrap_or_else(|e| panic!("{name}: full refresh: {e:#}"));
        let reconciled: u64 = third.tables.values().map(|t| t.reconciled).sum();
        notes.push(format!("full refresh: reconciled={reconciled}"));
    }
    let tables = tables(&delta).await;
    server.shutdown().await;
    (tables, notes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_profile_leaves_the_tables_the_spec_server_leaves() {
    let (expected, spec_notes) = sync_through_changes(Profile::Spec).await;
    assert_eq!(
        spec_notes,
        ["incremental: since=true deletions listed=1 reconciled=0"],
        "the spec server lists the delete"
    );
    // How each profile gets there: `_since`, then a full refresh with reconciliation since no
    // real server lists deletions; Epic refuses `_since`, and its second sync falls back to a
    // full refresh with reconciliation by itself.
    let unlisted = [
        "incremental: since=true deletions listed=0 reconciled=0",
        "full refresh: reconciled=1",
    ];
    let expected_notes = BTreeMap::from([
        ("hapi", &unlisted[..]),
        ("firely", &unlisted[..]),
        (
            "epic",
            &[
                "incremental: since=false deletions listed=0 reconciled=1",
                "full refresh: reconciled=0",
            ][..],
        ),
        ("oracle", &unlisted[..]),
        ("medplum", &unlisted[..]),
        ("aidbox", &unlisted[..]),
    ]);
    // The changes are in the expected tables.
    let conditions = &expected["Condition"];
    assert!(
        expected["Observation"]
            .iter()
            .any(|r| r.contains("id=obs-new-1"))
    );
    assert!(
        expected["Patient"]
            .iter()
            .any(|r| r.contains("gender=other"))
    );
    assert!(!conditions.is_empty());

    for profile in Profile::all().into_iter().filter(|p| *p != Profile::Spec) {
        let name = profile.name();
        let (tables, notes) = sync_through_changes(profile).await;
        println!("{name}: {notes:?}");
        assert_eq!(
            Some(&notes.iter().map(String::as_str).collect::<Vec<_>>()[..]),
            expected_notes.get(name).copied(),
            "{name}"
        );
        for (ty, rows) in &expected {
            let got = &tables[ty];
            let missing: Vec<&String> = rows.iter().filter(|r| !got.contains(r)).collect();
            let extra: Vec<&String> = got.iter().filter(|r| !rows.contains(r)).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{name}: {ty} differs from the spec server's\n missing: {missing:#?}\n extra: \
                 {extra:#?}"
            );
        }
    }
}

/// A server's refusal of `_since` is found once and kept in the state file: later syncs go
/// straight to full refreshes without the refused request. The note on unlisted deletions is
/// kept the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_server_cannot_do_is_found_once() {
    let kick_offs_with_since = |server: &TestServer| {
        server
            .requests()
            .iter()
            .filter(|r| r.path_and_query.contains("$export") && r.path_and_query.contains("_since"))
            .count()
    };
    let state_of = |delta: &Path| {
        fhirsync::state::SyncState::load(&delta.join("_fhirsync").join("state.json"))
            .expect("state file")
    };

    let epic = start("epic".parse().expect("a profile")).await;
    let dir = tempfile::tempdir().expect("a directory");
    let delta = dir.path().join("delta");
    let mut opts = options(&epic, &delta);
    opts.group_id = Some(GROUP.into());
    run(&opts, RunKind::Incremental).await.expect("first sync");
    assert!(state_of(&delta).server_limits.since_refused.is_none());
    run(&opts, RunKind::Incremental).await.expect("second sync");
    let limits = state_of(&delta).server_limits;
    assert!(
        limits
            .since_refused
            .as_deref()
            .is_some_and(|t| t.contains("_since")),
        "{limits:?}"
    );
    assert_eq!(kick_offs_with_since(&epic), 1);
    let third = run(&opts, RunKind::Incremental).await.expect("third sync");
    assert!(third.since.is_none(), "a full refresh");
    assert_eq!(kick_offs_with_since(&epic), 1, "no second refused request");
    epic.shutdown().await;

    let hapi = start("hapi".parse().expect("a profile")).await;
    let dir = tempfile::tempdir().expect("a directory");
    let delta = dir.path().join("delta");
    let opts = options(&hapi, &delta);
    run(&opts, RunKind::Incremental).await.expect("first sync");
    assert!(!state_of(&delta).server_limits.deletions_noted);
    let second = run(&opts, RunKind::Incremental).await.expect("second sync");
    assert!(second.since.is_some() && second.deletions_listed == 0);
    assert!(state_of(&delta).server_limits.deletions_noted);
    hapi.shutdown().await;
}
