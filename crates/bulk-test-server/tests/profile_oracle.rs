//! The Oracle Health profile: levels, comma-joined `_type`, files redirected to pre-signed
//! URLs on another origin, `Retry-After` in hours, 500 for every server error.
mod common;

use std::time::Duration;

use bulk_test_server::{
    DataSource, Fault, FaultRule, FaultTarget, Oracle, Origin, Profile, ServerConfig, TestServer,
};
use common::*;
use serde_json::Value;

const DATA: DataSource = DataSource::Synthetic {
    patients: 3,
    seed: 14,
};

async fn oracle() -> TestServer {
    start_profile(Profile::Oracle(Oracle::default()), DATA).await
}

#[tokio::test]
async fn group_and_patient_export_only_and_retry_after_in_hours() {
    let server = oracle().await;
    let c = client();
    let r = kickoff_get(&c, &url(&server, "$export")).await;
    assert_eq!(r.status(), 400);
    let oo: Value = r.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    let g = server.store().ids("Group")[0].clone();
    for path in ["Patient/$export".to_string(), format!("Group/{g}/$export")] {
        let status = kickoff_ok(&c, &url(&server, &path)).await;
        let r = c.get(&status).send().await.unwrap();
        assert_eq!(r.status(), 202, "{path}");
        assert_eq!(r.headers()["retry-after"], "18000", "{path}");
    }
    server.shutdown().await;

    let quick = start_profile(
        Profile::Oracle(Oracle {
            retry_after_secs: 2,
        }),
        DATA,
    )
    .await;
    let status = kickoff_ok(&c, &url(&quick, "Patient/$export")).await;
    let r = c.get(&status).send().await.unwrap();
    assert_eq!(r.headers()["retry-after"], "2");
    quick.shutdown().await;
}

#[tokio::test]
async fn type_is_accepted_only_comma_joined() {
    let server = oracle().await;
    let c = client();
    let r = kickoff_get(
        &c,
        &url(&server, "Patient/$export?_type=Patient&_type=Condition"),
    )
    .await;
    assert_eq!(r.status(), 400);
    let oo: Value = r.json().await.unwrap();
    assert!(
        oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("_type")
    );
    let m = export(&c, &url(&server, "Patient/$export?_type=Patient,Condition")).await;
    let mut types: Vec<&str> = m["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    types.dedup();
    assert_eq!(types, ["Condition", "Patient"]);
    server.shutdown().await;
}

#[tokio::test]
async fn files_redirect_to_another_origin_that_refuses_authorization() {
    let server = TestServer::start(ServerConfig {
        profile: Profile::Oracle(Oracle::default()),
        smart: Some(smart_clients(&["a"])),
        ..config(DATA)
    })
    .await
    .unwrap();
    let c = client();
    let token = &token(&c, &server, "a").await;
    let status = accepted(
        &c.get(url(&server, "Patient/$export?_type=Patient"))
            .header("Accept", "application/fhir+json")
            .header("Prefer", "respond-async")
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    );
    let m: Value = loop {
        let r = c.get(&status).bearer_auth(token).send().await.unwrap();
        if r.status() == 200 {
            break r.json().await.unwrap();
        }
        assert_eq!(r.status(), 202);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(m["requiresAccessToken"], true);
    let file = m["output"][0]["url"].as_str().unwrap();
    assert!(file.starts_with(server.base_url().origin().ascii_serialization().as_str()));

    // The FHIR server wants the token, then redirects.
    assert_eq!(c.get(file).send().await.unwrap().status(), 401);
    let r = c.get(file).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 307);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(server.file_origin().as_str()),
        "{location}"
    );
    assert_ne!(server.file_origin().origin(), server.base_url().origin());

    // Storage refuses the token, and serves the file without it.
    let with_token = c.get(&location).bearer_auth(token).send().await.unwrap();
    assert_eq!(with_token.status(), 400);
    let without = c.get(&location).send().await.unwrap();
    assert_eq!(without.status(), 200);
    assert_eq!(lines(&without.text().await.unwrap()).len(), 3);
    let on_files: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.origin == Origin::Files)
        .map(|r| (r.authorization, r.status))
        .collect();
    assert_eq!(on_files, [(true, 400), (false, 200)]);
    server.shutdown().await;
}

#[tokio::test]
async fn every_server_error_is_a_500() {
    let server = oracle().await;
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "Patient/$export?_type=Patient")).await;
    for (fault, code) in [
        (Fault::Transient { status: 503 }, "transient"),
        (Fault::Fatal { status: 500 }, "exception"),
        (Fault::PlainStatus { status: 502 }, ""),
    ] {
        server
            .faults()
            .add(FaultRule::once(FaultTarget::Status, fault.clone()));
        let r = c.get(&status).send().await.unwrap();
        assert_eq!(r.status(), 500, "{fault:?}");
        let body = r.text().await.unwrap();
        assert!(body.contains(code), "{fault:?}: {body}");
    }
    // 429 stays a 429.
    server.faults().add(FaultRule::once(
        FaultTarget::Status,
        Fault::TooManyRequests(bulk_test_server::RetryAfter::Seconds(1)),
    ));
    assert_eq!(c.get(&status).send().await.unwrap().status(), 429);
    server.shutdown().await;
}
