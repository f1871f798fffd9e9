//! The client against the Bulk Data test server's SMART endpoints, through a whole export.
mod common;

use std::sync::Arc;
use std::time::Duration;

use bulk_test_server::smart::SmartServerConfig;
use bulk_test_server::{DataSource, Fault, FaultRule, FaultTarget, ServerConfig, TestServer};
use common::{
    CLIENT_SECRET, EC_CLIENT, RSA_CLIENT, SECRET_CLIENT, clients, file, http, jwt_config,
};
use reqwest::StatusCode;
use serde_json::Value;
use smart_auth::{AccessToken, AuthConfig, Clock, ManualClock, SecretSource, TokenProvider};

async fn server(token_lifetime: Duration) -> TestServer {
    TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 6,
            seed: 11,
        },
        base_path: "/fhir/r4".to_string(),
        requires_access_token: true,
        smart: Some(SmartServerConfig {
            token_lifetime,
            clients: clients(),
        }),
        resources_per_file: 40,
        polls_before_complete: 3,
        retry_after_secs: 1,
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

/// Token lifetimes and retry delays of the provider pass on `clock`.
fn provider_on(server: &TestServer, config: AuthConfig, clock: &ManualClock) -> TokenProvider {
    TokenProvider::with_clock(&server.base_url(), config, http(), Arc::new(clock.clone())).unwrap()
}

/// GET with the provider's token; one retry with a new token after a 401, as a Bulk Data
/// client does.
async fn get(
    client: &reqwest::Client,
    provider: &TokenProvider,
    url: &str,
    accept: &str,
) -> reqwest::Response {
    let send = |token: AccessToken| {
        client
            .get(url)
            .header(reqwest::header::AUTHORIZATION, token.header_value())
            .header(reqwest::header::ACCEPT, accept)
            .header("Prefer", "respond-async")
            .send()
    };
    let token = provider.token().await.unwrap();
    let response = send(token.clone()).await.unwrap();
    if response.status() != StatusCode::UNAUTHORIZED {
        return response;
    }
    let fresh = provider.refresh_after_unauthorized(&token).await.unwrap();
    send(fresh).await.unwrap()
}

#[tokio::test]
async fn a_whole_export_outlives_several_short_tokens() {
    let server = server(Duration::from_secs(1)).await;
    let client = http();
    let clock = ManualClock::new();
    let provider = provider_on(
        &server,
        jwt_config(EC_CLIENT, file("ec384-a.private.jwk.json")),
        &clock,
    );
    let kickoff_url = format!("{}/$export", server.base_url());

    let anonymous = client
        .get(&kickoff_url)
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers().contains_key("www-authenticate"));

    let kickoff = get(&client, &provider, &kickoff_url, "application/fhir+json").await;
    assert_eq!(kickoff.status(), StatusCode::ACCEPTED);
    let status_url = kickoff.headers()["content-location"]
        .to_str()
        .unwrap()
        .to_string();

    // The server completes after a number of polls; each Retry-After passes on the client's
    // clock, so its one-second tokens expire between polls. The loop is bounded: a few real
    // milliseconds per poll while the server plans the export.
    let mut manifest = None;
    for _ in 0..500 {
        let response = get(&client, &provider, &status_url, "application/json").await;
        match response.status() {
            StatusCode::ACCEPTED => {
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                clock.advance(Duration::from_secs(wait));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            StatusCode::OK => {
                manifest = Some(response.json::<Value>().await.unwrap());
                break;
            }
            other => panic!("status answered {other}"),
        }
    }
    let manifest = manifest.expect("the export did not complete within 500 polls");
    assert_eq!(manifest["requiresAccessToken"], true);
    let outputs = manifest["output"].as_array().unwrap();
    assert!(outputs.len() > 1);
    let mut lines = 0;
    for output in outputs {
        let url = output["url"].as_str().unwrap();
        let response = get(&client, &provider, url, "application/fhir+ndjson").await;
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        lines += response
            .text()
            .await
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .count();
        // The file itself cannot be fetched without a token.
        assert_eq!(
            client.get(url).send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(lines > 0);
    // Polling alone spans three Retry-After seconds with tokens that live one second.
    assert!(
        provider.token_refreshes() >= 3,
        "only {} tokens",
        provider.token_refreshes()
    );
    let smart = server.smart().unwrap();
    assert_eq!(smart.tokens_issued(), provider.token_refreshes());
    assert!(
        server
            .requests()
            .iter()
            .filter(|r| r.status == 200 || r.status == 202)
            .all(|r| r.authorization
                || r.path_and_query.contains("auth/token")
                || r.path_and_query.contains("smart-configuration")),
        "a request without a token succeeded"
    );
}

#[tokio::test]
async fn token_endpoint_outages_are_retried_and_persistent_ones_reported() {
    let server = server(Duration::from_secs(300)).await;
    server.faults().add(FaultRule::once(
        FaultTarget::Token,
        Fault::Transient { status: 503 },
    ));
    // Retry delays pass on the clock: the test waits for none of them.
    let clock = ManualClock::new();
    let start = clock.now();
    let config = || jwt_config(RSA_CLIENT, file("rsa-a.private.jwk.json"));
    let provider = provider_on(&server, config(), &clock);
    provider.token().await.unwrap();
    assert_eq!(provider.token_refreshes(), 1);
    assert_eq!(server.smart().unwrap().tokens_issued(), 1);
    assert_eq!(clock.now() - start, Duration::from_millis(500));

    server.faults().add(FaultRule::always(
        FaultTarget::Token,
        Fault::Fatal { status: 500 },
    ));
    let other = provider_on(&server, config(), &clock);
    let err = other.token().await.unwrap_err();
    assert!(err.is_transient());
    // Five attempts: 0.5 s, 1 s, 1 s and 1 s between them.
    assert_eq!(clock.now() - start, Duration::from_millis(4000));
    let text = err.to_string();
    assert!(
        text.contains("HTTP 500") && text.contains(&server.token_url().to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn a_bare_400_from_the_token_endpoint_is_retried_an_oauth_error_is_not() {
    let server = server(Duration::from_secs(300)).await;
    // A 400 that is no OAuth error response (Epic's token endpoint sends these now and then).
    server.faults().add(FaultRule::once(
        FaultTarget::Token,
        Fault::Fatal { status: 400 },
    ));
    let clock = ManualClock::new();
    let provider = provider_on(
        &server,
        jwt_config(RSA_CLIENT, file("rsa-a.private.jwk.json")),
        &clock,
    );
    provider.token().await.unwrap();
    assert_eq!(server.smart().unwrap().tokens_issued(), 1);

    // A client the server does not know gets an OAuth `invalid_client`: asked once only.
    let token_requests = || {
        server
            .requests()
            .iter()
            .filter(|r| r.path_and_query.ends_with("/auth/token"))
            .count()
    };
    let before = token_requests();
    let stranger = provider_on(
        &server,
        jwt_config("unknown-client", file("rsa-a.private.jwk.json")),
        &clock,
    );
    let err = stranger.token().await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.oauth_error(), Some("invalid_client"), "{err}");
    assert_eq!(token_requests() - before, 1);
}

#[tokio::test]
async fn client_secret_against_the_test_server() {
    let server = server(Duration::from_secs(300)).await;
    let config = AuthConfig::client_secret(
        SecretSource::Inline(SECRET_CLIENT.into()),
        SecretSource::Inline(CLIENT_SECRET.into()),
    );
    let provider = TokenProvider::new(&server.base_url(), config, http()).unwrap();
    assert_eq!(provider.token_endpoint().await.unwrap(), server.token_url());
    let client = http();
    let response = get(
        &client,
        &provider,
        &format!("{}/$export", server.base_url()),
        "application/fhir+json",
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_outage_during_refresh_keeps_the_current_token_until_it_expires() {
    let server = server(Duration::from_secs(10)).await;
    let config = AuthConfig {
        token_expiry_tolerance: 5,
        ..jwt_config(RSA_CLIENT, file("rsa-a.private.jwk.json"))
    };
    let clock = ManualClock::new();
    let provider = provider_on(&server, config, &clock);
    let first = provider.token().await.unwrap();
    server.faults().add(FaultRule::always(
        FaultTarget::Token,
        Fault::Fatal { status: 500 },
    ));
    // Past the refresh point (5 s before expiry), well before expiry; the four retries of the
    // refresh wait 3.5 s more on the same clock, still before expiry.
    clock.advance(Duration::from_millis(5200));
    let token_requests = || {
        server
            .requests()
            .iter()
            .filter(|r| r.path_and_query.ends_with("/auth/token"))
            .count()
    };
    let before = token_requests();
    let during = provider.token().await.unwrap();
    assert_eq!(during.secret(), first.secret());
    let attempts = token_requests() - before;
    assert_eq!(attempts, 5, "one request and four retries");
    // Within the back-off, callers get the current token without another request.
    let again = provider.token().await.unwrap();
    assert_eq!(again.secret(), first.secret());
    assert_eq!(token_requests() - before, attempts);
    assert_eq!(provider.token_refreshes(), 1);
    // Once the token has expired, the outage is the caller's error.
    clock.advance(Duration::from_secs(4));
    let err = provider.token().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(token_requests() - before, 2 * attempts);
}
