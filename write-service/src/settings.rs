//! Typed settings, read from the environment (or flags) once at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use event_store::connect::{command_options, lazy_pool};
use secrecy::{ExposeSecret, SecretString};
use service_kit::auth::AuthSettings;
use service_kit::settings::secret;
use sqlx::postgres::PgPool;

#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret)]
    pub database_url: SecretString,

    /// Address the HTTP server listens on (port 0 picks a free port).
    #[arg(long, env = "WRITE_SERVICE_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: SocketAddr,

    /// Store the aggregate state every this many events of a stream. Products are hot: every
    /// order reads two or three and every confirmation appends to them, so a load's tail of
    /// events after the snapshot costs more than writing the snapshot more often (S1 at 16
    /// clients: 511 commands/s with 100, 657 with 20).
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,

    /// Size of the PostgreSQL connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub database_max_connections: u32,

    /// How many times a command that lost a race on its stream is retried before 409.
    #[arg(long, env = "COMMAND_MAX_RETRIES", default_value_t = 10)]
    pub command_max_retries: u32,

    /// Bearer tokens: the keys they are checked with, and the per-caller rate limit.
    #[command(flatten)]
    pub auth: AuthSettings,
}

impl Settings {
    /// The service answers 503 while PostgreSQL is away.
    pub fn pool(&self) -> Result<PgPool, sqlx::Error> {
        let options = command_options(self.database_url.expose_secret(), "write-service")?;
        Ok(lazy_pool(
            options,
            self.database_max_connections,
            Duration::from_secs(3),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::Settings;

    #[test]
    fn the_database_password_and_token_secret_never_reach_debug_output() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        let cli = Cli::try_parse_from([
            "write-service",
            "--database-url",
            "postgres://writer:hunter2@db:5432/orders?sslmode=require",
            "--auth-hs256-secret",
            "swordfish-swordfish-swordfish-swordfish",
        ])
        .unwrap();
        let shown = format!("{:?}", cli.settings);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("swordfish"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }
}
