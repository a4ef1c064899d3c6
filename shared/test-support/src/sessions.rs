//! PostgreSQL sessions as a test sees them.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

/// The queries of the sessions of `conn`'s database (other than `conn`) that sit inside a
/// transaction, after waiting up to 5 s for them to settle: a connection being closed or
/// rolled back settles at once, a poisoned one never does.
pub async fn left_in_a_transaction(conn: &mut PgConnection) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stuck: Vec<String> = sqlx::query_scalar(
            "select query from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid()
               and state like 'idle in transaction%'",
        )
        .fetch_all(&mut *conn)
        .await
        .expect("pg_stat_activity");
        if stuck.is_empty() || Instant::now() >= deadline {
            return stuck;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
