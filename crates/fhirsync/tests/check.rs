//! `fhirsync check` against the test server's profiles: what it finds, what it recommends,
//! and its exit code when a sync cannot work.
mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use bulk_test_server::{DataSource, Profile, TestServer};
use common::{profile_server, service};
use fhir_bulk::{BulkClient, ClientConfig};
use fhirsync::check::{CheckOptions, CheckReport, check};

async fn start(profile: Profile) -> TestServer {
    let data = DataSource::Synthetic {
        patients: 4,
        seed: 3,
    };
    profile_server(profile, data, 10_000).await
}

/// A cloud profile's server writing its files to `store` (with `options`).
async fn cloud_server(
    profile: Profile,
    store: &str,
    options: BTreeMap<String, String>,
) -> TestServer {
    TestServer::start(bulk_test_server::ServerConfig {
        data: DataSource::Synthetic {
            patients: 4,
            seed: 3,
        },
        polls_before_complete: 1,
        retry_after_secs: 0,
        profile,
        output_store: Some(bulk_test_server::OutputStore {
            url: store.into(),
            options,
        }),
        ..bulk_test_server::ServerConfig::default()
    })
    .await
    .expect("test server starts")
}

async fn run_check(server: &TestServer, group: Option<&str>) -> CheckReport {
    run_check_with(server, group, Default::default()).await
}

async fn run_check_with(
    server: &TestServer,
    group: Option<&str>,
    storage_options: BTreeMap<String, String>,
) -> CheckReport {
    let mut config = ClientConfig::new(server.base_url());
    config.storage_options = storage_options;
    config.poll.min_delay = Duration::from_millis(10);
    config.poll.initial_delay = Duration::from_millis(20);
    config.retry.max_retries = 1;
    config.retry.initial_backoff = Duration::from_millis(20);
    let client = BulkClient::new(config).expect("a client");
    let opts = CheckOptions {
        fhir_endpoint: server.base_url(),
        group_id: group.map(str::to_string),
        resource_type: "Patient".into(),
        timeout: Duration::from_secs(60),
    };
    check(&opts, &client, None).await
}

fn finding<'a>(r: &'a CheckReport, what: &str) -> &'a fhirsync::check::Finding {
    r.findings
        .iter()
        .find(|f| f.what == what)
        .unwrap_or_else(|| panic!("no finding {what}: {}", r.to_text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_server_supports_everything_a_sync_uses() {
    let server = start(Profile::Spec).await;
    let r = run_check(&server, None).await;
    let text = r.to_text();
    for what in [
        "_since",
        "_until",
        "_typeFilter",
        "_elements",
        "gzip",
        "meta.lastUpdated",
    ] {
        assert_eq!(r.works(what), Some(true), "{what}: {text}");
    }
    assert!(
        finding(&r, "file download").detail.contains("4 lines"),
        "{text}"
    );
    assert!(r.blocking.is_empty(), "{text}");
    assert_eq!(r.known_server, None);
    // Every trial job was deleted again.
    assert_eq!(server.requests_in_flight(), 0);
    let deletes = server
        .requests()
        .iter()
        .filter(|q| q.method == "DELETE")
        .count();
    let kick_offs = server
        .requests()
        .iter()
        .filter(|q| q.path_and_query.contains("$export") && q.status == 202)
        .count();
    assert_eq!(deletes, kick_offs, "{text}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epic_is_named_and_its_limits_lead_to_full_refreshes() {
    let server = start("epic".parse().unwrap()).await;
    let r = run_check(&server, Some("grp-0")).await;
    let text = r.to_text();
    assert_eq!(r.known_server.as_deref(), Some("epic"), "{text}");
    assert_eq!(r.works("_since"), Some(false), "{text}");
    assert_eq!(r.works("meta.lastUpdated"), Some(false), "{text}");
    assert!(r.blocking.is_empty(), "{text}");
    assert!(
        r.recommendations
            .iter()
            .any(|x| x.contains("full_refresh = true")),
        "{text}"
    );
    assert!(
        r.recommendations
            .iter()
            .any(|x| x.contains("lack `meta.lastUpdated`")),
        "{text}"
    );

    // Without a Group, no level works: a blocker that names --group-id.
    let r = run_check(&server, None).await;
    assert_eq!(r.blocking.len(), 1, "{}", r.to_text());
    assert!(r.blocking[0].contains("--group-id"), "{:?}", r.blocking);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oracle_falls_back_to_patient_level_and_aidbox_files_need_no_token() {
    let oracle = start("oracle".parse().unwrap()).await;
    let r = run_check(&oracle, None).await;
    let text = r.to_text();
    assert_eq!(r.known_server.as_deref(), Some("oracle"), "{text}");
    assert!(text.contains("Patient export accepted"), "{text}");
    assert!(text.contains("system: "), "{text}");
    assert!(
        finding(&r, "files").detail.contains("on the FHIR server"),
        "files are fetched from the FHIR server, which redirects: {text}"
    );
    oracle.shutdown().await;

    let aidbox = start(Profile::Aidbox).await;
    let r = run_check(&aidbox, None).await;
    let text = r.to_text();
    assert_eq!(r.known_server.as_deref(), Some("aidbox"), "{text}");
    let files = &finding(&r, "files").detail;
    assert!(
        files.contains("another origin") && files.contains("without a token"),
        "{text}"
    );
    assert_eq!(r.works("file download"), Some(true), "{text}");
    aidbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_json_and_fails_when_a_sync_cannot_work() {
    let server = start("epic".parse().unwrap()).await;
    let base = server.base_url().to_string();
    let bin = env!("CARGO_BIN_EXE_fhirsync");
    let run = |args: Vec<String>| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(bin)
                .args([
                    "check",
                    "--fhir-endpoint",
                    &base,
                    "--json",
                    "--timeout",
                    "60",
                ])
                .args(args)
                .output()
                .expect("fhirsync runs")
        })
    };
    let ok = run(vec!["--group-id".into(), "grp-0".into()])
        .await
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("JSON on stdout");
    assert_eq!(report["known_server"], "epic");
    assert!(report["blocking"].as_array().is_some_and(Vec::is_empty));

    let blocked = run(Vec::new()).await.unwrap();
    assert!(!blocked.status.success());
    let stderr = String::from_utf8_lossy(&blocked.stderr);
    assert!(stderr.contains("a sync cannot work"), "{stderr}");
    server.shutdown().await;
}

/// Azure takes `_till` for `_until`, and its files are blobs read with the storage
/// credential (Azurite's, from the environment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_takes_till_and_its_files_are_blobs() {
    if !service("FHIRSYNC_TEST_AZURITE_URL") {
        return;
    }
    let server = cloud_server(
        Profile::Azure,
        &format!("az://fhirsync-test/check-{}", uuid::Uuid::new_v4()),
        [("azure_storage_use_emulator".to_string(), "true".to_string())].into(),
    )
    .await;
    let r = run_check(&server, None).await;
    let text = r.to_text();
    assert_eq!(r.known_server.as_deref(), Some("azure"), "{text}");
    assert_eq!(r.works("_until"), Some(false), "{text}");
    assert_eq!(r.works("_till"), Some(true), "{text}");
    assert!(
        r.recommendations
            .iter()
            .any(|x| x.contains("--until-parameter _till")),
        "{text}"
    );
    assert!(
        finding(&r, "files").detail.contains("Azure storage"),
        "{text}"
    );
    assert_eq!(r.works("file download"), Some(true), "{text}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_a_bucket_are_named_with_their_cloud_and_read_with_its_settings() {
    let gcs = gcs_emulator::GcsEmulator::start()
        .await
        .expect("the GCS emulator");
    gcs.create_bucket("lake");
    let settings = gcs.client_settings();
    let server = cloud_server(Profile::Gcp, "gs://lake/exports", settings.clone()).await;
    let r = run_check_with(&server, None, settings).await;
    let text = r.to_text();
    assert_eq!(r.known_server.as_deref(), Some("gcp"), "{text}");
    let files = &finding(&r, "files").detail;
    assert!(files.contains("Google Cloud Storage"), "{text}");
    assert_eq!(r.works("file download"), Some(true), "{text}");
    assert!(
        r.recommendations
            .iter()
            .any(|x| x.contains("--export-storage-option")),
        "{text}"
    );
    server.shutdown().await;
}
