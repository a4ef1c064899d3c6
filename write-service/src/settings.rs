//! Typed settings, read from the environment (or flags) once at start-up.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

#[derive(Clone, clap::Args)]
pub struct Settings {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Address the HTTP server listens on (port 0 picks a free port).
    #[arg(long, env = "WRITE_SERVICE_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: SocketAddr,

    /// Store the aggregate state every this many events of a stream.
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,

    /// Size of the PostgreSQL connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub database_max_connections: u32,

    /// How many times a command that lost a race on its stream is retried before 409.
    #[arg(long, env = "COMMAND_MAX_RETRIES", default_value_t = 10)]
    pub command_max_retries: u32,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &redact(&self.database_url))
            .field("addr", &self.addr)
            .field("snapshot_every", &self.snapshot_every)
            .field("database_max_connections", &self.database_max_connections)
            .field("command_max_retries", &self.command_max_retries)
            .finish()
    }
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Settings {
    /// A lazily connecting pool: the service starts and answers 503 while PostgreSQL is
    /// away, and recovers by itself when it returns.
    pub fn pool(&self) -> Result<PgPool, sqlx::Error> {
        let options = PgConnectOptions::from_str(&self.database_url)?
            .application_name("write-service")
            // An abandoned transaction would hold back every tailer; PostgreSQL ends it.
            .options([("idle_in_transaction_session_timeout", "10s")]);
        Ok(PgPoolOptions::new()
            .max_connections(self.database_max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options))
    }
}

#[cfg(test)]
mod tests {
    use super::{Settings, redact};

    #[test]
    fn the_database_password_never_reaches_debug_output() {
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
        ])
        .unwrap();
        let shown = format!("{:?}", cli.settings);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://writer:***@db:5432/orders"),
            "{shown}"
        );
    }

    #[test]
    fn passwords_never_reach_debug_output() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
