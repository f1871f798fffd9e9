#![allow(dead_code)]
pub mod stores;

use std::time::Duration;

use bulk_test_server::{DataSource, ServerConfig, TestServer};
use serde_json::Value;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        // Identity bodies, so byte-level faults and ranges are observed as sent.
        .no_gzip()
        .build()
        .unwrap()
}

pub fn config(data: DataSource) -> ServerConfig {
    ServerConfig {
        data,
        polls_before_complete: 1,
        retry_after_secs: 0,
        ..ServerConfig::default()
    }
}

pub async fn start(data: DataSource) -> TestServer {
    TestServer::start(config(data)).await.unwrap()
}

pub fn url(server: &TestServer, rest: &str) -> String {
    format!("{}/{}", server.base_url(), rest)
}

/// GET kick-off with the required headers; returns the response.
pub async fn kickoff_get(c: &reqwest::Client, url: &str) -> reqwest::Response {
    c.get(url)
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .send()
        .await
        .unwrap()
}

/// GET kick-off with `Cache-Control: no-cache` (a fresh job where a server reuses them).
pub async fn kickoff_no_cache(c: &reqwest::Client, url: &str) -> reqwest::Response {
    c.get(url)
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .header("Cache-Control", "no-cache")
        .send()
        .await
        .unwrap()
}

/// The status URL of a kick-off answered 202.
pub fn accepted(r: &reqwest::Response) -> String {
    assert_eq!(r.status(), 202);
    r.headers()["content-location"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Kick-off that must succeed; returns the status URL.
pub async fn kickoff_ok(c: &reqwest::Client, url: &str) -> String {
    let r = kickoff_get(c, url).await;
    let status = r.status();
    let loc = r
        .headers()
        .get("content-location")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.text().await.unwrap();
    assert_eq!(status, 202, "kick-off {url} failed: {body}");
    loc.expect("Content-Location")
}

/// Polls until the manifest arrives (or fails after many attempts).
pub async fn manifest(c: &reqwest::Client, status_url: &str) -> Value {
    for _ in 0..2000 {
        let r = c.get(status_url).send().await.unwrap();
        match r.status().as_u16() {
            202 => {
                assert!(r.headers().contains_key("x-progress"));
                assert!(r.headers().contains_key("retry-after"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            200 => {
                assert!(
                    r.headers()["content-type"]
                        .to_str()
                        .unwrap()
                        .starts_with("application/json")
                );
                return r.json().await.unwrap();
            }
            s => panic!("status {s}: {}", r.text().await.unwrap()),
        }
    }
    panic!("manifest never became ready");
}

pub async fn export(c: &reqwest::Client, url: &str) -> Value {
    let status = kickoff_ok(c, url).await;
    manifest(c, &status).await
}

pub async fn download(c: &reqwest::Client, url: &str) -> String {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    assert_eq!(r.headers()["content-type"], "application/fhir+ndjson");
    r.text().await.unwrap()
}

pub fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// All resources of all output files, per type.
pub async fn all_resources(
    c: &reqwest::Client,
    manifest: &Value,
) -> std::collections::BTreeMap<String, Vec<Value>> {
    let mut out: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for o in manifest["output"].as_array().unwrap() {
        let text = download(c, o["url"].as_str().unwrap()).await;
        let rs = lines(&text);
        assert_eq!(
            rs.len() as u64,
            o["count"].as_u64().unwrap(),
            "count of {}",
            o["url"]
        );
        for r in rs {
            assert_eq!(r["resourceType"], o["type"]);
            out.entry(o["type"].as_str().unwrap().to_string())
                .or_default()
                .push(r);
        }
    }
    out
}

/// A server with the test settings of [`config`] and this profile.
pub async fn start_profile(profile: bulk_test_server::Profile, data: DataSource) -> TestServer {
    TestServer::start(ServerConfig {
        profile,
        ..config(data)
    })
    .await
    .unwrap()
}

/// A GET with `Accept: application/fhir+ndjson`, as servers that keep export files as FHIR
/// resources require.
pub async fn get_ndjson(c: &reqwest::Client, url: &str) -> reqwest::Response {
    c.get(url)
        .header("Accept", "application/fhir+ndjson")
        .send()
        .await
        .unwrap()
}

/// The first status response that is not 202.
pub async fn final_status(c: &reqwest::Client, status_url: &str) -> reqwest::Response {
    for _ in 0..2000 {
        let r = c.get(status_url).send().await.unwrap();
        if r.status() != 202 {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the job never finished");
}

/// The manifests of a full Patient export and of the `_since` export after deleting one
/// Patient.
pub async fn exports_around_a_delete(c: &reqwest::Client, server: &TestServer) -> (Value, Value) {
    let full = export(c, &url(server, "$export?_type=Patient")).await;
    let store = server.store();
    let gone = store.ids("Patient")[0].clone();
    assert!(store.delete("Patient", &gone));
    let since = full["transactionTime"]
        .as_str()
        .unwrap()
        .replace('+', "%2B");
    let inc = export(
        c,
        &url(server, &format!("$export?_type=Patient&_since={since}")),
    )
    .await;
    (full, inc)
}

/// SMART settings with clients `id` whose secrets are `id-secret`.
pub fn smart_clients(ids: &[&str]) -> bulk_test_server::smart::SmartServerConfig {
    bulk_test_server::smart::SmartServerConfig {
        token_lifetime: Duration::from_secs(300),
        clients: ids
            .iter()
            .map(|id| bulk_test_server::smart::RegisteredClient {
                client_id: id.to_string(),
                jwks: None,
                client_secret: Some(format!("{id}-secret")),
            })
            .collect(),
    }
}

/// The token endpoint's answer for client `id` of [`smart_clients`].
pub async fn token_response(
    c: &reqwest::Client,
    server: &TestServer,
    id: &str,
) -> reqwest::Response {
    let secret = format!("{id}-secret");
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "system/*.read"),
        ("client_id", id),
        ("client_secret", secret.as_str()),
    ];
    c.post(server.token_url()).form(&form).send().await.unwrap()
}

/// An access token for client `id` of [`smart_clients`].
pub async fn token(c: &reqwest::Client, server: &TestServer, id: &str) -> String {
    let r = token_response(c, server, id).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_string()
}
