//! How a service connects to the event store's PostgreSQL.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The connection options of `application` (its name shows in `pg_stat_activity`). An
/// abandoned transaction would hold back every tailer of the log, so PostgreSQL ends one left
/// idle for 10 s.
pub fn connect_options(url: &str, application: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?
        .application_name(application)
        .options([("idle_in_transaction_session_timeout", "10s")]))
}

/// A lazily connecting pool: the service starts while PostgreSQL is away, and recovers by
/// itself when it returns.
pub fn lazy_pool(
    options: PgConnectOptions,
    max_connections: u32,
    acquire_timeout: Duration,
) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(options)
}
