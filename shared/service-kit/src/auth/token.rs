//! The claims a token carries, and minting HS256 tokens (the `token` command, tests, demo).

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The claims the services read. `exp`, `iss`, `aud` and `sub` are required; `nbf` is
/// checked when present. The `staff` role comes from `roles` (a list) or `scope` (words
/// separated by spaces, as OAuth 2 writes it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// The role that runs the shop.
pub const STAFF: &str = "staff";

impl Claims {
    /// Claims for `sub`, valid from now for `ttl`.
    pub fn new(sub: &str, issuer: &str, audience: &str, staff: bool, ttl: Duration) -> Self {
        let now = jsonwebtoken::get_current_timestamp();
        Self {
            sub: sub.to_owned(),
            iss: issuer.to_owned(),
            aud: audience.to_owned(),
            exp: now + ttl.as_secs(),
            nbf: Some(now),
            iat: Some(now),
            roles: if staff { vec![STAFF.into()] } else { vec![] },
            scope: None,
        }
    }

    pub fn is_staff(&self) -> bool {
        self.roles.iter().any(|r| r == STAFF)
            || self
                .scope
                .as_deref()
                .is_some_and(|s| s.split_whitespace().any(|w| w == STAFF))
    }

    /// These claims signed with an HS256 secret.
    pub fn sign_hs256(&self, secret: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            self,
            &EncodingKey::from_secret(secret)?,
        )
    }
}
