//! The write-service's part of the shared ops routes (`service_kit::ops`): its readiness.

use service_kit::ops::{self, Readiness};
use sqlx::PgPool;

/// Ready when PostgreSQL answers within two seconds; the body names it `postgres`.
pub async fn ready(pool: PgPool) -> Readiness {
    ops::ping("postgres", async move {
        sqlx::query("select 1").execute(&pool).await.map(drop)
    })
    .await
}
