//! The floor under S1: the least database work an order command needs, driven straight at
//! the same PostgreSQL with no service in between, as pgbench would (N connections, each
//! held for the run, prepared statements, one client loop per connection).
//!
//! One floor transaction is what a new order must do in this data model: read the prices
//! of its two products (the one statement that reads each product's latest snapshot and
//! the events after it, the way any event-sourced service must know a product's current
//! state) and then, in one transaction, create the order's stream row and its one event
//! (`BEGIN`, two `INSERT`s, `COMMIT`). It checks no token, decides nothing, keeps no
//! idempotency record and reserves no stock: S1's confirm, which also moves two product
//! streams, is compared against the same floor.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use sqlx::{Connection, PgPool};
use tokio::time::Instant;

use crate::closed_loop::{self, RunResult, Tally};
use crate::statements::Profiler;

/// The products' current state: each one's snapshot, then the events after it.
const READ_PRODUCTS: &str = "with wanted as (
       select w.stream_id, s.stream_version, s.state
       from unnest($1::text[]) as w(stream_id)
       left join lateral (
         select stream_version, state from snapshots where snapshots.stream_id = w.stream_id
         limit 1
       ) s on true
     )
     select stream_id, stream_version as position, state as data
     from wanted where stream_version is not null
     union all
     select w.stream_id, e.stream_position, e.data
     from wanted w cross join lateral (
       select stream_position, data from events
       where events.stream_id = w.stream_id
         and events.stream_position > coalesce(w.stream_version, 0)
       order by stream_position
       offset 0
     ) e
     order by 1, 2";
const INSERT_STREAM: &str =
    "insert into streams (stream_id, stream_type, version) values ($1, 'order', 1)";
const INSERT_EVENT: &str = "insert into events
       (stream_id, stream_position, event_id, event_type, schema_version, data, metadata)
     values ($1, 1, $2, 'FloorOrderPlaced', 1, $3, $4)";

/// What the floor runs, for the report.
pub fn describe() -> String {
    format!(
        "per transaction, on a connection held for the run, prepared: (1) `{}` for the order's \
         two products; (2) `BEGIN`; (3) `{INSERT_STREAM}`; (4) `{}` with a 2-line order's \
         JSON; (5) `COMMIT`",
        "select … snapshots … union all … events … (each product's snapshot and the events after it)",
        INSERT_EVENT
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// One run of `level` client loops against `pool` (at least `level` connections): warm-up,
/// then a measured window; what completed inside the window.
pub async fn drive(
    pool: &PgPool,
    products: u64,
    level: usize,
    warmup: Duration,
    duration: Duration,
    profiler: Option<&Profiler>,
) -> anyhow::Result<RunResult> {
    closed_loop::run(level, warmup, duration, profiler, |task, window| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.context("a floor connection")?;
            let mut rng = fastrand::Rng::with_seed(1000 + task as u64);
            let mut tally = Tally::default();
            tokio::time::sleep_until(window.start).await;
            while window.open() {
                let (p1, p2) = (rng.u64(0..products), rng.u64(0..products));
                let p2 = if p2 == p1 { (p1 + 1) % products } else { p2 };
                let stream = format!("floor-{}", uuid::Uuid::new_v4());
                let data = json!({
                    "orderId": stream, "userId": format!("u-{task}"), "currency": "USD",
                    "items": [
                        {"productId": format!("p-{p1}"), "quantity": 1, "unitPriceCents": 100},
                        {"productId": format!("p-{p2}"), "quantity": 2, "unitPriceCents": 137},
                    ],
                });
                let metadata = json!({"requestId": uuid::Uuid::new_v4().to_string()});
                let t = Instant::now();
                let result: Result<(), sqlx::Error> = async {
                    let ids = vec![format!("product-p-{p1}"), format!("product-p-{p2}")];
                    sqlx::query(READ_PRODUCTS)
                        .bind(&ids)
                        .fetch_all(&mut *conn)
                        .await?;
                    let mut tx = conn.begin().await?;
                    sqlx::query(INSERT_STREAM)
                        .bind(&stream)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(INSERT_EVENT)
                        .bind(&stream)
                        .bind(uuid::Uuid::new_v4())
                        .bind(&data)
                        .bind(&metadata)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await
                }
                .await;
                tally.record(&window, t, result.is_ok());
            }
            Ok(tally)
        }
    })
    .await
}
