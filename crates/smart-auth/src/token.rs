//! Access tokens as the token endpoint hands them out: the token, its lifetime read from the
//! response, and when it is due for refresh on the provider's clock.
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::HeaderValue;
use serde_json::Value;

use crate::clock::Clock;
use crate::secret::Secret;

/// Assumed token lifetime when the server omits `expires_in`: five minutes, the lifetime SMART
/// recommends, so a token is never assumed to live longer than is usual.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// An OAuth access token. `Debug` never shows the token.
#[derive(Clone)]
pub struct AccessToken {
    inner: Arc<TokenInner>,
}

struct TokenInner {
    value: Secret,
    header: HeaderValue,
    expires_at: DateTime<Utc>,
    expires: Instant,
    refresh_at: Instant,
    scope: Option<String>,
    clock: Arc<dyn Clock>,
}

impl AccessToken {
    fn new(
        value: Secret,
        lifetime: Duration,
        tolerance: Duration,
        scope: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let mut header =
            HeaderValue::from_str(&format!("Bearer {}", value.expose())).map_err(|_| {
                "the access token holds characters not allowed in an HTTP header".to_string()
            })?;
        header.set_sensitive(true);
        let now = clock.now();
        let margin = tolerance.min(lifetime / 2);
        let expires_at =
            Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX);
        Ok(AccessToken {
            inner: Arc::new(TokenInner {
                value,
                header,
                expires_at,
                expires: now + lifetime,
                refresh_at: now + (lifetime - margin),
                scope,
                clock,
            }),
        })
    }

    /// `Authorization` header value (`Bearer …`), marked sensitive so HTTP stacks do not log it.
    pub fn header_value(&self) -> HeaderValue {
        self.inner.header.clone()
    }

    /// When the server said the token expires (or [`DEFAULT_TOKEN_LIFETIME`] after issue).
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.inner.expires_at
    }

    /// The scope the server granted, when it said.
    pub fn scope(&self) -> Option<&str> {
        self.inner.scope.as_deref()
    }

    /// The token itself, for callers that do not use [`AccessToken::header_value`].
    pub fn secret(&self) -> &Secret {
        &self.inner.value
    }

    pub fn is_expired(&self) -> bool {
        self.inner.clock.now() >= self.inner.expires
    }

    /// Not yet due for refresh.
    pub(crate) fn is_fresh(&self) -> bool {
        self.inner.clock.now() < self.inner.refresh_at
    }

    pub(crate) fn same_token(&self, other: &AccessToken) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.value == other.inner.value
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[redacted]")
            .field("expires_at", &self.inner.expires_at)
            .field("scope", &self.inner.scope)
            .finish()
    }
}

/// `expires_in` as a lifetime: a number or a numeric string; absent or unusable values give
/// [`DEFAULT_TOKEN_LIFETIME`].
pub fn parse_expires_in(value: Option<&Value>) -> Option<Duration> {
    let seconds = match value? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    // Bounded so that the duration and timestamps stay representable (about 31 years).
    (1.0..1e9)
        .contains(&seconds)
        .then(|| Duration::from_secs_f64(seconds))
}

/// A successful token response as a token read on `clock`.
pub(crate) fn parse_token_response(
    json: &Value,
    tolerance: Duration,
    clock: Arc<dyn Clock>,
) -> Result<AccessToken, String> {
    let access_token = match json.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() => Secret::new(s.as_str()),
        Some(_) => return Err("`access_token` is empty or not a string".to_string()),
        None => return Err("the response has no `access_token`".to_string()),
    };
    match json.get("token_type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(t) => {
            return Err(format!(
                "token_type is {t:?}; only bearer tokens are supported"
            ));
        }
        None => tracing::debug!("token response has no token_type; assuming bearer"),
    }
    let lifetime = match json.get("expires_in") {
        None => {
            tracing::debug!(
                assumed_seconds = DEFAULT_TOKEN_LIFETIME.as_secs(),
                "token response has no expires_in"
            );
            DEFAULT_TOKEN_LIFETIME
        }
        Some(raw) => parse_expires_in(Some(raw)).unwrap_or_else(|| {
            tracing::warn!(
                assumed_seconds = DEFAULT_TOKEN_LIFETIME.as_secs(),
                "token response has an unusable expires_in"
            );
            DEFAULT_TOKEN_LIFETIME
        }),
    };
    let scope = json
        .get("scope")
        .and_then(Value::as_str)
        .map(str::to_string);
    AccessToken::new(access_token, lifetime, tolerance, scope, clock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn expires_in_number_or_string() {
        assert_eq!(
            parse_expires_in(Some(&serde_json::json!(300))),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_expires_in(Some(&serde_json::json!("3600"))),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_expires_in(Some(&serde_json::json!(" 60 "))),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_expires_in(Some(&serde_json::json!(1.5))),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_expires_in(None), None);
        assert_eq!(parse_expires_in(Some(&serde_json::json!(-5))), None);
        assert_eq!(parse_expires_in(Some(&serde_json::json!(0))), None);
        assert_eq!(parse_expires_in(Some(&serde_json::json!("soon"))), None);
        assert_eq!(parse_expires_in(Some(&serde_json::json!(null))), None);
    }

    #[test]
    fn refresh_margin_is_capped_at_half_the_lifetime() {
        let clock = ManualClock::new();
        let token = AccessToken::new(
            Secret::new("t"),
            Duration::from_secs(2),
            Duration::from_secs(120),
            None,
            Arc::new(clock.clone()),
        )
        .unwrap();
        assert!(token.is_fresh() && !token.is_expired());
        clock.advance(Duration::from_millis(999));
        assert!(token.is_fresh());
        // Due for refresh after half its life, still usable until it expires.
        clock.advance(Duration::from_millis(1));
        assert!(!token.is_fresh() && !token.is_expired());
        clock.advance(Duration::from_millis(999));
        assert!(!token.is_expired());
        clock.advance(Duration::from_millis(1));
        assert!(token.is_expired());
        assert!(
            AccessToken::new(
                Secret::new("bad\ntoken"),
                Duration::from_secs(2),
                Duration::ZERO,
                None,
                Arc::new(clock),
            )
            .is_err()
        );
    }
}
