//! SMART Backend Services tokens against the test server: the token goes to the FHIR origin
//! (kick-off, status) and never to the file server on another origin.
mod common;

use std::sync::Arc;
use std::time::Duration;

use bulk_test_server::smart::{RegisteredClient, SmartServerConfig};
use bulk_test_server::{DataSource, FileServing, Origin, ServerConfig, TestServer};
use common::{content, export_system, fast_config};
use fhir_bulk::{BulkClient, ExportRequest};
use smart_auth::{AuthConfig, Secret, SecretSource, TokenProvider};

async fn smart_server(
    files: FileServing,
    redirect_files: bool,
    token_lifetime: Duration,
) -> TestServer {
    TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 4,
            seed: 11,
        },
        resources_per_file: 50,
        files,
        redirect_files,
        requires_access_token: false,
        smart: Some(SmartServerConfig {
            token_lifetime,
            clients: vec![RegisteredClient {
                client_id: "sync".into(),
                jwks: None,
                client_secret: Some("s3cret".into()),
            }],
        }),
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

fn client(server: &TestServer) -> BulkClient {
    let auth = AuthConfig::client_secret(
        SecretSource::Inline(Secret::new("sync")),
        SecretSource::Inline(Secret::new("s3cret")),
    );
    let provider = TokenProvider::new(&server.base_url(), auth, reqwest::Client::new()).unwrap();
    let mut config = fast_config(server.base_url());
    config.bearer = Some(Arc::new(provider));
    BulkClient::new(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_goes_to_the_fhir_origin_only() {
    for redirect in [false, true] {
        let server =
            smart_server(FileServing::OtherOrigin, redirect, Duration::from_secs(300)).await;
        let dir = tempfile::tempdir().unwrap();
        let summary = export_system(&client(&server), dir.path()).await.unwrap();
        assert!(summary.resources > 0);
        assert!(!content(dir.path()).is_empty());
        let requests = server.requests();
        let files: Vec<_> = requests
            .iter()
            .filter(|r| r.origin == Origin::Files)
            .collect();
        assert!(!files.is_empty());
        assert!(
            files.iter().all(|r| !r.authorization),
            "token sent to the file origin: {files:?}"
        );
        let api: Vec<_> = requests
            .iter()
            .filter(|r| {
                r.origin == Origin::Fhir
                    && (r.path_and_query.contains("$export")
                        || r.path_and_query.contains("bulkstatus"))
            })
            .collect();
        assert!(
            api.iter().all(|r| r.authorization && r.status != 401),
            "{api:?}"
        );
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_are_replaced_after_a_401() {
    let server = smart_server(FileServing::SameOrigin, false, Duration::from_secs(300)).await;
    let client = client(&server);
    let job = client.kick_off(&ExportRequest::system()).await.unwrap();
    let smart = server.smart().unwrap();
    let issued = smart.tokens_issued();
    smart.revoke_all_tokens();
    client.wait_for_manifest(&job).await.unwrap();
    assert_eq!(
        smart.tokens_issued(),
        issued + 1,
        "one new token after the 401"
    );
    assert!(server.requests().iter().any(|r| r.status == 401));
    server.shutdown().await;
}
