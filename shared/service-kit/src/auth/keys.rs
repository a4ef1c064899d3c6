//! The keys tokens are checked with: an HS256 secret, and the asymmetric keys of a JWKS
//! chosen by `kid`. Each key verifies only its own algorithm, so a token cannot choose how
//! it is checked (`alg: none`, or an HMAC signed with an RSA public key's bytes, fail).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::caller::{Caller, Unauthorized};
use super::settings::AuthSettings;
use super::token::Claims;

/// Why the keys could not be set up: the service does not start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no key to check tokens with: set AUTH_HS256_SECRET or AUTH_JWKS (or AUTH_DISABLED=true for development only)"
    )]
    NoKey,
    #[error("AUTH_HS256_SECRET must be at least 32 bytes")]
    ShortSecret,
    #[error("AUTH_JWKS {0}: {1}")]
    Jwks(String, String),
}

/// Least length of an HS256 secret: the hash's own size.
const MIN_SECRET_BYTES: usize = 32;

pub(super) struct Keys {
    hs256: Option<DecodingKey>,
    jwks: Option<Jwks>,
    validation: Validation,
}

/// A JWKS source, its keys by `kid`, and the single-flight refresh.
struct Jwks {
    source: String,
    http: reqwest::Client,
    keys: RwLock<Arc<HashMap<String, (Algorithm, DecodingKey)>>>,
    /// When the last read began; held while a read is under way.
    refresh: Mutex<Instant>,
    /// Reads begun so far.
    started: AtomicU64,
    min_refresh: Duration,
}

impl Keys {
    pub(super) async fn load(settings: &AuthSettings) -> Result<Self, KeyError> {
        let jwks = match jwks_source(settings) {
            Some(source) => Some(Jwks::load(source, settings.jwks_min_refresh).await?),
            None => None,
        };
        Self::with_jwks(settings, jwks)
    }

    /// The keys without the JWKS (refused when `AUTH_JWKS` is set: use [`Keys::load`]).
    pub(super) fn from_secret(settings: &AuthSettings) -> Result<Self, KeyError> {
        if let Some(source) = &settings.jwks {
            return Err(KeyError::Jwks(
                source.clone(),
                "needs `Auth::new`, which reads it".into(),
            ));
        }
        Self::with_jwks(settings, None)
    }

    fn with_jwks(settings: &AuthSettings, jwks: Option<Jwks>) -> Result<Self, KeyError> {
        // An empty secret (`AUTH_HS256_SECRET=`) is no secret.
        let secret = settings
            .hs256_secret
            .as_ref()
            .filter(|s| !s.expose_secret().is_empty());
        let hs256 = match secret {
            Some(secret) => {
                let bytes = secret.expose_secret().as_bytes();
                if bytes.len() < MIN_SECRET_BYTES {
                    return Err(KeyError::ShortSecret);
                }
                Some(DecodingKey::from_secret(bytes).map_err(|_| KeyError::ShortSecret)?)
            }
            None => None,
        };
        if hs256.is_none() && jwks.is_none() {
            return Err(KeyError::NoKey);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.validate_nbf = true;
        validation.leeway = settings.leeway.as_secs();
        Ok(Self {
            hs256,
            jwks,
            validation,
        })
    }

    pub(super) async fn verify(&self, token: &str) -> Result<Caller, Unauthorized> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Unauthorized("the token is not a JWT".into()))?;
        let (algorithm, key) = match (header.alg, &header.kid) {
            (Algorithm::HS256, _) => {
                let key = self
                    .hs256
                    .as_ref()
                    .ok_or_else(|| Unauthorized("HS256 tokens are not accepted here".into()))?;
                (Algorithm::HS256, key.clone())
            }
            (_, Some(kid)) => {
                let jwks = self.jwks.as_ref().ok_or_else(|| {
                    Unauthorized("tokens signed with a key id are not accepted here".into())
                })?;
                jwks.key(kid).await?
            }
            (_, None) => {
                return Err(Unauthorized(
                    "the token names no key (`kid`) and is not HS256".into(),
                ));
            }
        };
        let mut validation = self.validation.clone();
        validation.algorithms = vec![algorithm];
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| Unauthorized(why(e.kind()).into()))?;
        let claims = data.claims;
        let sub = claims
            .sub
            .parse()
            .map_err(|_| Unauthorized("`sub` is not a valid customer id".into()))?;
        Ok(Caller {
            staff: claims.is_staff(),
            sub,
        })
    }
}

/// `AUTH_JWKS`, unless empty.
fn jwks_source(settings: &AuthSettings) -> Option<&str> {
    settings.jwks.as_deref().filter(|s| !s.is_empty())
}

/// What a client is told about a refused token: enough to fix it, nothing about the keys.
fn why(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "the token has expired",
        K::ImmatureSignature => "the token is not valid yet (`nbf`)",
        K::InvalidIssuer => "the token's issuer is not accepted",
        K::InvalidAudience => "the token is not for this audience",
        K::InvalidSignature => "the token's signature is wrong",
        K::InvalidAlgorithm => "the token's algorithm does not match its key",
        K::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss, aud, sub)",
        K::InvalidClaimFormat(_) => "a claim of the token is malformed",
        _ => "the token is malformed",
    }
}

impl Jwks {
    async fn load(source: &str, min_refresh: Duration) -> Result<Self, KeyError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| KeyError::Jwks(source.into(), e.to_string()))?;
        let jwks = Self {
            source: source.to_owned(),
            http,
            keys: RwLock::new(Arc::default()),
            refresh: Mutex::new(Instant::now()),
            started: AtomicU64::new(0),
            min_refresh,
        };
        let keys = jwks.fetch().await?;
        if keys.is_empty() {
            return Err(KeyError::Jwks(
                source.into(),
                "holds no usable signing key".into(),
            ));
        }
        jwks.replace(keys);
        Ok(jwks)
    }

    fn current(&self) -> Arc<HashMap<String, (Algorithm, DecodingKey)>> {
        self.keys.read().map(|k| Arc::clone(&k)).unwrap_or_default()
    }

    fn replace(&self, keys: HashMap<String, (Algorithm, DecodingKey)>) {
        if let Ok(mut current) = self.keys.write() {
            *current = Arc::new(keys);
        }
    }

    /// The key `kid`; an unknown one prompts a re-read of the JWKS (a key rotation), at most
    /// one per `min_refresh`, shared by every request waiting for it.
    async fn key(&self, kid: &str) -> Result<(Algorithm, DecodingKey), Unauthorized> {
        if let Some(found) = self.current().get(kid) {
            return Ok(found.clone());
        }
        let seen = self.started.load(Ordering::Acquire);
        let mut last = self.refresh.lock().await;
        // A read that began after this request found the kid unknown has finished (it held
        // the lock): its keys answer this request too, without another read.
        if self.started.load(Ordering::Acquire) == seen {
            tokio::time::sleep_until(*last + self.min_refresh).await;
            *last = Instant::now();
            self.started.fetch_add(1, Ordering::AcqRel);
            match self.fetch().await {
                Ok(keys) if !keys.is_empty() => self.replace(keys),
                Ok(_) => tracing::warn!("the JWKS holds no usable key now; keeping the last ones"),
                // Keep the keys we have; the next unknown kid tries again.
                Err(e) => tracing::warn!(error = %e, "could not re-read the JWKS"),
            }
        }
        drop(last);
        self.current()
            .get(kid)
            .cloned()
            .ok_or_else(|| Unauthorized("the token's key (`kid`) is unknown".into()))
    }

    async fn fetch(&self) -> Result<HashMap<String, (Algorithm, DecodingKey)>, KeyError> {
        let failed = |e: &dyn std::fmt::Display| KeyError::Jwks(self.source.clone(), e.to_string());
        let body = if self.source.starts_with("http://") || self.source.starts_with("https://") {
            let response = self
                .http
                .get(&self.source)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| failed(&e))?;
            response.bytes().await.map_err(|e| failed(&e))?.to_vec()
        } else {
            tokio::fs::read(&self.source)
                .await
                .map_err(|e| failed(&e))?
        };
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| failed(&e))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                tracing::warn!("AUTH_JWKS: a key without `kid` is ignored");
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let Some(algorithm) = algorithm_of(jwk.common.key_algorithm, &jwk.algorithm) else {
                tracing::warn!(
                    kid,
                    "AUTH_JWKS: a key that is not an RSA or EC signing key is ignored"
                );
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid.clone(), (algorithm, key));
                }
                Err(e) => {
                    tracing::warn!(kid, error = %e, "AUTH_JWKS: an unreadable key is ignored")
                }
            }
        }
        Ok(keys)
    }
}

/// The one algorithm a JWKS key verifies: its `alg`, or the usual one for its type. HMAC
/// (`oct`) keys have no place in a published key set and are refused.
fn algorithm_of(named: Option<KeyAlgorithm>, params: &AlgorithmParameters) -> Option<Algorithm> {
    let algorithm = match named {
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::RS384) => Algorithm::RS384,
        Some(KeyAlgorithm::RS512) => Algorithm::RS512,
        Some(KeyAlgorithm::PS256) => Algorithm::PS256,
        Some(KeyAlgorithm::PS384) => Algorithm::PS384,
        Some(KeyAlgorithm::PS512) => Algorithm::PS512,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::ES384) => Algorithm::ES384,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(_) => return None,
        None => match params {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
            _ => return None,
        },
    };
    let fits = matches!(
        (algorithm, params),
        (
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512,
            AlgorithmParameters::RSA(_)
        ) | (
            Algorithm::ES256 | Algorithm::ES384,
            AlgorithmParameters::EllipticCurve(_)
        ) | (Algorithm::EdDSA, AlgorithmParameters::OctetKeyPair(_))
    );
    fits.then_some(algorithm)
}
