//! One active instance per named job (a projection generation, the fulfilment process): a
//! PostgreSQL session advisory lock, held on a dedicated connection. If the holder dies its
//! connection closes and the lock is free; a standby polling for it takes over within a
//! second.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};
use tokio_util::sync::CancellationToken;

pub struct Lease {
    conn: PgConnection,
    name: String,
}

const KEY: &str = "hashtextextended($1, 0)";

impl Lease {
    pub async fn try_acquire(
        options: &PgConnectOptions,
        name: &str,
    ) -> Result<Option<Lease>, sqlx::Error> {
        let mut conn = PgConnection::connect_with(options).await?;
        let got: bool = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select pg_try_advisory_lock({KEY})"
        )))
        .bind(name)
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
        if got {
            Ok(Some(Lease {
                conn,
                name: name.to_owned(),
            }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Waits as a standby until the lease is ours, or `cancel` fires (then `None`).
    pub async fn acquire(
        options: &PgConnectOptions,
        name: &str,
        cancel: &CancellationToken,
    ) -> Option<Lease> {
        let mut announced = false;
        loop {
            match Lease::try_acquire(options, name).await {
                Ok(Some(lease)) => return Some(lease),
                Ok(None) if !announced => {
                    tracing::info!(
                        lease = name,
                        "another instance holds the lease; standing by"
                    );
                    announced = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(lease = name, error = %e, "cannot reach PostgreSQL for the lease")
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Still ours: the connection that holds the lock is alive.
    pub async fn is_held(&mut self) -> bool {
        sqlx::query("select 1")
            .execute(&mut self.conn)
            .await
            .is_ok()
    }

    pub async fn release(mut self) {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select pg_advisory_unlock({KEY})"
        )))
        .bind(&self.name)
        .execute(&mut self.conn)
        .await;
        let _ = self.conn.close().await;
    }
}
