//! What reaches the logs: warnings that help, and never a secret. One global subscriber
//! captures everything the tests in this binary log, the HTTP stack included.
mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use smart_auth::{AuthConfig, SecretSource, SigningKey, TokenProvider};

const LONG: Duration = Duration::from_secs(300);

#[cfg(unix)]
#[tokio::test]
async fn key_file_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let logs = LogCapture::global();
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("restricted-key.pem");
    let open = dir.path().join("world-readable-key.pem");
    for (path, mode) in [(&private, 0o600), (&open, 0o644)] {
        std::fs::write(path, "key material").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    SecretSource::File(private.clone()).load().await.unwrap();
    assert!(
        !logs.text().contains("restricted-key.pem"),
        "{}",
        logs.text()
    );
    SecretSource::File(open.clone()).load().await.unwrap();
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("world-readable-key.pem"))
        .unwrap_or_default();
    assert!(
        line.contains("WARN")
            && line.contains("readable by group or others")
            && line.contains("644"),
        "{text}"
    );
    assert!(!text.contains("key material"));
}

#[tokio::test]
async fn no_secret_reaches_logs_debug_output_or_errors() {
    let logs = LogCapture::global();
    let server = AuthServer::start(LONG).await;
    let client = http();
    let jwk: Value = serde_json::from_str(&key_text("rsa-a.private.jwk.json")).unwrap();
    let d = jwk["d"].as_str().unwrap().to_string();
    let pem = key_text("ec384-a.pkcs8.pem");
    let pem_body = pem.lines().nth(1).unwrap().to_string();

    let jwt = jwt_config(RSA_CLIENT, SecretSource::Inline(jwk.to_string().into()));
    let provider = TokenProvider::new(&server.base, jwt.clone(), client.clone()).unwrap();
    let token = provider.token().await.unwrap();
    assert_eq!(server.get_patients(&client, &token).await, 200);
    let access = token.secret().expose().to_string();

    let ec = AuthConfig {
        key_id: Some("ec384-a".into()),
        ..jwt_config(EC_CLIENT, SecretSource::Inline(pem.as_str().into()))
    };
    let ec_provider = TokenProvider::new(&server.base, ec.clone(), client.clone()).unwrap();
    let ec_token = ec_provider.token().await.unwrap();

    let secret = AuthConfig::client_secret(
        SecretSource::Inline(SECRET_CLIENT.into()),
        SecretSource::Inline(CLIENT_SECRET.into()),
    );
    let secret_provider = TokenProvider::new(&server.base, secret.clone(), client.clone()).unwrap();
    secret_provider.token().await.unwrap();
    let wrong = AuthConfig::client_secret(
        SecretSource::Inline(SECRET_CLIENT.into()),
        SecretSource::Inline("wrong-secret-value".into()),
    );
    let wrong_err = TokenProvider::new(&server.base, wrong, client.clone())
        .unwrap()
        .token()
        .await
        .unwrap_err();
    let wrong_key = AuthConfig {
        key_id: Some("rsa-a".into()),
        ..jwt_config(RSA_CLIENT, file("rsa-b.pkcs8.pem"))
    };
    let key_err = TokenProvider::new(&server.base, wrong_key, client.clone())
        .unwrap()
        .token()
        .await
        .unwrap_err();

    let debug = format!(
        "{jwt:?} {ec:?} {secret:?} {provider:?} {ec_provider:?} {secret_provider:?} {token:?} {ec_token:?} {wrong_err:?} {wrong_err} {key_err:?} {key_err} {:?} {:?}",
        server.auth,
        SigningKey::parse(&jwk.to_string(), None, None).unwrap(),
    );
    let logged = logs.text();
    assert!(
        logged.contains("obtained access token"),
        "logging was not captured:\n{logged}"
    );
    for (name, text) in [("debug output", &debug), ("logs", &logged)] {
        for (what, secret) in [
            ("private exponent", d.as_str()),
            ("PEM key", pem_body.as_str()),
            ("client secret", CLIENT_SECRET),
            ("wrong client secret", "wrong-secret-value"),
            ("access token", access.as_str()),
            ("access token", ec_token.secret().expose()),
            ("client assertion", "eyJ0eXAiOiJKV1Qi"),
        ] {
            assert!(!text.contains(secret), "{what} appears in {name}");
        }
    }
}
