//! The fault source (a fault drawn for every request no rule matches) and the faults added
//! for the chaos suite: token expiry and revocation, expired jobs, proxy error pages and the
//! `Retry-After` forms outside the RFC.
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulk_test_server::smart::{RegisteredClient, SmartServerConfig};
use bulk_test_server::{
    DataSource, Fault, FaultRequest, FaultRule, FaultTarget, RetryAfter, ServerConfig, TestServer,
};
use common::*;

#[tokio::test]
async fn retry_after_forms_beyond_the_rfc() {
    let server = start(DataSource::Empty).await;
    let c = client();
    let u = url(&server, "$export");
    for ra in [
        RetryAfter::EpochMillis(3),
        RetryAfter::FractionalMillis(1250),
        RetryAfter::Absent,
        RetryAfter::Invalid,
    ] {
        server.faults().add(FaultRule::once(
            FaultTarget::KickOff,
            Fault::TooManyRequests(ra),
        ));
        let r = kickoff_get(&c, &u).await;
        assert_eq!(r.status(), 429, "{ra:?}");
        let value = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        match ra {
            RetryAfter::EpochMillis(_) => {
                let ms: i64 = value.unwrap().parse().unwrap();
                let now = chrono::Utc::now().timestamp_millis();
                assert!(ms > now && ms <= now + 3000, "{ms} vs {now}");
            }
            RetryAfter::FractionalMillis(_) => assert_eq!(value.as_deref(), Some("1.250")),
            RetryAfter::Absent => assert_eq!(value, None),
            _ => assert_eq!(value.as_deref(), Some("soon")),
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn plain_status_pages_are_not_operation_outcomes() {
    let server = start(DataSource::Empty).await;
    server.faults().add(FaultRule::once(
        FaultTarget::KickOff,
        Fault::PlainStatus { status: 502 },
    ));
    let r = kickoff_get(&client(), &url(&server, "$export")).await;
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "text/html");
    assert!(r.text().await.unwrap().contains("Bad Gateway"));
    server.shutdown().await;
}

async fn token(c: &reqwest::Client, server: &TestServer) -> String {
    let r = c
        .post(server.token_url())
        .basic_auth("a", Some("b"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn token_faults_expire_or_forget_every_token() {
    let server = TestServer::start(ServerConfig {
        smart: Some(SmartServerConfig {
            token_lifetime: Duration::from_secs(3600),
            clients: vec![RegisteredClient {
                client_id: "a".into(),
                jwks: None,
                client_secret: Some("b".into()),
            }],
        }),
        ..config(DataSource::Synthetic {
            patients: 1,
            seed: 1,
        })
    })
    .await
    .unwrap();
    let c = client();
    let kickoff = |token: String| {
        c.get(url(&server, "$export"))
            .header("Accept", "application/fhir+json")
            .header("Prefer", "respond-async")
            .bearer_auth(token)
            .send()
    };
    for (fault, says) in [
        (Fault::ExpireTokens, "expired"),
        (Fault::RevokeTokens, "unknown"),
    ] {
        let t = token(&c, &server).await;
        server
            .faults()
            .add(FaultRule::once(FaultTarget::KickOff, fault.clone()));
        let r = kickoff(t.clone()).await.unwrap();
        assert_eq!(r.status(), 401, "{fault:?}");
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.contains(says), "{fault:?}: {challenge}");
        // The old token stays refused; a new one works.
        assert_eq!(kickoff(t).await.unwrap().status(), 401);
        let r = kickoff(token(&c, &server).await).await.unwrap();
        assert_eq!(r.status(), 202, "{fault:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_expired_job_is_gone_for_status_and_files() {
    let server = start(DataSource::Synthetic {
        patients: 2,
        seed: 4,
    })
    .await;
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export?_type=Patient,Observation")).await;
    let m = manifest(&c, &status).await;
    let first = m["output"][0]["url"].as_str().unwrap().to_string();
    let second = m["output"][1]["url"].as_str().unwrap().to_string();
    server
        .faults()
        .add(FaultRule::once(FaultTarget::FileIndex(0), Fault::ExpireJob));
    assert_eq!(c.get(&first).send().await.unwrap().status(), 404);
    assert_eq!(c.get(&second).send().await.unwrap().status(), 404);
    assert_eq!(c.get(&status).send().await.unwrap().status(), 404);

    let status = kickoff_ok(&c, &url(&server, "$export?_type=Patient")).await;
    server
        .faults()
        .add(FaultRule::once(FaultTarget::Status, Fault::ExpireJob));
    assert_eq!(c.get(&status).send().await.unwrap().status(), 404);
    assert_eq!(c.get(&status).send().await.unwrap().status(), 404);
    server.shutdown().await;
}

#[tokio::test]
async fn a_fault_source_is_asked_per_target_and_attempt_after_the_rules() {
    let server = start(DataSource::Synthetic {
        patients: 2,
        seed: 5,
    })
    .await;
    let seen: Arc<Mutex<Vec<FaultRequest>>> = Arc::default();
    let log = seen.clone();
    server
        .faults()
        .set_source(Some(Arc::new(move |r: &FaultRequest| {
            log.lock().unwrap().push(r.clone());
            // The first attempt at every output file fails; job faults are never taken from here.
            match (&r.target, r.attempt) {
                (FaultTarget::FileIndex(_), 0) => Some(Fault::Transient { status: 503 }),
                (FaultTarget::KickOff, _) => Some(Fault::FailJob),
                _ => None,
            }
        })));
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export?_type=Patient,Observation")).await;
    let m = manifest(&c, &status).await;
    let file = m["output"][1]["url"].as_str().unwrap().to_string();
    // A rule comes first and is not counted as an attempt of the source.
    server.faults().add(FaultRule::once(
        FaultTarget::FileIndex(1),
        Fault::Gone { status: 410 },
    ));
    assert_eq!(c.get(&file).send().await.unwrap().status(), 410);
    assert_eq!(c.get(&file).send().await.unwrap().status(), 503);
    assert_eq!(c.get(&file).send().await.unwrap().status(), 200);
    let seen = seen.lock().unwrap().clone();
    let files: Vec<(FaultTarget, Option<String>, u32)> = seen
        .iter()
        .filter(|r| matches!(r.target, FaultTarget::FileIndex(_)))
        .map(|r| (r.target.clone(), r.resource_type.clone(), r.attempt))
        .collect();
    let ty = m["output"][1]["type"].as_str().map(str::to_string);
    assert_eq!(
        files,
        vec![
            (FaultTarget::FileIndex(1), ty.clone(), 0),
            (FaultTarget::FileIndex(1), ty, 1),
        ]
    );
    assert!(seen.iter().any(|r| r.target == FaultTarget::KickOff));
    server.faults().set_source(None);
    server.shutdown().await;
}

#[tokio::test]
async fn unreadable_resources_replace_the_first_of_each_type() {
    let server = start(DataSource::Synthetic {
        patients: 2,
        seed: 6,
    })
    .await;
    let c = client();
    server.faults().add(FaultRule::once(
        FaultTarget::KickOff,
        Fault::UnreadableResources { count: 2 },
    ));
    let status = kickoff_ok(&c, &url(&server, "$export?_type=Patient")).await;
    let m = manifest(&c, &status).await;
    let body = download(&c, m["output"][0]["url"].as_str().unwrap()).await;
    let lines: Vec<&str> = body.lines().collect();
    let ids = server.store().ids("Patient");
    assert_eq!(lines.len(), ids.len());
    for (i, line) in lines.iter().enumerate() {
        // Undecodable as UTF-8 strings; the id still stands in the text.
        let decoded = serde_json::from_str::<serde_json::Value>(line);
        assert_eq!(decoded.is_err(), i < 2, "line {i}: {line}");
        assert!(line.contains(&format!("\"id\":\"{}\"", ids[i])), "line {i}");
    }
    server.shutdown().await;
}
