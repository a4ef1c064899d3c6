//! Typed settings, read from the environment (or flags) once at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use mongodb::Client;
use mongodb::options::ClientOptions;
use secrecy::{ExposeSecret, SecretString};
use service_kit::auth::AuthSettings;
use service_kit::settings::secret;

#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// Address the HTTP server listens on (port 0 picks a free port).
    #[arg(long, env = "READ_SERVICE_ADDR", default_value = "127.0.0.1:8082")]
    pub addr: SocketAddr,

    /// MongoDB connection URI (the views); may carry credentials, so it is kept as a secret
    /// that `Debug` does not show.
    #[arg(
        long,
        env = "MONGODB_URI",
        hide_env_values = true,
        default_value = "mongodb://127.0.0.1:27017",
        value_parser = secret
    )]
    pub mongodb_uri: SecretString,

    /// MongoDB database holding the views.
    #[arg(long, env = "MONGODB_DATABASE", default_value = "shop")]
    pub mongodb_database: String,

    /// Longest a request with `X-Consistency-Token` waits for the views, in milliseconds.
    #[arg(long, env = "READ_CONSISTENCY_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub consistency_timeout_ms: u64,

    /// Most requests that may wait for a consistency token at once; more answer 503 at once.
    #[arg(long, env = "READ_MAX_WAITING", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_waiting: u64,

    /// How long a request waits for a reachable MongoDB before answering 503, in milliseconds.
    #[arg(long, env = "MONGODB_SERVER_SELECTION_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub mongodb_timeout_ms: u64,

    /// Secret (at least 32 bytes) that signs pagination cursors. Give every instance the
    /// same one so cursors work across instances and restarts; unset, each process signs
    /// with a random key and its cursors end with it (a client then gets 400 and restarts
    /// paging).
    #[arg(long, env = "READ_CURSOR_SECRET", hide_env_values = true, value_parser = crate::cursor::parse_secret)]
    pub cursor_secret: Option<SecretString>,

    /// Bearer-token keys, issuer, audience and the per-caller rate limit.
    #[command(flatten)]
    pub auth: AuthSettings,
}

impl Settings {
    /// Settings for tests and embedding: defaults, this server and database, port 0, and no
    /// token key, so the service refuses to start until `auth` is given one (tests use
    /// `test_support::auth::settings()`): nothing embedded starts open by default.
    pub fn new(mongodb_uri: impl Into<String>, mongodb_database: impl Into<String>) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            mongodb_uri: SecretString::from(mongodb_uri.into()),
            mongodb_database: mongodb_database.into(),
            consistency_timeout_ms: 2000,
            max_waiting: 128,
            mongodb_timeout_ms: 2000,
            cursor_secret: None,
            auth: AuthSettings {
                hs256_secret: None,
                ..AuthSettings::hs256("")
            },
        }
    }

    pub fn consistency_timeout(&self) -> Duration {
        Duration::from_millis(self.consistency_timeout_ms)
    }

    /// A client that connects lazily: the service starts, answers 503 while MongoDB is away
    /// and recovers by itself. The short server selection timeout makes a request fail in
    /// about two seconds instead of the driver's default thirty.
    pub async fn client(&self) -> Result<Client, mongodb::error::Error> {
        let mut options = ClientOptions::parse(self.mongodb_uri.expose_secret()).await?;
        let timeout = Duration::from_millis(self.mongodb_timeout_ms);
        options.app_name = Some("read-service".into());
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        Client::with_options(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_never_reaches_debug_output() {
        let s = Settings::new("mongodb://u:hunter2@h:27017", "shop");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("shop"));
    }

    #[test]
    fn secrets_given_as_flags_never_reach_debug_output() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        let cursor_secret = "a-cursor-secret-of-at-least-32-bytes";
        let token_secret = "a-token-secret-of-at-least-32-bytes";
        let cli = Cli::try_parse_from([
            "read-service",
            "--mongodb-uri",
            "mongodb://reader:hunter2@db:27017/?authSource=admin",
            "--cursor-secret",
            cursor_secret,
            "--auth-hs256-secret",
            token_secret,
        ])
        .unwrap();
        assert_eq!(
            cli.settings.mongodb_uri.expose_secret(),
            "mongodb://reader:hunter2@db:27017/?authSource=admin"
        );
        let shown = format!("{:?}", cli.settings);
        assert!(cli.settings.auth.hs256_secret.is_some());
        for secret in ["hunter2", "reader", cursor_secret, token_secret] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}
