//! The Epic profile: Group export only, `_since` refused, no `meta.lastUpdated`, one export
//! per client and Group, a token endpoint that fails now and then, long `Retry-After`.
mod common;

use std::time::Duration;

use bulk_test_server::{DataSource, Epic, Profile, ServerConfig, TestServer};
use common::*;
use serde_json::Value;

const DATA: DataSource = DataSource::Synthetic {
    patients: 4,
    seed: 13,
};

/// Epic without token failures, unless a test asks for them.
fn quiet() -> Epic {
    Epic {
        token_failure_one_in: 0,
        ..Epic::default()
    }
}

async fn epic_with_smart(epic: Epic) -> TestServer {
    TestServer::start(ServerConfig {
        profile: Profile::Epic(epic),
        smart: Some(smart_clients(&["a", "b"])),
        ..config(DATA)
    })
    .await
    .unwrap()
}

async fn kickoff_as(c: &reqwest::Client, url: &str, token: &str) -> reqwest::Response {
    c.get(url)
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn group_ids(server: &TestServer) -> Vec<String> {
    let ids = server.store().ids("Group");
    assert!(ids.len() >= 2, "{ids:?}");
    ids
}

#[tokio::test]
async fn only_group_export_is_accepted() {
    let server = start_profile(Profile::Epic(quiet()), DATA).await;
    let c = client();
    for path in ["$export", "Patient/$export"] {
        let r = kickoff_get(&c, &url(&server, path)).await;
        assert_eq!(r.status(), 400, "{path}");
        let oo: Value = r.json().await.unwrap();
        assert_eq!(oo["resourceType"], "OperationOutcome", "{path}");
    }
    let g = &group_ids(&server).await[0];
    let status = kickoff_ok(&c, &url(&server, &format!("Group/{g}/$export"))).await;
    let r = c.get(&status).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["retry-after"], "300");
    let m = manifest(&c, &status).await;
    assert!(!m["output"].as_array().unwrap().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn since_is_refused_and_named() {
    let server = start_profile(Profile::Epic(quiet()), DATA).await;
    let c = client();
    let g = &group_ids(&server).await[0];
    let r = kickoff_get(
        &c,
        &url(
            &server,
            &format!("Group/{g}/$export?_since=2020-01-01T00:00:00Z"),
        ),
    )
    .await;
    assert_eq!(r.status(), 400);
    let oo: Value = r.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    let text = oo["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(text.contains("_since"), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn resources_have_no_last_updated() {
    let server = start_profile(Profile::Epic(quiet()), DATA).await;
    let c = client();
    let g = &group_ids(&server).await[0];
    let m = export(&c, &url(&server, &format!("Group/{g}/$export"))).await;
    let all = all_resources(&c, &m).await;
    let resources: Vec<&Value> = all.values().flatten().collect();
    assert!(resources.len() > 10);
    for r in resources {
        assert!(r["meta"].get("lastUpdated").is_none(), "{r}");
        assert!(r["meta"]["versionId"].is_string(), "{r}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn one_export_per_client_and_group_until_it_is_deleted() {
    let server = epic_with_smart(quiet()).await;
    let c = client();
    let (a, b) = (token(&c, &server, "a").await, token(&c, &server, "b").await);
    let groups = group_ids(&server).await;
    let g0 = url(&server, &format!("Group/{}/$export", groups[0]));
    let g1 = url(&server, &format!("Group/{}/$export", groups[1]));

    let first = accepted(&kickoff_as(&c, &g0, &a).await);
    // Complete or not, the job blocks the next kick-off of that client and Group.
    let r = c.get(&first).bearer_auth(&a).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let r = kickoff_as(&c, &g0, &a).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "300");
    let oo: Value = r.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    // Another Group, or another client, is free.
    accepted(&kickoff_as(&c, &g1, &a).await);
    accepted(&kickoff_as(&c, &g0, &b).await);

    loop {
        let r = c.get(&first).bearer_auth(&a).send().await.unwrap();
        match r.status().as_u16() {
            202 => tokio::time::sleep(Duration::from_millis(20)).await,
            200 => break,
            s => panic!("status {s}"),
        }
    }
    assert_eq!(kickoff_as(&c, &g0, &a).await.status(), 429);
    let del = c.delete(&first).bearer_auth(&a).send().await.unwrap();
    assert_eq!(del.status(), 202);
    accepted(&kickoff_as(&c, &g0, &a).await);
    server.shutdown().await;
}

async fn token_statuses(seed: u64, one_in: u32, n: usize) -> Vec<u16> {
    let server = epic_with_smart(Epic {
        token_failure_seed: seed,
        token_failure_one_in: one_in,
        ..Epic::default()
    })
    .await;
    let c = client();
    let mut out = Vec::new();
    for _ in 0..n {
        let r = token_response(&c, &server, "a").await;
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        match status {
            200 => {}
            // A bare 400: no OAuth error body at all.
            400 => assert!(body.is_empty(), "{body:?}"),
            s => panic!("unexpected status {s}"),
        }
        out.push(status);
    }
    server.shutdown().await;
    out
}

#[tokio::test]
async fn the_token_endpoint_fails_now_and_then_as_seeded() {
    let seed = 20_240_611;
    println!("token failure seed {seed}");
    let first = token_statuses(seed, 4, 60).await;
    let failures = first.iter().filter(|s| **s == 400).count();
    assert!(
        (3..=30).contains(&failures),
        "{failures} failures: {first:?}"
    );
    assert_eq!(token_statuses(seed, 4, 60).await, first);
    assert_ne!(token_statuses(seed + 1, 4, 60).await, first);
    assert!(token_statuses(seed, 0, 20).await.iter().all(|s| *s == 200));
}
