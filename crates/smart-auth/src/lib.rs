//! SMART Backend Services client authentication for FHIR servers.
//!
//! A [`TokenProvider`] obtains OAuth 2.0 access tokens with the `client_credentials` grant,
//! authenticating either with a signed JWT client assertion (`private_key_jwt`, RS384/ES384 and
//! relatives) or a client secret (`client_secret_basic` / `client_secret_post`). The token
//! endpoint comes from `[base]/.well-known/smart-configuration` unless configured. Tokens are
//! cached and refreshed before they expire; secrets come from a [`SecretSource`] and never
//! appear in logs, errors or `Debug` output.
//!
//! ```no_run
//! # async fn demo() -> Result<(), smart_auth::AuthError> {
//! use smart_auth::{AuthConfig, SecretSource, TokenProvider};
//!
//! let base = url::Url::parse("https://fhir.example.org/fhir/r4").expect("static URL");
//! let config = AuthConfig {
//!     scope: "system/*.rs".to_string(),
//!     ..AuthConfig::private_key_jwt(
//!         SecretSource::Inline("my-client".into()),
//!         SecretSource::Env("FHIR_PRIVATE_KEY".to_string()),
//!     )
//! };
//! let provider = TokenProvider::new(&base, config, reqwest::Client::new())?;
//! // Ask before every request: the cached token is returned until it is due for refresh.
//! let token = provider.token().await?;
//! let response = reqwest::Client::new()
//!     .get(format!("{base}/Patient/$export"))
//!     .header(reqwest::header::AUTHORIZATION, token.header_value())
//!     .send()
//!     .await;
//! # let _ = response;
//! # Ok(()) }
//! ```
mod backoff;
mod clock;
mod config;
mod discovery;
mod error;
mod key;
mod provider;
mod secret;
mod token;

pub use backoff::{Backoff, Jitter};
pub use clock::{Clock, ManualClock, Sleep, SystemClock};
pub use config::{AuthConfig, DEFAULT_SCOPE, DEFAULT_TOKEN_EXPIRY_TOLERANCE, PRIVATE_KEY_ENV};
pub use discovery::{SmartConfiguration, discover, smart_configuration_url};
pub use error::AuthError;
pub use key::{SigningAlgorithm, SigningKey};
pub use provider::{JWT_BEARER_ASSERTION_TYPE, TokenProvider, basic_authorization};
pub use secret::{Secret, SecretSource};
pub use token::{AccessToken, DEFAULT_TOKEN_LIFETIME, parse_expires_in};
