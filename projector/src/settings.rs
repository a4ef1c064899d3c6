//! Typed settings, from the environment (or flags), checked at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use event_store::connect::{connect_options, lazy_pool};
use secrecy::{ExposeSecret, SecretString};
use service_kit::settings::secret;
use sqlx::postgres::{PgConnectOptions, PgPool};

use crate::projections::Thresholds;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnPoison {
    /// Stop the projection at the event and say why (the default: nothing is skipped).
    Stop,
    /// Record the event in `projection_dead_letters` and go on.
    Park,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transactions {
    /// Use MongoDB transactions when the server is a replica set or mongos.
    Auto,
    On,
    Off,
}

#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// PostgreSQL connection URL (the event store).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret)]
    pub database_url: SecretString,

    /// MongoDB connection URI (the views).
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

    /// Events read and applied per batch.
    #[arg(long, env = "PROJECTOR_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch_size: i64,

    /// What to do with an event that cannot be applied.
    #[arg(long, env = "PROJECTOR_ON_POISON", value_enum, default_value = "stop")]
    pub on_poison: OnPoison,

    /// Address of the health and metrics endpoints of `projector run`.
    #[arg(long, env = "PROJECTOR_ADDR", default_value = "127.0.0.1:8083")]
    pub addr: SocketAddr,

    /// Longest wait between polls when no notification arrives, in milliseconds.
    #[arg(long, env = "PROJECTOR_POLL_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_interval_ms: u64,

    /// Whether to wrap each batch in a MongoDB transaction as well. Off by default: the
    /// per-document guards alone make every view exactly-once, and that is the path the
    /// tests run (the local MongoDB-compatible server cannot run the driver's transactions).
    #[arg(
        long,
        env = "PROJECTOR_MONGO_TRANSACTIONS",
        value_enum,
        default_value = "off"
    )]
    pub transactions: Transactions,

    #[command(flatten)]
    pub thresholds: Thresholds,
}

impl Settings {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub fn pg_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        connect_options(self.database_url.expose_secret(), "projector")
    }

    pub fn pool(&self) -> Result<PgPool, sqlx::Error> {
        Ok(lazy_pool(self.pg_options()?, 8, Duration::from_secs(5)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    #[test]
    fn mongodb_transactions_are_opt_in() {
        // Assumes PROJECTOR_MONGO_TRANSACTIONS is unset, as under `make test`.
        let cli = Cli::try_parse_from(["projector", "--database-url", "postgres://x/y"]).unwrap();
        assert_eq!(cli.settings.transactions, Transactions::Off);
        assert!(!format!("{:?}", cli.settings).contains("postgres://x/y"));
    }

    #[test]
    fn the_thresholds_defaults_are_the_documented_ones() {
        // Assumes no WINDOW_*/ALERT_* variable is set, as under `make test`.
        let cli = Cli::try_parse_from(["projector", "--database-url", "postgres://x/y"]).unwrap();
        assert_eq!(cli.settings.thresholds, Thresholds::default());
    }

    #[test]
    fn database_passwords_never_reach_debug_output() {
        let cli = Cli::try_parse_from([
            "projector",
            "--database-url",
            "postgres://projector:hunter2@db/orders",
            "--mongodb-uri",
            "mongodb://views:swordfish@mongo:27017",
        ])
        .unwrap();
        let shown = format!("{:?}", cli.settings);
        for secret in ["hunter2", "swordfish"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}
