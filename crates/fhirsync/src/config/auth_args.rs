//! The authentication flags (`--auth-*`) and their resolution against the environment and the
//! config file's `[auth]` table.
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::environment::{
    ENV_CLIENT_ID, ENV_CLIENT_ID_FILE, ENV_CLIENT_SECRET, ENV_CLIENT_SECRET_FILE, ENV_PRIVATE_KEY,
    ENV_PRIVATE_KEY_FILE, Environment,
};
use super::error::{ConfigError, invalid};
use super::file::FileAuth;
use super::options::{AuthOptions, DEFAULT_TOKEN_EXPIRY_TOLERANCE};
use super::parsers::{parse_duration, parse_endpoint};
use super::secrets::{
    Secret, SecretSource, SigningAlgorithm, env_secret, file_secret, read_secret,
};

/// The authentication flags (`--auth-*`), shared by `sync`, `daemon` and `export`.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct AuthArgs {
    /// OAuth client id; enables authentication [env: FHIR_CLIENT_ID, FHIR_CLIENT_ID_FILE]
    #[arg(long, value_name = "ID")]
    pub auth_client_id: Option<String>,

    /// Path to the private key (PEM or JWK) for SMART Backend Services
    /// [env: FHIR_PRIVATE_KEY (the key itself), FHIR_PRIVATE_KEY_FILE]
    #[arg(long, value_name = "PATH")]
    pub auth_private_key: Option<PathBuf>,

    /// Same as --auth-private-key
    #[arg(long, value_name = "PATH", conflicts_with = "auth_private_key")]
    pub auth_private_key_file: Option<PathBuf>,

    /// Shell command printing the private key (e.g. a vault CLI)
    #[arg(long, value_name = "COMMAND", conflicts_with_all = ["auth_private_key", "auth_private_key_file"])]
    pub auth_private_key_command: Option<String>,

    /// Client secret (visible in the process list: prefer the file or command forms)
    /// [env: FHIR_CLIENT_SECRET, FHIR_CLIENT_SECRET_FILE]
    #[arg(long, value_name = "SECRET", hide_env_values = true)]
    pub auth_client_secret: Option<String>,

    /// File holding the client secret
    #[arg(long, value_name = "PATH", conflicts_with = "auth_client_secret")]
    pub auth_client_secret_file: Option<PathBuf>,

    /// Shell command printing the client secret
    #[arg(long, value_name = "COMMAND", conflicts_with_all = ["auth_client_secret", "auth_client_secret_file"])]
    pub auth_client_secret_command: Option<String>,

    /// Scopes to request, e.g. `system/*.read`
    #[arg(long, value_name = "SCOPES")]
    pub auth_scope: Option<String>,

    /// Token endpoint (otherwise discovered from `.well-known/smart-configuration`)
    #[arg(long, value_name = "URL")]
    pub auth_token_endpoint: Option<String>,

    /// Send the client secret in the form body instead of HTTP Basic [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub auth_use_form_for_basic_auth: Option<bool>,

    /// Renew a token this long before it expires [default: 120s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub auth_token_expiry_tolerance: Option<Duration>,

    /// JWT signing algorithm (RS384, ES384, ...) [default: from the key]
    #[arg(long, value_name = "ALG")]
    pub auth_algorithm: Option<String>,

    /// `kid` of the signing key
    #[arg(long, value_name = "KID")]
    pub auth_key_id: Option<String>,
}

impl AuthArgs {
    /// Resolves the authentication settings: flag > environment > `[auth]` table > default.
    pub fn resolve(
        &self,
        env: &dyn Environment,
        file: Option<&FileAuth>,
    ) -> Result<AuthOptions, ConfigError> {
        let empty = FileAuth::default();
        let file = file.unwrap_or(&empty);

        let client_id = match self.auth_client_id.clone() {
            Some(id) => Some(id),
            None => match (env.var(ENV_CLIENT_ID), env.var(ENV_CLIENT_ID_FILE)) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::Conflict(format!(
                        "both {ENV_CLIENT_ID} and {ENV_CLIENT_ID_FILE} are set"
                    )));
                }
                (Some(id), None) => Some(id),
                (None, Some(path)) => Some(
                    read_secret(&SecretSource::File(path.into()), "the client id")?
                        .expose()
                        .trim()
                        .to_owned(),
                ),
                (None, None) => match (&file.client_id, &file.client_id_file) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::Conflict(
                            "[auth] has both client_id and client_id_file".into(),
                        ));
                    }
                    (Some(id), None) => Some(id.clone()),
                    (None, Some(path)) => Some(
                        read_secret(&SecretSource::File(path.clone()), "the client id")?
                            .expose()
                            .trim()
                            .to_owned(),
                    ),
                    (None, None) => None,
                },
            },
        };

        let flag_key = self
            .auth_private_key
            .clone()
            .or_else(|| self.auth_private_key_file.clone())
            .map(SecretSource::File)
            .or_else(|| {
                self.auth_private_key_command
                    .clone()
                    .map(SecretSource::Command)
            });
        let private_key = match flag_key {
            Some(k) => Some(k),
            None => match env_secret(env, ENV_PRIVATE_KEY, ENV_PRIVATE_KEY_FILE)? {
                Some(k) => Some(k),
                None => file_secret(
                    "auth_private_key",
                    [
                        (
                            "private_key_jwk",
                            file.private_key_jwk
                                .clone()
                                .map(|v| SecretSource::Inline(Secret::new(v))),
                        ),
                        (
                            "auth_private_key_file",
                            file.private_key_file.clone().map(SecretSource::File),
                        ),
                        (
                            "private_key_env",
                            file.private_key_env.clone().map(SecretSource::Env),
                        ),
                        (
                            "auth_private_key_command",
                            file.private_key_command.clone().map(SecretSource::Command),
                        ),
                    ],
                )?,
            },
        };

        let flag_secret = self
            .auth_client_secret
            .clone()
            .map(|s| SecretSource::Inline(Secret::new(s)))
            .or_else(|| self.auth_client_secret_file.clone().map(SecretSource::File))
            .or_else(|| {
                self.auth_client_secret_command
                    .clone()
                    .map(SecretSource::Command)
            });
        let client_secret = match flag_secret {
            Some(s) => Some(s),
            None => match env_secret(env, ENV_CLIENT_SECRET, ENV_CLIENT_SECRET_FILE)? {
                Some(s) => Some(s),
                None => file_secret(
                    "auth_client_secret",
                    [
                        (
                            "auth_client_secret",
                            file.client_secret
                                .clone()
                                .map(|v| SecretSource::Inline(Secret::new(v))),
                        ),
                        (
                            "auth_client_secret_file",
                            file.client_secret_file.clone().map(SecretSource::File),
                        ),
                        (
                            "client_secret_env",
                            file.client_secret_env.clone().map(SecretSource::Env),
                        ),
                        (
                            "auth_client_secret_command",
                            file.client_secret_command
                                .clone()
                                .map(SecretSource::Command),
                        ),
                    ],
                )?,
            },
        };

        let use_smart = file.use_smart.unwrap_or(true);
        let token_endpoint = match self
            .auth_token_endpoint
            .as_ref()
            .or(file.token_endpoint.as_ref())
        {
            Some(u) => Some(parse_endpoint(u, "auth token_endpoint")?),
            None => None,
        };
        let scope = self.auth_scope.clone().or_else(|| file.scope.clone());
        let use_form_for_basic_auth = self
            .auth_use_form_for_basic_auth
            .or(file.use_form_for_basic_auth)
            .unwrap_or(false);
        let token_expiry_tolerance = match (
            self.auth_token_expiry_tolerance,
            &file.token_expiry_tolerance,
        ) {
            (Some(t), _) => t,
            (None, Some(t)) => t.get("auth token_expiry_tolerance")?,
            (None, None) => DEFAULT_TOKEN_EXPIRY_TOLERANCE,
        };
        let algorithm = match self.auth_algorithm.as_ref().or(file.algorithm.as_ref()) {
            Some(a) => Some(
                SigningAlgorithm::from_str(a.trim()).map_err(|e| invalid("auth algorithm", e))?,
            ),
            None => None,
        };
        let key_id = self.auth_key_id.clone().or_else(|| file.key_id.clone());

        // A client id given anywhere turns authentication on unless the file says otherwise.
        let enabled = match file.enabled {
            Some(false) if self.auth_client_id.is_none() => false,
            Some(e) => e || client_id.is_some(),
            None => client_id.is_some(),
        };
        let a = AuthOptions {
            enabled,
            client_id,
            private_key,
            client_secret,
            use_smart,
            token_endpoint,
            scope,
            use_form_for_basic_auth,
            token_expiry_tolerance,
            algorithm,
            key_id,
        };
        if a.enabled {
            if a.client_id.is_none() {
                return Err(ConfigError::Missing {
                    option: "auth client_id",
                    flag: "auth-client-id",
                    env: Some(ENV_CLIENT_ID),
                });
            }
            if a.private_key.is_none() && a.client_secret.is_none() {
                return Err(invalid(
                    "auth",
                    "authentication needs a private key (--auth-private-key, FHIR_PRIVATE_KEY) \
                     or a client secret (--auth-client-secret-file, FHIR_CLIENT_SECRET)",
                ));
            }
            if a.private_key.is_some() && a.client_secret.is_some() {
                return Err(ConfigError::Conflict(
                    "give either a private key or a client secret, not both".into(),
                ));
            }
            if !a.use_smart && a.token_endpoint.is_none() {
                return Err(invalid("auth", "use_smart = false needs a token_endpoint"));
            }
        }
        Ok(a)
    }
}
