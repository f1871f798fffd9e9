//! The Firely Server profile: its status and file URLs, the `Accept` its files need, and 410
//! for a cancelled job.
mod common;

use bulk_test_server::{DataSource, Profile, TestServer};
use common::*;
use serde_json::Value;

const DATA: DataSource = DataSource::Synthetic {
    patients: 3,
    seed: 12,
};

async fn firely() -> TestServer {
    start_profile(Profile::Firely, DATA).await
}

#[tokio::test]
async fn status_and_file_urls_are_firely_operations() {
    let server = firely().await;
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export?_type=Patient,Observation")).await;
    let prefix = url(&server, "$exportstatus?_id=");
    assert!(status.starts_with(&prefix), "{status}");
    let job = status[prefix.len()..].to_string();
    let spec_path = c.get(url(&server, &format!("bulkstatus/{job}")));
    assert_eq!(spec_path.send().await.unwrap().status(), 404);

    let m = manifest(&c, &status).await;
    let outputs = m["output"].as_array().unwrap();
    assert_eq!(outputs.len(), 2);
    for o in outputs {
        let file = o["url"].as_str().unwrap();
        let want = url(
            &server,
            &format!(
                "$exportfilerequest/?_id={job}&filename=content{}-",
                o["type"].as_str().unwrap()
            ),
        );
        assert!(
            file.starts_with(&want) && file.ends_with(".ndjson"),
            "{file}"
        );
        let r = get_ndjson(&c, file).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/fhir+ndjson");
        let rs = lines(&r.text().await.unwrap());
        assert_eq!(rs.len() as u64, o["count"].as_u64().unwrap());
        assert!(rs.iter().all(|r| r["resourceType"] == o["type"]));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn files_need_accept_fhir_ndjson() {
    let server = firely().await;
    let c = client();
    let m = export(&c, &url(&server, "$export?_type=Patient")).await;
    let file = m["output"][0]["url"].as_str().unwrap();
    for accept in [None, Some("*/*"), Some("application/fhir+json")] {
        let mut req = c.get(file);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 406, "{accept:?}");
        let oo: Value = r.json().await.unwrap();
        assert_eq!(oo["resourceType"], "OperationOutcome");
    }
    assert_eq!(get_ndjson(&c, file).await.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_job_is_gone() {
    let server = firely().await;
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export?_type=Patient")).await;
    assert_eq!(c.delete(&status).send().await.unwrap().status(), 202);
    let r = c.get(&status).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let oo: Value = r.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    // A job that never existed is still unknown, not gone.
    let unknown = c
        .get(url(&server, "$exportstatus?_id=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // The spec answers 404 after a DELETE.
    let spec = start(DATA).await;
    let status = kickoff_ok(&c, &url(&spec, "$export?_type=Patient")).await;
    assert_eq!(c.delete(&status).send().await.unwrap().status(), 202);
    assert_eq!(c.get(&status).send().await.unwrap().status(), 404);
    spec.shutdown().await;
    server.shutdown().await;
}
