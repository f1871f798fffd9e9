//! SMART Backend Services on the server side: `.well-known/smart-configuration`, the token
//! endpoint (client assertions verified with real cryptography, or a client secret) and bearer
//! token checks used as the server's auth hook.
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::form;

/// `client_assertion_type` for `private_key_jwt` (RFC 7523).
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest client assertion lifetime accepted (SMART: no more than five minutes ahead).
const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;
/// Signing algorithms accepted for client assertions.
const SIGNING_ALGS: [&str; 5] = ["RS384", "ES384", "RS256", "RS512", "ES256"];
const SCOPES_SUPPORTED: [&str; 6] = [
    "system/*.read",
    "system/*.rs",
    "system/*.*",
    "system/*.cruds",
    "system/Patient.read",
    "system/Patient.rs",
];

/// Server-side SMART settings.
#[derive(Clone, Debug)]
pub struct SmartServerConfig {
    /// Lifetime of issued access tokens (can be a few seconds, to exercise refresh).
    pub token_lifetime: Duration,
    pub clients: Vec<RegisteredClient>,
}

/// A client registered with the server.
#[derive(Clone)]
pub struct RegisteredClient {
    pub client_id: String,
    /// Public JWKS (`{"keys": [...]}`) for `private_key_jwt`.
    pub jwks: Option<serde_json::Value>,
    /// Secret for `client_secret_basic` / `client_secret_post`.
    pub client_secret: Option<String>,
}

impl fmt::Debug for RegisteredClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredClient")
            .field("client_id", &self.client_id)
            .field("jwks", &self.jwks)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// What the server knows about an issued access token.
#[derive(Clone, Debug)]
struct IssuedToken {
    client_id: String,
    expires: Instant,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, IssuedToken>,
    /// `jti`s of accepted assertions, kept until the assertion's `exp` (after which the
    /// assertion itself is rejected as expired).
    seen_jti: HashMap<(String, String), i64>,
}

/// Server-side SMART Backend Services: discovery document, token endpoint, bearer checks.
#[derive(Clone)]
pub struct SmartAuth {
    config: Arc<SmartServerConfig>,
    state: Arc<Mutex<State>>,
    issued: Arc<AtomicU64>,
    rejected: Arc<AtomicU64>,
}

impl fmt::Debug for SmartAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmartAuth")
            .field("config", &self.config)
            .field("tokens_issued", &self.tokens_issued())
            .finish_non_exhaustive()
    }
}

/// An OAuth error response (RFC 6749 §5.2).
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// `WWW-Authenticate` challenge for 401s.
    challenge: Option<&'static str>,
}

impl OAuthError {
    fn invalid_request(description: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            description: description.into(),
            challenge: None,
        }
    }

    fn invalid_client(description: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: description.into(),
            challenge: Some("Basic realm=\"token\""),
        }
    }

    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(json!({ "error": self.error, "error_description": self.description })),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(challenge) = self.challenge {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

impl SmartAuth {
    pub fn new(config: SmartServerConfig) -> Self {
        Self {
            config: Arc::new(config),
            state: Arc::new(Mutex::new(State::default())),
            issued: Arc::new(AtomicU64::new(0)),
            rejected: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The `.well-known/smart-configuration` document, advertising `token_endpoint`.
    pub fn smart_configuration(&self, token_endpoint: &str) -> serde_json::Value {
        json!({
            "token_endpoint": token_endpoint,
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post"],
            "token_endpoint_auth_signing_alg_values_supported": SIGNING_ALGS,
            "grant_types_supported": ["client_credentials"],
            "scopes_supported": SCOPES_SUPPORTED,
            "capabilities": ["client-confidential-asymmetric", "client-confidential-symmetric"],
        })
    }

    /// Handles a token request. `token_endpoint` is the endpoint's public URL (the expected `aud`).
    pub fn token(
        &self,
        token_endpoint: &str,
        headers: &HeaderMap,
        form: &[(String, String)],
    ) -> Response {
        match self.grant(token_endpoint, headers, form) {
            Ok(response) => response,
            Err(err) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = err.error, description = %err.description, "token request rejected");
                err.into_response()
            }
        }
    }

    /// The auth hook: `Ok` when the request carries a valid, unexpired bearer token.
    #[allow(clippy::result_large_err)]
    pub fn check_bearer(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(unauthorized(
                None,
                "the request has no Authorization header; a bearer token is required",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(unauthorized(
                Some("invalid_request"),
                "the Authorization header is not a bearer token",
            ));
        };
        let mut state = self.lock();
        let now = Instant::now();
        match state.tokens.get(token) {
            None => Err(unauthorized(
                Some("invalid_token"),
                "the access token is unknown",
            )),
            Some(issued) if issued.expires <= now => {
                state.tokens.remove(token);
                Err(unauthorized(
                    Some("invalid_token"),
                    "the access token has expired",
                ))
            }
            Some(_) => Ok(()),
        }
    }

    /// Number of access tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// Number of token requests rejected so far.
    pub fn token_requests_rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Makes every issued token expire now (as if its lifetime had run out), so the next
    /// request with one gets a 401 saying it expired.
    pub fn expire_all_tokens(&self) {
        let now = Instant::now();
        for t in self.lock().tokens.values_mut() {
            t.expires = t.expires.min(now);
        }
    }

    /// Invalidates every issued token (as a server restart or key rotation would), so the next
    /// request with an old token gets a 401.
    pub fn revoke_all_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// The client an access token was issued to, if it is known and unexpired.
    pub fn token_client(&self, access_token: &str) -> Option<String> {
        let state = self.lock();
        state
            .tokens
            .get(access_token)
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.client_id.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent: keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn grant(
        &self,
        token_endpoint: &str,
        headers: &HeaderMap,
        form: &[(String, String)],
    ) -> Result<Response, OAuthError> {
        let mut params: HashMap<&str, &str> = HashMap::new();
        for (name, value) in form {
            if params.insert(name.as_str(), value.as_str()).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{name}` is repeated"
                )));
            }
        }
        match params.get("grant_type") {
            None => return Err(OAuthError::invalid_request("grant_type is required")),
            Some(&"client_credentials") => {}
            Some(other) => {
                return Err(OAuthError {
                    status: StatusCode::BAD_REQUEST,
                    error: "unsupported_grant_type",
                    description: format!(
                        "grant_type `{other}` is not supported; use client_credentials"
                    ),
                    challenge: None,
                });
            }
        }
        let scope = params.get("scope").map(|s| s.trim()).unwrap_or("");
        let basic = headers.get(AUTHORIZATION);
        let client_id = match (
            params.get("client_assertion"),
            basic,
            params.get("client_secret"),
        ) {
            (Some(assertion), None, None) => {
                match params.get("client_assertion_type") {
                    Some(&JWT_BEARER_ASSERTION_TYPE) => {}
                    Some(other) => {
                        return Err(OAuthError::invalid_request(format!(
                            "client_assertion_type `{other}` is not supported; use {JWT_BEARER_ASSERTION_TYPE}"
                        )));
                    }
                    None => {
                        return Err(OAuthError::invalid_request(
                            "client_assertion_type is required",
                        ));
                    }
                }
                self.verify_assertion(token_endpoint, assertion)?
            }
            (None, Some(header), None) => {
                let (id, secret) = parse_basic(header)?;
                if let Some(form_id) = params.get("client_id")
                    && *form_id != id
                {
                    return Err(OAuthError::invalid_request(
                        "client_id in the form differs from the Basic credentials",
                    ));
                }
                self.verify_secret(&id, &secret)?
            }
            (None, None, Some(secret)) => {
                let id = params
                    .get("client_id")
                    .ok_or_else(|| OAuthError::invalid_request("client_id is required"))?;
                self.verify_secret(id, secret)?
            }
            (None, None, None) => {
                return Err(OAuthError::invalid_client(
                    "no client authentication: send client_assertion, HTTP Basic credentials or client_secret",
                ));
            }
            _ => {
                return Err(OAuthError::invalid_request(
                    "more than one client authentication method was used",
                ));
            }
        };
        let scope = check_scope(scope)?;
        Ok(self.issue(client_id.id, scope))
    }

    /// Verifies a client assertion and returns the client id it authenticates.
    fn verify_assertion(
        &self,
        token_endpoint: &str,
        assertion: &str,
    ) -> Result<Authenticated, OAuthError> {
        let header = jsonwebtoken::decode_header(assertion).map_err(|e| {
            OAuthError::invalid_client(format!("client_assertion is not a valid JWT: {e}"))
        })?;
        if let Some(typ) = &header.typ
            && !typ.eq_ignore_ascii_case("JWT")
        {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion typ is `{typ}`, expected `JWT`"
            )));
        }
        let alg_name = format!("{:?}", header.alg);
        if !SIGNING_ALGS.contains(&alg_name.as_str()) {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion alg {alg_name} is not accepted"
            )));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_client("client_assertion has no kid header"))?;
        // Claims are read unverified only to find the client and its keys; nothing is trusted
        // until the signature has been checked below.
        let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
            .map_err(|e| {
                OAuthError::invalid_client(format!("client_assertion claims are unreadable: {e}"))
            })?;
        let iss = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| OAuthError::invalid_client("client_assertion has no iss claim"))?;
        let client = self
            .config
            .clients
            .iter()
            .find(|c| c.client_id == iss)
            .ok_or_else(|| {
                OAuthError::invalid_client(format!("client `{iss}` is not registered"))
            })?;
        let jwks = client.jwks.as_ref().ok_or_else(|| {
            OAuthError::invalid_client(format!(
                "client `{iss}` has no registered public keys (private_key_jwt not allowed)"
            ))
        })?;
        let jwks: JwkSet = serde_json::from_value(jwks.clone()).map_err(|e| {
            OAuthError::invalid_client(format!("the registered JWKS of `{iss}` is unusable: {e}"))
        })?;
        let jwk = jwks.find(kid).ok_or_else(|| {
            OAuthError::invalid_client(format!(
                "client `{iss}` has no registered key with kid `{kid}`"
            ))
        })?;
        check_key_fits(jwk, header.alg, kid)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
            OAuthError::invalid_client(format!("registered key `{kid}` is unusable: {e}"))
        })?;

        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.set_audience(&[token_endpoint]);
        validation.set_issuer(&[iss]);
        validation.sub = Some(iss.to_string());
        let data = jsonwebtoken::decode::<Value>(assertion, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            OAuthError::invalid_client(match e.kind() {
                ErrorKind::InvalidSignature => {
                    format!("client_assertion signature does not verify with key `{kid}`")
                }
                ErrorKind::ExpiredSignature => {
                    "client_assertion has expired (exp is in the past)".to_string()
                }
                ErrorKind::InvalidAudience => {
                    format!("client_assertion aud must be the token endpoint URL {token_endpoint}")
                }
                ErrorKind::InvalidIssuer => {
                    "client_assertion iss must be the client id".to_string()
                }
                ErrorKind::InvalidSubject => {
                    "client_assertion sub must equal iss (the client id)".to_string()
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    format!("client_assertion has no {claim} claim")
                }
                ErrorKind::ImmatureSignature => {
                    "client_assertion is not valid yet (nbf)".to_string()
                }
                other => format!("client_assertion is invalid: {other:?}"),
            })
        })?;
        let claims = data.claims;
        let now = chrono::Utc::now().timestamp();
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| OAuthError::invalid_client("client_assertion exp must be an integer"))?;
        if exp <= now {
            return Err(OAuthError::invalid_client(
                "client_assertion has expired (exp is in the past)",
            ));
        }
        if exp > now + MAX_ASSERTION_LIFETIME_SECS {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion exp is {} s ahead; at most {MAX_ASSERTION_LIFETIME_SECS} s are allowed",
                exp - now
            )));
        }
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty())
            .ok_or_else(|| OAuthError::invalid_client("client_assertion has no jti claim"))?;
        let mut state = self.lock();
        state.seen_jti.retain(|_, expires| *expires > now);
        if state
            .seen_jti
            .insert((iss.to_string(), jti.to_string()), exp)
            .is_some()
        {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion jti `{jti}` was already used (replay)"
            )));
        }
        Ok(Authenticated {
            id: iss.to_string(),
        })
    }

    fn verify_secret(&self, client_id: &str, secret: &str) -> Result<Authenticated, OAuthError> {
        let client = self
            .config
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
            .ok_or_else(|| {
                OAuthError::invalid_client(format!("client `{client_id}` is not registered"))
            })?;
        let expected = client.client_secret.as_deref().ok_or_else(|| {
            OAuthError::invalid_client(format!(
                "client `{client_id}` has no client secret (use private_key_jwt)"
            ))
        })?;
        if !constant_time_eq(expected.as_bytes(), secret.as_bytes()) {
            return Err(OAuthError::invalid_client(format!(
                "wrong client secret for `{client_id}`"
            )));
        }
        Ok(Authenticated {
            id: client_id.to_string(),
        })
    }

    fn issue(&self, client_id: String, scope: String) -> Response {
        let token =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let lifetime = self.config.token_lifetime;
        let now = Instant::now();
        {
            let mut state = self.lock();
            state.tokens.retain(|_, t| t.expires > now);
            state.tokens.insert(
                token.clone(),
                IssuedToken {
                    client_id: client_id.clone(),
                    expires: now + lifetime,
                },
            );
        }
        self.issued.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(client_id = %client_id, lifetime_ms = lifetime.as_millis() as u64, "issued access token");
        let mut response = (
            StatusCode::OK,
            axum::Json(json!({
                "access_token": token,
                "token_type": "bearer",
                "expires_in": lifetime.as_secs().max(1),
                "scope": scope,
            })),
        )
            .into_response();
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
            .headers_mut()
            .insert(PRAGMA, HeaderValue::from_static("no-cache"));
        response
    }
}

struct Authenticated {
    id: String,
}

/// The key must be of the type the assertion's `alg` needs, and agree with the key's own `alg`.
fn check_key_fits(jwk: &Jwk, alg: Algorithm, kid: &str) -> Result<(), OAuthError> {
    if let Some(key_alg) = &jwk.common.key_algorithm {
        let key_alg = format!("{key_alg:?}");
        if key_alg != format!("{alg:?}") {
            return Err(OAuthError::invalid_client(format!(
                "key `{kid}` is registered for {key_alg}, but the assertion is signed with {alg:?}"
            )));
        }
    }
    let fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512) => {
            true
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(OAuthError::invalid_client(format!(
            "key `{kid}` does not fit the assertion's alg {alg:?}"
        )))
    }
}

/// Accepts SMART system scopes (v1 `system/T.read|write|*`, v2 `system/T.cruds`).
fn check_scope(scope: &str) -> Result<String, OAuthError> {
    let invalid = |description: String| OAuthError {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_scope",
        description,
        challenge: None,
    };
    if scope.is_empty() {
        return Err(invalid(
            "scope is required (e.g. system/*.read)".to_string(),
        ));
    }
    for item in scope.split_whitespace() {
        let Some(rest) = item.strip_prefix("system/") else {
            return Err(invalid(format!(
                "scope `{item}` is not a system scope (backend services use system/...)"
            )));
        };
        let Some((resource, access)) = rest.split_once('.') else {
            return Err(invalid(format!("scope `{item}` has no access part")));
        };
        let access = access.split_once('?').map_or(access, |(a, _)| a);
        let resource_ok = resource == "*"
            || (resource.chars().all(|c| c.is_ascii_alphabetic()) && !resource.is_empty());
        let v1 = matches!(access, "read" | "write" | "*");
        let v2 = !access.is_empty()
            && access.chars().all(|c| "cruds".contains(c))
            && access
                .chars()
                .zip(access.chars().skip(1))
                .all(|(a, b)| "cruds".find(a) < "cruds".find(b));
        if !resource_ok || !(v1 || v2) {
            return Err(invalid(format!(
                "scope `{item}` is not a valid SMART system scope"
            )));
        }
    }
    Ok(scope.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Decodes `Authorization: Basic` credentials, undoing the form-urlencoding RFC 6749 §2.3.1
/// requires of the client id and secret.
fn parse_basic(header: &HeaderValue) -> Result<(String, String), OAuthError> {
    let bad = || OAuthError::invalid_client("malformed HTTP Basic credentials");
    let text = header.to_str().map_err(|_| bad())?;
    let (scheme, encoded) = text.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(format!(
            "unsupported Authorization scheme `{scheme}` at the token endpoint"
        )));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    Ok((
        form::value(id).ok_or_else(bad)?,
        form::value(secret).ok_or_else(bad)?,
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 401 with a `WWW-Authenticate: Bearer` challenge and an OperationOutcome body.
fn unauthorized(error: Option<&str>, description: &str) -> Response {
    let challenge = match error {
        Some(error) => {
            format!("Bearer realm=\"fhir\", error=\"{error}\", error_description=\"{description}\"")
        }
        None => "Bearer realm=\"fhir\"".to_string(),
    };
    let outcome = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": "login", "diagnostics": description }],
    });
    let mut response = (StatusCode::UNAUTHORIZED, outcome.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json"),
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        headers.insert(WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_v1_and_v2_are_accepted_and_others_rejected() {
        for ok in [
            "system/*.read",
            "system/*.rs",
            "system/Patient.read system/Observation.rs",
            "system/*.cruds",
            "system/Observation.rs?category=laboratory",
        ] {
            assert!(check_scope(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "patient/*.read",
            "system/*.sr",
            "system/*.readx",
            "user/Patient.read",
            "system/*",
        ] {
            assert!(check_scope(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bearer_check_rejects_missing_unknown_and_expired_tokens() {
        let auth = SmartAuth::new(SmartServerConfig {
            token_lifetime: Duration::from_millis(0),
            clients: vec![],
        });
        let missing = auth.check_bearer(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert!(
            missing
                .headers()
                .get(WWW_AUTHENTICATE)
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let issued = auth.issue("c".to_string(), "system/*.read".to_string());
        assert_eq!(issued.status(), StatusCode::OK);
        let token = auth.lock().tokens.keys().next().unwrap().clone();
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let expired = auth.check_bearer(&headers).unwrap_err();
        assert!(
            expired
                .headers()
                .get(WWW_AUTHENTICATE)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer nope"));
        assert!(auth.check_bearer(&headers).is_err());
    }
}
