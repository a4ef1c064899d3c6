//! Who may read what: a customer sees only their own orders and history, and another
//! customer's answer exactly as if it did not exist; sales, stock and the dashboard are for
//! staff; a request without a valid token is 401. Documents go straight into the views.
//! (The matrix of every bad token over every endpoint lives in e2e.)

mod common;

use axum::http::StatusCode;
use common::{App, Mongo, order_doc};
use domain::Position;
use read_model::View;
use read_service::{AppState, Settings};
use serde_json::Value;
use test_support::auth::{claims, customer, sign};
use test_support::http::Reply;

const SECOND: i64 = 1_795_000_000_000;

/// alice's orders 1 and 2, bob's order 3 between them in time.
async fn alice_and_bob(mongo: &Mongo) {
    mongo
        .insert(
            View::Orders,
            [
                order_doc(1, "alice", SECOND),
                order_doc(3, "bob", SECOND + 1000),
                order_doc(2, "alice", SECOND + 2000),
            ],
        )
        .await;
}

fn order_id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn ids(body: &Value) -> Vec<String> {
    body["orders"]
        .as_array()
        .unwrap_or_else(|| panic!("no orders in {body}"))
        .iter()
        .map(|o| o["orderId"].as_str().unwrap().to_owned())
        .collect()
}

/// What a client could tell two answers apart by: status, body, and every header but the
/// request id.
fn seen(r: &Reply) -> (StatusCode, Value, Vec<(String, String)>) {
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(k, _)| k.as_str() != "x-request-id")
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    headers.sort();
    (r.status, r.body.clone(), headers)
}

fn as_customer(app: &App, sub: &str) -> test_support::http::InProcess {
    app.as_caller(Some(&customer(sub)))
}

/// Another customer's order and a missing one are the same 404: the find filter names the
/// owner, so MongoDB does not find it. The owner and staff read it.
#[tokio::test]
async fn a_customer_reads_their_own_order_and_another_is_not_found_as_a_missing_one() {
    let mongo = Mongo::new().await;
    mongo
        .checkpoint(
            View::Orders,
            "0000000000000010-0000000000000010".parse().unwrap(),
        )
        .await;
    let app = mongo.app().await;
    let (alice, bob) = (as_customer(&app, "alice"), as_customer(&app, "bob"));
    let uri = format!("/orders/{}", order_id(1));
    let missing = bob.get(&uri).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "order_not_found")
    );

    alice_and_bob(&mongo).await;
    let mine = alice.get(&uri).await.ok();
    assert_eq!(mine["userId"], "alice");
    let not_hers = bob.get(&uri).await;
    assert_eq!(seen(&not_hers), seen(&missing), "bob on alice's order");
    assert_eq!(app.get(&uri).await.ok()["userId"], "alice", "staff");
    let theirs = bob.get(&format!("/orders/{}", order_id(3))).await.ok();
    assert_eq!(theirs["userId"], "bob");
    mongo.drop().await;
}

/// A customer's search carries their id in the MongoDB filter, whether they name
/// themself or not and on every page, even one started from a staff member's cursor.
#[tokio::test]
async fn a_customers_search_finds_only_their_own_orders() {
    let mongo = Mongo::new().await;
    alice_and_bob(&mongo).await;
    let app = mongo.app().await;
    let alice = as_customer(&app, "alice");
    let hers = vec![order_id(2), order_id(1)];
    assert_eq!(ids(&alice.get("/orders").await.ok()), hers);
    assert_eq!(ids(&alice.get("/orders?userId=alice").await.ok()), hers);
    assert_eq!(
        ids(&alice.get("/orders?sort=createdAt&limit=100").await.ok()),
        vec![order_id(1), order_id(2)]
    );
    let pages = alice.all_pages("/orders?limit=1", "orders").await;
    let paged: Vec<String> = pages
        .iter()
        .flatten()
        .map(|o| o["orderId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paged, hers);

    let r = alice.get("/orders?userId=bob").await;
    assert_eq!(
        (r.status, r.code(), r.field()),
        (StatusCode::FORBIDDEN, "forbidden", "userId"),
        "{:?}",
        r.body
    );

    // Staff see everyone's, and each customer's when they name one.
    assert_eq!(
        ids(&app.get("/orders").await.ok()),
        vec![order_id(2), order_id(3), order_id(1)]
    );
    assert_eq!(
        ids(&app.get("/orders?userId=bob").await.ok()),
        vec![order_id(3)]
    );

    // A staff cursor taken after alice's newest order, where bob's comes next: alice's
    // page from it still holds only her own.
    let first = app.get("/orders?limit=1").await.ok();
    assert_eq!(ids(&first), vec![order_id(2)]);
    let cursor = first["nextCursor"].as_str().unwrap();
    assert_eq!(
        ids(&app
            .get(&format!("/orders?limit=1&cursor={cursor}"))
            .await
            .ok()),
        vec![order_id(3)]
    );
    let from_it = alice
        .get(&format!("/orders?limit=1&cursor={cursor}"))
        .await
        .ok();
    assert_eq!(ids(&from_it), vec![order_id(1)]);
    mongo.drop().await;
}

/// Another user's history answers as a user without orders does, position header included.
#[tokio::test]
async fn another_users_history_is_not_found_as_a_user_without_orders() {
    let mongo = Mongo::new().await;
    let at: Position = "0000000000000020-0000000000000020".parse().unwrap();
    mongo.checkpoint(View::Orders, at).await;
    mongo.checkpoint(View::Users, at).await;
    let app = mongo.app().await;
    let alice = as_customer(&app, "alice");
    let without_orders = app.get("/users/bob/orders").await;
    assert_eq!(
        (without_orders.status, without_orders.code()),
        (StatusCode::NOT_FOUND, "user_not_found")
    );
    assert_eq!(without_orders.position(), at);

    alice_and_bob(&mongo).await;
    let not_hers = alice.get("/users/bob/orders").await;
    assert_eq!(
        seen(&not_hers),
        seen(&without_orders),
        "alice on bob's history"
    );
    let own = alice.get("/users/alice/orders").await.ok();
    assert_eq!(ids(&own), vec![order_id(2), order_id(1)]);
    let bobs = app.get("/users/bob/orders").await.ok();
    assert_eq!(ids(&bobs), vec![order_id(3)], "staff");
    mongo.drop().await;
}

#[tokio::test]
async fn sales_stock_and_the_dashboard_are_for_staff() {
    let mongo = Mongo::new().await;
    let app = mongo.app().await;
    let alice = as_customer(&app, "alice");
    for uri in [
        "/sales/daily?from=2026-01-01&to=2026-01-31",
        "/sales/daily/2026-01-31",
        "/inventory",
        "/inventory/sku-1",
        "/dashboard/summary",
    ] {
        let r = alice.get(uri).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{uri}: {:?}",
            r.body
        );
        let r = app.get(uri).await;
        assert!(
            [StatusCode::OK, StatusCode::NOT_FOUND].contains(&r.status),
            "staff on {uri}: {:?}",
            r.body
        );
    }
    mongo.drop().await;
}

/// No token, or an expired one: 401 with the bearer challenge and the JSON error body. The
/// ops routes need none.
#[tokio::test]
async fn a_missing_or_expired_token_is_401() {
    let mongo = Mongo::new().await;
    alice_and_bob(&mongo).await;
    let app = mongo.app().await;
    let mut old = claims("alice", false);
    old.exp -= 7200;
    old.nbf = old.nbf.map(|t| t - 7200);
    old.iat = old.iat.map(|t| t - 7200);
    let expired = sign(&old);
    for caller in [app.as_caller(None), app.as_caller(Some(&expired))] {
        for uri in [
            "/orders".to_owned(),
            format!("/orders/{}", order_id(1)),
            "/users/alice/orders".to_owned(),
            "/dashboard/summary".to_owned(),
        ] {
            let r = caller.get(&uri).await;
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::UNAUTHORIZED, "invalid_token"),
                "{uri}: {:?}",
                r.body
            );
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer error=\"invalid_token\""),
                "{uri}"
            );
            assert!(
                !r.body.to_string().contains(&expired),
                "the token is never echoed"
            );
        }
    }
    let anonymous = app.as_caller(None);
    for uri in ["/health/live", "/health/ready", "/metrics", "/openapi.json"] {
        assert_eq!(anonymous.get(uri).await.status, StatusCode::OK, "{uri}");
    }
    mongo.drop().await;
}

/// The document says who may call each operation, from the same table the code checks.
#[tokio::test]
async fn the_openapi_document_states_each_operations_access() {
    let mongo = Mongo::new().await;
    let app = mongo.app().await;
    let doc = app.get("/openapi.json").await.ok();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for rule in read_service::access::RULES {
        let op = &doc["paths"][rule.path][rule.method.as_str().to_lowercase()];
        let description = op["description"].as_str().unwrap_or("");
        assert!(
            description.contains(&rule.who()),
            "{} {}: {description}",
            rule.method,
            rule.path
        );
    }
    assert_eq!(
        doc["paths"]["/orders"]["get"]["security"][0]["bearer"],
        serde_json::json!([])
    );
    assert!(doc["paths"]["/orders"]["get"]["responses"]["403"].is_object());
    assert!(doc["paths"]["/dashboard/summary"]["get"]["responses"]["403"].is_object());
    assert_eq!(
        doc["paths"]["/health/ready"]["get"]["security"],
        serde_json::json!([{}])
    );
    mongo.drop().await;
}

/// Without a key the service refuses to start; `Settings::new` (embedding) has none.
#[tokio::test]
async fn without_a_token_key_the_service_refuses_to_start() {
    let settings = Settings::new(common::mongodb_uri(), "shop");
    let refused = AppState::connect(&settings).await;
    assert!(refused.is_err(), "started without a key");
}

/// The one test with authentication off: every request is served as staff, and readiness
/// says so.
#[tokio::test]
async fn auth_disabled_serves_everyone_as_staff_and_readiness_says_so() {
    let mongo = Mongo::new().await;
    alice_and_bob(&mongo).await;
    let mut settings = mongo.settings();
    settings.auth.hs256_secret = None;
    settings.auth.disabled = true;
    let app = common::app(settings).await;
    let anonymous = app.as_caller(None);
    assert_eq!(ids(&anonymous.get("/orders").await.ok()).len(), 3);
    let ready = anonymous.get("/health/ready").await.ok();
    assert_eq!(
        (&ready["status"], &ready["auth"]),
        (&serde_json::json!("ready"), &serde_json::json!("disabled"))
    );
    // On: readiness says nothing about authentication.
    let on = mongo.app().await;
    let ready = on.as_caller(None).get("/health/ready").await.ok();
    assert!(ready.get("auth").is_none(), "{ready}");
    mongo.drop().await;
}
