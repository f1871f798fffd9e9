//! Any text as a private key (PEM, JWK or JWKS), with and without a configured key id and
//! algorithm: never a panic; a refusal is one line; an accepted key has the configured kid and
//! algorithm, publishes no private member, and signs what its published public key verifies.
#![no_main]
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, Validation};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use smart_auth::{SigningAlgorithm, SigningKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let algorithms = [
        None,
        Some(SigningAlgorithm::RS384),
        Some(SigningAlgorithm::ES384),
    ];
    for kid in [None, Some("k")] {
        for algorithm in algorithms {
            match SigningKey::parse(text, kid, algorithm) {
                Ok(key) => check(&key, kid, algorithm),
                Err(e) => {
                    let message = e.to_string();
                    assert!(!message.contains('\n'), "{message:?}");
                }
            }
        }
    }
});

fn check(key: &SigningKey, kid: Option<&str>, algorithm: Option<SigningAlgorithm>) {
    if let Some(kid) = kid {
        assert_eq!(key.kid(), kid);
    }
    if let Some(algorithm) = algorithm {
        assert_eq!(key.algorithm(), algorithm);
    }
    let public = key.public_jwk();
    for private in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
        assert!(
            public.get(private).is_none(),
            "the public JWK has {private}"
        );
    }
    let jws = key
        .sign(&json!({"sub": "fuzz"}), None)
        .expect("an accepted key signs");
    let jwk: Jwk = serde_json::from_value(public.clone()).expect("a JWK");
    let decoding = DecodingKey::from_jwk(&jwk).expect("a verifying key");
    let alg = key.algorithm().as_str().parse().expect("a JWT algorithm");
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<Value>(&jws, &decoding, &validation)
        .expect("the published key verifies the signature");
    assert_eq!(claims.claims["sub"], "fuzz");
}
