//! Tables in Azure storage and GCS, and exports whose files are in buckets: syncs into the
//! in-process GCS emulator and Azurite (`FHIRSYNC_TEST_AZURITE_URL`), read back by Python's
//! `deltalake`; and syncs from the test server's cloud profiles (files in GCS, Azure storage,
//! S3), which must give the tables the same changes give from the IG's profile.
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use bulk_test_server::{DataSource, OutputStore, Profile, ServerConfig, TestServer};
use common::{
    Location, TYPES, difference, local, python_reader, read_back_in_python, run, server, service,
    table_rows_without, versions_at,
};
use fhirsync::config::SyncOptions;
use fhirsync::run::RunKind;
use gcs_emulator::GcsEmulator;
use serde_json::json;

const DATA: DataSource = DataSource::Synthetic {
    patients: 6,
    seed: 41,
};

/// A GCS emulator with bucket `lake`, and its client settings (OAuth off, plain HTTP).
async fn gcs() -> (GcsEmulator, BTreeMap<String, String>) {
    let emulator = GcsEmulator::start().await.unwrap();
    emulator.create_bucket("lake");
    let settings = emulator.client_settings();
    (emulator, settings)
}

fn sync_options(server: &TestServer, at: &Location, state: &std::path::Path) -> SyncOptions {
    let mut opts = SyncOptions::new(server.base_url(), at.root.clone());
    opts.resource_types = TYPES.iter().map(|t| t.to_string()).collect();
    opts.storage_options = at.storage.clone();
    opts.state_file = Some(state.join("state.json"));
    opts
}

/// Full sync, then an incremental one after an update, an insert and a delete; the tables
/// must hold what the server holds, also as Python's `deltalake` reads them.
async fn sync_into(at: Location) {
    let server = server(DATA).await;
    let dir = tempfile::tempdir().unwrap();
    let opts = sync_options(&server, &at, dir.path());
    run(&opts, RunKind::Incremental).await.unwrap();
    let store = server.store();
    change(&server, &store.ids("Patient")[0]);
    let second = run(&opts, RunKind::Incremental).await.unwrap();
    assert_eq!(second.tables["Observation"].inserted, 1);
    assert_eq!(second.tables["Observation"].deleted, 1);
    assert_eq!(second.tables["Patient"].updated, 1);
    for t in TYPES {
        let ours = versions_at(&at, t).await;
        let expected = store.ids(t).len();
        assert_eq!(ours.len(), expected, "{t} rows in {}", at.root);
    }
    if python_reader() {
        read_back_in_python(&at, &[]).await;
    }
    server.shutdown().await;
}

/// The server's changes between the syncs: `patient` updated, an Observation of theirs
/// added, another of theirs deleted.
fn change(server: &TestServer, patient: &str) {
    let store = server.store();
    let mut p = store.get("Patient", patient).unwrap();
    p["gender"] = json!("other");
    store.upsert(p).unwrap();
    store
        .upsert(json!({
            "resourceType": "Observation", "id": "obs-added", "status": "final",
            "code": {"text": "added"}, "subject": {"reference": format!("Patient/{patient}")}
        }))
        .unwrap();
    let gone = store
        .ids("Observation")
        .into_iter()
        .find(|id| {
            id != "obs-added"
                && store.get("Observation", id).is_some_and(|o| {
                    o.pointer("/subject/reference").and_then(|r| r.as_str())
                        == Some(&format!("Patient/{patient}"))
                })
        })
        .unwrap();
    assert!(store.delete("Observation", &gone));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_in_gcs() {
    let (emulator, settings) = gcs().await;
    let storage = settings
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    sync_into(Location {
        root: format!("gs://lake/sync-{}", uuid::Uuid::new_v4()),
        storage,
    })
    .await;
    assert!(
        emulator
            .names("lake")
            .iter()
            .any(|n| n.ends_with("/Patient.parquet/_delta_log/00000000000000000001.json"))
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_in_azure_storage() {
    if !service("FHIRSYNC_TEST_AZURITE_URL") {
        return;
    }
    let storage = BTreeMap::from([("azure_storage_use_emulator".into(), "true".into())]);
    let id = uuid::Uuid::new_v4();
    for root in [
        format!("az://fhirsync-test/sync-{id}"),
        format!("abfss://fhirsync-test@devstoreaccount1.dfs.core.windows.net/sync-{id}-abfss"),
    ] {
        sync_into(Location {
            root,
            storage: storage.clone(),
        })
        .await;
    }
}

/// Syncs the members of `grp-0` from `server` into the directory `at` before and after
/// [`change`]; returns every table's rows by id, without `meta` (versions and times differ
/// from server to server).
async fn group_syncs(
    server: &TestServer,
    at: &Path,
    export_settings: &BTreeMap<String, String>,
) -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = sync_options(server, &local(at), dir.path());
    opts.group_id = Some("grp-0".into());
    opts.export_storage_options = export_settings.clone();
    run(&opts, RunKind::Incremental).await.unwrap();
    let member = server.store().get("Group", "grp-0").unwrap()["member"][0]["entity"]["reference"]
        .as_str()
        .unwrap()["Patient/".len()..]
        .to_string();
    change(server, &member);
    let second = run(&opts, RunKind::Incremental).await.unwrap();
    assert!(second.since.is_some(), "the second sync is incremental");
    let mut out = BTreeMap::new();
    for t in TYPES {
        out.insert(t, table_rows_without(at, t, &["meta"]).await);
    }
    out
}

/// The tables the same syncs give from the IG's profile.
async fn spec_tables() -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let server = server(DATA).await;
    let dir = tempfile::tempdir().unwrap();
    let tables = group_syncs(&server, &dir.path().join("delta"), &BTreeMap::new()).await;
    server.shutdown().await;
    tables
}

/// Every table equals the spec profile's, row by row.
async fn same_as_spec(tables: &BTreeMap<&'static str, BTreeMap<String, String>>) {
    for (t, expected) in spec_tables().await {
        assert!(!expected.is_empty(), "{t}: no rows");
        let actual = &tables[t];
        assert!(
            actual == &expected,
            "{t}: {}",
            difference(&expected, actual)
        );
    }
}

async fn profile_server(profile: Profile, store: OutputStore) -> TestServer {
    TestServer::start(ServerConfig {
        profile,
        output_store: Some(store),
        data: DATA,
        polls_before_complete: 1,
        retry_after_secs: 0,
        resources_per_file: 7,
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

/// Files in GCS listed as `gs://` URLs, read with the client's own Google settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gcp_profile_gives_the_tables_of_the_spec() {
    let (emulator, settings) = gcs().await;
    let store = OutputStore {
        url: "gs://lake/exports".into(),
        options: settings.clone(),
    };
    let server = profile_server(Profile::Gcp, store).await;
    let dir = tempfile::tempdir().unwrap();
    let tables = group_syncs(&server, &dir.path().join("delta"), &settings).await;
    same_as_spec(&tables).await;
    assert!(
        emulator
            .names("lake")
            .iter()
            .all(|n| n.starts_with("exports/"))
    );
    server.shutdown().await;
}

/// Files in Azurite listed as blob URLs (`requiresAccessToken: false`), some resources twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_profile_gives_the_tables_of_the_spec() {
    if !service("FHIRSYNC_TEST_AZURITE_URL") {
        return;
    }
    let store = OutputStore {
        url: format!("az://fhirsync-test/exports-{}", uuid::Uuid::new_v4()),
        options: BTreeMap::from([("azure_storage_use_emulator".into(), "true".into())]),
    };
    let server = profile_server(Profile::Azure, store).await;
    let dir = tempfile::tempdir().unwrap();
    // The storage credential comes from the environment (emulator mode).
    let tables = group_syncs(&server, &dir.path().join("delta"), &BTreeMap::new()).await;
    same_as_spec(&tables).await;
    server.shutdown().await;
}

/// Files in S3 listed as `s3://` URLs; the kick-off must be a POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_profile_gives_the_tables_of_the_spec() {
    if !service("FHIRSYNC_TEST_S3_ENDPOINT") {
        return;
    }
    let store = OutputStore {
        url: format!("s3://fhirsync-test/exports-{}", uuid::Uuid::new_v4()),
        options: BTreeMap::new(),
    };
    let server = profile_server(Profile::Aws, store).await;
    let dir = tempfile::tempdir().unwrap();
    let tables = group_syncs(&server, &dir.path().join("delta"), &BTreeMap::new()).await;
    same_as_spec(&tables).await;
    let posts = server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path_and_query.contains("$export"))
        .count();
    assert_eq!(posts, 2, "both syncs kicked off with POST");
    server.shutdown().await;
}
