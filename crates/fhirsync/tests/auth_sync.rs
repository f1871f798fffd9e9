//! `fhirsync sync` as a new user runs it against a SMART Backend Services server: client id and
//! a private key file, short-lived tokens, files that require the token.
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bulk_test_server::smart::{RegisteredClient, SmartServerConfig};
use bulk_test_server::{DataSource, Epic, Profile, ServerConfig, TestServer};

fn key(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../smart-auth/tests/keys")
    .join(name)
}

fn jwks(public: &str) -> serde_json::Value {
    let jwk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(key(public)).unwrap()).unwrap();
    serde_json::json!({ "keys": [jwk] })
}

async fn smart_server(client_id: &str, public_jwk: &str) -> TestServer {
    smart_server_as(Profile::Spec, client_id, public_jwk).await
}

async fn smart_server_as(profile: Profile, client_id: &str, public_jwk: &str) -> TestServer {
    TestServer::start(ServerConfig {
        profile,
        data: DataSource::Synthetic {
            patients: 4,
            seed: 9,
        },
        polls_before_complete: 3,
        retry_after_secs: 1,
        resources_per_file: 100,
        requires_access_token: true,
        smart: Some(SmartServerConfig {
            token_lifetime: Duration::from_secs(2),
            clients: vec![RegisteredClient {
                client_id: client_id.into(),
                jwks: Some(jwks(public_jwk)),
                client_secret: None,
            }],
        }),
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

/// `fhirsync sync` of Patient and Observation with a client id and a private key file.
async fn run_sync(
    server: &TestServer,
    delta: &std::path::Path,
    client_id: &str,
    private_key: &str,
    more: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fhirsync"));
    cmd.args(["--log-format", "json", "sync", "--fhir-endpoint"])
        .arg(server.base_url().as_str())
        .arg("--delta-path")
        .arg(delta)
        .args(["--resource-types", "Patient", "Observation"])
        .args(["--auth-client-id", client_id, "--auth-private-key"])
        .arg(key(private_key))
        .args(more)
        .env_remove("FHIR_PRIVATE_KEY");
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap()
}

async fn sync_with_key(client_id: &str, private_key: &str, public_jwk: &str) {
    let server = smart_server(client_id, public_jwk).await;
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let out = run_sync(&server, &delta, client_id, private_key, &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sync failed: {stderr}");
    let rows = fhirsync::tables::query(
        &delta.display().to_string(),
        "SELECT count(*) FROM Patient",
        None,
    )
    .await
    .unwrap();
    let n = rows[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n as u64, server.store().counts()["Patient"]);
    // Every FHIR request carried a token, and the private key never reached the logs.
    assert!(
        server
            .requests()
            .iter()
            .filter(|r| r.path_and_query.contains("$export"))
            .all(|r| r.authorization)
    );
    let private = std::fs::read_to_string(key(private_key)).unwrap();
    let d = serde_json::from_str::<serde_json::Value>(&private)
        .ok()
        .and_then(|v| v["d"].as_str().map(str::to_owned))
        .unwrap_or_else(|| private.lines().nth(1).unwrap_or_default().to_string());
    assert!(!stderr.contains(&d), "private key material in the logs");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_with_an_rs384_jwk_key_file() {
    sync_with_key(
        "fhirsync-rsa",
        "rsa-a.private.jwk.json",
        "rsa-a.public.jwk.json",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_with_an_es384_jwk_key_file() {
    sync_with_key(
        "fhirsync-ec",
        "ec384-a.private.jwk.json",
        "ec384-a.public.jwk.json",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_does_not_know_fails_with_a_clear_reason() {
    let server = smart_server("fhirsync-rsa", "rsa-a.public.jwk.json").await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fhirsync"));
    cmd.args(["--log-format", "json", "sync", "--fhir-endpoint"])
        .arg(server.base_url().as_str())
        .arg("--delta-path")
        .arg(dir.path().join("delta"))
        .args(["--auth-client-id", "fhirsync-rsa", "--auth-private-key"])
        .arg(key("rsa-b.private.jwk.json"));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("fhirsync: "), "one-line reason: {last}");
    assert!(last.contains("invalid_client"), "{last}");
    server.shutdown().await;
}

/// Epic's token endpoint answers a bare 400 now and then, refuses `_since`, and exports Groups
/// only: syncs go through all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epic_token_failures_and_refused_since_do_not_stop_syncs() {
    let epic = Profile::Epic(Epic {
        retry_after_secs: 1,
        token_failure_seed: 7,
        token_failure_one_in: 3,
    });
    let server = smart_server_as(epic, "fhirsync-rsa", "rsa-a.public.jwk.json").await;
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    for run in 1..=3 {
        let group = ["--group-id", "grp-0"];
        let out = run_sync(
            &server,
            &delta,
            "fhirsync-rsa",
            "rsa-a.private.jwk.json",
            &group,
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "sync {run} failed: {stderr}");
        if run == 2 {
            assert!(stderr.contains("refuses `_since`"), "told once: {stderr}");
        } else {
            assert!(!stderr.contains("refuses `_since`"), "sync {run}: {stderr}");
        }
    }
    let token_answers: Vec<u16> = server
        .requests()
        .iter()
        .filter(|r| r.path_and_query.ends_with("/auth/token"))
        .map(|r| r.status)
        .collect();
    assert!(
        token_answers.contains(&400) && token_answers.contains(&200),
        "{token_answers:?}"
    );
    server.shutdown().await;
}
