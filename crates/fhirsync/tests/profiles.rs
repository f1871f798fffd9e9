//! The same sync against every server profile of the test server: a full sync, then changes on
//! the server (an update, an insert, a delete), then an incremental sync, followed where the
//! server lists no deletions by a full refresh with reconciliation. The tables must equal
//! those the same steps give against the spec-faithful profile.
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use bulk_test_server::{DataSource, Profile, StoreHandle, TestServer};
use common::{
    TYPES, difference, group_members, options, profile_server, resource_of, run, table_rows_without,
};
use fhirsync::run::RunKind;
use serde_json::json;

const GROUP: &str = "grp-0";

async fn start(profile: Profile) -> TestServer {
    let data = DataSource::Synthetic {
        patients: 8,
        seed: 5,
    };
    profile_server(profile, data, 50).await
}

/// The same changes on any server: a member's Patient updated, an Observation of a member
/// inserted, a Condition of a member deleted.
fn change(store: &StoreHandle) {
    let members = group_members(store, GROUP);
    let mut patient = store.get("Patient", &members[0]).expect("a member");
    patient["gender"] = json!("other");
    store.upsert(patient).expect("update");
    let mut observation = resource_of(store, "Observation", &members[1]);
    observation["id"] = json!("obs-new-1");
    observation["valueQuantity"] = json!({"value": 42.5, "unit": "kg"});
    store.upsert(observation).expect("insert");
    let condition = resource_of(store, "Condition", &members[2]);
    let id = condition["id"].as_str().expect("an id").to_string();
    assert!(store.delete("Condition", &id));
}

/// Every table's rows without `meta` (the servers' clocks differ, and some send no
/// `meta.lastUpdated`).
async fn tables(delta: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for ty in TYPES {
        out.insert(
            ty.to_string(),
            table_rows_without(delta, ty, &["meta"]).await,
        );
    }
    out
}

/// Full sync, changes, incremental sync (and a full refresh with reconciliation where the
/// server lists no deletions); returns the tables and what the runs reported.
async fn sync_through_changes(
    profile: Profile,
) -> (BTreeMap<String, BTreeMap<String, String>>, Vec<String>) {
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
    assert!(expected["Observation"].contains_key("obs-new-1"));
    assert!(
        expected["Patient"]
            .values()
            .any(|r| r.contains("gender=other"))
    );
    assert!(!expected["Condition"].is_empty());

    // Profiles whose files are in a bucket have the same test against the emulators, in
    // tests/cloud.rs.
    let profiles = Profile::all()
        .into_iter()
        .filter(|p| *p != Profile::Spec && !p.needs_output_store());
    for profile in profiles {
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
            assert!(
                got == rows,
                "{name}: {ty} differs from the spec server's: {}",
                difference(rows, got)
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
