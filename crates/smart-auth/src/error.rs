//! Errors of the SMART client. Messages name the source of a problem (file path, variable
//! name, command program, URL) but never contain secret material, assertions or tokens.
use std::path::PathBuf;

/// Everything that can go wrong while obtaining an access token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The configuration is incomplete or inconsistent.
    #[error("invalid authentication configuration: {0}")]
    Config(String),

    /// A secret file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A secret environment variable is missing or not valid UTF-8.
    #[error("environment variable {name} {problem}")]
    SecretEnv { name: String, problem: &'static str },

    /// A secret command failed. Its output is deliberately not part of the message.
    #[error("secret command `{program}` {problem}")]
    SecretCommand { program: String, problem: String },

    /// A secret source produced an empty value.
    #[error("the secret from {origin} is empty")]
    SecretEmpty { origin: String },

    /// The private key cannot be used (format, key type, size, algorithm mismatch).
    #[error("unusable private key: {0}")]
    Key(String),

    /// The signing algorithm is unknown or not supported.
    #[error("unsupported signing algorithm {name}: {reason}")]
    UnsupportedAlgorithm { name: String, reason: String },

    /// Signing the client assertion failed.
    #[error("cannot sign the client assertion: {0}")]
    Signing(String),

    /// `.well-known/smart-configuration` is missing, malformed or does not allow our method.
    #[error("SMART discovery at {url} failed: {reason}")]
    Discovery { url: String, reason: String },

    /// A transport-level failure (connection, TLS, timeout) talking to `url`.
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The token endpoint answered with an OAuth error (RFC 6749 §5.2).
    #[error(
        "token endpoint {url} rejected the request (HTTP {status}): {error}{}",
        description.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    TokenRejected {
        url: String,
        status: u16,
        /// The OAuth `error` code, e.g. `invalid_client`.
        error: String,
        /// The server's `error_description`, if any.
        description: Option<String>,
    },

    /// The token endpoint answered with something that is not a usable token response.
    #[error("unexpected response from token endpoint {url} (HTTP {status}): {reason}")]
    TokenResponse {
        url: String,
        status: u16,
        reason: String,
    },
}

impl AuthError {
    /// Whether retrying later may succeed (network trouble, server overload), as opposed to a
    /// configuration or credential problem that needs a person.
    pub fn is_transient(&self) -> bool {
        match self {
            AuthError::Http { .. } => true,
            AuthError::TokenRejected { status, .. } => *status == 429 || *status >= 500,
            // A 400 without an OAuth error code says nothing about the credentials; Epic's
            // token endpoint sends such bare 400s now and then and takes the same request
            // on the next try.
            AuthError::TokenResponse { status, .. } => {
                *status == 400 || *status == 429 || *status >= 500
            }
            _ => false,
        }
    }

    /// The OAuth `error` code when the token endpoint rejected the request.
    pub fn oauth_error(&self) -> Option<&str> {
        match self {
            AuthError::TokenRejected { error, .. } => Some(error),
            _ => None,
        }
    }
}
