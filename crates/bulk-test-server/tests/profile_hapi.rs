//! The HAPI FHIR profile: its status URL, files as `Binary`, job reuse and purge, fixed
//! `Retry-After`, and manifest shape.
mod common;

use std::time::Duration;

use base64::Engine;
use bulk_test_server::{
    DataSource, FaultRule, FaultTarget, Hapi, Profile, ServerConfig, TestServer,
};
use common::*;
use serde_json::Value;

const DATA: DataSource = DataSource::Synthetic {
    patients: 3,
    seed: 11,
};

async fn hapi() -> TestServer {
    start_profile(Profile::Hapi(Hapi::default()), DATA).await
}

#[tokio::test]
async fn status_url_is_poll_status_with_a_job_id_and_retry_after_is_120() {
    let server = hapi().await;
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export?_type=Patient")).await;
    let prefix = url(&server, "$export-poll-status?_jobId=");
    assert!(status.starts_with(&prefix), "{status}");
    let job = &status[prefix.len()..];
    let r = c.get(&status).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["retry-after"], "120");
    let spec_path = c
        .get(url(&server, &format!("bulkstatus/{job}")))
        .send()
        .await
        .unwrap();
    assert_eq!(spec_path.status(), 404);
    let m = manifest(&c, &status).await;
    assert_eq!(m["output"].as_array().unwrap().len(), 1);
    assert!(m.get("error").is_none(), "{m}");
    assert!(m.get("deleted").is_none(), "{m}");
    server.shutdown().await;
}

#[tokio::test]
async fn retry_after_is_configurable() {
    let profile = Profile::Hapi(Hapi {
        retry_after_secs: 3,
        ..Hapi::default()
    });
    let server = start_profile(profile, DATA).await;
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export?_type=Patient")).await;
    let r = c.get(&status).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["retry-after"], "3");
    server.shutdown().await;
}

#[tokio::test]
async fn files_are_binary_resources_unless_ndjson_is_accepted() {
    let server = hapi().await;
    let c = client();
    let m = export(&c, &url(&server, "$export?_type=Patient")).await;
    let file = m["output"][0]["url"].as_str().unwrap();

    let ndjson = get_ndjson(&c, file).await;
    assert_eq!(ndjson.status(), 200);
    assert_eq!(ndjson.headers()["content-type"], "application/fhir+ndjson");
    let ndjson = ndjson.text().await.unwrap();
    assert_eq!(lines(&ndjson).len(), 3);

    for accept in [None, Some("*/*"), Some("application/fhir+json")] {
        let mut req = c.get(file);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{accept:?}");
        assert_eq!(r.headers()["content-type"], "application/fhir+json");
        let binary: Value = r.json().await.unwrap();
        assert_eq!(binary["resourceType"], "Binary");
        assert_eq!(binary["contentType"], "application/fhir+ndjson");
        let data = base64::engine::general_purpose::STANDARD
            .decode(binary["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(String::from_utf8(data).unwrap(), ndjson, "{accept:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn jobs_and_files_are_purged_after_the_retention_period() {
    let retention = Duration::from_secs(2 * 3600);
    let server = hapi().await;
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export?_type=Patient")).await;
    let m = manifest(&c, &status).await;
    let file = m["output"][0]["url"].as_str().unwrap();

    server.advance_clock(retention - Duration::from_secs(60));
    assert_eq!(get_ndjson(&c, file).await.status(), 200);
    assert_eq!(c.get(&status).send().await.unwrap().status(), 200);

    server.advance_clock(Duration::from_secs(120));
    assert_eq!(get_ndjson(&c, file).await.status(), 404);
    assert_eq!(c.get(&status).send().await.unwrap().status(), 404);
    // A purged job is not reused: the same kick-off starts a new one.
    let again = kickoff_ok(&c, &url(&server, "$export?_type=Patient")).await;
    assert_ne!(again, status);
    server.shutdown().await;
}

#[tokio::test]
async fn an_identical_kickoff_returns_the_earlier_job_unless_no_cache() {
    let server = hapi().await;
    let c = client();
    let kick = url(&server, "$export?_type=Patient");
    let first = kickoff_ok(&c, &kick).await;
    let m = manifest(&c, &first).await;
    // Even a completed job is handed out again, with its old transactionTime.
    assert_eq!(kickoff_ok(&c, &kick).await, first);
    assert_eq!(
        manifest(&c, &first).await["transactionTime"],
        m["transactionTime"]
    );

    let other = kickoff_ok(&c, &url(&server, "$export?_type=Observation")).await;
    assert_ne!(other, first);

    let fresh = accepted(&kickoff_no_cache(&c, &kick).await);
    assert_ne!(fresh, first);

    let no_reuse = start_profile(
        Profile::Hapi(Hapi {
            reuse_jobs: false,
            ..Hapi::default()
        }),
        DATA,
    )
    .await;
    let kick = url(&no_reuse, "$export?_type=Patient");
    assert_ne!(kickoff_ok(&c, &kick).await, kickoff_ok(&c, &kick).await);
    no_reuse.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn deletions_are_never_listed() {
    let server = hapi().await;
    let c = client();
    let (_, inc) = exports_around_a_delete(&c, &server).await;
    assert!(inc.get("deleted").is_none(), "{inc}");
    assert!(inc.get("error").is_none(), "{inc}");

    // The same exports from a spec server list the deletion.
    let spec = start(DATA).await;
    let (_, inc) = exports_around_a_delete(&c, &spec).await;
    assert_eq!(inc["deleted"].as_array().unwrap().len(), 1);
    spec.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_failed_job_answers_500_with_an_operation_outcome() {
    let server = hapi().await;
    server.faults().add(FaultRule::once(
        FaultTarget::KickOff,
        bulk_test_server::Fault::FailJob,
    ));
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export?_type=Patient")).await;
    let r = final_status(&c, &status).await;
    assert_eq!(r.status(), 500);
    let oo: Value = r.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    server.shutdown().await;
}

#[tokio::test]
async fn the_spec_profile_is_the_default_and_unchanged() {
    assert_eq!(ServerConfig::default().profile, Profile::Spec);
    let server = start(DATA).await;
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export?_type=Patient")).await;
    assert!(status.starts_with(&url(&server, "bulkstatus/")), "{status}");
    let m = manifest(&c, &status).await;
    assert_eq!(m["error"], serde_json::json!([]));
    let file = m["output"][0]["url"].as_str().unwrap();
    assert_eq!(lines(&download(&c, file).await).len(), 3);
    server.advance_clock(Duration::from_secs(365 * 24 * 3600));
    assert_eq!(c.get(&status).send().await.unwrap().status(), 200);
    assert_ne!(
        kickoff_ok(&c, &url(&server, "$export?_type=Patient")).await,
        status
    );
    server.shutdown().await;
}
