//! The AWS HealthLake profile: output files in S3 listed as `s3://` URLs, kick-off only as POST
//! with a Parameters body, one export at a time. The requests are checked with the files in
//! the in-process GCS emulator; the `s3://` URLs against the S3 server `.ci/run` starts.
mod common;

use bulk_test_server::{DataSource, OutputStore, Profile, TestServer};
use common::stores::{gcs, read_bucket_file, s3, start_with_store};
use common::*;
use serde_json::json;

const DATA: DataSource = DataSource::Synthetic {
    patients: 3,
    seed: 33,
};

async fn start_aws(store: OutputStore) -> TestServer {
    start_with_store(Profile::Aws, DATA, store, 10_000).await
}

async fn kickoff_post(c: &reqwest::Client, url: &str, types: &str) -> reqwest::Response {
    c.post(url)
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .json(&json!({"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": types}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn exports_start_only_with_post_and_one_at_a_time() {
    let (_emulator, store) = gcs().await;
    let server = start_aws(store).await;
    let c = client();
    let u = url(&server, "$export");
    assert_eq!(
        kickoff_get(&c, &format!("{u}?_type=Patient"))
            .await
            .status(),
        405
    );
    let first = accepted(&kickoff_post(&c, &u, "Patient").await);
    let second = kickoff_post(&c, &u, "Condition").await;
    assert_eq!(second.status(), 400);
    let outcome: serde_json::Value = second.json().await.unwrap();
    assert_eq!(outcome["issue"][0]["code"], "throttled");
    // Once the first is collected, another may start.
    let m = manifest(&c, &first).await;
    assert_eq!(m["output"][0]["type"], "Patient");
    accepted(&kickoff_post(&c, &u, "Condition").await);
    server.shutdown().await;
}

#[tokio::test]
async fn outputs_are_objects_in_s3() {
    let Some(store) = s3() else {
        return;
    };
    let server = start_aws(store.clone()).await;
    let c = client();
    let status = accepted(&kickoff_post(&c, &url(&server, "$export"), "Patient,Encounter").await);
    let m = manifest(&c, &status).await;
    assert_eq!(m["requiresAccessToken"], false);
    let mut listed = 0;
    for o in m["output"].as_array().unwrap() {
        let u = o["url"].as_str().unwrap();
        assert!(u.starts_with(&format!("{}/", store.url)), "{u}");
        let rs = lines(&read_bucket_file(&store, u).await);
        assert_eq!(rs.len() as u64, o["count"].as_u64().unwrap());
        listed += rs.len() as u64;
    }
    let counts = server.store().counts();
    assert_eq!(listed, counts["Patient"] + counts["Encounter"]);
    server.shutdown().await;
}
