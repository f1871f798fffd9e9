//! Where bearer tokens come from. A small object-safe trait so any token source plugs in:
//! a fixed token, or a SMART Backend Services token provider.
use std::sync::Arc;

use futures::future::BoxFuture;
use http::HeaderValue;

/// Error text from a token source (kept as a string: the source's own error type is not ours).
pub type AuthFailure = Box<dyn std::error::Error + Send + Sync>;

/// A source of `Authorization` header values (`Bearer ...`).
pub trait BearerSource: Send + Sync {
    /// The current header value; cached by the source and refreshed before it expires.
    fn token(&self) -> BoxFuture<'_, Result<HeaderValue, AuthFailure>>;

    /// Called once after the server answered 401 to `rejected`: return a fresh value.
    fn refresh<'a>(
        &'a self,
        rejected: &'a HeaderValue,
    ) -> BoxFuture<'a, Result<HeaderValue, AuthFailure>>;
}

/// A fixed bearer token (for servers with long-lived tokens, and for tests).
#[derive(Clone)]
pub struct StaticBearer {
    value: HeaderValue,
}

impl StaticBearer {
    pub fn new(token: &str) -> Result<Self, AuthFailure> {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))?;
        value.set_sensitive(true);
        Ok(Self { value })
    }
}

impl std::fmt::Debug for StaticBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticBearer(..)")
    }
}

impl BearerSource for StaticBearer {
    fn token(&self) -> BoxFuture<'_, Result<HeaderValue, AuthFailure>> {
        Box::pin(async move { Ok(self.value.clone()) })
    }

    fn refresh<'a>(
        &'a self,
        _rejected: &'a HeaderValue,
    ) -> BoxFuture<'a, Result<HeaderValue, AuthFailure>> {
        Box::pin(async move { Ok(self.value.clone()) })
    }
}

pub type SharedBearer = Arc<dyn BearerSource>;

/// SMART Backend Services tokens: cached, refreshed before expiry, replaced after a 401.
impl BearerSource for smart_auth::TokenProvider {
    fn token(&self) -> BoxFuture<'_, Result<HeaderValue, AuthFailure>> {
        Box::pin(async move { Ok(smart_auth::TokenProvider::token(self).await?.header_value()) })
    }

    fn refresh<'a>(
        &'a self,
        rejected: &'a HeaderValue,
    ) -> BoxFuture<'a, Result<HeaderValue, AuthFailure>> {
        Box::pin(async move {
            let current = smart_auth::TokenProvider::token(self).await?;
            if current.header_value() != rejected {
                // Another request already replaced the rejected token.
                return Ok(current.header_value());
            }
            Ok(self
                .refresh_after_unauthorized(&current)
                .await?
                .header_value())
        })
    }
}
