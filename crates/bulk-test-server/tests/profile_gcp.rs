//! The Google Cloud Healthcare profile: output files in a Cloud Storage bucket listed as
//! `gs://` URLs, `_since` refused without seconds and a timezone, the status URL at
//! `…/operations/<id>`.
mod common;

use bulk_test_server::{DataSource, Profile, ServerConfig, TestServer};
use common::stores::{gcs, read_bucket_file, start_with_store};
use common::*;

const DATA: DataSource = DataSource::Synthetic {
    patients: 3,
    seed: 31,
};

async fn start_gcp(store: bulk_test_server::OutputStore) -> TestServer {
    start_with_store(Profile::Gcp, DATA, store, 5).await
}

#[tokio::test]
async fn outputs_are_written_to_the_bucket_and_listed_as_gs_urls() {
    let (emulator, store) = gcs().await;
    let server = start_gcp(store.clone()).await;
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export?_type=Patient,Observation")).await;
    assert!(
        status.starts_with(&format!("{}/operations/", server.base_url())),
        "{status}"
    );
    let m = manifest(&c, &status).await;
    assert_eq!(m["requiresAccessToken"], false);
    let outputs = m["output"].as_array().unwrap();
    assert!(outputs.len() > 2, "several files: {m}");
    let counts = server.store().counts();
    let mut listed = 0;
    for o in outputs {
        let u = o["url"].as_str().unwrap();
        assert!(u.starts_with(&format!("{}/", store.url)), "{u}");
        let text = read_bucket_file(&store, u).await;
        let rs = lines(&text);
        assert_eq!(rs.len() as u64, o["count"].as_u64().unwrap(), "{u}");
        assert!(rs.iter().all(|r| r["resourceType"] == o["type"]));
        listed += rs.len() as u64;
    }
    assert_eq!(listed, counts["Patient"] + counts["Observation"]);
    assert_eq!(emulator.names("exports").len(), outputs.len());
    server.shutdown().await;
}

#[tokio::test]
async fn since_needs_seconds_and_a_timezone() {
    let (_emulator, store) = gcs().await;
    let server = start_gcp(store).await;
    let c = client();
    for refused in ["2024-01-01T00:00", "2024-01-01T00:00:00", "2024-01-01"] {
        let r = kickoff_get(&c, &url(&server, &format!("$export?_since={refused}"))).await;
        assert_eq!(r.status(), 400, "{refused}");
        assert!(r.text().await.unwrap().contains("seconds and a timezone"));
    }
    for taken in ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.5%2B01:00"] {
        let r = kickoff_get(&c, &url(&server, &format!("$export?_since={taken}"))).await;
        assert_eq!(r.status(), 202, "{taken}");
    }
    // Like every profile, the kick-off wants `Accept: application/fhir+json`.
    let r = c
        .get(url(&server, "$export"))
        .header("Prefer", "respond-async")
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    server.shutdown().await;
}

#[tokio::test]
async fn without_an_output_store_the_server_does_not_start() {
    for profile in [Profile::Gcp, Profile::Azure, Profile::Aws] {
        assert!(profile.needs_output_store());
        let err = TestServer::start(ServerConfig {
            profile: profile.clone(),
            ..config(DATA)
        })
        .await
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("output store"), "{profile}: {err}");
    }
    assert!(!Profile::Spec.needs_output_store());
}
