//! Client configuration, shaped like the `auth` section of the tools fhirsync replaces.
use serde::Deserialize;
use url::Url;

use crate::key::SigningAlgorithm;
use crate::secret::SecretSource;

/// Scope requested when none is configured (SMART v1 system-level read access).
pub const DEFAULT_SCOPE: &str = "system/*.read";
/// Default number of seconds before expiry at which a cached token is replaced.
pub const DEFAULT_TOKEN_EXPIRY_TOLERANCE: u64 = 120;
/// Environment variable read for the private key when neither `private_key_jwk` nor
/// `client_secret` is configured.
pub const PRIVATE_KEY_ENV: &str = "FHIR_PRIVATE_KEY";

/// Authentication settings. In TOML (snake_case keys):
///
/// ```toml
/// [auth]
/// enabled = true
/// client_id = "my-client"
/// private_key_jwk = { file = "/etc/fhirsync/private-key.jwks.json" }
/// scope = "system/*.rs"
/// ```
///
/// Secret-bearing fields (`client_id`, `private_key_jwk`, `client_secret`) accept a
/// [`SecretSource`]: an inline string, or `{ file = … }`, `{ env = … }`, `{ command = … }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Authenticate at all. When false, requests are sent without a token.
    pub enabled: bool,
    pub client_id: Option<SecretSource>,
    /// The private key for `private_key_jwt`: a private JWK, a JWKS, or a PEM private key.
    #[serde(alias = "private_key")]
    pub private_key_jwk: Option<SecretSource>,
    /// The secret for `client_secret_basic` / `client_secret_post`.
    pub client_secret: Option<SecretSource>,
    /// Discover the token endpoint from `[base]/.well-known/smart-configuration`.
    pub use_smart: bool,
    /// Token endpoint; when set it overrides discovery.
    pub token_endpoint: Option<Url>,
    /// Requested scope, e.g. `system/*.read` (v1) or `system/*.rs` (v2).
    pub scope: String,
    /// Send the client secret in the form body (`client_secret_post`) instead of HTTP Basic.
    pub use_form_for_basic_auth: bool,
    /// Seconds before expiry at which a cached token is replaced (capped at half the token's
    /// lifetime, so short-lived tokens are still reused).
    pub token_expiry_tolerance: u64,
    /// Assertion signing algorithm; by default taken from the JWK's `alg`, else RS384 for RSA,
    /// ES384 for P-384 and ES256 for P-256 keys.
    pub algorithm: Option<SigningAlgorithm>,
    /// `kid` of the signing key (required for PEM keys; selects the key in a JWKS).
    pub key_id: Option<String>,
    /// Optional `jku` header: where the server can fetch the client's public JWKS.
    pub jku: Option<Url>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            client_id: None,
            private_key_jwk: None,
            client_secret: None,
            use_smart: true,
            token_endpoint: None,
            scope: DEFAULT_SCOPE.to_string(),
            use_form_for_basic_auth: false,
            token_expiry_tolerance: DEFAULT_TOKEN_EXPIRY_TOLERANCE,
            algorithm: None,
            key_id: None,
            jku: None,
        }
    }
}

impl AuthConfig {
    /// An enabled configuration for `private_key_jwt` with the given client id and key.
    pub fn private_key_jwt(client_id: SecretSource, private_key: SecretSource) -> Self {
        AuthConfig {
            enabled: true,
            client_id: Some(client_id),
            private_key_jwk: Some(private_key),
            ..AuthConfig::default()
        }
    }

    /// An enabled configuration for a client secret (HTTP Basic unless
    /// `use_form_for_basic_auth` is set afterwards).
    pub fn client_secret(client_id: SecretSource, client_secret: SecretSource) -> Self {
        AuthConfig {
            enabled: true,
            client_id: Some(client_id),
            client_secret: Some(client_secret),
            ..AuthConfig::default()
        }
    }
}
