//! Private signing keys for client assertions: JWK, JWKS or PEM (PKCS#8, PKCS#1, SEC1).
use std::fmt;
use std::str::FromStr;

use jsonwebtoken::{EncodingKey, Header};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::der::pem;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, ObjectIdentifier, PrivateKeyInfo};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::AuthError;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Smallest RSA modulus accepted for signing.
const MIN_RSA_BITS: usize = 2048;

/// Client assertion signing algorithms. SMART Backend Services requires servers to support
/// RS384 and ES384; the others are used when a server advertises them and the key allows.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SigningAlgorithm {
    RS256,
    RS384,
    RS512,
    ES256,
    ES384,
}

impl SigningAlgorithm {
    pub const ALL: [SigningAlgorithm; 5] = [
        SigningAlgorithm::RS256,
        SigningAlgorithm::RS384,
        SigningAlgorithm::RS512,
        SigningAlgorithm::ES256,
        SigningAlgorithm::ES384,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::RS256 => "RS256",
            SigningAlgorithm::RS384 => "RS384",
            SigningAlgorithm::RS512 => "RS512",
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::ES384 => "ES384",
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            SigningAlgorithm::RS384 => jsonwebtoken::Algorithm::RS384,
            SigningAlgorithm::RS512 => jsonwebtoken::Algorithm::RS512,
            SigningAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            SigningAlgorithm::ES384 => jsonwebtoken::Algorithm::ES384,
        }
    }

    /// The key type this algorithm needs.
    fn key_kind(self) -> KeyKind {
        match self {
            SigningAlgorithm::RS256 | SigningAlgorithm::RS384 | SigningAlgorithm::RS512 => {
                KeyKind::Rsa
            }
            SigningAlgorithm::ES256 => KeyKind::P256,
            SigningAlgorithm::ES384 => KeyKind::P384,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for SigningAlgorithm {
    type Error = AuthError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<SigningAlgorithm> for String {
    fn from(value: SigningAlgorithm) -> Self {
        value.as_str().to_string()
    }
}

/// A value taken from a key, quoted for a message: escaped (a key is untrusted text; no line
/// break or control character may reach a one-line message) and cut after 40 characters.
pub(crate) fn quoted(value: &str) -> String {
    const SHOWN: usize = 40;
    let cut: String = value.chars().take(SHOWN).collect();
    let more = if value.chars().nth(SHOWN).is_some() {
        "..."
    } else {
        ""
    };
    format!("{cut:?}{more}")
}

impl FromStr for SigningAlgorithm {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unsupported = |reason: &str| AuthError::UnsupportedAlgorithm {
            name: quoted(s),
            reason: reason.to_string(),
        };
        match s {
            "RS256" => Ok(SigningAlgorithm::RS256),
            "RS384" => Ok(SigningAlgorithm::RS384),
            "RS512" => Ok(SigningAlgorithm::RS512),
            "ES256" => Ok(SigningAlgorithm::ES256),
            "ES384" => Ok(SigningAlgorithm::ES384),
            "ES512" => Err(unsupported(
                "ECDSA with P-521 is not available in the JWT library used; use ES384 or RS384",
            )),
            "PS256" | "PS384" | "PS512" | "EdDSA" => Err(unsupported(
                "not a SMART Backend Services algorithm; use RS384 or ES384",
            )),
            _ => Err(unsupported(
                "expected one of RS256, RS384, RS512, ES256, ES384",
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
}

impl KeyKind {
    fn describe(self) -> &'static str {
        match self {
            KeyKind::Rsa => "an RSA key",
            KeyKind::P256 => "an EC P-256 key",
            KeyKind::P384 => "an EC P-384 key",
        }
    }

    fn default_algorithm(self) -> SigningAlgorithm {
        match self {
            KeyKind::Rsa => SigningAlgorithm::RS384,
            KeyKind::P256 => SigningAlgorithm::ES256,
            KeyKind::P384 => SigningAlgorithm::ES384,
        }
    }
}

/// Parsed private key material, before an algorithm is fixed.
enum PrivateKey {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
}

impl PrivateKey {
    fn kind(&self) -> KeyKind {
        match self {
            PrivateKey::Rsa(_) => KeyKind::Rsa,
            PrivateKey::P256(_) => KeyKind::P256,
            PrivateKey::P384(_) => KeyKind::P384,
        }
    }
}

/// A private key ready to sign client assertions with a fixed algorithm and key id.
#[derive(Clone)]
pub struct SigningKey {
    algorithm: SigningAlgorithm,
    kid: String,
    encoding: EncodingKey,
    public_jwk: Value,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    /// Parses a private key given as a JWK, a JWKS or PEM text.
    ///
    /// `kid` and `algorithm` are the configured values: a JWK's own `kid`/`alg` are used when
    /// these are absent and must agree when both are present; a JWKS is searched by them. The
    /// algorithm defaults to RS384 for RSA, ES384 for P-384 and ES256 for P-256 keys. PEM keys
    /// carry no key id, so `kid` is required for them (SMART requires `kid` in the header).
    pub fn parse(
        text: &str,
        kid: Option<&str>,
        algorithm: Option<SigningAlgorithm>,
    ) -> Result<SigningKey, AuthError> {
        // A byte order mark, as some editors write at the start of a file, is no part of the key.
        let trimmed = text.trim().trim_start_matches('\u{feff}').trim_start();
        if trimmed.starts_with('{') {
            let value: Value = serde_json::from_str(trimmed).map_err(|e| {
                AuthError::Key(format!(
                    "the key looks like JSON but does not parse (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?;
            if value.get("keys").is_some() {
                Self::from_jwks(&value, kid, algorithm)
            } else {
                Self::from_jwk(&value, kid, algorithm)
            }
        } else if trimmed.contains("-----BEGIN ") {
            Self::from_pem(trimmed, kid, algorithm)
        } else {
            Err(AuthError::Key(
                "expected a private JWK or JWKS (JSON) or a PEM private key (-----BEGIN PRIVATE KEY-----)".to_string(),
            ))
        }
    }

    /// Picks the private key from a JWKS (`{"keys": [...]}`) by `kid` and/or `alg`.
    pub fn from_jwks(
        jwks: &Value,
        kid: Option<&str>,
        algorithm: Option<SigningAlgorithm>,
    ) -> Result<SigningKey, AuthError> {
        let keys = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| AuthError::Key("the JWKS has no `keys` array".to_string()))?;
        let private: Vec<&Value> = keys.iter().filter(|k| k.get("d").is_some()).collect();
        if private.is_empty() {
            return Err(AuthError::Key(
                "the JWKS holds no private key (no key has a \"d\" member)".to_string(),
            ));
        }
        let matching: Vec<&Value> = private
            .iter()
            .copied()
            .filter(|k| kid.is_none_or(|kid| k.get("kid").and_then(Value::as_str) == Some(kid)))
            .filter(|k| {
                algorithm.is_none_or(|alg| match k.get("alg").and_then(Value::as_str) {
                    Some(key_alg) => key_alg == alg.as_str(),
                    None => jwk_kind(k) == Some(alg.key_kind()),
                })
            })
            .collect();
        let kids = || {
            private
                .iter()
                .map(|k| {
                    k.get("kid")
                        .and_then(Value::as_str)
                        .unwrap_or("(no kid)")
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match matching.as_slice() {
            [one] => Self::from_jwk(one, kid, algorithm),
            [] => Err(AuthError::Key(format!(
                "no private key in the JWKS matches{}{} (private keys: {})",
                kid.map(|k| format!(" kid `{k}`")).unwrap_or_default(),
                algorithm
                    .map(|a| format!(" algorithm {a}"))
                    .unwrap_or_default(),
                kids()
            ))),
            _ => Err(AuthError::Key(format!(
                "the JWKS holds several matching private keys ({}); set key_id (and/or algorithm) to choose one",
                kids()
            ))),
        }
    }

    /// Builds the key from one private JWK (`kty` RSA or EC with `crv` P-256/P-384).
    pub fn from_jwk(
        jwk: &Value,
        kid: Option<&str>,
        algorithm: Option<SigningAlgorithm>,
    ) -> Result<SigningKey, AuthError> {
        let field = |name: &str| jwk.get(name).and_then(Value::as_str);
        if jwk.get("d").is_none() {
            return Err(AuthError::Key(
                "the JWK is a public key (no \"d\" member); a private key is required".to_string(),
            ));
        }
        if let Some(key_ops) = jwk.get("key_ops").and_then(Value::as_array)
            && !key_ops.iter().any(|op| op.as_str() == Some("sign"))
        {
            return Err(AuthError::Key(
                "the JWK's key_ops do not include \"sign\"".to_string(),
            ));
        }
        if let Some(usage) = field("use")
            && usage != "sig"
        {
            return Err(AuthError::Key(format!(
                "the JWK is meant for use {}, not \"sig\"",
                quoted(usage)
            )));
        }
        let key = match field("kty") {
            Some("RSA") => {
                let big = |name: &str| -> Result<BigUint, AuthError> {
                    let text = field(name)
                        .ok_or_else(|| AuthError::Key(format!("the RSA JWK lacks \"{name}\"")))?;
                    let bytes = zeroize::Zeroizing::new(b64url(text).map_err(|_| {
                        AuthError::Key(format!("the RSA JWK member \"{name}\" is not base64url"))
                    })?);
                    Ok(BigUint::from_bytes_be(&bytes))
                };
                let primes = if jwk.get("p").is_some() && jwk.get("q").is_some() {
                    vec![big("p")?, big("q")?]
                } else {
                    Vec::new()
                };
                let rsa = RsaPrivateKey::from_components(big("n")?, big("e")?, big("d")?, primes)
                    .map_err(|e| {
                    AuthError::Key(format!("the RSA JWK is not a consistent RSA key: {e}"))
                })?;
                PrivateKey::Rsa(Box::new(rsa))
            }
            Some("EC") => {
                // Only the members the curve crates know: they reject `kid`, `alg` and the like.
                let mut core = serde_json::Map::new();
                for name in ["kty", "crv", "x", "y", "d"] {
                    if let Some(v) = jwk.get(name) {
                        core.insert(name.to_string(), v.clone());
                    }
                }
                let json = zeroize::Zeroizing::new(Value::Object(core).to_string());
                match field("crv") {
                    Some("P-256") => {
                        PrivateKey::P256(p256::SecretKey::from_jwk_str(&json).map_err(|_| {
                            AuthError::Key("the EC P-256 JWK is invalid".to_string())
                        })?)
                    }
                    Some("P-384") => {
                        PrivateKey::P384(p384::SecretKey::from_jwk_str(&json).map_err(|_| {
                            AuthError::Key("the EC P-384 JWK is invalid".to_string())
                        })?)
                    }
                    Some("P-521") => {
                        return Err(AuthError::Key(
                            "EC P-521 keys (ES512) are not supported; use a P-384 (ES384) or RSA (RS384) key".to_string(),
                        ));
                    }
                    Some(other) => {
                        return Err(AuthError::Key(format!(
                            "unsupported EC curve {}",
                            quoted(other)
                        )));
                    }
                    None => return Err(AuthError::Key("the EC JWK lacks \"crv\"".to_string())),
                }
            }
            Some(other) => {
                return Err(AuthError::Key(format!(
                    "unsupported JWK key type {}; SMART client assertions need an RSA or EC key",
                    quoted(other)
                )));
            }
            None => return Err(AuthError::Key("the JWK lacks \"kty\"".to_string())),
        };

        let jwk_kid = field("kid");
        let kid = match (kid, jwk_kid) {
            (Some(configured), Some(own)) if configured != own => {
                return Err(AuthError::Key(format!(
                    "key_id {} does not match the JWK's kid {}",
                    quoted(configured),
                    quoted(own)
                )));
            }
            (Some(k), _) | (None, Some(k)) => k.to_string(),
            (None, None) => {
                return Err(AuthError::Key(
                    "the JWK has no \"kid\"; set key_id (SMART requires a kid header)".to_string(),
                ));
            }
        };
        let jwk_alg = match field("alg") {
            Some(name) => Some(name.parse::<SigningAlgorithm>()?),
            None => None,
        };
        let algorithm = match (algorithm, jwk_alg) {
            (Some(configured), Some(own)) if configured != own => {
                return Err(AuthError::Key(format!(
                    "algorithm {configured} does not match the JWK's alg {own}"
                )));
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => key.kind().default_algorithm(),
        };
        Self::build(key, kid, algorithm)
    }

    /// Builds the key from PEM text: PKCS#8 (`PRIVATE KEY`, RSA or EC), PKCS#1 (`RSA PRIVATE
    /// KEY`) or SEC1 (`EC PRIVATE KEY`). Other blocks such as `EC PARAMETERS` are skipped.
    pub fn from_pem(
        text: &str,
        kid: Option<&str>,
        algorithm: Option<SigningAlgorithm>,
    ) -> Result<SigningKey, AuthError> {
        let mut keys = Vec::new();
        for block in pem_blocks(text) {
            let (label, der) = pem::decode_vec(block.as_bytes())
                .map_err(|e| AuthError::Key(format!("malformed PEM block: {e}")))?;
            let der = zeroize::Zeroizing::new(der);
            match label {
                "PRIVATE KEY" => keys.push(parse_pkcs8(&der)?),
                "RSA PRIVATE KEY" => keys.push(PrivateKey::Rsa(Box::new(
                    RsaPrivateKey::from_pkcs1_der(&der).map_err(|e| {
                        AuthError::Key(format!("invalid PKCS#1 RSA private key: {e}"))
                    })?,
                ))),
                "EC PRIVATE KEY" => keys.push(parse_sec1(&der)?),
                "EC PARAMETERS" => {}
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(AuthError::Key(
                        "encrypted PEM keys are not supported; provide the decrypted key, e.g. through a command source"
                            .to_string(),
                    ));
                }
                "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE" => {
                    return Err(AuthError::Key(format!(
                        "the PEM holds a {}, not a private key",
                        label.to_lowercase()
                    )));
                }
                other => {
                    return Err(AuthError::Key(format!(
                        "unsupported PEM block {}",
                        quoted(other)
                    )));
                }
            }
        }
        let key = match keys.len() {
            0 => return Err(AuthError::Key("no PEM private key found".to_string())),
            1 => keys.remove(0),
            n => {
                return Err(AuthError::Key(format!(
                    "the PEM holds {n} private keys; provide exactly one"
                )));
            }
        };
        let kid = kid.ok_or_else(|| {
            AuthError::Key(
                "a PEM key carries no key id: set key_id to the kid registered with the server"
                    .to_string(),
            )
        })?;
        let algorithm = algorithm.unwrap_or_else(|| key.kind().default_algorithm());
        Self::build(key, kid.to_string(), algorithm)
    }

    fn build(
        key: PrivateKey,
        kid: String,
        algorithm: SigningAlgorithm,
    ) -> Result<SigningKey, AuthError> {
        if key.kind() != algorithm.key_kind() {
            return Err(AuthError::Key(format!(
                "algorithm {algorithm} needs {}, but the key is {}",
                algorithm.key_kind().describe(),
                key.kind().describe()
            )));
        }
        let (encoding, mut public_jwk) = match &key {
            PrivateKey::Rsa(rsa) => {
                let bits = rsa.size() * 8;
                if bits < MIN_RSA_BITS {
                    return Err(AuthError::Key(format!(
                        "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
                    )));
                }
                let der = rsa
                    .to_pkcs1_der()
                    .map_err(|e| AuthError::Key(format!("cannot encode the RSA key: {e}")))?;
                let jwk = serde_json::json!({
                    "kty": "RSA",
                    "n": b64url_encode(&rsa.n().to_bytes_be()),
                    "e": b64url_encode(&rsa.e().to_bytes_be()),
                });
                (EncodingKey::from_rsa_der(der.as_bytes()), jwk)
            }
            PrivateKey::P256(secret) => {
                let der = secret
                    .to_pkcs8_der()
                    .map_err(|e| AuthError::Key(format!("cannot encode the EC key: {e}")))?;
                let jwk: Value = serde_json::from_str(&secret.public_key().to_jwk_string())
                    .map_err(|e| {
                        AuthError::Key(format!("cannot describe the EC public key: {e}"))
                    })?;
                (EncodingKey::from_ec_der(der.as_bytes()), jwk)
            }
            PrivateKey::P384(secret) => {
                let der = secret
                    .to_pkcs8_der()
                    .map_err(|e| AuthError::Key(format!("cannot encode the EC key: {e}")))?;
                let jwk: Value = serde_json::from_str(&secret.public_key().to_jwk_string())
                    .map_err(|e| {
                        AuthError::Key(format!("cannot describe the EC public key: {e}"))
                    })?;
                (EncodingKey::from_ec_der(der.as_bytes()), jwk)
            }
        };
        if let Value::Object(map) = &mut public_jwk {
            map.insert("kid".to_string(), Value::String(kid.clone()));
            map.insert(
                "alg".to_string(),
                Value::String(algorithm.as_str().to_string()),
            );
            map.insert("use".to_string(), Value::String("sig".to_string()));
            map.insert("key_ops".to_string(), serde_json::json!(["verify"]));
        }
        Ok(SigningKey {
            algorithm,
            kid,
            encoding,
            public_jwk,
        })
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK (with `kid`, `alg`, `use`), ready to register with a server.
    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    /// Signs `claims` as a compact JWS with header `alg`, `kid`, `typ: "JWT"` and optional `jku`.
    pub fn sign<T: Serialize>(&self, claims: &T, jku: Option<&str>) -> Result<String, AuthError> {
        let mut header = Header::new(self.algorithm.jwt());
        header.typ = Some("JWT".to_string());
        header.kid = Some(self.kid.clone());
        header.jku = jku.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| AuthError::Signing(e.to_string()))
    }
}

fn parse_pkcs8(der: &[u8]) -> Result<PrivateKey, AuthError> {
    let info = PrivateKeyInfo::try_from(der)
        .map_err(|e| AuthError::Key(format!("invalid PKCS#8 private key: {e}")))?;
    let oid = info.algorithm.oid;
    if oid == OID_RSA {
        let rsa = RsaPrivateKey::from_pkcs8_der(der)
            .map_err(|e| AuthError::Key(format!("invalid PKCS#8 RSA private key: {e}")))?;
        return Ok(PrivateKey::Rsa(Box::new(rsa)));
    }
    if oid != OID_EC {
        return Err(AuthError::Key(format!(
            "unsupported PKCS#8 key algorithm {oid}; SMART client assertions need an RSA or EC key"
        )));
    }
    match info.algorithm.parameters_oid().ok() {
        Some(curve) if curve == OID_P256 => p256::SecretKey::from_pkcs8_der(der)
            .map(PrivateKey::P256)
            .map_err(|e| AuthError::Key(format!("invalid PKCS#8 P-256 private key: {e}"))),
        Some(curve) if curve == OID_P384 => p384::SecretKey::from_pkcs8_der(der)
            .map(PrivateKey::P384)
            .map_err(|e| AuthError::Key(format!("invalid PKCS#8 P-384 private key: {e}"))),
        Some(curve) if curve == OID_P521 => Err(AuthError::Key(
            "EC P-521 keys (ES512) are not supported; use a P-384 (ES384) or RSA (RS384) key"
                .to_string(),
        )),
        Some(curve) => Err(AuthError::Key(format!(
            "unsupported EC curve {curve}; use P-384 or P-256"
        ))),
        None => Err(AuthError::Key(
            "the PKCS#8 EC key does not name its curve".to_string(),
        )),
    }
}

fn parse_sec1(der: &[u8]) -> Result<PrivateKey, AuthError> {
    if let Ok(key) = p384::SecretKey::from_sec1_der(der) {
        return Ok(PrivateKey::P384(key));
    }
    if let Ok(key) = p256::SecretKey::from_sec1_der(der) {
        return Ok(PrivateKey::P256(key));
    }
    Err(AuthError::Key(
        "invalid or unsupported SEC1 EC private key (P-384 and P-256 are supported; P-521/ES512 is not)".to_string(),
    ))
}

/// Splits PEM text into its `-----BEGIN …-----`…`-----END …-----` blocks.
fn pem_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let from_begin = &rest[start..];
        let Some(end_marker) = from_begin.find("-----END ") else {
            blocks.push(from_begin);
            break;
        };
        let after_end = &from_begin[end_marker + "-----END ".len()..];
        let close = after_end
            .find("-----")
            .map_or(after_end.len(), |i| i + "-----".len());
        let len = end_marker + "-----END ".len() + close;
        blocks.push(&from_begin[..len]);
        rest = &from_begin[len..];
    }
    blocks
}

/// The kind of key a JWK describes, when recognisable.
fn jwk_kind(jwk: &Value) -> Option<KeyKind> {
    match (
        jwk.get("kty").and_then(Value::as_str),
        jwk.get("crv").and_then(Value::as_str),
    ) {
        (Some("RSA"), _) => Some(KeyKind::Rsa),
        (Some("EC"), Some("P-256")) => Some(KeyKind::P256),
        (Some("EC"), Some("P-384")) => Some(KeyKind::P384),
        _ => None,
    }
}

fn b64url(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
}

fn b64url_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_split_and_skip_surroundings() {
        let text = "junk\n-----BEGIN EC PARAMETERS-----\nBgUrgQQAIg==\n-----END EC PARAMETERS-----\n-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\ntrailer";
        let blocks = pem_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert!(blocks[0].starts_with("-----BEGIN EC PARAMETERS-----"));
        assert!(blocks[0].ends_with("-----END EC PARAMETERS-----"));
        assert!(blocks[1].ends_with("-----END EC PRIVATE KEY-----"));
    }

    #[test]
    fn a_byte_order_mark_before_a_jwk_is_ignored() {
        let jwk = r#"{"kty":"EC","crv":"P-256","kid":"k","x":"gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0","y":"SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps","d":"0_NxaRPUMQoAJt50Gz8YiTr8gRTwyEaCumd-MToTmIo"}"#;
        let key = SigningKey::parse(&format!("\u{feff}{jwk}\n"), None, None).unwrap();
        assert_eq!(key.kid(), "k");
    }

    #[test]
    fn algorithm_names_round_trip_and_es512_is_rejected_clearly() {
        for alg in SigningAlgorithm::ALL {
            assert_eq!(alg.as_str().parse::<SigningAlgorithm>().unwrap(), alg);
        }
        let err = "ES512".parse::<SigningAlgorithm>().unwrap_err().to_string();
        assert!(err.contains("P-521"), "{err}");
        assert!("HS256".parse::<SigningAlgorithm>().is_err());
    }
}
