//! Access tokens: requested with a signed assertion or a client secret, cached, refreshed
//! ahead of expiry, one request at a time.
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::Utc;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::Serialize;
use serde_json::Value;
use url::Url;

use crate::backoff::Backoff;
use crate::clock::{Clock, SystemClock};
use crate::config::{AuthConfig, PRIVATE_KEY_ENV};
use crate::discovery::{self, SmartConfiguration};
use crate::error::AuthError;
use crate::key::{SigningAlgorithm, SigningKey};
use crate::secret::SecretSource;
use crate::token::{AccessToken, parse_token_response};

/// `client_assertion_type` for `private_key_jwt` (RFC 7523).
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a client assertion. SMART allows at most five minutes; four leave room for a
/// server clock that runs up to a minute behind.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(240);
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per token fetch when failures are transient (network, 5xx, 429, a bare 400):
/// flaky token endpoints (Epic's) fail several requests in a row now and then.
const FETCH_ATTEMPTS: u32 = 5;
/// 0.5 s, then 1 s: the retries of a refresh (3.5 s in all) end well before a token in its
/// refresh window expires.
const FETCH_RETRY: Backoff =
    Backoff::exponential(Duration::from_millis(500), Duration::from_secs(1));
/// After a failed refresh, callers keep getting the still-valid current token for this long
/// before another refresh is tried, so an outage does not stall every request.
const REFRESH_BACKOFF: Duration = Duration::from_secs(5);

/// How the client authenticates at the token endpoint.
#[derive(Clone, Debug)]
enum ClientAuth {
    PrivateKeyJwt { key: SecretSource },
    ClientSecret { secret: SecretSource, in_form: bool },
}

impl ClientAuth {
    fn method(&self) -> &'static str {
        match self {
            ClientAuth::PrivateKeyJwt { .. } => "private_key_jwt",
            ClientAuth::ClientSecret { in_form: false, .. } => "client_secret_basic",
            ClientAuth::ClientSecret { in_form: true, .. } => "client_secret_post",
        }
    }
}

/// Hands out access tokens for a FHIR server: cached, refreshed before expiry, and fetched by
/// one request at a time however many tasks ask. Cheap to clone (shared state).
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<Inner>,
}

struct Inner {
    fhir_base: Url,
    http: reqwest::Client,
    client_id: SecretSource,
    auth: ClientAuth,
    scope: String,
    tolerance: Duration,
    algorithm: Option<SigningAlgorithm>,
    key_id: Option<String>,
    jku: Option<Url>,
    explicit_endpoint: Option<Url>,
    /// Discovered configuration; cleared when the token endpoint misbehaves, so a server
    /// that moved its endpoint is followed.
    discovered: Mutex<Option<Arc<SmartConfiguration>>>,
    last_refresh_failure: Mutex<Option<Instant>>,
    cache: Mutex<Option<AccessToken>>,
    refresh: tokio::sync::Mutex<()>,
    refreshes: AtomicU64,
    /// Token expiry, refresh and retry delays are measured on this clock.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("TokenProvider")
            .field("fhir_base", &i.fhir_base.as_str())
            .field("client_id", &i.client_id)
            .field("auth", &i.auth)
            .field("scope", &i.scope)
            .field(
                "token_endpoint",
                &i.explicit_endpoint
                    .clone()
                    .or_else(|| self.discovered().map(|d| d.token_endpoint.clone())),
            )
            .field("token_refreshes", &i.refreshes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    jti: String,
}

impl TokenProvider {
    /// Checks the configuration (without network access) and builds the provider.
    /// `fhir_base` is the FHIR server base URL, used for SMART discovery.
    pub fn new(
        fhir_base: &Url,
        config: AuthConfig,
        http: reqwest::Client,
    ) -> Result<Self, AuthError> {
        Self::with_clock(fhir_base, config, http, Arc::new(SystemClock))
    }

    /// [`TokenProvider::new`] with an HTTP client of its own for the token endpoint: one that
    /// never follows redirects, so credentials are sent nowhere but to the endpoint itself.
    pub fn for_endpoint(
        fhir_base: &Url,
        config: AuthConfig,
        connect_timeout: Duration,
    ) -> Result<Self, AuthError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .build()
            .map_err(|e| {
                AuthError::Config(format!(
                    "cannot build the HTTP client for the token endpoint: {e}"
                ))
            })?;
        Self::new(fhir_base, config, http)
    }

    /// [`TokenProvider::new`] measuring token lifetimes and retry delays on `clock`.
    pub fn with_clock(
        fhir_base: &Url,
        config: AuthConfig,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuthError> {
        if !config.enabled {
            return Err(AuthError::Config(
                "authentication is not enabled (set enabled = true)".to_string(),
            ));
        }
        let client_id = config
            .client_id
            .ok_or_else(|| AuthError::Config("client_id is required".to_string()))?;
        if let SecretSource::Inline(id) = &client_id
            && id.expose().trim().is_empty()
        {
            return Err(AuthError::Config("client_id is empty".to_string()));
        }
        let auth = match (config.private_key_jwk, config.client_secret) {
            (Some(_), Some(_)) => {
                return Err(AuthError::Config(
                    "both private_key_jwk and client_secret are set; configure exactly one"
                        .to_string(),
                ));
            }
            (Some(key), None) => ClientAuth::PrivateKeyJwt { key },
            (None, Some(secret)) => ClientAuth::ClientSecret {
                secret,
                in_form: config.use_form_for_basic_auth,
            },
            (None, None) if std::env::var_os(PRIVATE_KEY_ENV).is_some() => {
                ClientAuth::PrivateKeyJwt {
                    key: SecretSource::Env(PRIVATE_KEY_ENV.to_string()),
                }
            }
            (None, None) => {
                return Err(AuthError::Config(format!(
                    "neither private_key_jwk nor client_secret is set (and {PRIVATE_KEY_ENV} is not in the environment)"
                )));
            }
        };
        // An inline key is checked now, so a bad key fails at start-up rather than at the first export.
        if let ClientAuth::PrivateKeyJwt {
            key: SecretSource::Inline(text),
        } = &auth
        {
            SigningKey::parse(text.expose(), config.key_id.as_deref(), config.algorithm)?;
        }
        let scope = config.scope.trim().to_string();
        if scope.is_empty() {
            return Err(AuthError::Config("scope is empty".to_string()));
        }
        if !config.use_smart && config.token_endpoint.is_none() {
            return Err(AuthError::Config(
                "use_smart is false, so token_endpoint is required".to_string(),
            ));
        }
        for url in [Some(fhir_base), config.token_endpoint.as_ref()]
            .into_iter()
            .flatten()
        {
            warn_if_cleartext(url);
        }
        Ok(TokenProvider {
            inner: Arc::new(Inner {
                fhir_base: fhir_base.clone(),
                http,
                client_id,
                auth,
                scope,
                tolerance: Duration::from_secs(config.token_expiry_tolerance),
                algorithm: config.algorithm,
                key_id: config.key_id,
                jku: config.jku,
                explicit_endpoint: config.token_endpoint,
                discovered: Mutex::new(None),
                last_refresh_failure: Mutex::new(None),
                cache: Mutex::new(None),
                refresh: tokio::sync::Mutex::new(()),
                refreshes: AtomicU64::new(0),
                clock,
            }),
        })
    }

    /// A valid access token: the cached one while it is fresh, else a new one. Concurrent
    /// callers during a refresh wait for that single request. If a refresh fails while the
    /// cached token has not yet expired, the cached token is returned (and the failure logged).
    pub async fn token(&self) -> Result<AccessToken, AuthError> {
        if let Some(token) = self.cached().filter(AccessToken::is_fresh) {
            return Ok(token);
        }
        let _guard = self.inner.refresh.lock().await;
        let cached = self.cached();
        if let Some(token) = cached.as_ref().filter(|t| t.is_fresh()) {
            return Ok(token.clone());
        }
        let backing_off = self
            .inner
            .last_refresh_failure
            .lock()
            .ok()
            .and_then(|f| *f)
            .is_some_and(|at| self.inner.clock.now().duration_since(at) < REFRESH_BACKOFF);
        if backing_off && let Some(still_valid) = cached.as_ref().filter(|t| !t.is_expired()) {
            return Ok(still_valid.clone());
        }
        let result = self.fetch_with_retry().await;
        if let Ok(mut failure) = self.inner.last_refresh_failure.lock() {
            *failure = result.is_err().then(|| self.inner.clock.now());
        }
        match result {
            Ok(token) => Ok(token),
            Err(err) => match cached.filter(|t| !t.is_expired()) {
                Some(still_valid) => {
                    tracing::warn!(error = %err, expires_at = %still_valid.expires_at(), "token refresh failed; using the current token until it expires");
                    Ok(still_valid)
                }
                None => Err(err),
            },
        }
    }

    /// After the server answered 401 to a request made with `rejected`: returns the cached
    /// token if another task already replaced it, else fetches a new one.
    pub async fn refresh_after_unauthorized(
        &self,
        rejected: &AccessToken,
    ) -> Result<AccessToken, AuthError> {
        let _guard = self.inner.refresh.lock().await;
        if let Some(token) = self
            .cached()
            .filter(|t| !t.same_token(rejected) && !t.is_expired())
        {
            return Ok(token);
        }
        // The rejected token must not be served again, even if the fetch below fails.
        if let Ok(mut cache) = self.inner.cache.lock()
            && cache.as_ref().is_some_and(|t| t.same_token(rejected))
        {
            *cache = None;
        }
        self.fetch_with_retry().await
    }

    /// Number of tokens obtained from the token endpoint so far.
    pub fn token_refreshes(&self) -> u64 {
        self.inner.refreshes.load(Ordering::Relaxed)
    }

    /// The token endpoint: the configured one, or the one discovered (once) from the server.
    pub async fn token_endpoint(&self) -> Result<Url, AuthError> {
        if let Some(url) = &self.inner.explicit_endpoint {
            return Ok(url.clone());
        }
        Ok(self.smart_configuration().await?.token_endpoint.clone())
    }

    fn discovered(&self) -> Option<Arc<SmartConfiguration>> {
        self.inner.discovered.lock().ok().and_then(|d| d.clone())
    }

    /// The FHIR base URL this provider authenticates for.
    pub fn fhir_base(&self) -> &Url {
        &self.inner.fhir_base
    }

    async fn smart_configuration(&self) -> Result<Arc<SmartConfiguration>, AuthError> {
        if let Some(config) = self.discovered() {
            return Ok(config);
        }
        let config = Arc::new({
            let config = discovery::discover(&self.inner.http, &self.inner.fhir_base).await?;
            let method = self.inner.auth.method();
            if !config.allows_auth_method(method) {
                return Err(AuthError::Discovery {
                    url: discovery::smart_configuration_url(&self.inner.fhir_base).to_string(),
                    reason: format!(
                        "the server does not support {method} (token_endpoint_auth_methods_supported: {})",
                        config
                            .token_endpoint_auth_methods_supported
                            .as_deref()
                            .unwrap_or_default()
                            .join(", ")
                    ),
                });
            }
            warn_if_cleartext(&config.token_endpoint);
            tracing::debug!(token_endpoint = %config.token_endpoint, "discovered SMART configuration");
            config
        });
        if let Ok(mut slot) = self.inner.discovered.lock() {
            *slot = Some(config.clone());
        }
        Ok(config)
    }

    fn cached(&self) -> Option<AccessToken> {
        self.inner.cache.lock().ok().and_then(|c| c.clone())
    }

    async fn fetch_with_retry(&self) -> Result<AccessToken, AuthError> {
        let mut attempt = 1;
        loop {
            match self.fetch().await {
                Ok(token) => {
                    if let Ok(mut cache) = self.inner.cache.lock() {
                        *cache = Some(token.clone());
                    }
                    self.inner.refreshes.fetch_add(1, Ordering::Relaxed);
                    return Ok(token);
                }
                Err(err) if err.is_transient() && attempt < FETCH_ATTEMPTS => {
                    self.forget_discovery(&err);
                    let delay = FETCH_RETRY.delay(attempt);
                    tracing::warn!(error = %err, attempt, retry_in_ms = delay.as_millis() as u64, "token request failed; retrying");
                    self.inner.clock.sleep(delay).await;
                    attempt += 1;
                }
                Err(err) => {
                    self.forget_discovery(&err);
                    return Err(err);
                }
            }
        }
    }

    /// A token endpoint that fails other than with an OAuth error may have moved: discover
    /// it again next time.
    fn forget_discovery(&self, err: &AuthError) {
        if matches!(
            err,
            AuthError::Http { .. } | AuthError::TokenResponse { .. }
        ) && let Ok(mut slot) = self.inner.discovered.lock()
        {
            *slot = None;
        }
    }

    async fn fetch(&self) -> Result<AccessToken, AuthError> {
        let inner = &self.inner;
        let endpoint = self.token_endpoint().await?;
        let client_id = inner.client_id.load().await?;
        let client_id = client_id.expose().trim();

        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".to_string()),
            ("scope", inner.scope.clone()),
        ];
        let mut request = inner.http.post(endpoint.clone());
        match &inner.auth {
            ClientAuth::PrivateKeyJwt { key } => {
                let key = self.signing_key(key).await?;
                let assertion = self.assertion(&key, client_id, &endpoint)?;
                form.push((
                    "client_assertion_type",
                    JWT_BEARER_ASSERTION_TYPE.to_string(),
                ));
                form.push(("client_assertion", assertion));
            }
            ClientAuth::ClientSecret { secret, in_form } => {
                let secret = secret.load().await?;
                if *in_form {
                    form.push(("client_id", client_id.to_string()));
                    form.push(("client_secret", secret.expose().to_string()));
                } else {
                    request = request.header(
                        AUTHORIZATION,
                        basic_authorization(client_id, secret.expose()),
                    );
                }
            }
        }
        tracing::debug!(%endpoint, method = inner.auth.method(), scope = %inner.scope, "requesting access token");
        let response = request
            .header(ACCEPT, "application/json")
            .form(&form)
            .timeout(TOKEN_REQUEST_TIMEOUT)
            .send()
            .await;
        // The form held the assertion or secret: clear it before anything else can fail.
        for (_, value) in form.iter_mut() {
            zeroize::Zeroize::zeroize(value);
        }
        let response = response.map_err(|source| AuthError::Http {
            url: endpoint.to_string(),
            source,
        })?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        let body = zeroize::Zeroizing::new(
            response
                .bytes()
                .await
                .map_err(|source| AuthError::Http {
                    url: endpoint.to_string(),
                    source,
                })?
                .to_vec(),
        );
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let error = json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(Value::as_str);
            return Err(match error {
                Some(error) => AuthError::TokenRejected {
                    url: endpoint.to_string(),
                    status: status.as_u16(),
                    error: error.to_string(),
                    description: json
                        .as_ref()
                        .and_then(|j| j.get("error_description"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                },
                None => AuthError::TokenResponse {
                    url: endpoint.to_string(),
                    status: status.as_u16(),
                    reason: format!(
                        "an error without an OAuth error body (content-type {content_type})"
                    ),
                },
            });
        }
        let json = json.ok_or_else(|| AuthError::TokenResponse {
            url: endpoint.to_string(),
            status: status.as_u16(),
            reason: format!("the body is not JSON (content-type {content_type})"),
        })?;
        let token = parse_token_response(&json, inner.tolerance, inner.clock.clone()).map_err(
            |reason| AuthError::TokenResponse {
                url: endpoint.to_string(),
                status: status.as_u16(),
                reason,
            },
        )?;
        tracing::info!(%endpoint, expires_at = %token.expires_at(), scope = token.scope().unwrap_or(""), "obtained access token");
        Ok(token)
    }

    /// Loads and parses the key, choosing an algorithm the server accepts when none is fixed.
    async fn signing_key(&self, source: &SecretSource) -> Result<SigningKey, AuthError> {
        let inner = &self.inner;
        let text = source.load().await?;
        let key = SigningKey::parse(text.expose(), inner.key_id.as_deref(), inner.algorithm)?;
        let Some(discovered) = (if inner.explicit_endpoint.is_none() {
            self.discovered()
        } else {
            None
        }) else {
            return Ok(key);
        };
        if discovered.allows_signing_alg(key.algorithm().as_str()) {
            return Ok(key);
        }
        let advertised = discovered
            .token_endpoint_auth_signing_alg_values_supported
            .as_deref()
            .unwrap_or_default()
            .join(", ");
        if inner.algorithm.is_none() {
            // The key's default algorithm is not accepted: try the others of the same key type.
            for alt in SigningAlgorithm::ALL {
                if alt != key.algorithm()
                    && discovered.allows_signing_alg(alt.as_str())
                    && let Ok(other) =
                        SigningKey::parse(text.expose(), inner.key_id.as_deref(), Some(alt))
                {
                    return Ok(other);
                }
            }
        }
        Err(AuthError::Discovery {
            url: discovery::smart_configuration_url(&inner.fhir_base).to_string(),
            reason: format!(
                "the server accepts assertions signed with [{advertised}], but the key signs with {}",
                key.algorithm()
            ),
        })
    }

    fn assertion(
        &self,
        key: &SigningKey,
        client_id: &str,
        endpoint: &Url,
    ) -> Result<String, AuthError> {
        let now = Utc::now().timestamp();
        let claims = AssertionClaims {
            iss: client_id,
            sub: client_id,
            aud: endpoint.as_str(),
            exp: now + ASSERTION_LIFETIME.as_secs() as i64,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        key.sign(&claims, self.inner.jku.as_ref().map(Url::as_str))
    }
}

/// `Authorization: Basic` for a client secret: id and secret are form-urlencoded before being
/// joined and base64-encoded, as RFC 6749 §2.3.1 requires.
pub fn basic_authorization(client_id: &str, client_secret: &str) -> HeaderValue {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let credentials =
        zeroize::Zeroizing::new(format!("{}:{}", encode(client_id), encode(client_secret)));
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes());
    // base64 output is always a valid header value.
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

fn warn_if_cleartext(url: &Url) {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        tracing::warn!(%url, "credentials and tokens will travel unencrypted over http; use https");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_urlencoded_before_base64() {
        let value = basic_authorization("my client", "p@ss:w+rd/ü");
        assert!(value.is_sensitive());
        let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(decoded, "my+client:p%40ss%3Aw%2Brd%2F%C3%BC");
    }
}
