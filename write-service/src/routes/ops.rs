//! The write-service's part of the shared ops routes (`service_kit::ops`): its readiness.

use service_kit::auth::Auth;
use service_kit::ops::{self, Readiness};
use sqlx::PgPool;

/// Ready when PostgreSQL answers within two seconds; the body names it `postgres`, and says
/// `"auth": "disabled"` when tokens are not checked, ready or not, so nobody misses it.
pub async fn ready(pool: PgPool, auth: Auth) -> Readiness {
    let mut readiness = ops::ping("postgres", async move {
        sqlx::query("select 1").execute(&pool).await.map(drop)
    })
    .await;
    match &mut readiness {
        Ok(details) | Err(details) => auth.readiness_note(details),
    }
    readiness
}
