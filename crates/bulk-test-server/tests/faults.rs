//! Each injected fault, observed over real HTTP.
mod common;

use std::time::Duration;

use bulk_test_server::{DataSource, Fault, FaultRule, FaultTarget, RetryAfter};
use common::*;
use serde_json::Value;

async fn outcome_of(r: reqwest::Response) -> Value {
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/fhir+json")
    );
    r.json().await.unwrap()
}

#[tokio::test]
async fn throttling_with_three_retry_after_forms() {
    let server = start(DataSource::Synthetic {
        patients: 2,
        seed: 1,
    })
    .await;
    let c = client();
    let f = server.faults();
    f.add(FaultRule::once(
        FaultTarget::KickOff,
        Fault::TooManyRequests(RetryAfter::Seconds(2)),
    ));
    f.add(FaultRule::once(
        FaultTarget::KickOff,
        Fault::TooManyRequests(RetryAfter::HttpDate(3)),
    ));
    f.add(FaultRule::once(
        FaultTarget::KickOff,
        Fault::TooManyRequests(RetryAfter::EpochTimestamp(4)),
    ));
    let u = url(&server, "$export");

    let r = kickoff_get(&c, &u).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(outcome_of(r).await["issue"][0]["code"], "throttled");

    let r = kickoff_get(&c, &u).await;
    assert_eq!(r.status(), 429);
    let date = httpdate::parse_http_date(r.headers()["retry-after"].to_str().unwrap()).unwrap();
    assert!(date > std::time::SystemTime::now());

    let r = kickoff_get(&c, &u).await;
    assert_eq!(r.status(), 429);
    let epoch: i64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(epoch > chrono::Utc::now().timestamp() - 5 && epoch > 1_700_000_000);

    // Used up: the next kick-off works.
    kickoff_ok(&c, &u).await;
    assert!(f.pending().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn transient_and_fatal_errors_on_status() {
    let server = start(DataSource::Synthetic {
        patients: 2,
        seed: 1,
    })
    .await;
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export")).await;
    server.faults().add(FaultRule::times(
        FaultTarget::Status,
        Fault::Transient { status: 503 },
        2,
    ));
    for _ in 0..2 {
        let r = c.get(&status).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(outcome_of(r).await["issue"][0]["code"], "transient");
    }
    server.faults().add(FaultRule::once(
        FaultTarget::Status,
        Fault::Fatal { status: 500 },
    ));
    let r = c.get(&status).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let oo = outcome_of(r).await;
    assert_eq!(oo["issue"][0]["severity"], "fatal");
    // The job survives both.
    let m = manifest(&c, &status).await;
    assert!(!m["output"].as_array().unwrap().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn delayed_manifest_gives_extra_202s() {
    let server = start(DataSource::Synthetic {
        patients: 2,
        seed: 1,
    })
    .await;
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export")).await;
    // Let planning and the configured poll pass first.
    manifest(&c, &status).await;
    server.faults().add(FaultRule::times(
        FaultTarget::Status,
        Fault::DelayManifest,
        3,
    ));
    for _ in 0..3 {
        let r = c.get(&status).send().await.unwrap();
        assert_eq!(r.status(), 202);
        assert!(r.headers().contains_key("x-progress"));
    }
    assert_eq!(c.get(&status).send().await.unwrap().status(), 200);
    server.shutdown().await;
}

async fn file_fixture(server: &bulk_test_server::TestServer) -> (reqwest::Client, String, String) {
    let c = client();
    let m = export(&c, &url(server, "$export?_type=Observation")).await;
    let u = m["output"][0]["url"].as_str().unwrap().to_string();
    let full = download(&c, &u).await;
    (c, u, full)
}

#[tokio::test]
async fn reset_mid_file_then_resume_with_range() {
    let server = start(DataSource::Synthetic {
        patients: 40,
        seed: 3,
    })
    .await;
    let (c, u, full) = file_fixture(&server).await;
    assert!(full.len() > 200_000);
    server.faults().add(FaultRule::once(
        FaultTarget::FileIndex(0),
        Fault::ResetAfter { bytes: 100_000 },
    ));
    let r = c.get(&u).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut got = Vec::new();
    let mut stream = r;
    let err = loop {
        match stream.chunk().await {
            Ok(Some(b)) => got.extend_from_slice(&b),
            Ok(None) => panic!("body completed despite the reset"),
            Err(e) => break e,
        }
    };
    assert!(
        err.is_body() || err.is_decode() || err.is_request(),
        "{err:?}"
    );
    assert!(got.len() <= 100_000);
    let rest = c
        .get(&u)
        .header("Range", format!("bytes={}-", got.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 206);
    got.extend_from_slice(&rest.bytes().await.unwrap());
    assert_eq!(String::from_utf8(got).unwrap(), full);
    server.shutdown().await;
}

#[tokio::test]
async fn truncated_bodies_fail_the_download() {
    let server = start(DataSource::Synthetic {
        patients: 10,
        seed: 3,
    })
    .await;
    let (c, u, full) = file_fixture(&server).await;
    for chunked in [false, true] {
        server.faults().add(FaultRule::once(
            FaultTarget::AnyFile,
            Fault::Truncate {
                bytes: 1000,
                chunked,
            },
        ));
        let r = c.get(&u).send().await.unwrap();
        if !chunked {
            assert_eq!(
                r.headers()["content-length"].to_str().unwrap(),
                full.len().to_string()
            );
        } else {
            assert!(r.headers().get("content-length").is_none());
        }
        assert!(r.bytes().await.is_err(), "chunked={chunked}");
    }
    assert_eq!(download(&c, &u).await, full);
    server.shutdown().await;
}

#[tokio::test]
async fn slow_gone_and_per_type_faults() {
    let server = start(DataSource::Synthetic {
        patients: 3,
        seed: 3,
    })
    .await;
    let c = client();
    let m = export(&c, &url(&server, "$export?_type=Patient,Observation")).await;
    let obs = m["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "Observation")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let pat = m["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "Patient")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    server.faults().add(FaultRule::once(
        FaultTarget::FileType("Observation".into()),
        Fault::Gone { status: 410 },
    ));
    assert_eq!(c.get(&pat).send().await.unwrap().status(), 200);
    let gone = c.get(&obs).send().await.unwrap();
    assert_eq!(gone.status(), 410);
    assert_eq!(outcome_of(gone).await["resourceType"], "OperationOutcome");

    let full = download(&c, &obs).await;
    // Throttled to a rate that makes the body arrive in many small pieces, but still whole.
    server.faults().add(FaultRule::once(
        FaultTarget::AnyFile,
        Fault::Slow {
            bytes_per_sec: full.len() as u64,
        },
    ));
    let r = c.get(&obs).send().await.unwrap();
    let mut pieces = 0;
    let mut got = Vec::new();
    let mut r = r;
    while let Some(b) = r.chunk().await.unwrap() {
        pieces += 1;
        got.extend_from_slice(&b);
    }
    assert!(pieces >= 3, "{pieces} pieces");
    assert_eq!(String::from_utf8(got).unwrap(), full);
    server.shutdown().await;
}

#[tokio::test]
async fn token_endpoint_faults() {
    use bulk_test_server::smart::{RegisteredClient, SmartServerConfig};
    let server = bulk_test_server::TestServer::start(bulk_test_server::ServerConfig {
        smart: Some(SmartServerConfig {
            token_lifetime: Duration::from_secs(60),
            clients: vec![RegisteredClient {
                client_id: "a".into(),
                jwks: None,
                client_secret: Some("b".into()),
            }],
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    server.faults().add(FaultRule::once(
        FaultTarget::Token,
        Fault::Transient { status: 503 },
    ));
    let c = client();
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "system/*.read"),
    ];
    let r = c
        .post(server.token_url())
        .basic_auth("a", Some("b"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = c
        .post(server.token_url())
        .basic_auth("a", Some("b"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn duplicate_ids_come_with_an_older_copy_later() {
    let server = start(DataSource::Synthetic {
        patients: 4,
        seed: 3,
    })
    .await;
    server.faults().add(FaultRule::once(
        FaultTarget::KickOff,
        Fault::DuplicateIds { count: 2 },
    ));
    let c = client();
    let m = export(&c, &url(&server, "$export?_type=Patient")).await;
    let out = m["output"].as_array().unwrap();
    assert_eq!(out.len(), 2);
    let first = lines(&download(&c, out[0]["url"].as_str().unwrap()).await);
    let second = lines(&download(&c, out[1]["url"].as_str().unwrap()).await);
    assert_eq!(first.len(), 4);
    assert_eq!(second.len(), 2);
    for (dup, orig) in second.iter().zip(&first) {
        assert_eq!(dup["id"], orig["id"]);
        let a = chrono::DateTime::parse_from_rfc3339(dup["meta"]["lastUpdated"].as_str().unwrap())
            .unwrap();
        let b = chrono::DateTime::parse_from_rfc3339(orig["meta"]["lastUpdated"].as_str().unwrap())
            .unwrap();
        assert!(a < b);
    }
    // One-shot: the next export is clean.
    let m = export(&c, &url(&server, "$export?_type=Patient")).await;
    assert_eq!(m["output"].as_array().unwrap().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn failed_jobs_answer_500_until_deleted() {
    let server = start(DataSource::Synthetic {
        patients: 2,
        seed: 1,
    })
    .await;
    server
        .faults()
        .add(FaultRule::once(FaultTarget::KickOff, Fault::FailJob));
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export")).await;
    for _ in 0..2 {
        let r = c.get(&status).send().await.unwrap();
        assert_eq!(r.status(), 500);
        let oo = outcome_of(r).await;
        assert_eq!(oo["issue"][0]["severity"], "fatal");
    }
    assert_eq!(c.delete(&status).send().await.unwrap().status(), 202);
    assert_eq!(c.get(&status).send().await.unwrap().status(), 404);
    // The next job is fine.
    export(&c, &url(&server, "$export")).await;
    server.shutdown().await;
}
