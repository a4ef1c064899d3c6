//! The peer against a real PostgreSQL: `DATABASE_URL`, or the repository's private cluster
//! (`scripts/pg.sh start`). The test makes a database of its own and drops it at the end.

use std::path::Path;
use std::process::Command;

use peer_cqrs_es::{Peer, PgPool, prepare, replay, seed_long_aggregate, seed_products};
use serde_json::{Value, json};

fn server_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .output()
        .expect("running scripts/pg.sh start");
    assert!(
        out.status.success(),
        "scripts/pg.sh start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 url")
        .trim()
        .to_string()
}

/// `url` with its database name replaced by `db` (query parameters kept).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (server, _) = base.rsplit_once('/').expect("a database url has a path");
    match query {
        Some(q) => format!("{server}/{db}?{q}"),
        None => format!("{server}/{db}"),
    }
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let response = client.post(url).json(&body).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

async fn run(pool: &PgPool) {
    seed_products(
        pool,
        &[("p-1".to_string(), 250), ("p-2".to_string(), 1_999)],
    )
    .await
    .expect("seed products");
    let peer = Peer::start(pool.clone()).await.expect("start peer");
    let client = reqwest::Client::new();

    let (status, body) = post(
        &client,
        format!("{}/orders", peer.base),
        json!({"userId": "u-1", "items": [{"productId": "p-1", "quantity": 2}, {"productId": "p-2", "quantity": 1}], "currency": "USD"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 1, "{body}");
    let id = body["orderId"].as_str().expect("orderId").to_string();
    uuid::Uuid::parse_str(&id).expect("a uuid order id");

    // The stored event carries catalog prices, not anything the client said.
    let (payload,): (Value,) = sqlx08::query_as(
        "select payload from events where aggregate_type = 'Order' and aggregate_id = $1 and sequence = 1",
    )
    .bind(&id)
    .fetch_one(pool)
    .await
    .expect("the created event");
    assert_eq!(
        payload["OrderCreated"]["total_cents"],
        2 * 250 + 1_999,
        "{payload}"
    );

    let confirm = format!("{}/orders/{id}/confirm", peer.base);
    let (status, body) = post(
        &client,
        confirm.clone(),
        json!({"paymentMethod": "pm_card_visa"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"orderId": id, "version": 2}));

    let (status, body) = post(&client, confirm, json!({"paymentMethod": "pm_card_visa"})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "invalid_state", "{body}");

    let (status, body) = post(
        &client,
        format!("{}/orders/{}/confirm", peer.base, uuid::Uuid::new_v4()),
        json!({"paymentMethod": "pm_card_visa"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "order_not_found", "{body}");

    let (status, body) = post(
        &client,
        format!("{}/orders", peer.base),
        json!({"userId": "u-1", "items": [{"productId": "p-unknown", "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");

    peer.stop().await;

    let long = seed_long_aggregate(pool, 1_000).await.expect("seed");
    assert_eq!(replay(pool, &long).await.expect("replay"), 1_000);
}

#[tokio::test]
async fn create_confirm_refusals_and_replay() {
    let server = server_url();
    let db = format!("peer_test_{}", uuid::Uuid::new_v4().simple());
    let admin = PgPool::connect(&server)
        .await
        .expect("connect to the server");
    sqlx08::query(&format!("create database {db}"))
        .execute(&admin)
        .await
        .expect("create the test database");

    let pool = prepare(&with_database(&server, &db))
        .await
        .expect("prepare");
    // Run in a task so that a failed assertion still reaches the drop below.
    let outcome = tokio::spawn({
        let pool = pool.clone();
        async move { run(&pool).await }
    })
    .await;
    pool.close().await;
    sqlx08::query(&format!("drop database {db} with (force)"))
        .execute(&admin)
        .await
        .expect("drop the test database");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}
