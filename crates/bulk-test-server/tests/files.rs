//! File downloads: gzip, Range, HEAD, redirects, another origin, access tokens.
mod common;

use std::io::Read;
use std::time::Duration;

use bulk_test_server::smart::{RegisteredClient, SmartServerConfig};
use bulk_test_server::{DataSource, FileServing, Origin, ServerConfig, TestServer};
use common::*;
use serde_json::Value;

fn first_url(m: &Value, ty: &str) -> String {
    m["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == ty)
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn gzip_range_and_head() {
    let server = start(DataSource::Synthetic {
        patients: 15,
        seed: 9,
    })
    .await;
    let c = client();
    let m = export(&c, &url(&server, "$export?_type=Observation")).await;
    let u = first_url(&m, "Observation");
    assert!(
        !u.starts_with(server.base_url().as_str()),
        "files live apart from the FHIR base"
    );
    let plain = download(&c, &u).await;
    assert!(plain.len() > 10_000);

    let gz = c
        .get(&u)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.status(), 200);
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let bytes = gz.bytes().await.unwrap();
    assert!(bytes.len() < plain.len() / 3);
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, plain);

    let head = c.head(&u).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        plain.len().to_string()
    );
    assert_eq!(head.headers()["accept-ranges"], "bytes");

    let part = c
        .get(&u)
        .header("Range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        format!("bytes 100-{}/{}", plain.len() - 1, plain.len())
    );
    assert_eq!(part.text().await.unwrap(), plain[100..]);
    let mid = c
        .get(&u)
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(mid.status(), 206);
    assert_eq!(mid.text().await.unwrap(), plain[10..20]);
    let tail = c.get(&u).header("Range", "bytes=-5").send().await.unwrap();
    assert_eq!(tail.text().await.unwrap(), plain[plain.len() - 5..]);
    let beyond = c
        .get(&u)
        .header("Range", format!("bytes={}-", plain.len() + 10))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(
        beyond.headers()["content-range"].to_str().unwrap(),
        format!("bytes */{}", plain.len())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn other_origin_with_redirects_gets_no_authorization_header() {
    let server = TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 5,
            seed: 1,
        },
        files: FileServing::OtherOrigin,
        redirect_files: true,
        retry_after_secs: 0,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    assert_ne!(server.file_origin().port(), server.base_url().port());
    let c = client();
    let m = export(&c, &url(&server, "$export?_type=Patient")).await;
    let u = first_url(&m, "Patient");
    let r = c
        .get(&u)
        .header("Authorization", "Bearer secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(server.file_origin().as_str().trim_end_matches('/')));
    // Following the redirect like a careful client: without the Authorization header.
    let text = download(&c, &location).await;
    assert_eq!(lines(&text).len(), 5);
    let file_requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.origin == Origin::Files)
        .collect();
    assert_eq!(file_requests.len(), 1);
    assert!(!file_requests[0].authorization);
    assert_eq!(file_requests[0].status, 200);
    // The FHIR origin does not serve files itself.
    let same = location.replace(
        &server.file_origin().port().unwrap().to_string(),
        &server.base_url().port().unwrap().to_string(),
    );
    assert_eq!(c.get(&same).send().await.unwrap().status(), 404);
    server.shutdown().await;
}

#[tokio::test]
async fn smart_tokens_guard_kickoff_status_and_files() {
    let server = TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 3,
            seed: 1,
        },
        requires_access_token: true,
        retry_after_secs: 0,
        smart: Some(SmartServerConfig {
            token_lifetime: Duration::from_secs(300),
            clients: vec![RegisteredClient {
                client_id: "app".into(),
                jwks: None,
                client_secret: Some("s3cret".into()),
            }],
        }),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let c = client();
    let conf: Value = c
        .get(url(&server, ".well-known/smart-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(conf["token_endpoint"], server.token_url().as_str());

    let anon = kickoff_get(&c, &url(&server, "$export")).await;
    assert_eq!(anon.status(), 401);

    let tok: Value = c
        .post(server.token_url())
        .basic_auth("app", Some("s3cret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.read"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tok["access_token"]
        .as_str()
        .expect("access token")
        .to_string();
    let r = c
        .get(url(&server, "$export"))
        .bearer_auth(&token)
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .send()
        .await
        .unwrap();
    let status = accepted(&r);
    assert_eq!(c.get(&status).send().await.unwrap().status(), 401);
    let mut polls = 0;
    let m = loop {
        let r = c.get(&status).bearer_auth(&token).send().await.unwrap();
        if r.status() == 200 {
            break r.json::<Value>().await.unwrap();
        }
        assert_eq!(r.status(), 202);
        polls += 1;
        assert!(
            polls < 2000,
            "the manifest was not ready after {polls} polls"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(m["requiresAccessToken"], true);
    let u = m["output"][0]["url"].as_str().unwrap();
    assert_eq!(c.get(u).send().await.unwrap().status(), 401);
    let ok = c.get(u).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(server.smart().unwrap().tokens_issued() >= 1);
    server.shutdown().await;
}

#[tokio::test]
async fn deleted_jobs_lose_their_files() {
    let server = start(DataSource::Synthetic {
        patients: 2,
        seed: 1,
    })
    .await;
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export")).await;
    let m = manifest(&c, &status).await;
    let u = m["output"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(c.get(&u).send().await.unwrap().status(), 200);
    assert_eq!(c.delete(&status).send().await.unwrap().status(), 202);
    assert_eq!(c.get(&u).send().await.unwrap().status(), 404);
    server.shutdown().await;
}
