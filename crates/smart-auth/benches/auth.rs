//! Prints the cost of the SMART client's steps: key parsing, assertion signing, a full token
//! request over loopback, and cached token look-ups (alone and from concurrent tasks).
//!
//! `cargo bench -p smart-auth --bench auth`
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bulk_test_server::smart::{RegisteredClient, SmartServerConfig};
use bulk_test_server::{ServerConfig, TestServer};
use serde_json::json;
use smart_auth::{AuthConfig, SecretSource, SigningKey, TokenProvider};

fn key_text(name: &str) -> String {
    let path = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/keys")
    .join(name);
    std::fs::read_to_string(path).expect("fixture key")
}

fn public_jwk(name: &str) -> serde_json::Value {
    serde_json::from_str(&key_text(&format!("{name}.public.jwk.json"))).expect("fixture JWK")
}

fn per_op(label: &str, iterations: u32, mut f: impl FnMut()) {
    f();
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let each = start.elapsed() / iterations;
    println!(
        "{label:<44} {:>10.1} µs/op  ({iterations} ops)",
        each.as_secs_f64() * 1e6
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rsa_jwk = key_text("rsa-a.private.jwk.json");
    let rsa_pem = key_text("rsa-a.pkcs8.pem");
    let ec_jwk = key_text("ec384-a.private.jwk.json");
    let ec_pem = key_text("ec384-a.pkcs8.pem");
    per_op("parse RSA-2048 private JWK (p, q given)", 50, || {
        SigningKey::parse(&rsa_jwk, None, None).expect("key");
    });
    per_op("parse RSA-2048 PKCS#8 PEM", 50, || {
        SigningKey::parse(&rsa_pem, Some("rsa-a"), None).expect("key");
    });
    per_op("parse P-384 private JWK", 200, || {
        SigningKey::parse(&ec_jwk, None, None).expect("key");
    });
    per_op("parse P-384 PKCS#8 PEM", 200, || {
        SigningKey::parse(&ec_pem, Some("ec384-a"), None).expect("key");
    });
    let claims = json!({"iss": "c", "sub": "c", "aud": "https://h/token", "exp": 1, "jti": "j"});
    let rsa = SigningKey::parse(&rsa_jwk, None, None).expect("key");
    let ec = SigningKey::parse(&ec_jwk, None, None).expect("key");
    per_op("sign assertion RS384", 100, || {
        rsa.sign(&claims, None).expect("sign");
    });
    per_op("sign assertion ES384", 200, || {
        ec.sign(&claims, None).expect("sign");
    });

    let server = TestServer::start(ServerConfig {
        smart: Some(SmartServerConfig {
            token_lifetime: Duration::from_secs(300),
            clients: vec![
                RegisteredClient {
                    client_id: "rsa".into(),
                    jwks: Some(json!({"keys": [public_jwk("rsa-a")]})),
                    client_secret: None,
                },
                RegisteredClient {
                    client_id: "ec".into(),
                    jwks: Some(json!({"keys": [public_jwk("ec384-a")]})),
                    client_secret: None,
                },
            ],
        }),
        ..ServerConfig::default()
    })
    .await
    .expect("server");
    let http = reqwest::Client::new();
    for (client, key) in [
        ("rsa", "rsa-a.private.jwk.json"),
        ("ec", "ec384-a.private.jwk.json"),
    ] {
        let provider = TokenProvider::new(
            &server.base_url(),
            AuthConfig::private_key_jwt(
                SecretSource::Inline(client.into()),
                SecretSource::Inline(key_text(key).into()),
            ),
            http.clone(),
        )
        .expect("provider");
        provider.token().await.expect("token");
        let n = 50u32;
        let start = Instant::now();
        let mut current = provider.token().await.expect("token");
        for _ in 0..n {
            current = provider
                .refresh_after_unauthorized(&current)
                .await
                .expect("token");
        }
        let each = start.elapsed() / n;
        println!(
            "{:<44} {:>10.1} µs/op  ({n} ops; load key + sign + POST + verify)",
            format!(
                "token request over loopback ({})",
                if client == "rsa" { "RS384" } else { "ES384" }
            ),
            each.as_secs_f64() * 1e6
        );

        let calls = 200_000u32;
        let start = Instant::now();
        for _ in 0..calls {
            provider.token().await.expect("token");
        }
        println!(
            "{:<44} {:>10.3} µs/op  ({calls} ops)",
            "cached token()",
            start.elapsed().as_secs_f64() * 1e6 / calls as f64
        );

        let tasks = 8u32;
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let provider = provider.clone();
                tokio::spawn(async move {
                    for _ in 0..calls / tasks {
                        provider.token().await.expect("token");
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
        println!(
            "{:<44} {:>10.3} µs/op  ({calls} ops, {tasks} tasks, 2 threads)",
            "cached token() concurrent",
            start.elapsed().as_secs_f64() * 1e6 / calls as f64
        );
    }
    server.shutdown().await;
}
