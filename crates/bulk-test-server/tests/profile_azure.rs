//! The Azure Health Data Services profile: `_till` for `_until`, output files in Azure Blob
//! storage listed as blob URLs without `requiresAccessToken`, resources repeated across the
//! files of Patient and Group exports, and an identical kick-off answered with the running
//! job unless `Cache-Control: no-cache`. The profile's requests are checked with its files in
//! the in-process GCS emulator; the blob URLs against Azurite.
mod common;

use std::collections::BTreeMap;

use bulk_test_server::{DataSource, OutputStore, Profile, TestServer};
use common::stores::{azurite, gcs, read_blob, start_with_store};
use common::*;

const DATA: DataSource = DataSource::Synthetic {
    patients: 4,
    seed: 32,
};

async fn start_azure(store: OutputStore) -> TestServer {
    start_with_store(Profile::Azure, DATA, store, 5).await
}

#[tokio::test]
async fn till_stands_for_until() {
    let (_emulator, store) = gcs().await;
    let server = start_azure(store).await;
    let c = client();
    let r = kickoff_get(
        &c,
        &url(&server, "$export?_type=Patient&_until=2999-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("_until"));
    let m = export(
        &c,
        &url(&server, "$export?_type=Patient&_till=2000-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(
        m["output"].as_array().unwrap().len(),
        0,
        "nothing before 2000"
    );
    let m = export(
        &c,
        &url(&server, "$export?_type=Patient&_till=2999-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(m["output"][0]["count"], 4);
    server.shutdown().await;
}

/// Ids listed in more than one output file, per type.
fn repeated(manifest: &serde_json::Value, files: &BTreeMap<String, String>) -> usize {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for o in manifest["output"].as_array().unwrap() {
        let text = &files[o["url"].as_str().unwrap()];
        for r in lines(text) {
            let key = (o["type"].as_str().unwrap().to_string(), r["id"].to_string());
            *seen.entry(key).or_default() += 1;
        }
    }
    seen.values().filter(|n| **n > 1).count()
}

#[tokio::test]
async fn compartment_exports_list_some_resources_twice() {
    let (_emulator, store) = gcs().await;
    let server = start_azure(store.clone()).await;
    let c = client();
    let group = server.store().ids("Group")[0].clone();
    for (path, twice) in [
        ("$export?_type=Patient,Observation".to_string(), false),
        (
            "Patient/$export?_type=Patient,Observation".to_string(),
            true,
        ),
        (
            format!("Group/{group}/$export?_type=Patient,Observation"),
            true,
        ),
    ] {
        let m = export(&c, &url(&server, &path)).await;
        let mut files = BTreeMap::new();
        for o in m["output"].as_array().unwrap() {
            let u = o["url"].as_str().unwrap().to_string();
            let text = common::stores::read_bucket_file(&store, &u).await;
            files.insert(u, text);
        }
        let n = repeated(&m, &files);
        assert_eq!(n > 0, twice, "{path}: {n} resources listed twice");
        if twice {
            // The copies are the same resources, not other versions.
            let all: Vec<serde_json::Value> = files.values().flat_map(|t| lines(t)).collect();
            for r in &all {
                let same_id = all
                    .iter()
                    .filter(|o| o["resourceType"] == r["resourceType"] && o["id"] == r["id"]);
                assert!(same_id.into_iter().all(|o| o == r), "{r}");
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_identical_kickoff_gets_the_running_job_unless_no_cache() {
    let (_emulator, store) = gcs().await;
    let server = start_azure(store).await;
    let c = client();
    let u = url(&server, "$export?_type=Patient");
    let first = kickoff_ok(&c, &u).await;
    assert_eq!(kickoff_ok(&c, &u).await, first);
    assert_ne!(accepted(&kickoff_no_cache(&c, &u).await), first);
    server.shutdown().await;
}

#[tokio::test]
async fn outputs_are_blobs_in_azure_storage() {
    let Some(store) = azurite() else {
        return;
    };
    let server = start_azure(store).await;
    let c = client();
    let m = export(&c, &url(&server, "$export?_type=Patient,Condition")).await;
    assert_eq!(m["requiresAccessToken"], false);
    let address = std::env::var("AZURITE_BLOB_STORAGE_URL").unwrap();
    let mut listed = 0;
    for o in m["output"].as_array().unwrap() {
        let u = o["url"].as_str().unwrap();
        assert!(
            u.starts_with(&format!(
                "{address}/devstoreaccount1/fhirsync-test/exports-"
            )),
            "{u}"
        );
        // The blob needs the storage account's credential.
        let anonymous = c.get(u).send().await.unwrap().status();
        assert!(anonymous.is_client_error(), "{u}: {anonymous}");
        let rs = lines(&read_blob(u).await);
        assert_eq!(rs.len() as u64, o["count"].as_u64().unwrap());
        listed += rs.len() as u64;
    }
    let counts = server.store().counts();
    assert_eq!(listed, counts["Patient"] + counts["Condition"]);
    server.shutdown().await;
}
