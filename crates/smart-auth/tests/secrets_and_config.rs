//! Secret sources, configuration parsing and the client-secret encoding shared with the server.
mod common;

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use bulk_test_server::smart::{RegisteredClient, SmartAuth, SmartServerConfig};
use proptest::prelude::*;
use smart_auth::{AuthConfig, AuthError, SecretSource, SigningAlgorithm, TokenProvider};

#[tokio::test]
async fn command_source_is_rerun_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("runs");
    let source = SecretSource::Command(format!(
        "echo run >> '{}'; printf 'from-command\\n'",
        counter.display()
    ));
    for expected_runs in 1..=3 {
        let secret = source.load().await.unwrap();
        assert_eq!(secret.expose(), "from-command");
        let runs = std::fs::read_to_string(&counter).unwrap().lines().count();
        assert_eq!(runs, expected_runs);
    }
}

#[tokio::test]
async fn command_failure_does_not_echo_its_output() {
    let source = SecretSource::Command(
        "printf 'LEAKED-STDOUT'; printf 'LEAKED-STDERR' >&2; exit 3".to_string(),
    );
    let err = source.load().await.unwrap_err();
    let text = format!("{err} {err:?} {source:?} {source}");
    assert!(
        err.to_string()
            .contains("secret command `printf` exited with status 3"),
        "{err}"
    );
    assert!(
        err.to_string().contains("13 bytes to stderr (not shown)"),
        "{err}"
    );
    assert!(!text.contains("LEAKED"), "{text}");

    let missing = SecretSource::Command("/nonexistent/secret-tool --token abc".to_string())
        .load()
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("`/nonexistent/secret-tool`"),
        "{missing}"
    );
    assert!(!missing.to_string().contains("abc"), "{missing}");

    let empty = SecretSource::Command("true".to_string())
        .load()
        .await
        .unwrap_err();
    assert!(matches!(empty, AuthError::SecretEmpty { .. }), "{empty:?}");
}

/// The environment variable is set only in a child process running this test alone, so no
/// test running in parallel sees the process environment change.
#[test]
fn env_source_reads_the_process_environment() {
    rusty_fork::fork(
        rusty_fork::rusty_fork_test_name!(env_source_reads_the_process_environment),
        rusty_fork::rusty_fork_id!(),
        |child| {
            child
                .env("SMART_AUTH_TEST_SECRET", "from-env\n")
                .env_remove("SMART_AUTH_TEST_UNSET");
        },
        |child, _| {
            let status = child.wait().expect("waiting for the forked test");
            assert!(status.success(), "the forked test failed: {status}");
        },
        || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            rt.block_on(async {
                assert_eq!(
                    SecretSource::Env("SMART_AUTH_TEST_SECRET".into())
                        .load()
                        .await
                        .unwrap()
                        .expose(),
                    "from-env"
                );
                let err = SecretSource::Env("SMART_AUTH_TEST_UNSET".into())
                    .load()
                    .await
                    .unwrap_err();
                assert_eq!(
                    err.to_string(),
                    "environment variable SMART_AUTH_TEST_UNSET is not set"
                );
            });
        },
    )
    .expect("forking the test");
}

#[tokio::test]
async fn file_sources() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.txt");
    std::fs::write(&path, "from-file\r\n").unwrap();
    assert_eq!(
        SecretSource::File(path.clone())
            .load()
            .await
            .unwrap()
            .expose(),
        "from-file"
    );
    let err = SecretSource::File(dir.path().join("missing"))
        .load()
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("cannot read secret file ")
            && err.to_string().contains("missing"),
        "{err}"
    );
}

#[test]
fn toml_section_maps_onto_auth_config() {
    let config: AuthConfig = toml::from_str(
        r#"
        enabled = true
        client_id = "my-client"
        private_key_jwk = { file = "/etc/fhirsync/key.jwks.json" }
        use_smart = false
        token_endpoint = "https://auth.example/token"
        scope = "system/*.rs"
        use_form_for_basic_auth = true
        token_expiry_tolerance = 30
        algorithm = "ES384"
        key_id = "k1"
        jku = "https://client.example/jwks.json"
        "#,
    )
    .unwrap();
    assert!(config.enabled && !config.use_smart && config.use_form_for_basic_auth);
    assert_eq!(
        config.client_id,
        Some(SecretSource::Inline("my-client".into()))
    );
    assert_eq!(
        config.private_key_jwk,
        Some(SecretSource::File("/etc/fhirsync/key.jwks.json".into()))
    );
    assert_eq!(config.scope, "system/*.rs");
    assert_eq!(config.token_expiry_tolerance, 30);
    assert_eq!(config.algorithm, Some(SigningAlgorithm::ES384));

    let defaults: AuthConfig =
        toml::from_str("client_secret = { command = \"pass show fhir\" }").unwrap();
    assert!(!defaults.enabled && defaults.use_smart);
    assert_eq!(defaults.scope, "system/*.read");
    assert_eq!(defaults.token_expiry_tolerance, 120);
    assert_eq!(
        defaults.client_secret,
        Some(SecretSource::Command("pass show fhir".into()))
    );

    let env: AuthConfig = toml::from_str("private_key = { env = \"FHIR_PRIVATE_KEY\" }").unwrap();
    assert_eq!(
        env.private_key_jwk,
        Some(SecretSource::Env("FHIR_PRIVATE_KEY".into()))
    );

    for (bad, expected) in [
        ("algorithm = \"ES512\"", "P-521"),
        (
            "client_secret = { file = \"a\", env = \"B\" }",
            "exactly one",
        ),
        ("client_secret = { url = \"a\" }", "unknown field `url`"),
        ("clientid = \"x\"", "unknown field `clientid`"),
    ] {
        let err = toml::from_str::<AuthConfig>(bad).unwrap_err().to_string();
        assert!(err.contains(expected), "{bad}: {err}");
    }
}

#[test]
fn configuration_mistakes_are_reported_before_any_request() {
    let base = url::Url::parse("https://fhir.example/r4").unwrap();
    let http = reqwest::Client::new();
    let id = || Some(SecretSource::Inline("c".into()));
    let secret = || Some(SecretSource::Inline("s".into()));
    let cases = [
        (
            AuthConfig {
                client_id: id(),
                client_secret: secret(),
                ..AuthConfig::default()
            },
            "not enabled",
        ),
        (
            AuthConfig {
                enabled: true,
                client_secret: secret(),
                ..AuthConfig::default()
            },
            "client_id is required",
        ),
        (
            AuthConfig {
                enabled: true,
                client_id: id(),
                client_secret: secret(),
                private_key_jwk: secret(),
                ..AuthConfig::default()
            },
            "configure exactly one",
        ),
        (
            AuthConfig {
                enabled: true,
                client_id: id(),
                client_secret: secret(),
                use_smart: false,
                ..AuthConfig::default()
            },
            "token_endpoint is required",
        ),
        (
            AuthConfig {
                enabled: true,
                client_id: id(),
                client_secret: secret(),
                scope: " ".into(),
                ..AuthConfig::default()
            },
            "scope is empty",
        ),
    ];
    for (config, expected) in cases {
        let err = TokenProvider::new(&base, config, http.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn secret_source_command_line_syntax() {
    assert_eq!(
        "env:X".parse::<SecretSource>().unwrap(),
        SecretSource::Env("X".into())
    );
    assert_eq!(
        "file:/k.pem".parse::<SecretSource>().unwrap(),
        SecretSource::File("/k.pem".into())
    );
    assert_eq!(
        "cmd:pass show k".parse::<SecretSource>().unwrap(),
        SecretSource::Command("pass show k".into())
    );
    assert_eq!(
        "value:env:X".parse::<SecretSource>().unwrap(),
        SecretSource::Inline("env:X".into())
    );
    assert_eq!(
        "plain".parse::<SecretSource>().unwrap(),
        SecretSource::Inline("plain".into())
    );
    assert!("env:".parse::<SecretSource>().is_err());
    let debug = format!(
        "{:?}",
        "cmd:vault read -field=password secret/x"
            .parse::<SecretSource>()
            .unwrap()
    );
    assert!(
        debug.contains("vault") && !debug.contains("password"),
        "{debug}"
    );
}

/// Sends the client's `client_secret_basic` header for (id, secret) to the server side.
fn basic_round_trip(client_id: &str, secret: &str, presented: &str) -> u16 {
    let auth = SmartAuth::new(SmartServerConfig {
        token_lifetime: Duration::from_secs(60),
        clients: vec![RegisteredClient {
            client_id: client_id.to_string(),
            jwks: None,
            client_secret: Some(secret.to_string()),
        }],
    });
    let mut headers = HeaderMap::new();
    let value: HeaderValue = smart_auth::basic_authorization(client_id, presented);
    headers.insert(axum::http::header::AUTHORIZATION, value);
    let form = vec![
        ("grant_type".to_string(), "client_credentials".to_string()),
        ("scope".to_string(), "system/*.read".to_string()),
    ];
    auth.token("http://127.0.0.1/token", &headers, &form)
        .status()
        .as_u16()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_client_id_and_secret_survive_basic_encoding(id in "[^\u{0}]{1,24}", secret in "[^\u{0}]{1,40}") {
        prop_assert_eq!(basic_round_trip(&id, &secret, &secret), 200);
        let other = format!("{secret}x");
        prop_assert_eq!(basic_round_trip(&id, &secret, &other), 401);
    }

    #[test]
    fn expires_in_as_number_or_string(seconds in 1u64..100_000_000) {
        let expected = Some(Duration::from_secs(seconds));
        prop_assert_eq!(smart_auth::parse_expires_in(Some(&serde_json::json!(seconds))), expected);
        prop_assert_eq!(smart_auth::parse_expires_in(Some(&serde_json::json!(seconds.to_string()))), expected);
    }

    #[test]
    fn secret_parsing_keeps_values_and_short_text_is_no_key(text in ".{0,64}") {
        if let Ok(SecretSource::Inline(secret)) = text.parse::<SecretSource>() {
            prop_assert!(text.ends_with(secret.expose()));
        }
        // No private key, JWK or PEM, fits in 64 characters.
        prop_assert!(smart_auth::SigningKey::parse(&text, Some("k"), None).is_err());
    }
}
