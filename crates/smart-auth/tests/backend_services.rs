//! The client against a real SMART authorization server over loopback.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use smart_auth::{
    AuthConfig, AuthError, ManualClock, SecretSource, SigningAlgorithm, SigningKey, TokenProvider,
};

const LONG: Duration = Duration::from_secs(300);

/// Gets a token with `config` and uses it on a protected resource.
async fn token_works(server: &AuthServer, config: AuthConfig) -> TokenProvider {
    let client = http();
    let provider = TokenProvider::new(&server.base, config, client.clone()).unwrap();
    let token = provider.token().await.unwrap();
    assert_eq!(server.get_patients(&client, &token).await, 200);
    assert_eq!(token.scope(), Some("system/*.read"));
    assert!(token.expires_at() > chrono::Utc::now());
    provider
}

async fn token_error(server: &AuthServer, config: AuthConfig) -> AuthError {
    let provider = TokenProvider::new(&server.base, config, http()).unwrap();
    provider.token().await.unwrap_err()
}

#[tokio::test]
async fn rs384_with_private_jwk_pkcs8_and_pkcs1_pem() {
    let server = AuthServer::start(LONG).await;
    token_works(
        &server,
        jwt_config(RSA_CLIENT, file("rsa-a.private.jwk.json")),
    )
    .await;
    for pem in ["rsa-a.pkcs8.pem", "rsa-a.pkcs1.pem"] {
        let config = AuthConfig {
            key_id: Some("rsa-a".into()),
            ..jwt_config(RSA_CLIENT, file(pem))
        };
        token_works(&server, config).await;
    }
    assert_eq!(server.auth.tokens_issued(), 3);
}

#[tokio::test]
async fn es384_and_es256_with_jwk_and_pem() {
    let server = AuthServer::start(LONG).await;
    token_works(
        &server,
        jwt_config(EC_CLIENT, file("ec384-a.private.jwk.json")),
    )
    .await;
    token_works(
        &server,
        jwt_config(EC_CLIENT, file("ec256-a.private.jwk.json")),
    )
    .await;
    for (pem, kid) in [
        ("ec384-a.pkcs8.pem", "ec384-a"),
        ("ec384-a.sec1.pem", "ec384-a"),
        ("ec256-a.pkcs8.pem", "ec256-a"),
    ] {
        let config = AuthConfig {
            key_id: Some(kid.into()),
            ..jwt_config(EC_CLIENT, file(pem))
        };
        token_works(&server, config).await;
    }
    assert_eq!(server.auth.tokens_issued(), 5);
}

#[tokio::test]
async fn jwks_key_is_chosen_by_kid_or_algorithm() {
    let server = AuthServer::start(LONG).await;
    let private = |name: &str| -> Value {
        serde_json::from_str(&key_text(&format!("{name}.private.jwk.json"))).unwrap()
    };
    let jwks =
        json!({ "keys": [public_jwk("rsa-b"), private("rsa-a"), private("ec384-a")] }).to_string();
    let source = SecretSource::Inline(jwks.as_str().into());

    let by_kid = AuthConfig {
        key_id: Some("ec384-a".into()),
        ..jwt_config(EC_CLIENT, source.clone())
    };
    token_works(&server, by_kid).await;
    let by_alg = AuthConfig {
        algorithm: Some(SigningAlgorithm::RS384),
        ..jwt_config(RSA_CLIENT, source.clone())
    };
    token_works(&server, by_alg).await;

    let err = TokenProvider::new(&server.base, jwt_config(RSA_CLIENT, source.clone()), http())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("several matching private keys") && err.contains("rsa-a, ec384-a"),
        "{err}"
    );
    let missing = AuthConfig {
        key_id: Some("nope".into()),
        ..jwt_config(RSA_CLIENT, source)
    };
    let err = TokenProvider::new(&server.base, missing, http())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no private key in the JWKS matches kid `nope`"),
        "{err}"
    );
}

#[tokio::test]
async fn client_secret_basic_and_post() {
    let server = AuthServer::start(LONG).await;
    let id = SecretSource::Inline(SECRET_CLIENT.into());
    let secret = SecretSource::Inline(CLIENT_SECRET.into());
    token_works(
        &server,
        AuthConfig::client_secret(id.clone(), secret.clone()),
    )
    .await;
    token_works(
        &server,
        AuthConfig {
            use_form_for_basic_auth: true,
            ..AuthConfig::client_secret(id.clone(), secret)
        },
    )
    .await;
    assert_eq!(server.auth.tokens_issued(), 2);

    for in_form in [false, true] {
        let wrong = AuthConfig {
            use_form_for_basic_auth: in_form,
            ..AuthConfig::client_secret(id.clone(), SecretSource::Inline("not-it".into()))
        };
        let err = token_error(&server, wrong).await;
        assert_eq!(err.oauth_error(), Some("invalid_client"));
        let text = err.to_string();
        assert!(
            text.contains("HTTP 401") && text.contains("wrong client secret"),
            "{text}"
        );
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn wrong_audience_and_wrong_key_are_rejected_with_the_servers_reason() {
    let server = AuthServer::start(LONG).await;
    let alias = server.url("/fhir/r4/auth/token-alias");
    let config = AuthConfig {
        token_endpoint: Some(alias),
        ..jwt_config(RSA_CLIENT, file("rsa-a.private.jwk.json"))
    };
    let err = token_error(&server, config).await.to_string();
    assert!(
        err.contains("invalid_client") && err.contains("aud must be the token endpoint URL"),
        "{err}"
    );
    assert!(err.contains(&server.token_url), "{err}");

    // rsa-b's private key presented under rsa-a's kid.
    let config = AuthConfig {
        key_id: Some("rsa-a".into()),
        ..jwt_config(RSA_CLIENT, file("rsa-b.pkcs8.pem"))
    };
    let err = token_error(&server, config).await.to_string();
    assert!(
        err.contains("signature does not verify with key `rsa-a`"),
        "{err}"
    );

    let config = AuthConfig {
        key_id: Some("rsa-b".into()),
        ..jwt_config(RSA_CLIENT, file("rsa-b.pkcs8.pem"))
    };
    let err = token_error(&server, config).await.to_string();
    assert!(err.contains("no registered key with kid `rsa-b`"), "{err}");

    let config = jwt_config("stranger", file("rsa-a.private.jwk.json"));
    let err = token_error(&server, config).await.to_string();
    assert!(err.contains("client `stranger` is not registered"), "{err}");
    assert_eq!(server.auth.tokens_issued(), 0);
    assert_eq!(server.auth.token_requests_rejected(), 4);
}

/// Posts a hand-made assertion to the token endpoint and returns (status, body).
async fn post_assertion(server: &AuthServer, assertion: &str) -> (u16, Value) {
    let response = http()
        .post(&server.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.read"),
            (
                "client_assertion_type",
                smart_auth::JWT_BEARER_ASSERTION_TYPE,
            ),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn rsa_key() -> SigningKey {
    SigningKey::parse(&key_text("rsa-a.private.jwk.json"), None, None).unwrap()
}

fn claims(server: &AuthServer, exp_offset: i64, jti: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": RSA_CLIENT, "sub": RSA_CLIENT, "aud": server.token_url, "exp": now + exp_offset, "iat": now, "jti": jti})
}

#[tokio::test]
async fn expired_far_future_and_replayed_assertions_are_rejected() {
    let server = AuthServer::start(LONG).await;
    let key = rsa_key();

    let expired = key.sign(&claims(&server, -30, "j-expired"), None).unwrap();
    let (status, body) = post_assertion(&server, &expired).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );

    let far = key.sign(&claims(&server, 3600, "j-far"), None).unwrap();
    let (status, body) = post_assertion(&server, &far).await;
    assert_eq!(status, 401);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("at most 300 s"),
        "{body}"
    );

    let once = key.sign(&claims(&server, 120, "j-once"), None).unwrap();
    let (status, body) = post_assertion(&server, &once).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 300);
    let (status, body) = post_assertion(&server, &once).await;
    assert_eq!(status, 401);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("already used (replay)"),
        "{body}"
    );

    let mut no_sub = claims(&server, 120, "j-nosub");
    no_sub.as_object_mut().unwrap().remove("sub");
    let (status, body) = post_assertion(&server, &key.sign(&no_sub, None).unwrap()).await;
    assert_eq!(status, 401);
    assert!(
        body["error_description"].as_str().unwrap().contains("sub"),
        "{body}"
    );

    let mut no_jti = claims(&server, 120, "x");
    no_jti.as_object_mut().unwrap().remove("jti");
    let (_, body) = post_assertion(&server, &key.sign(&no_jti, None).unwrap()).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("no jti"),
        "{body}"
    );
    assert_eq!(server.auth.tokens_issued(), 1);
}

#[tokio::test]
async fn client_assertions_carry_the_smart_header_and_claims() {
    let server = AuthServer::start(LONG).await;
    let key = rsa_key();
    let jws = key
        .sign(
            &claims(&server, 120, "j"),
            Some("https://client.example/jwks.json"),
        )
        .unwrap();
    let header = jsonwebtoken::decode_header(&jws).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS384);
    assert_eq!(header.kid.as_deref(), Some("rsa-a"));
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(
        header.jku.as_deref(),
        Some("https://client.example/jwks.json")
    );
    // The derived public key equals the independently generated one.
    let derived = key.public_jwk();
    let fixture = public_jwk("rsa-a");
    assert_eq!(derived["n"], fixture["n"]);
    assert_eq!(derived["e"], fixture["e"]);
    let ec = SigningKey::parse(&key_text("ec384-a.sec1.pem"), Some("ec384-a"), None).unwrap();
    assert_eq!(ec.algorithm(), SigningAlgorithm::ES384);
    assert_eq!(ec.public_jwk()["x"], public_jwk("ec384-a")["x"]);
    assert_eq!(ec.public_jwk()["y"], public_jwk("ec384-a")["y"]);
}

#[tokio::test]
async fn keys_that_do_not_fit_are_rejected_clearly() {
    let server = AuthServer::start(LONG).await;
    let inline = |name: &str| SecretSource::Inline(key_text(name).into());
    let cases: Vec<(AuthConfig, &str)> = vec![
        (
            AuthConfig {
                algorithm: Some(SigningAlgorithm::ES384),
                ..jwt_config(RSA_CLIENT, inline("rsa-a.private.jwk.json"))
            },
            "algorithm ES384 does not match the JWK's alg RS384",
        ),
        (
            AuthConfig {
                algorithm: Some(SigningAlgorithm::ES384),
                key_id: Some("k".into()),
                ..jwt_config(RSA_CLIENT, inline("rsa-a.pkcs8.pem"))
            },
            "algorithm ES384 needs an EC P-384 key, but the key is an RSA key",
        ),
        (
            AuthConfig {
                key_id: Some("k".into()),
                ..jwt_config(EC_CLIENT, inline("ec521-a.pkcs8.pem"))
            },
            "P-521 keys (ES512) are not supported",
        ),
        (
            jwt_config(EC_CLIENT, inline("ec521-a.private.jwk.json")),
            "P-521",
        ),
        (
            jwt_config(RSA_CLIENT, inline("rsa-a.public.jwk.json")),
            "public key (no \"d\" member)",
        ),
        (
            jwt_config(RSA_CLIENT, inline("rsa-a.pkcs8.pem")),
            "set key_id",
        ),
        (
            jwt_config(RSA_CLIENT, SecretSource::Inline("hello".into())),
            "expected a private JWK or JWKS",
        ),
    ];
    for (config, expected) in cases {
        let err = TokenProvider::new(&server.base, config, http()).unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Key(_) | AuthError::UnsupportedAlgorithm { .. }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(expected),
            "{err} does not mention {expected}"
        );
    }
}

#[tokio::test]
async fn discovery_follows_a_base_with_a_path_and_explains_refusals() {
    let server = AuthServer::start(LONG).await;
    let provider = token_works(
        &server,
        jwt_config(RSA_CLIENT, file("rsa-a.private.jwk.json")),
    )
    .await;
    assert_eq!(
        provider.token_endpoint().await.unwrap().as_str(),
        server.token_url
    );
    let discovered = smart_auth::discover(&http(), &server.base).await.unwrap();
    assert!(
        discovered
            .capabilities
            .contains(&"client-confidential-asymmetric".to_string())
    );

    let limited = TokenProvider::new(
        &server.url("/limited"),
        jwt_config(RSA_CLIENT, file("rsa-a.private.jwk.json")),
        http(),
    )
    .unwrap();
    let err = limited.token().await.unwrap_err().to_string();
    assert!(
        err.contains("does not support private_key_jwt") && err.contains("client_secret_basic"),
        "{err}"
    );

    let nosmart = TokenProvider::new(
        &server.url("/nosmart"),
        jwt_config(RSA_CLIENT, file("rsa-a.private.jwk.json")),
        http(),
    )
    .unwrap();
    let err = nosmart.token().await.unwrap_err().to_string();
    assert!(
        err.contains("/nosmart/.well-known/smart-configuration") && err.contains("404"),
        "{err}"
    );

    // An explicit endpoint skips discovery entirely.
    let explicit = AuthConfig {
        use_smart: false,
        token_endpoint: Some(server.token_url.parse().unwrap()),
        ..jwt_config(RSA_CLIENT, file("rsa-a.private.jwk.json"))
    };
    let provider = TokenProvider::new(&server.url("/nosmart"), explicit, http()).unwrap();
    provider.token().await.unwrap();
}

#[tokio::test]
async fn algorithm_is_negotiated_from_the_advertised_list() {
    let server = AuthServer::start(LONG).await;
    // The key file says nothing about the algorithm; the server only accepts RS256.
    let text = key_text("rsa-a.pkcs8.pem");
    let config = AuthConfig {
        key_id: Some("rsa-a".into()),
        ..jwt_config(ANY_ALG_CLIENT, SecretSource::Inline(text.as_str().into()))
    };
    let provider = TokenProvider::new(&server.url("/rs256"), config, http()).unwrap();
    provider.token().await.unwrap();

    // A JWK fixed to RS384 cannot be used there, and the client says why.
    let provider = TokenProvider::new(
        &server.url("/rs256"),
        jwt_config(RSA_CLIENT, file("rsa-a.private.jwk.json")),
        http(),
    )
    .unwrap();
    let err = provider.token().await.unwrap_err().to_string();
    assert!(
        err.contains("accepts assertions signed with [RS256], but the key signs with RS384"),
        "{err}"
    );
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_across_a_long_series_of_requests() {
    let server = AuthServer::start(Duration::from_secs(1)).await;
    let client = http();
    // Four seconds of requests, 50 ms apart on the provider's clock.
    let clock = ManualClock::new();
    let provider = TokenProvider::with_clock(
        &server.base,
        jwt_config(EC_CLIENT, file("ec384-a.private.jwk.json")),
        client.clone(),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let (mut ok, mut retried) = (0, 0);
    for _ in 0..80 {
        let token = provider.token().await.unwrap();
        let mut status = server.get_patients(&client, &token).await;
        if status == 401 {
            // On a loaded machine the token can expire between issue and use.
            retried += 1;
            let fresh = provider.refresh_after_unauthorized(&token).await.unwrap();
            status = server.get_patients(&client, &fresh).await;
        }
        assert_eq!(status, 200);
        ok += 1;
        clock.advance(Duration::from_millis(50));
    }
    assert_eq!(ok, 80);
    // Each token is reused for half its 1 s life, so 4 s of requests need eight.
    assert!(
        provider.token_refreshes() >= 8,
        "only {} tokens for {ok} requests ({retried} retried)",
        provider.token_refreshes()
    );
    assert_eq!(provider.token_refreshes(), server.auth.tokens_issued());
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let server = AuthServer::start(LONG).await;
    let provider = TokenProvider::new(
        &server.base,
        jwt_config(RSA_CLIENT, file("rsa-a.private.jwk.json")),
        http(),
    )
    .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.token().await.unwrap() })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap());
    }
    assert!(tokens.iter().all(|t| t.secret() == tokens[0].secret()));
    assert_eq!(provider.token_refreshes(), 1);
    assert_eq!(server.auth.tokens_issued(), 1);
}

#[tokio::test]
async fn a_401_leads_to_exactly_one_new_token() {
    let server = AuthServer::start(LONG).await;
    let client = http();
    let provider = TokenProvider::new(
        &server.base,
        jwt_config(RSA_CLIENT, file("rsa-a.private.jwk.json")),
        client.clone(),
    )
    .unwrap();
    let old = provider.token().await.unwrap();
    assert_eq!(server.get_patients(&client, &old).await, 200);
    server.auth.revoke_all_tokens();
    assert_eq!(server.get_patients(&client, &old).await, 401);

    let (a, b) = tokio::join!(
        provider.refresh_after_unauthorized(&old),
        provider.refresh_after_unauthorized(&old)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.secret(), b.secret());
    assert_ne!(a.secret(), old.secret());
    assert_eq!(provider.token_refreshes(), 2);
    assert_eq!(server.get_patients(&client, &a).await, 200);
    // The cached token is the new one.
    assert_eq!(provider.token().await.unwrap().secret(), a.secret());
}

#[tokio::test]
async fn bearer_rejections_are_fhir_and_oauth_shaped() {
    let server = AuthServer::start(LONG).await;
    let response = http()
        .get(format!("{}/Patient", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome");
    let response = http()
        .get(format!("{}/Patient", server.base))
        .bearer_auth("made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}
