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

/// [`connect_options`] for a command path, which only ever looks rows up by key: the planner
/// may use neither sequential scans nor hash or merge joins. A prepared statement keeps the
/// plan made when it was prepared, and a plan made while `events` or `streams` held a few
/// pages scans them whole; the tables then grow by thousands of rows a second until the
/// next `ANALYZE` replaces it (in S1, PostgreSQL then spent 5 to 20 ms of CPU per command
/// hashing every event; a perf profile showed `HeapTupleSatisfiesVisibility`, `hash_bytes`
/// and `ExecScanHashBucket` on top). With these settings every plan is an index lookup,
/// whatever the statistics say. So the generic plan of a prepared statement is as good as a
/// custom one, and it is always used: left to choose, PostgreSQL planned the stream read
/// again on a third of its calls (in S1, pg_stat_statements counted 19,245 plans in 59,188
/// calls, 5.8 s of planning against 16.5 s of execution).
pub fn command_options(url: &str, application: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(connect_options(url, application)?.options([
        ("enable_seqscan", "off"),
        ("enable_hashjoin", "off"),
        ("enable_mergejoin", "off"),
        ("plan_cache_mode", "force_generic_plan"),
    ]))
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
