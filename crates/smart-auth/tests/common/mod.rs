//! Shared test fixtures: keys on disk, a SMART authorization server on loopback built from the
//! test server's `SmartAuth`, and tracing capture.
#![allow(dead_code)]
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bulk_test_server::smart::{RegisteredClient, SmartAuth, SmartServerConfig};
use serde_json::{Value, json};
use smart_auth::{AuthConfig, SecretSource};
use url::Url;

pub const RSA_CLIENT: &str = "rsa-client";
pub const EC_CLIENT: &str = "ec-client";
pub const ANY_ALG_CLIENT: &str = "any-alg-client";
pub const SECRET_CLIENT: &str = "secret client/1";
pub const CLIENT_SECRET: &str = "s3cr3t: with spaces+plus&percent%";

/// An HTTP client for the tests' requests (and the providers' token requests).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `private_key_jwt` settings for `client_id` with `key`.
pub fn jwt_config(client_id: &str, key: SecretSource) -> AuthConfig {
    AuthConfig::private_key_jwt(SecretSource::Inline(client_id.into()), key)
}

/// A key fixture as a secret file.
pub fn file(name: &str) -> SecretSource {
    SecretSource::File(key_path(name))
}

pub fn key_path(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/keys")
    .join(name)
}

pub fn key_text(name: &str) -> String {
    std::fs::read_to_string(key_path(name)).unwrap()
}

pub fn public_jwk(name: &str) -> Value {
    serde_json::from_str(&key_text(&format!("{name}.public.jwk.json"))).unwrap()
}

/// The registered clients: public keys come from the fixtures, generated independently of
/// the code under test.
pub fn clients() -> Vec<RegisteredClient> {
    let mut no_alg = public_jwk("rsa-a");
    no_alg.as_object_mut().unwrap().remove("alg");
    vec![
        RegisteredClient {
            client_id: RSA_CLIENT.to_string(),
            jwks: Some(json!({ "keys": [public_jwk("rsa-a")] })),
            client_secret: None,
        },
        RegisteredClient {
            client_id: EC_CLIENT.to_string(),
            jwks: Some(json!({ "keys": [public_jwk("ec384-a"), public_jwk("ec256-a")] })),
            client_secret: None,
        },
        RegisteredClient {
            client_id: ANY_ALG_CLIENT.to_string(),
            jwks: Some(json!({ "keys": [no_alg] })),
            client_secret: None,
        },
        RegisteredClient {
            client_id: SECRET_CLIENT.to_string(),
            jwks: None,
            client_secret: Some(CLIENT_SECRET.to_string()),
        },
    ]
}

/// A FHIR server on loopback with SMART Backend Services under `/fhir/r4`:
/// - `/fhir/r4/.well-known/smart-configuration`, `/fhir/r4/auth/token`, protected `/fhir/r4/Patient`;
/// - `/fhir/r4/auth/token-alias`: the same token endpoint reached under another URL (so the
///   client's `aud` is not the server's token endpoint);
/// - `/limited/.well-known/smart-configuration`: advertises client secrets only;
/// - `/rs256/.well-known/smart-configuration`: accepts only RS256 assertions;
/// - `/nosmart`: no discovery document.
pub struct AuthServer {
    pub base: Url,
    pub origin: String,
    pub token_url: String,
    pub auth: SmartAuth,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct AppState {
    auth: SmartAuth,
    token_url: String,
}

impl AuthServer {
    pub async fn start(token_lifetime: Duration) -> AuthServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = format!("http://{addr}");
        let token_url = format!("{origin}/fhir/r4/auth/token");
        let auth = SmartAuth::new(SmartServerConfig {
            token_lifetime,
            clients: clients(),
        });
        let state = AppState {
            auth: auth.clone(),
            token_url: token_url.clone(),
        };
        let app = Router::new()
            .route("/fhir/r4/.well-known/smart-configuration", get(discovery))
            .route("/fhir/r4/auth/token", post(token))
            .route("/fhir/r4/auth/token-alias", post(token))
            .route("/fhir/r4/Patient", get(patients))
            .route(
                "/limited/.well-known/smart-configuration",
                get(limited_discovery),
            )
            .route(
                "/rs256/.well-known/smart-configuration",
                get(rs256_discovery),
            )
            .with_state(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        AuthServer {
            base: Url::parse(&format!("{origin}/fhir/r4")).unwrap(),
            origin,
            token_url,
            auth,
            task,
        }
    }

    pub fn url(&self, path: &str) -> Url {
        Url::parse(&format!("{}{path}", self.origin)).unwrap()
    }

    /// GET /fhir/r4/Patient with the given Authorization header value; returns the status.
    pub async fn get_patients(
        &self,
        http: &reqwest::Client,
        token: &smart_auth::AccessToken,
    ) -> u16 {
        http.get(format!("{}/Patient", self.base))
            .header(reqwest::header::AUTHORIZATION, token.header_value())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn discovery(State(state): State<AppState>) -> Response {
    axum::Json(state.auth.smart_configuration(&state.token_url)).into_response()
}

async fn limited_discovery(State(state): State<AppState>) -> Response {
    let mut doc = state.auth.smart_configuration(&state.token_url);
    doc["token_endpoint_auth_methods_supported"] = json!(["client_secret_basic"]);
    axum::Json(doc).into_response()
}

async fn rs256_discovery(State(state): State<AppState>) -> Response {
    let mut doc = state.auth.smart_configuration(&state.token_url);
    doc["token_endpoint_auth_signing_alg_values_supported"] = json!(["RS256"]);
    axum::Json(doc).into_response()
}

async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Response {
    state.auth.token(&state.token_url, &headers, &form)
}

async fn patients(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match state.auth.check_bearer(&headers) {
        Ok(()) => axum::Json(json!({"resourceType": "Bundle", "type": "searchset", "total": 0}))
            .into_response(),
        Err(rejection) => rejection,
    }
}

/// Collects everything written by a tracing subscriber.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The process-wide capture: a TRACE-level global subscriber installed on first use.
    /// Global rather than per-thread, because tracing caches per-callsite interest and a
    /// thread-local subscriber can miss events while other tests run in parallel.
    pub fn global() -> &'static LogCapture {
        static GLOBAL: std::sync::OnceLock<LogCapture> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(|| {
            let capture = LogCapture::default();
            let writer = capture.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
            capture
        })
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
