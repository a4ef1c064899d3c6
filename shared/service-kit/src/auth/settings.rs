//! The authentication settings every HTTP service takes.

use std::time::Duration;

use secrecy::SecretString;

use crate::settings::secret;

#[derive(Clone, Debug, clap::Args)]
pub struct AuthSettings {
    /// HS256 secret the service's own tokens are signed with (development, or a shop that
    /// mints its own tokens); at least 32 bytes.
    #[arg(long = "auth-hs256-secret", env = "AUTH_HS256_SECRET", hide_env_values = true, value_parser = secret)]
    pub hs256_secret: Option<SecretString>,

    /// The identity provider's public keys (RS256/ES256...): a JWKS file path or an
    /// http(s) URL. Re-read when a token names an unknown `kid`.
    #[arg(long = "auth-jwks", env = "AUTH_JWKS")]
    pub jwks: Option<String>,

    /// The `iss` every token must carry.
    #[arg(
        long = "auth-issuer",
        env = "AUTH_ISSUER",
        default_value = "order-backend"
    )]
    pub issuer: String,

    /// The `aud` every token must include.
    #[arg(
        long = "auth-audience",
        env = "AUTH_AUDIENCE",
        default_value = "order-backend"
    )]
    pub audience: String,

    /// Clock difference tolerated on `exp` and `nbf`.
    #[arg(long = "auth-leeway", env = "AUTH_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub leeway: Duration,

    /// Least time between two JWKS reads prompted by unknown `kid`s (a token naming a new
    /// key waits at most this long for it).
    #[arg(long = "auth-jwks-min-refresh", env = "AUTH_JWKS_MIN_REFRESH", default_value = "2s", value_parser = humantime::parse_duration)]
    pub jwks_min_refresh: Duration,

    /// Serve every request as staff without a token. Development only: logged as a warning
    /// at start and on every `/health/ready`.
    #[arg(long = "auth-disabled", env = "AUTH_DISABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub disabled: bool,

    /// Requests per second each caller (token `sub`) may make on average; above it, 429
    /// with `Retry-After`.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_per_second: u32,

    /// Requests a caller may make at once above the average.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,
}

impl AuthSettings {
    /// Settings with an HS256 secret only and the defaults otherwise.
    pub fn hs256(secret: &str) -> Self {
        Self {
            hs256_secret: Some(SecretString::from(secret)),
            jwks: None,
            issuer: "order-backend".into(),
            audience: "order-backend".into(),
            leeway: Duration::from_secs(30),
            jwks_min_refresh: Duration::from_secs(2),
            disabled: false,
            rate_limit_per_second: 1000,
            rate_limit_burst: 2000,
        }
    }
}
