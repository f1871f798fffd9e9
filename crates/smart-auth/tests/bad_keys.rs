//! Bad private keys (PEM, JWK, JWKS), one named case per kind, through the token provider's
//! construction (where a sync configures its authentication, before any request): each is
//! refused with one line that says why and holds none of the key's secret material, or, for
//! the odd but usable ones, accepted. No panic, no hang (a timeout fails the case).
mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{http, jwt_config, key_text};
use serde_json::{Value, json};
use smart_auth::{SecretSource, SigningAlgorithm, SigningKey, TokenProvider};

const CASE_TIMEOUT: Duration = Duration::from_secs(60);

struct Case {
    kind: &'static str,
    text: String,
    key_id: Option<&'static str>,
    algorithm: Option<SigningAlgorithm>,
    /// `Ok(kid)`: accepted, signing as `kid`; `Err(reason)`: refused saying it.
    expect: Result<&'static str, &'static str>,
}

fn case(
    kind: &'static str,
    text: impl Into<String>,
    expect: Result<&'static str, &'static str>,
) -> Case {
    Case {
        kind,
        text: text.into(),
        key_id: None,
        algorithm: None,
        expect,
    }
}

impl Case {
    fn kid(mut self, kid: &'static str) -> Case {
        self.key_id = Some(kid);
        self
    }
    fn alg(mut self, alg: SigningAlgorithm) -> Case {
        self.algorithm = Some(alg);
        self
    }
}

/// The private JWK fixture `name` with `patch` applied (a `null` member removes the key).
fn jwk(name: &str, patch: Value) -> String {
    let mut key: Value =
        serde_json::from_str(&key_text(&format!("{name}.private.jwk.json"))).expect("a fixture");
    if let (Some(key), Some(patch)) = (key.as_object_mut(), patch.as_object()) {
        for (k, v) in patch {
            match v {
                Value::Null => key.remove(k),
                v => key.insert(k.clone(), v.clone()),
            };
        }
    }
    key.to_string()
}

fn member(name: &str, member: &str) -> Value {
    let key: Value =
        serde_json::from_str(&key_text(&format!("{name}.private.jwk.json"))).expect("a fixture");
    key[member].clone()
}

fn jwks(keys: &[String]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| serde_json::from_str(k).expect("a JWK"))
        .collect();
    json!({ "keys": keys }).to_string()
}

fn odd(name: &str) -> String {
    key_text(&format!("odd/{name}"))
}

/// A base64url number of `bytes` bytes, none of them zero.
fn big(bytes: usize) -> String {
    use base64::Engine;
    let b: Vec<u8> = (0..bytes).map(|i| (i * 7 % 255 + 1) as u8).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// One case a line: a table.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let pem = key_text("ec384-a.pkcs8.pem");
    let rsa_pem = key_text("rsa-a.pkcs8.pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let refused = Err;
    vec![
        // Not a key at all.
        case("empty text", "", refused("expected a private JWK or JWKS")),
        case("whitespace only", " \n\t ", refused("expected a private JWK or JWKS")),
        case("a password instead of a key", "hunter2", refused("expected a private JWK or JWKS")),
        case("JSON cut off", r#"{"kty":"EC","crv":"P-384","d":"#, refused("looks like JSON but does not parse")),
        // JWK: key type and members.
        case("JWK without kty", jwk("ec384-a", json!({"kty": null})), refused(r#"the JWK lacks "kty""#)),
        case("JWK kty not a string", jwk("ec384-a", json!({"kty": 2})), refused(r#"the JWK lacks "kty""#)),
        case("JWK of a symmetric key (oct)", json!({"kty": "oct", "k": "c2VjcmV0", "d": "x", "kid": "k"}).to_string(), refused(r#"unsupported JWK key type "oct""#)),
        case("JWK of an Edwards key (OKP)", json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A", "kid": "k"}).to_string(), refused(r#"unsupported JWK key type "OKP""#)),
        case("public JWK given as the private key", key_text("rsa-a.public.jwk.json"), refused(r#"public key (no "d" member)"#)),
        case("RSA JWK without n", jwk("rsa-a", json!({"n": null})), refused(r#"the RSA JWK lacks "n""#)),
        case("RSA JWK d not base64url", jwk("rsa-a", json!({"d": "not base64!"})), refused(r#"member "d" is not base64url"#)),
        case("RSA JWK d of another key", jwk("rsa-a", json!({"d": member("rsa-b", "d"), "p": null, "q": null})), refused("not a consistent RSA key")),
        case("RSA JWK primes of another key", jwk("rsa-a", json!({"p": member("rsa-b", "p"), "q": member("rsa-b", "q")})), refused("not a consistent RSA key")),
        case("RSA JWK with a 16,384-bit modulus of junk", jwk("rsa-a", json!({"n": big(2048), "d": big(2040), "p": null, "q": null})), refused("RSA")),
        case("RSA JWK with e = 0", jwk("rsa-a", json!({"e": "AA", "p": null, "q": null})), refused("RSA")),
        case("EC JWK without crv", jwk("ec384-a", json!({"crv": null})), refused(r#"the EC JWK lacks "crv""#)),
        case("EC JWK of curve secp256k1", jwk("ec384-a", json!({"crv": "secp256k1"})), refused(r#"unsupported EC curve "secp256k1""#)),
        // Found by the signing_key fuzz target: the name reached the message unescaped.
        case("EC JWK of a curve named over lines", jwk("ec384-a", json!({"crv": "P-5\nQvK_91Ziu]3waTl-3lB\nQvK_91Ziu]3waTl-3lB\nQvK_91Ziu]3waTl"})), refused(r#"unsupported EC curve "P-5\nQvK_91Ziu]3waTl-3lB\nQvK_91Ziu]3waTl-"..."#)),
        case("EC JWK of curve P-521", key_text("ec521-a.private.jwk.json"), refused("P-521")),
        case("EC JWK with another curve's coordinates", jwk("ec384-a", json!({"crv": "P-256"})), refused("the EC P-256 JWK is invalid")),
        case("EC JWK d of another key", jwk("ec384-a", json!({"d": member("ec256-a", "d")})), refused("the EC P-384 JWK is invalid")),
        case("EC JWK d not base64url", jwk("ec384-a", json!({"d": "***"})), refused("the EC P-384 JWK is invalid")),
        case("EC JWK d zero", jwk("ec256-a", json!({"d": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})), refused("the EC P-256 JWK is invalid")),
        // JWK: use, algorithm and key id.
        case("JWK meant for encryption", jwk("ec384-a", json!({"use": "enc"})), refused(r#"meant for use "enc""#)),
        case("JWK key_ops without sign", jwk("ec384-a", json!({"key_ops": ["verify"]})), refused(r#"key_ops do not include "sign""#)),
        case("JWK alg not a SMART algorithm", jwk("ec384-a", json!({"alg": "HS256"})), refused("expected one of RS256")),
        case("JWK alg of another key type", jwk("rsa-a", json!({"alg": "ES384"})), refused("algorithm ES384 needs an EC P-384 key, but the key is an RSA key")),
        case("configured algorithm against the JWK's alg", jwk("rsa-a", json!({})), refused("does not match the JWK's alg")).alg(SigningAlgorithm::RS256),
        case("JWK without kid and no key_id", jwk("ec384-a", json!({"kid": null})), refused(r#"the JWK has no "kid""#)),
        case("key_id against the JWK's kid", jwk("ec384-a", json!({})), refused("does not match the JWK's kid")).kid("other"),
        // JWKS.
        case("JWKS whose keys is not an array", r#"{"keys": {}}"#, refused("the JWKS has no `keys` array")),
        case("empty JWKS", r#"{"keys": []}"#, refused("the JWKS holds no private key")),
        case("JWKS of public keys", jwks(&[key_text("rsa-a.public.jwk.json"), key_text("ec384-a.public.jwk.json")]), refused("the JWKS holds no private key")),
        case("JWKS of two private keys, none chosen", jwks(&[jwk("rsa-a", json!({})), jwk("rsa-b", json!({}))]), refused("several matching private keys")),
        case("JWKS without the configured kid", jwks(&[jwk("rsa-a", json!({}))]), refused("no private key in the JWKS matches kid `missing`")).kid("missing"),
        // PEM.
        case("PEM without key_id", pem.clone(), refused("set key_id")),
        case("PEM without its END line", pem.lines().filter(|l| !l.starts_with("-----END")).collect::<Vec<_>>().join("\n"), refused("malformed PEM block")).kid("k"),
        case("PEM cut in the middle", format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", &body[..body.len() / 2]), refused("PEM")).kid("k"),
        case("PEM body not base64", "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n", refused("malformed PEM block")).kid("k"),
        case("PEM labels that do not match", format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END EC PRIVATE KEY-----\n"), refused("malformed PEM block")).kid("k"),
        case("PKCS#8 body under a PKCS#1 label", rsa_pem.replace("PRIVATE KEY", "RSA PRIVATE KEY"), refused("invalid PKCS#1 RSA private key")).kid("k"),
        case("PEM public key given as the private key", odd("ec384-a.public.pem"), refused("the PEM holds a public key, not a private key")).kid("k"),
        case("PEM certificate given as the private key", odd("ec384-a.cert.pem"), refused("the PEM holds a certificate, not a private key")).kid("k"),
        case("encrypted PEM key", odd("ec384-a.encrypted.pem"), refused("encrypted PEM keys are not supported")).kid("k"),
        case("PEM of an unknown kind", "-----BEGIN DSA PRIVATE KEY-----\nAAAA\n-----END DSA PRIVATE KEY-----\n", refused(r#"unsupported PEM block "DSA PRIVATE KEY""#)).kid("k"),
        case("PEM of two private keys", format!("{pem}{rsa_pem}"), refused("the PEM holds 2 private keys")).kid("k"),
        case("PEM of EC parameters only", "-----BEGIN EC PARAMETERS-----\nBgUrgQQAIg==\n-----END EC PARAMETERS-----\n", refused("no PEM private key found")).kid("k"),
        case("PKCS#8 Ed25519 key", odd("ed25519.pkcs8.pem"), refused("unsupported PKCS#8 key algorithm")).kid("k"),
        case("PKCS#8 EC key of curve secp256k1", odd("secp256k1.pkcs8.pem"), refused("unsupported EC curve")).kid("k"),
        case("PKCS#8 EC key of curve P-521", key_text("ec521-a.pkcs8.pem"), refused("P-521")).kid("k"),
        case("SEC1 EC key of curve P-521", key_text("ec521-a.sec1.pem"), refused("invalid or unsupported SEC1 EC private key")).kid("k"),
        case("RSA key of 1024 bits", odd("rsa1024.pkcs8.pem"), refused("the RSA key has 1024 bits; at least 2048 are required")).kid("k"),
        case("PEM key against the configured algorithm", rsa_pem.clone(), refused("algorithm ES256 needs an EC P-256 key")).kid("k").alg(SigningAlgorithm::ES256),
        // Odd but usable.
        case("PEM with text around it", format!("my key:\n{pem}\n(keep safe)\n"), Ok("k")).kid("k"),
        case("PEM with CRLF line ends", pem.replace('\n', "\r\n"), Ok("k")).kid("k"),
        case("JWK with a byte order mark", format!("\u{feff}{}", jwk("ec384-a", json!({}))), Ok("ec384-a")),
        case("PEM with a byte order mark", format!("\u{feff}{pem}"), Ok("k")).kid("k"),
        case("JWK with unknown members", jwk("ec384-a", json!({"x5c": ["MII"], "comment": "ours"})), Ok("ec384-a")),
        case("JWKS with a public key beside the private one", jwks(&[key_text("rsa-b.public.jwk.json"), jwk("rsa-a", json!({}))]), Ok("rsa-a")),
    ]
}

/// Secret material of a key text: JWK private members and PEM body lines.
fn secrets(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.len() >= 16 && !l.contains("-----") && !l.contains('"'))
        .map(str::to_string)
        .collect();
    if let Ok(v) = serde_json::from_str::<Value>(text.trim_start_matches('\u{feff}')) {
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| vec![v]);
        for k in keys {
            for m in ["d", "p", "q", "dp", "dq", "qi"] {
                if let Some(s) = k.get(m).and_then(Value::as_str).filter(|s| s.len() >= 8) {
                    out.push(s.to_string());
                }
            }
        }
    }
    out
}

/// The problems with `case` (none when it behaved as decided).
fn check(case: &Case) -> Vec<String> {
    let base = url::Url::parse("https://fhir.example/r4").expect("a URL");
    let config = smart_auth::AuthConfig {
        key_id: case.key_id.map(str::to_string),
        algorithm: case.algorithm,
        ..jwt_config("client", SecretSource::Inline(case.text.clone().into()))
    };
    let mut problems = Vec::new();
    match (TokenProvider::new(&base, config, http()), case.expect) {
        (Ok(_), Ok(kid)) => match SigningKey::parse(&case.text, case.key_id, case.algorithm) {
            Ok(key) if key.kid() == kid => {}
            Ok(key) => problems.push(format!("signs as {}, expected {kid}", key.kid())),
            Err(e) => problems.push(format!(
                "the provider took the key, the parser refused it: {e}"
            )),
        },
        (Ok(_), Err(reason)) => {
            problems.push(format!("accepted; it should be refused saying {reason:?}"))
        }
        (Err(e), Ok(_)) => problems.push(format!("refused: {e}")),
        (Err(e), Err(reason)) => {
            let message = e.to_string();
            if !message.contains(reason) || message.contains('\n') {
                problems.push(format!(
                    "refused with {message:?}, not one line saying {reason:?}"
                ));
            }
            if let Some(s) = secrets(&case.text)
                .iter()
                .find(|s| message.contains(s.as_str()))
            {
                problems.push(format!("the message shows secret material {s:?}"));
            }
        }
    }
    problems
}

#[test]
fn bad_keys_are_refused_with_one_line_that_keeps_their_secret() {
    let cases = cases();
    let total = cases.len();
    let mut failures = Vec::new();
    for case in cases {
        let kind = case.kind;
        let (tx, rx) = mpsc::channel();
        // A thread per case: a hang is a timeout, a panic a closed channel.
        let worker = std::thread::spawn(move || {
            let _ = tx.send(check(&case));
        });
        let problems = match rx.recv_timeout(CASE_TIMEOUT) {
            Ok(problems) => problems,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                vec![format!("no result within {CASE_TIMEOUT:?} (a hang)")]
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => vec!["panicked".to_string()],
        };
        if problems.is_empty() {
            let _ = worker.join();
        } else {
            failures.push(format!("{kind}: {}", problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
