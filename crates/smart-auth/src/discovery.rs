//! SMART configuration discovery (`[base]/.well-known/smart-configuration`).
use std::time::Duration;

use reqwest::header::ACCEPT;
use serde_json::Value;
use url::Url;

use crate::error::AuthError;

const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The parts of `.well-known/smart-configuration` a backend service needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmartConfiguration {
    pub token_endpoint: Url,
    /// `None` when the server does not list them.
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    pub token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    pub grant_types_supported: Option<Vec<String>>,
    pub scopes_supported: Option<Vec<String>>,
    pub capabilities: Vec<String>,
}

impl SmartConfiguration {
    /// Parses the discovery document; `url` is where it came from (used to resolve a relative
    /// `token_endpoint` and in messages).
    pub fn from_json(url: &Url, doc: &Value) -> Result<SmartConfiguration, AuthError> {
        let fail = |reason: String| AuthError::Discovery {
            url: url.to_string(),
            reason,
        };
        if !doc.is_object() {
            return Err(fail("the document is not a JSON object".to_string()));
        }
        let endpoint = doc
            .get("token_endpoint")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("the document has no `token_endpoint`".to_string()))?;
        let token_endpoint = url
            .join(endpoint)
            .map_err(|e| fail(format!("`token_endpoint` {endpoint:?} is not a URL: {e}")))?;
        let list = |name: &str| -> Result<Option<Vec<String>>, AuthError> {
            match doc.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| fail(format!("`{name}` holds a non-string")))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(fail(format!("`{name}` is not an array"))),
            }
        };
        Ok(SmartConfiguration {
            token_endpoint,
            token_endpoint_auth_methods_supported: list("token_endpoint_auth_methods_supported")?,
            token_endpoint_auth_signing_alg_values_supported: list(
                "token_endpoint_auth_signing_alg_values_supported",
            )?,
            grant_types_supported: list("grant_types_supported")?,
            scopes_supported: list("scopes_supported")?,
            capabilities: list("capabilities")?.unwrap_or_default(),
        })
    }

    /// Whether the server allows the client authentication `method` (a server that does not
    /// list methods is assumed to allow it).
    pub fn allows_auth_method(&self, method: &str) -> bool {
        self.token_endpoint_auth_methods_supported
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == method))
    }

    /// Whether the server accepts assertions signed with `alg` (assumed when not listed).
    pub fn allows_signing_alg(&self, alg: &str) -> bool {
        self.token_endpoint_auth_signing_alg_values_supported
            .as_ref()
            .is_none_or(|a| a.iter().any(|x| x == alg))
    }
}

/// `[base]/.well-known/smart-configuration`, appended to the base path (not replacing it):
/// `https://h/fhir/r4` → `https://h/fhir/r4/.well-known/smart-configuration`.
pub fn smart_configuration_url(fhir_base: &Url) -> Url {
    let mut url = fhir_base.clone();
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{path}/.well-known/smart-configuration"));
    url
}

/// Fetches and parses the server's SMART configuration.
pub async fn discover(
    http: &reqwest::Client,
    fhir_base: &Url,
) -> Result<SmartConfiguration, AuthError> {
    let url = smart_configuration_url(fhir_base);
    let response = http
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .timeout(DISCOVERY_TIMEOUT)
        .send()
        .await
        .map_err(|source| AuthError::Http {
            url: url.to_string(),
            source,
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(AuthError::Discovery {
            url: url.to_string(),
            reason: format!(
                "HTTP {status}; the server may not support SMART (set token_endpoint to skip discovery)"
            ),
        });
    }
    let body = response.bytes().await.map_err(|source| AuthError::Http {
        url: url.to_string(),
        source,
    })?;
    let doc: Value = serde_json::from_slice(&body).map_err(|e| AuthError::Discovery {
        url: url.to_string(),
        reason: format!("the response is not JSON ({e})"),
    })?;
    let config = SmartConfiguration::from_json(&url, &doc)?;
    if let Some(grants) = &config.grant_types_supported
        && !grants.iter().any(|g| g == "client_credentials")
    {
        tracing::warn!(%url, "the server does not list client_credentials in grant_types_supported; trying anyway");
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_url_keeps_the_base_path() {
        let cases = [
            (
                "https://h/fhir/r4",
                "https://h/fhir/r4/.well-known/smart-configuration",
            ),
            (
                "https://h/fhir/r4/",
                "https://h/fhir/r4/.well-known/smart-configuration",
            ),
            ("https://h", "https://h/.well-known/smart-configuration"),
            (
                "https://h:8443/a?x=1#f",
                "https://h:8443/a/.well-known/smart-configuration",
            ),
        ];
        for (base, expected) in cases {
            assert_eq!(
                smart_configuration_url(&Url::parse(base).unwrap()).as_str(),
                expected
            );
        }
    }

    #[test]
    fn relative_token_endpoint_is_resolved_and_missing_lists_allow_everything() {
        let url = Url::parse("https://h/fhir/.well-known/smart-configuration").unwrap();
        let config = SmartConfiguration::from_json(
            &url,
            &serde_json::json!({"token_endpoint": "/auth/token"}),
        )
        .unwrap();
        assert_eq!(config.token_endpoint.as_str(), "https://h/auth/token");
        assert!(config.allows_auth_method("private_key_jwt"));
        assert!(config.allows_signing_alg("ES384"));
        let err =
            SmartConfiguration::from_json(&url, &serde_json::json!({"issuer": "x"})).unwrap_err();
        assert!(err.to_string().contains("no `token_endpoint`"), "{err}");
    }
}
