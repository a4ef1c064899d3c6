//! Typed settings, from the environment (or flags), checked at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use event_store::connect::{connect_options, lazy_pool};
use secrecy::{ExposeSecret, SecretString};
use service_kit::settings::secret;
use sqlx::postgres::{PgConnectOptions, PgPool};

#[derive(Clone, Debug, clap::Args)]
pub struct Settings {
    /// PostgreSQL connection URL (the event store, and the process's own tables).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret)]
    pub database_url: SecretString,

    /// Address of the health and metrics endpoints.
    #[arg(long, env = "FULFILMENT_ADDR", default_value = "127.0.0.1:8084")]
    pub addr: SocketAddr,

    /// Base URL of the payment provider's API (Stripe's, or the sandbox's).
    #[arg(
        long,
        env = "PAYMENT_PROVIDER_URL",
        default_value = "http://127.0.0.1:12111"
    )]
    pub payment_provider_url: String,

    /// The provider's secret API key, sent as `Authorization: Bearer` (`run` needs it).
    #[arg(long, env = "PAYMENT_API_KEY", hide_env_values = true, value_parser = secret)]
    pub payment_api_key: Option<SecretString>,

    /// How long a confirmed order may wait for its payment before it is cancelled and its
    /// stock released, e.g. `10m`, `90s`.
    #[arg(long, env = "PAYMENT_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub payment_timeout: Duration,

    /// How long one request to the provider may take before its answer counts as lost.
    #[arg(long, env = "PAYMENT_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub payment_request_timeout: Duration,

    /// The SMTP server customer emails go through, e.g. `smtp://127.0.0.1:2525`.
    #[arg(
        long,
        env = "SMTP_URL",
        hide_env_values = true,
        default_value = "smtp://127.0.0.1:2525",
        value_parser = secret
    )]
    pub smtp_url: SecretString,

    /// The emails' sender.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "Order Backend <orders@example.com>"
    )]
    pub mail_from: String,

    /// An order confirmed without an email address mails `{userId}@` this domain.
    #[arg(long, env = "CUSTOMER_EMAIL_DOMAIN", default_value = "example.com")]
    pub customer_email_domain: String,

    /// Longest wait between polls of the log, the outbox and the deadlines when nothing
    /// wakes the process, in milliseconds.
    #[arg(long, env = "FULFILMENT_POLL_INTERVAL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_interval_ms: u64,

    /// Longest wait between two attempts of one piece of outside work.
    #[arg(long, env = "FULFILMENT_MAX_RETRY_DELAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_retry_delay: Duration,
}

impl Settings {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub fn pg_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        connect_options(self.database_url.expose_secret(), "fulfilment")
    }

    pub fn pool(&self) -> Result<PgPool, sqlx::Error> {
        // The dispatcher's 16 pieces of work, the tail, the deadlines and the lease at once.
        Ok(lazy_pool(self.pg_options()?, 24, Duration::from_secs(5)))
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
    fn secrets_never_reach_debug_output_and_durations_read_as_written() {
        let cli = Cli::try_parse_from([
            "fulfilment",
            "--database-url",
            "postgres://f:hunter2@db/orders",
            "--payment-api-key",
            "sk_test_swordfish",
            "--smtp-url",
            "smtp://mail:letmein@mail:25",
            "--payment-timeout",
            "90s",
        ])
        .unwrap();
        let shown = format!("{:?}", cli.settings);
        for secret in ["hunter2", "swordfish", "letmein"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(cli.settings.payment_timeout, Duration::from_secs(90));
    }
}
