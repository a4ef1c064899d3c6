//! Clients that give up mid-command must not leave a pooled PostgreSQL connection inside a
//! transaction (sqlx 0.9.0's `Pool::begin` is not cancel-safe: transact-rs/sqlx#4393).

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tower::ServiceExt;
use uuid::Uuid;
use write_service::{AppState, router};

mod common;
use common::{auth, settings};

/// `Authorization` of a staff request.
fn staff() -> String {
    test_support::auth::bearer(&test_support::auth::staff())
}

fn create(order_id: Uuid) -> Request<Body> {
    let body = json!({"orderId": order_id, "userId": "u", "items": [
        {"productId": "sku-1", "quantity": 1}
    ]});
    Request::builder()
        .method(Method::POST)
        .uri("/orders")
        .header("content-type", "application/json")
        .header("authorization", staff())
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn add_item(order_id: Uuid, product: u32) -> Request<Body> {
    // Few products, all in the catalog (`price_catalog`); the line's units add up instead.
    let body = json!({"productId": format!("p{}", product % PRODUCTS), "quantity": 1});
    Request::builder()
        .method(Method::POST)
        .uri(format!("/orders/{order_id}/items"))
        .header("content-type", "application/json")
        .header("authorization", staff())
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// How many products `add_item` spreads over.
const PRODUCTS: u32 = 10;

/// Puts `sku-1` (with stock to confirm orders of it) and every product `add_item` uses in
/// the catalog.
async fn price_catalog(router: &Router) {
    let stock = Request::builder()
        .method(Method::POST)
        .uri("/products/sku-1/stock")
        .header("content-type", "application/json")
        .header("authorization", staff())
        .body(Body::from(json!({"quantity": 1000}).to_string()))
        .unwrap();
    assert_eq!(status(router, stock).await, StatusCode::OK);
    let products = (0..PRODUCTS).map(|p| format!("p{p}"));
    for product in products.chain(["sku-1".to_owned()]) {
        let req = Request::builder()
            .method(Method::PUT)
            .uri(format!("/products/{product}"))
            .header("content-type", "application/json")
            .header("authorization", staff())
            .body(Body::from(
                json!({"name": product, "unitPriceCents": 100}).to_string(),
            ))
            .unwrap();
        assert_eq!(status(router, req).await, StatusCode::OK);
    }
}

async fn status(router: &Router, req: Request<Body>) -> StatusCode {
    router.clone().oneshot(req).await.unwrap().status()
}

#[sqlx::test(migrations = "../migrations")]
async fn commands_dropped_at_random_moments_leave_no_session_in_a_transaction(pool: PgPool) {
    let options: PgConnectOptions = (*pool.connect_options()).clone();
    // A small pool, so the connections a cancelled command may have poisoned are reused.
    let app_pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy_with(options.clone());
    let app = router(AppState::new(app_pool, &settings(), auth()));
    price_catalog(&app).await;

    let mut orders = Vec::new();
    for _ in 0..20 {
        let id = Uuid::new_v4();
        assert_eq!(status(&app, create(id)).await, StatusCode::CREATED);
        orders.push(id);
    }
    let mut product = 0;
    let mut batch = |cancel_after: Option<Duration>| {
        (0..8)
            .map(|i| {
                product += 1;
                let req = if i % 2 == 0 {
                    create(Uuid::new_v4())
                } else {
                    add_item(orders[fastrand::usize(..orders.len())], product)
                };
                let app = app.clone();
                // The client gives up after a random moment of the batch's run: its request
                // future is dropped wherever it was, as when a client disconnects.
                let delay = cancel_after.map(|d| d.mul_f64(fastrand::f64()));
                tokio::spawn(async move {
                    match delay {
                        Some(d) => drop(tokio::time::timeout(d, app.oneshot(req)).await),
                        None => drop(app.oneshot(req).await),
                    }
                })
            })
            .collect::<Vec<_>>()
    };
    // How long a batch of commands takes here, so the cancellations spread over its whole
    // run (calibration, not an assertion).
    let started = Instant::now();
    for t in batch(None) {
        t.await.unwrap();
    }
    let horizon = started.elapsed();

    let mut check = PgConnection::connect_with(&options).await.unwrap();
    for round in 0..100 {
        for t in batch(Some(horizon)) {
            t.await.unwrap();
        }
        // Work that outlives its client finishes on its own: no session may stay inside a
        // transaction.
        let stuck = test_support::sessions::left_in_a_transaction(&mut check).await;
        assert!(
            stuck.is_empty(),
            "after round {round}, sessions left inside a transaction: {stuck:?}"
        );
    }

    // And the next commands all succeed, on every pooled connection.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let app = app.clone();
            let order = orders[i % orders.len()];
            tokio::spawn(async move {
                if i % 2 == 0 {
                    status(&app, create(Uuid::new_v4())).await
                } else {
                    status(&app, add_item(order, 100_000 + i as u32)).await
                }
            })
        })
        .collect();
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s.is_success(), "a command after the cancellations got {s}");
    }
    let stuck = test_support::sessions::left_in_a_transaction(&mut check).await;
    assert!(stuck.is_empty(), "{stuck:?}");
}

/// Polls `sql` (a count over this test's database) until it is at least `n`, for at most ten
/// seconds; returns the last count.
async fn wait_for_count(conn: &mut PgConnection, sql: &str, bind: &str, n: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(bind)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        if count >= n || Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_command_whose_client_went_away_still_completes(pool: PgPool) {
    let options: PgConnectOptions = (*pool.connect_options()).clone();
    let app = router(AppState::new(pool.clone(), &settings(), auth()));
    price_catalog(&app).await;
    let order = Uuid::new_v4();
    assert_eq!(status(&app, create(order)).await, StatusCode::CREATED);
    let stream = format!("order-{order}");
    let confirm = || {
        Request::builder()
            .method(Method::POST)
            .uri(format!("/orders/{order}/confirm"))
            .header("idempotency-key", "confirm-once")
            .header("content-type", "application/json")
            .header("authorization", staff())
            .body(Body::from(
                json!({"paymentMethod": "pm_card_visa"}).to_string(),
            ))
            .unwrap()
    };

    // Hold the order stream's row lock, so the command waits inside its transaction.
    let mut blocker = PgConnection::connect_with(&options).await.unwrap();
    let mut tx = blocker.begin().await.unwrap();
    sqlx::query("select 1 from streams where stream_id = $1 for update")
        .bind(&stream)
        .execute(&mut *tx)
        .await
        .unwrap();
    let request = tokio::spawn(app.clone().oneshot(confirm()));
    let mut watch = PgConnection::connect_with(&options).await.unwrap();
    let waiting = wait_for_count(
        &mut watch,
        "select count(*) from pg_stat_activity
         where datname = current_database() and wait_event_type = 'Lock' and query like $1",
        // The append: one call of `es_append`, which locks the stream first.
        "%from es_append(%",
        1,
    )
    .await;
    assert_eq!(
        waiting, 1,
        "the command should be waiting for the stream lock"
    );

    // The client goes away while its command waits; then the lock is released.
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    tx.commit().await.unwrap();

    let events = wait_for_count(
        &mut watch,
        "select count(*) from events where stream_id = $1",
        &stream,
        2,
    )
    .await;
    assert_eq!(events, 2, "the confirm was carried out without its client");
    // A retry with the same key gets the answer the first client never saw.
    let retry = app.clone().oneshot(confirm()).await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["etag"], "\"2\"");
}
