//! Tokens for the tests: HS256 ones signed with the tests' secret (the services under test
//! are configured with [`settings`]), and RS256/ES256 ones signed with the test keys in
//! `shared/test-support/keys/` (published, so protecting nothing) for JWKS tests.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use service_kit::auth::{AuthSettings, Claims};

/// The HS256 secret every service under test checks tokens with.
pub const SECRET: &str = "the-order-backend-tests-own-hs256-secret-not-for-use";

/// The id staff tokens carry.
pub const STAFF_SUB: &str = "staff-1";

/// Authentication settings with the tests' secret.
pub fn settings() -> AuthSettings {
    AuthSettings::hs256(SECRET)
}

/// Claims for `sub` valid for an hour, with the default issuer and audience.
pub fn claims(sub: &str, staff: bool) -> Claims {
    Claims::new(
        sub,
        "order-backend",
        "order-backend",
        staff,
        Duration::from_secs(3600),
    )
}

/// `claims` signed with the tests' secret.
pub fn sign(claims: &Claims) -> String {
    claims
        .sign_hs256(SECRET.as_bytes())
        .expect("signable claims")
}

/// A staff token.
pub fn staff() -> String {
    sign(&claims(STAFF_SUB, true))
}

/// A customer's token.
pub fn customer(sub: &str) -> String {
    sign(&claims(sub, false))
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The folder of the test keys.
pub fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("keys")
}

/// The public key `name` (`test-rsa-1`, `test-rsa-2`, `test-ec-1`) as a JWK; its `kid` is
/// its name.
pub fn jwk(name: &str) -> Value {
    let text =
        std::fs::read_to_string(keys_dir().join(format!("{name}.jwk.json"))).expect("a test key");
    serde_json::from_str(&text).expect("a JWK")
}

/// A JWKS of the named public keys.
pub fn jwks(names: &[&str]) -> Value {
    json!({"keys": names.iter().map(|n| jwk(n)).collect::<Vec<_>>()})
}

/// The PEM text of a test key: `test-rsa-1.pem` (private) or `test-rsa-1.pub.pem`.
pub fn pem(file: &str) -> Vec<u8> {
    std::fs::read(keys_dir().join(file)).expect("a test key file")
}

/// `claims` signed with the private test key `name`, naming it as `kid`.
pub fn sign_with_key(name: &str, claims: &Claims) -> String {
    let private = pem(&format!("{name}.pem"));
    let (algorithm, key) = if name.starts_with("test-ec") {
        (Algorithm::ES256, EncodingKey::from_ec_pem(&private))
    } else {
        (Algorithm::RS256, EncodingKey::from_rsa_pem(&private))
    };
    let mut header = Header::new(algorithm);
    header.kid = Some(name.to_owned());
    jsonwebtoken::encode(&header, claims, &key.expect("a test key")).expect("signable claims")
}
