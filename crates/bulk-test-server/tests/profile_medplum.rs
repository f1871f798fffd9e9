//! The Medplum profile: an always empty `deleted` array, and a kick-off without `_type` that
//! gets no answer while the server runs.
mod common;

use bulk_test_server::{DataSource, Profile};
use common::*;
use serde_json::json;

const DATA: DataSource = DataSource::Synthetic {
    patients: 3,
    seed: 15,
};

#[tokio::test]
async fn deleted_is_always_empty() {
    let server = start_profile(Profile::Medplum, DATA).await;
    let c = client();
    let (full, inc) = exports_around_a_delete(&c, &server).await;
    assert_eq!(full["deleted"], json!([]));
    assert_eq!(inc["deleted"], json!([]));
    assert_eq!(inc["output"], json!([]));
    server.shutdown().await;
}

#[tokio::test]
async fn a_kickoff_without_type_is_answered_only_when_the_server_stops() {
    let server = start_profile(Profile::Medplum, DATA).await;
    let c = client();
    let everything = {
        let (c, u) = (c.clone(), url(&server, "$export"));
        tokio::spawn(async move { kickoff_get(&c, &u).await.status() })
    };
    for _ in 0..2000 {
        if server.requests_in_flight() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(server.requests_in_flight(), 1, "the kick-off never arrived");
    // Other requests are served meanwhile.
    let m = export(&c, &url(&server, "$export?_type=Patient")).await;
    assert_eq!(m["output"][0]["count"], 3);
    let m = export(&c, &url(&server, "Patient/$export?_type=Condition")).await;
    assert!(m["output"].is_array());
    assert!(!everything.is_finished());
    assert_eq!(server.requests_in_flight(), 1);
    assert!(
        server
            .requests()
            .iter()
            .all(|r| !r.path_and_query.ends_with("/$export"))
    );

    server.shutdown().await;
    // The handler answers as the server stops.
    assert_eq!(everything.await.unwrap(), 503);
}
