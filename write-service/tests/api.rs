//! HTTP tests of the write-service against a real PostgreSQL (a fresh database per test).

use std::collections::BTreeSet;
use std::ops::Deref;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use domain::order::MAX_TEXT_LEN;
use domain::{OrderId, Position, Quantity, StockDelta, StockQuantity, UnitPriceCents};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use test_support::TcpSwitch;
use test_support::events::Events;
use test_support::http::InProcess;
use tower::ServiceExt;
use uuid::Uuid;
use write_service::extract::MAX_IDEMPOTENCY_KEY_LEN;
use write_service::{AppState, router};

mod common;
use common::{auth, settings};

/// The body of a checkout that names a payment method, as `POST /orders/{id}/confirm` needs.
fn checkout() -> Value {
    json!({"paymentMethod": "pm_card_visa"})
}

#[derive(Clone)]
struct App {
    http: InProcess,
    pool: PgPool,
}

impl Deref for App {
    type Target = InProcess;
    fn deref(&self) -> &InProcess {
        &self.http
    }
}

impl App {
    fn new(pool: PgPool) -> Self {
        Self {
            http: InProcess::new(router(AppState::new(pool.clone(), &settings(), auth()))),
            pool,
        }
    }

    async fn create_order(&self) -> String {
        let r = self
            .post(
                "/orders",
                json!({"userId": "alice", "items": [{"productId": "sku-1", "quantity": 2, "unitPriceCents": 1250}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["orderId"].as_str().unwrap().to_owned()
    }

    /// Records the capture of the order's payment, as the fulfilment process does: it
    /// appends `PaymentCaptured` through the event store, there is no endpoint for it.
    async fn pay(&self, id: &str) {
        let id = OrderId(id.parse().expect("an order id"));
        Events::new(self.pool.clone()).pay(id).await;
    }

    /// Events on order streams (the catalog's own events are the tests' setup).
    async fn event_count(&self) -> i64 {
        sqlx::query_scalar(
            "select count(*) from events e join streams s using (stream_id)
             where s.stream_type = 'order'",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Sets each product's catalog price (named `name`, in USD unless `currency`).
    async fn price(&self, products: &[(&str, i64)]) {
        for (product, cents) in products {
            let r = self
                .http
                .send(
                    Method::PUT,
                    &format!("/products/{product}"),
                    &[],
                    Some(json!({"name": product, "unitPriceCents": cents})),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        }
    }

    /// Before an order body goes out, the catalog takes the prices its lines name (so
    /// the tests written when clients set prices keep their meaning); a value that is not
    /// a valid product or price is left for the request to be refused on.
    async fn price_lines_of(&self, method: &Method, uri: &str, body: Option<&Value>) {
        if method != Method::POST || !(uri == "/orders" || uri.ends_with("/items")) {
            return;
        }
        let Some(body) = body else { return };
        let valid_id = |p: &str| {
            (1..=64).contains(&p.len())
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        };
        let currency = body["currency"].as_str().unwrap_or("USD");
        let lines = match body["items"].as_array() {
            Some(items) => items.clone(),
            None => vec![body.clone()],
        };
        for line in lines {
            let (Some(product), Some(cents)) =
                (line["productId"].as_str(), line["unitPriceCents"].as_i64())
            else {
                continue;
            };
            if !valid_id(product) {
                continue;
            }
            let put = json!({"name": product, "unitPriceCents": cents, "currency": currency});
            // Only where it is valid: the request's own refusal is what a test checks.
            let r = self
                .http
                .send(Method::PUT, &format!("/products/{product}"), &[], Some(put))
                .await;
            if r.body["version"] == 1 {
                // A new product, with stock enough for any test's confirmations.
                let stock = format!("/products/{product}/stock");
                let r = self.http.post(&stock, json!({"quantity": 1_000_000})).await;
                assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            }
        }
    }

    async fn post(&self, uri: &str, body: Value) -> test_support::http::Reply {
        self.send(Method::POST, uri, &[], Some(body)).await
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> test_support::http::Reply {
        self.price_lines_of(&method, uri, body.as_ref()).await;
        self.http.send(method, uri, headers, body).await
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn create_returns_201_location_version_and_position(pool: PgPool) {
    let app = App::new(pool);
    let r = app
        .post(
            "/orders",
            json!({"userId": "alice", "currency": "EUR", "items": [
                {"productId": "sku-1", "quantity": 2, "unitPriceCents": 1250},
                {"productId": "sku-2", "quantity": 1, "unitPriceCents": 99}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.body["orderId"].as_str().unwrap();
    assert_eq!(r.headers["location"], format!("/orders/{id}").as_str());
    assert_eq!(r.body["version"], 1);
    assert!(r.headers.contains_key("x-request-id"));
    let position: Position = r.body["position"].as_str().unwrap().parse().unwrap();
    assert!(position.global_position >= 1);

    let state = app.get(&format!("/orders/{id}/state")).await;
    assert_eq!(state.status, StatusCode::OK);
    assert_eq!(state.body["totalCents"], 2 * 1250 + 99);
    assert_eq!(state.body["currency"], "EUR");
    assert_eq!(state.body["status"], "pending");
    assert_eq!(state.body["version"], 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_client_chosen_id_is_used_and_a_second_create_is_409(pool: PgPool) {
    let app = App::new(pool);
    let id = Uuid::new_v4();
    let body = json!({"orderId": id, "userId": "bob", "items": [{"productId": "a", "quantity": 1, "unitPriceCents": 1}]});
    let r = app.post("/orders", body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["orderId"], id.to_string());
    assert_eq!(r.body["currency"], Value::Null);
    let state = app.get(&format!("/orders/{id}/state")).await;
    assert_eq!(state.body["currency"], "USD");
    let again = app.post("/orders", body).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "order_exists");
    assert_eq!(app.event_count().await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_whole_lifecycle_over_http(pool: PgPool) {
    let app = App::new(pool);
    let id = app.create_order().await;
    let base = format!("/orders/{id}");
    let r = app
        .post(
            &format!("{base}/items"),
            json!({"productId": "sku-2", "quantity": 3, "unitPriceCents": 100}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["version"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    let r = app
        .post(
            &format!("{base}/items"),
            json!({"productId": "sku-2", "quantity": 1, "unitPriceCents": 100}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .send(Method::DELETE, &format!("{base}/items/sku-1"), &[], None)
        .await;
    assert_eq!(
        (r.status, r.body["version"].as_u64()),
        (StatusCode::OK, Some(4))
    );
    let state = app.get(&format!("{base}/state")).await;
    assert_eq!(state.body["totalCents"], 400);
    assert_eq!(
        state.body["items"],
        json!([{"productId": "sku-2", "quantity": 4, "unitPriceCents": 100}])
    );

    assert_eq!(
        app.send(
            Method::POST,
            &format!("{base}/confirm"),
            &[],
            Some(checkout())
        )
        .await
        .status,
        StatusCode::OK
    );
    let state = app.get(&format!("{base}/state")).await;
    assert_eq!(
        (
            state.body["status"].as_str(),
            state.body["paymentMethod"].as_str(),
            state.body["paymentStatus"].as_str()
        ),
        (Some("confirmed"), Some("pm_card_visa"), Some("awaiting"))
    );
    app.pay(&id).await;
    let r = app
        .post(
            &format!("{base}/ship"),
            json!({"carrier": "DHL", "trackingNumber": "JD0123"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .send(Method::POST, &format!("{base}/deliver"), &[], None)
        .await;
    assert_eq!(
        (r.status, r.body["version"].as_u64()),
        (StatusCode::OK, Some(8))
    );
    let state = app.get(&format!("{base}/state")).await;
    assert_eq!(state.body["status"], "delivered");
    assert_eq!(state.body["trackingNumber"], "JD0123");

    let events = app.get(&format!("{base}/events")).await;
    let types: Vec<&str> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "OrderCreated",
            "ItemAdded",
            "ItemAdded",
            "ItemRemoved",
            "OrderConfirmed",
            "PaymentCaptured",
            "OrderShipped",
            "OrderDelivered"
        ]
    );
    assert_eq!(
        events.body["events"][4]["data"],
        json!({"paymentMethod": "pm_card_visa", "email": null, "stockReserved": true})
    );
    let first = &events.body["events"][0];
    assert_eq!(first["version"], 1);
    assert_eq!(first["schemaVersion"], 2);
    assert!(first["recordedAt"].is_string());
    assert!(
        first["metadata"]["requestId"].is_string(),
        "request id is copied into metadata"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn cancel_takes_an_optional_reason_and_only_from_pending_or_confirmed(pool: PgPool) {
    let app = App::new(pool);
    let id = app.create_order().await;
    let r = app
        .post(
            &format!("/orders/{id}/cancel"),
            json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let state = app.get(&format!("/orders/{id}/state")).await;
    assert_eq!(state.body["cancelReason"], "changed my mind");
    let r = app
        .send(Method::POST, &format!("/orders/{id}/cancel"), &[], None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.body["error"]["message"],
        "cannot cancel a cancelled order"
    );

    let other = app.create_order().await;
    let r = app
        .send(Method::POST, &format!("/orders/{other}/cancel"), &[], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "no body means no reason");
}

#[sqlx::test(migrations = "../migrations")]
async fn state_conflicts_are_409_with_a_clear_message(pool: PgPool) {
    let app = App::new(pool);
    let id = app.create_order().await;
    app.send(
        Method::POST,
        &format!("/orders/{id}/confirm"),
        &[],
        Some(checkout()),
    )
    .await;
    let before = app.event_count().await;
    let r = app
        .post(
            &format!("/orders/{id}/items"),
            json!({"productId": "x", "quantity": 1, "unitPriceCents": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "invalid_state");
    assert_eq!(
        r.body["error"]["message"],
        "cannot modify a confirmed order"
    );
    let r = app
        .send(Method::POST, &format!("/orders/{id}/deliver"), &[], None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app
        .send(
            Method::POST,
            &format!("/orders/{id}/confirm"),
            &[],
            Some(checkout()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(app.event_count().await, before);

    let single = app.create_order().await;
    let r = app
        .send(
            Method::DELETE,
            &format!("/orders/{single}/items/sku-1"),
            &[],
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "last_item"));
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_orders_items_and_routes_are_404(pool: PgPool) {
    let app = App::new(pool);
    let missing = Uuid::new_v4();
    for (uri, body) in [
        (format!("/orders/{missing}/confirm"), Some(checkout())),
        (format!("/orders/{missing}/deliver"), None),
    ] {
        let r = app.send(Method::POST, &uri, &[], body).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "order_not_found"),
            "{uri}"
        );
    }
    assert_eq!(
        app.get(&format!("/orders/{missing}/state")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/orders/{missing}/events")).await.status,
        StatusCode::NOT_FOUND
    );
    let id = app.create_order().await;
    let r = app
        .send(
            Method::DELETE,
            &format!("/orders/{id}/items/nope"),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "item_not_found")
    );
    let r = app.get("/nothing-here").await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(app.event_count().await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_json_and_paths_are_400(pool: PgPool) {
    let app = App::new(pool);
    let r = app
        .raw(
            Method::POST,
            "/orders",
            &[("content-type", "application/json")],
            Body::from("{\"userId\": "),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    let r = app
        .send(Method::POST, "/orders/not-a-uuid/confirm", &[], None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    let id = app.create_order().await;
    let r = app
        .send(
            Method::DELETE,
            &format!("/orders/{id}/items/bad%20id"),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    let r = app
        .send(
            Method::POST,
            "/products/bad$id/stock",
            &[],
            Some(json!({"quantity": 1})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    let r = app
        .send(
            Method::POST,
            &format!("/orders/{id}/confirm"),
            &[("if-match", "soon")],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_header")
    );
    assert_eq!(app.event_count().await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn non_json_is_415_and_oversized_is_413(pool: PgPool) {
    let app = App::new(pool);
    let r = app
        .raw(
            Method::POST,
            "/orders",
            &[("content-type", "text/plain")],
            Body::from("userId=alice"),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let big = json!({"userId": "a", "items": [], "pad": "x".repeat(70 * 1024)}).to_string();
    let r = app
        .raw(
            Method::POST,
            "/orders",
            &[("content-type", "application/json")],
            Body::from(big),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    assert_eq!(app.event_count().await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn rule_violations_are_422_naming_the_field(pool: PgPool) {
    let app = App::new(pool);
    let item = |q: i64, p: i64| json!({"productId": "sku", "quantity": q, "unitPriceCents": p});
    let cases = [
        (
            json!({"userId": "alice", "items": [item(0, 1)]}),
            "items[0].quantity",
        ),
        (
            json!({"userId": "alice", "items": [item(10_001, 1)]}),
            "items[0].quantity",
        ),
        (
            json!({"userId": "alice", "items": [item(1, -1)]}),
            "items[0].unitPriceCents",
        ),
        (
            json!({"userId": "alice", "items": [item(1, 100_000_001)]}),
            "items[0].unitPriceCents",
        ),
        (
            json!({"userId": "alice", "items": [item(1, 1)], "currency": "usd"}),
            "currency",
        ),
        // Optional fields may be left out, but the schema says they are never null.
        (
            json!({"userId": "alice", "items": [item(1, 1)], "currency": null}),
            "currency",
        ),
        (
            json!({"userId": "alice", "items": [item(1, 1)], "orderId": null}),
            "orderId",
        ),
        (json!({"userId": "al ice", "items": [item(1, 1)]}), "userId"),
        (
            json!({"userId": "x".repeat(65), "items": [item(1, 1)]}),
            "userId",
        ),
        (
            json!({"userId": {"$ne": ""}, "items": [item(1, 1)]}),
            "userId",
        ),
        (json!({"userId": "alice", "items": []}), "items"),
        (
            json!({"userId": "alice", "items": [item(1, 1)], "extra": 1}),
            "extra",
        ),
        // Omitted, `userId` is the caller's (tests/access.rs); null is not omitted.
        (json!({"userId": null, "items": [item(1, 1)]}), "userId"),
        // Not in the catalog: it has no price.
        (
            json!({"userId": "alice", "items": [{"productId": "a", "quantity": 1}]}),
            "items[0].productId",
        ),
        (json!(["not", "an", "object"]), "body"),
        (
            json!({"userId": "alice", "items": (0..101).map(|i| json!({"productId": format!("p{i}"), "quantity": 1, "unitPriceCents": 1})).collect::<Vec<_>>()}),
            "items",
        ),
        (
            json!({"userId": "alice", "items": [item(1, 1)], "orderId": "nope"}),
            "orderId",
        ),
    ];
    for (body, field) in cases {
        let r = app.post("/orders", body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            r.body
        );
        assert_eq!(r.body["error"]["field"], field, "{body}: {:?}", r.body);
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
    }
    let id = app.create_order().await;
    let r = app
        .post(
            &format!("/orders/{id}/items"),
            json!({"productId": "sku-1", "quantity": 1, "unitPriceCents": 1}),
        )
        .await;
    // The line keeps the price it was added at (1250), whatever the catalog says now.
    assert_eq!(
        (r.status, r.code(), r.body["error"]["field"].as_str()),
        (
            StatusCode::CONFLICT,
            "price_changed",
            Some("unitPriceCents")
        )
    );
    app.send(
        Method::POST,
        &format!("/orders/{id}/confirm"),
        &[],
        Some(checkout()),
    )
    .await;
    let r = app
        .post(
            &format!("/orders/{id}/ship"),
            json!({"carrier": "", "trackingNumber": "t"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("carrier"))
    );
    let r = app
        .post(&format!("/orders/{id}/ship"), json!({"carrier": "c"}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    for q in [0, 1_000_001] {
        let r = app
            .post("/products/sku-1/stock", json!({"quantity": q}))
            .await;
        assert_eq!(
            (r.status, r.body["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("quantity"))
        );
    }
    assert_eq!(
        app.event_count().await,
        2,
        "only the create and the confirm were written"
    );
}

/// PostgreSQL's `jsonb` refuses `\u0000` (it answered 500); control characters have no
/// place in these fields either. Ids become MongoDB `_id`s in the views, so their alphabet
/// keeps out NUL, `$` and anything else MongoDB refuses in a key.
#[sqlx::test(migrations = "../migrations")]
async fn nul_and_control_characters_are_422_naming_the_field(pool: PgPool) {
    let app = App::new(pool);
    let id = app.create_order().await;
    for bad in ["DH\u{0}L", "\u{0}", "a\u{1b}[31mred", "x\u{7f}", "x\u{85}y"] {
        let r = app
            .post(&format!("/orders/{id}/cancel"), json!({"reason": bad}))
            .await;
        assert_eq!(
            (r.status, r.body["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("reason")),
            "{bad:?}: {:?}",
            r.body
        );
    }
    // Checked as the request is read: before the order is looked up or If-Match compared.
    let missing = Uuid::new_v4();
    for (uri, headers) in [
        (format!("/orders/{missing}/cancel"), vec![]),
        (format!("/orders/{id}/cancel"), vec![("if-match", "\"7\"")]),
    ] {
        let r = app
            .send(
                Method::POST,
                &uri,
                &headers,
                Some(json!({"reason": "no\u{0}"})),
            )
            .await;
        assert_eq!(
            (r.status, r.body["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("reason")),
            "{uri} {headers:?}: {:?}",
            r.body
        );
    }
    app.send(
        Method::POST,
        &format!("/orders/{id}/confirm"),
        &[],
        Some(checkout()),
    )
    .await;
    for (body, field) in [
        (
            json!({"carrier": "DH\u{0}L", "trackingNumber": "t"}),
            "carrier",
        ),
        (
            json!({"carrier": "DHL", "trackingNumber": "\u{0}"}),
            "trackingNumber",
        ),
        (
            json!({"carrier": "DHL", "trackingNumber": "t\u{1}"}),
            "trackingNumber",
        ),
    ] {
        let r = app.post(&format!("/orders/{id}/ship"), body.clone()).await;
        assert_eq!(
            (r.status, r.body["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{body}: {:?}",
            r.body
        );
    }
    let item = |product: &str| json!({"productId": product, "quantity": 1, "unitPriceCents": 1});
    for (body, field) in [
        (
            json!({"userId": "a\u{0}b", "items": [item("sku")]}),
            "userId",
        ),
        (
            json!({"userId": "$where", "items": [item("sku")]}),
            "userId",
        ),
        (
            json!({"userId": "a", "items": [item("a\u{0}b")]}),
            "items[0].productId",
        ),
        (
            json!({"userId": "a", "items": [item("$inc")]}),
            "items[0].productId",
        ),
    ] {
        let r = app.post("/orders", body.clone()).await;
        assert_eq!(
            (r.status, r.body["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{body}: {:?}",
            r.body
        );
    }
    for uri in ["/products/a%00b/stock", "/products/%24set/stock"] {
        let r = app.post(uri, json!({"quantity": 1})).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "invalid_path"),
            "{uri}"
        );
    }
    // Text with line breaks and tabs, and non-ASCII letters, is fine (on a paid order).
    app.pay(&id).await;
    let r = app
        .post(
            &format!("/orders/{id}/ship"),
            json!({"carrier": "Poste Italiane", "trackingNumber": "ÀB\t12"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        app.event_count().await,
        4,
        "create, confirm, payment and ship only"
    );

    // The document says so, so generated clients and fuzzers keep to it.
    let doc = app.get("/openapi.json").await.body;
    for (schema, field) in [
        ("Cancel", "reason"),
        ("Ship", "carrier"),
        ("Ship", "trackingNumber"),
    ] {
        let pattern = doc["components"]["schemas"][schema]["properties"][field]["pattern"]
            .as_str()
            .unwrap_or_default();
        assert!(
            pattern.starts_with("^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*"),
            "{schema}.{field}: {pattern:?}"
        );
    }
}

/// Request and causation ids are stored in every event's metadata and echoed: they are
/// bounded to 128 visible ASCII characters. A request id outside that is replaced by a
/// generated one; a causation id outside it is refused.
#[sqlx::test(migrations = "../migrations")]
async fn request_and_causation_ids_are_bounded(pool: PgPool) {
    let app = App::new(pool);
    let id = app.create_order().await;
    let body = json!({"productId": "sku-9", "quantity": 1, "unitPriceCents": 1});
    let uri = format!("/orders/{id}/items");
    let max = "r".repeat(128);
    let r = app
        .send(
            Method::POST,
            &uri,
            &[("x-request-id", &max), ("x-causation-id", &max)],
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.headers["x-request-id"], max.as_str());
    let metadata =
        |events: &Value| events["events"].as_array().unwrap().last().unwrap()["metadata"].clone();
    let stored = metadata(&app.get(&format!("/orders/{id}/events")).await.body);
    assert_eq!(
        (stored["requestId"].as_str(), stored["causationId"].as_str()),
        (Some(max.as_str()), Some(max.as_str()))
    );

    let long = "r".repeat(129);
    for odd in [long.as_str(), "", "has space", "tab\there"] {
        let r = app
            .send(
                Method::POST,
                &uri,
                &[("x-request-id", odd)],
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{odd:?}: {:?}", r.body);
        let echoed = r.headers["x-request-id"].to_str().unwrap().to_owned();
        assert!(
            Uuid::parse_str(&echoed).is_ok(),
            "{odd:?} was replaced by a generated id, not {echoed:?}"
        );
        let stored = metadata(&app.get(&format!("/orders/{id}/events")).await.body);
        assert_eq!(stored["requestId"], echoed.as_str(), "{odd:?}");
    }
    // Bytes that are not ASCII are replaced too (they were a 400).
    let mut req = axum::http::Request::builder()
        .method(Method::GET)
        .uri(format!("/orders/{id}/state"))
        .header(
            "authorization",
            test_support::auth::bearer(&test_support::auth::staff()),
        )
        .body(Body::empty())
        .unwrap();
    req.headers_mut().insert(
        "x-request-id",
        axum::http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
    );
    let response = app.http.router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = response.headers()["x-request-id"].to_str().unwrap();
    assert!(Uuid::parse_str(echoed).is_ok(), "{echoed:?}");

    let before = app.event_count().await;
    for odd in [long.as_str(), "", "has space"] {
        let r = app
            .send(
                Method::POST,
                &uri,
                &[("x-causation-id", odd)],
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (r.status, r.code(), r.body["error"]["field"].as_str()),
            (
                StatusCode::BAD_REQUEST,
                "invalid_header",
                Some("X-Causation-Id")
            ),
            "{odd:?}: {:?}",
            r.body
        );
    }
    assert_eq!(
        app.event_count().await,
        before,
        "refused commands write nothing"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn an_unknown_state_query_parameter_is_422_with_the_error_body(pool: PgPool) {
    let app = App::new(pool);
    let id = app.create_order().await;
    let r = app.get(&format!("/orders/{id}/state?bogus=1")).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameter"),
        "{:?}",
        r.body
    );
    assert_eq!(r.headers["content-type"], "application/json");
}

#[sqlx::test(migrations = "../migrations")]
async fn if_match_guards_the_version(pool: PgPool) {
    let app = App::new(pool);
    let id = app.create_order().await;
    let r = app
        .send(
            Method::POST,
            &format!("/orders/{id}/confirm"),
            &[("if-match", "\"7\"")],
            Some(checkout()),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PRECONDITION_FAILED, "precondition_failed")
    );
    assert_eq!(app.event_count().await, 1);
    let r = app
        .send(
            Method::POST,
            &format!("/orders/{id}/confirm"),
            &[("if-match", "\"1\"")],
            Some(checkout()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["etag"], "\"2\"");
    // The same precondition again is now stale.
    let r = app
        .send(
            Method::POST,
            &format!("/orders/{id}/cancel"),
            &[("if-match", "\"1\"")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(app.event_count().await, 2);
    // A command that fails on its own gets its own answer, whatever the precondition says
    // (RFC 9110, 13.2.1): a confirmed order cannot take items, stale version or not.
    let r = app
        .send(
            Method::POST,
            &format!("/orders/{id}/items"),
            &[("if-match", "\"1\"")],
            Some(json!({"productId": "sku-2", "quantity": 1, "unitPriceCents": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    let r = app
        .send(
            Method::POST,
            "/orders",
            &[("if-match", "\"3\"")],
            Some(json!({"orderId": uuid::Uuid::new_v4(), "userId": "alice", "items": []})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("items")),
        "{:?}",
        r.body
    );
    assert_eq!(app.event_count().await, 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_idempotency_key_replays_the_first_response(pool: PgPool) {
    let app = App::new(pool);
    let body = json!({"userId": "carol", "items": [{"productId": "sku-1", "quantity": 1, "unitPriceCents": 500}]});
    let key = [("idempotency-key", "create-carol-1")];
    let first = app
        .send(Method::POST, "/orders", &key, Some(body.clone()))
        .await;
    let again = app
        .send(Method::POST, "/orders", &key, Some(body.clone()))
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(again.status, first.status);
    assert_eq!(
        again.body, first.body,
        "same generated order id, version and position"
    );
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_eq!(app.event_count().await, 1);

    let mut other = body.clone();
    other["userId"] = json!("dave");
    let r = app.send(Method::POST, "/orders", &key, Some(other)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );

    let id = first.body["orderId"].as_str().unwrap();
    let confirm_key = [("idempotency-key", "confirm-1")];
    let uri = format!("/orders/{id}/confirm");
    let a = app
        .send(Method::POST, &uri, &confirm_key, Some(checkout()))
        .await;
    let b = app
        .send(Method::POST, &uri, &confirm_key, Some(checkout()))
        .await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::OK, StatusCode::OK),
        "a retried confirm is not a conflict"
    );
    assert_eq!(a.body, b.body);
    // The same key on another endpoint is a different request.
    let r = app
        .send(
            Method::POST,
            &format!("/orders/{id}/deliver"),
            &confirm_key,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.event_count().await, 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_retries_with_one_key_append_once(pool: PgPool) {
    let app = App::new(pool);
    let body = json!({"userId": "erin", "items": [{"productId": "sku-1", "quantity": 1, "unitPriceCents": 5}]});
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (app, body) = (app.clone(), body.clone());
            tokio::spawn(async move {
                app.send(
                    Method::POST,
                    "/orders",
                    &[("idempotency-key", "same")],
                    Some(body),
                )
                .await
            })
        })
        .collect();
    let mut bodies = BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        bodies.insert(r.body.to_string());
    }
    assert_eq!(bodies.len(), 1, "every retry saw the first response");
    assert_eq!(app.event_count().await, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn fifty_concurrent_commands_on_one_order_leave_no_gaps_or_duplicates(pool: PgPool) {
    let app = App::new(pool);
    let id = app.create_order().await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            let uri = format!("/orders/{id}/items");
            tokio::spawn(async move {
                app.post(
                    &uri,
                    json!({"productId": format!("p{i}"), "quantity": 1, "unitPriceCents": 10}),
                )
                .await
            })
        })
        .collect();
    let mut versions = BTreeSet::new();
    let mut conflicts = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::OK => assert!(
                versions.insert(r.body["version"].as_u64().unwrap()),
                "duplicate version"
            ),
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    eprintln!(
        "{} commands succeeded, {conflicts} gave up with 409",
        versions.len()
    );
    assert_eq!(versions.len() + conflicts, 50);
    let n = versions.len() as u64 + 1;
    assert_eq!(
        versions,
        (2..=n).collect::<BTreeSet<_>>(),
        "answered versions are 2..=N"
    );
    let stored: Vec<i64> = sqlx::query_scalar(
        "select stream_position from events where stream_id = $1 order by stream_position",
    )
    .bind(format!("order-{id}"))
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        (1..=n as i64).collect::<Vec<_>>(),
        "stored versions are 1..=N, no gaps, no duplicates"
    );
    let state = app.get(&format!("/orders/{id}/state")).await;
    assert_eq!(state.body["version"].as_u64(), Some(n));
    assert_eq!(
        state.body["items"].as_array().unwrap().len() as u64,
        n,
        "no lost event"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn fifty_concurrent_commands_on_different_orders_all_succeed(pool: PgPool) {
    let app = App::new(pool);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                app.post(
                    "/orders",
                    json!({"userId": format!("u{i}"), "items": [{"productId": "sku", "quantity": 1, "unitPriceCents": 1}]}),
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, StatusCode::CREATED);
    }
    assert_eq!(app.event_count().await, 50);
}

#[sqlx::test(migrations = "../migrations")]
async fn state_at_a_version_or_time(pool: PgPool) {
    let app = App::new(pool);
    let id = app.create_order().await;
    app.post(
        &format!("/orders/{id}/items"),
        json!({"productId": "b", "quantity": 1, "unitPriceCents": 1}),
    )
    .await;
    app.send(
        Method::POST,
        &format!("/orders/{id}/confirm"),
        &[],
        Some(checkout()),
    )
    .await;

    let v1 = app.get(&format!("/orders/{id}/state?version=1")).await;
    assert_eq!(
        (
            v1.status,
            v1.body["status"].as_str(),
            v1.body["items"].as_array().map(Vec::len)
        ),
        (StatusCode::OK, Some("pending"), Some(1))
    );
    let v2 = app.get(&format!("/orders/{id}/state?version=2")).await;
    assert_eq!(v2.body["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        app.get(&format!("/orders/{id}/state?version=0"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = app.get(&format!("/orders/{id}/state?version=9")).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "version_not_found")
    );

    let events = app.get(&format!("/orders/{id}/events")).await;
    let created_at = events.body["events"][0]["recordedAt"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = |t: &str| format!("/orders/{id}/state?at={}", t.replace('+', "%2B"));
    let r = app.get(&at(&created_at)).await;
    assert_eq!(
        (r.status, r.body["version"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    let r = app.get(&at("2000-01-01T00:00:00Z")).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "order_not_found"),
        "did not exist yet"
    );
    let r = app.get(&at("2999-01-01T00:00:00Z")).await;
    assert_eq!(r.body["version"].as_u64(), Some(3));

    for bad in [
        "?at=yesterday",
        "?version=-1",
        "?version=x",
        "?at=2000-01-01T00:00:00Z&version=1",
    ] {
        let r = app.get(&format!("/orders/{id}/state{bad}")).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameter"),
            "{bad}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn stock_is_appended_to_the_products_stream(pool: PgPool) {
    let app = App::new(pool);
    let r = app
        .post("/products/sku-1/stock", json!({"quantity": 40}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.body["productId"].as_str(), r.body["version"].as_u64()),
        (Some("sku-1"), Some(1))
    );
    let r = app
        .post("/products/sku-1/stock", json!({"quantity": 2}))
        .await;
    assert_eq!(r.body["version"], 2);
    let stream: String =
        sqlx::query_scalar("select stream_id from events order by global_position desc limit 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stream, "product-sku-1");
}

/// A version-1 OrderCreated (no currency) written by an older build reads as USD everywhere.
#[sqlx::test(migrations = "../migrations")]
async fn a_version_1_event_is_upcast_on_every_http_path(pool: PgPool) {
    let app = App::new(pool.clone());
    let id = Uuid::new_v4();
    let stream = format!("order-{id}");
    sqlx::query("insert into streams (stream_id, stream_type, version) values ($1, 'order', 1)")
        .bind(&stream)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into events (stream_id, stream_position, event_id, event_type, schema_version, data)
         values ($1, 1, $2, 'OrderCreated', 1, $3)",
    )
    .bind(&stream)
    .bind(Uuid::new_v4())
    .bind(json!({"orderId": id, "userId": "legacy", "items": [{"productId": "a", "quantity": 1, "unitPriceCents": 700}], "totalCents": 700}))
    .execute(&pool)
    .await
    .unwrap();

    let state = app.get(&format!("/orders/{id}/state")).await;
    assert_eq!(
        (state.status, state.body["currency"].as_str()),
        (StatusCode::OK, Some("USD"))
    );
    let at_v1 = app.get(&format!("/orders/{id}/state?version=1")).await;
    assert_eq!(at_v1.body["currency"], "USD");
    let events = app.get(&format!("/orders/{id}/events")).await;
    let e = &events.body["events"][0];
    assert_eq!(
        (
            e["schemaVersion"].as_i64(),
            e["storedSchemaVersion"].as_i64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(e["data"]["currency"], "USD");
    let r = app
        .post(
            &format!("/orders/{id}/items"),
            json!({"productId": "b", "quantity": 1, "unitPriceCents": 1}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["version"].as_u64()),
        (StatusCode::OK, Some(2))
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn health_and_metrics(pool: PgPool) {
    let app = App::new(pool);
    app.create_order().await;
    assert_eq!(app.get("/health/live").await.status, StatusCode::OK);
    assert_eq!(app.get("/health/ready").await.status, StatusCode::OK);
    let r = app.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.body.as_str().unwrap();
    assert!(text.contains("http_requests_total"), "{text}");
    assert!(text.contains("route=\"/orders\""), "{text}");
    assert!(text.contains("write_events_appended_total"), "{text}");
}

#[sqlx::test(migrations = "../migrations")]
async fn postgres_going_away_is_503_and_the_service_recovers(pool: PgPool) {
    let options = pool.connect_options();
    let switch = TcpSwitch::start((options.get_host().to_owned(), options.get_port())).await;
    let proxied = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_lazy_with((*options).clone().host("127.0.0.1").port(switch.port));
    let app = App {
        http: InProcess::new(router(AppState::new(proxied, &settings(), auth()))),
        pool,
    };
    let id = app.create_order().await;

    switch.cut();
    let r = app
        .send(
            Method::POST,
            &format!("/orders/{id}/confirm"),
            &[],
            Some(checkout()),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{:?}",
        r.body
    );
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(
        app.get("/health/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(app.get("/health/live").await.status, StatusCode::OK);

    switch.restore();
    let r = app
        .send(
            Method::POST,
            &format!("/orders/{id}/confirm"),
            &[],
            Some(checkout()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(app.get("/health/ready").await.status, StatusCode::OK);
}

/// What a client generator or a fuzzer derives from the document is what the code takes:
/// `If-Match` versions, product ids in paths and `Idempotency-Key` say their exact rules,
/// and no parameter is declared nullable (a header cannot be null).
#[sqlx::test(migrations = "../migrations")]
async fn the_openapi_document_declares_exactly_what_the_code_accepts(pool: PgPool) {
    let app = App::new(pool);
    let doc = app.get("/openapi.json").await.body;
    let param = |path: &str, method: &str, name: &str| -> Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no {name}"))["schema"]
            .clone()
    };
    let if_match = param("/orders/{order_id}/confirm", "post", "If-Match");
    assert_eq!(
        (if_match["type"].as_str(), if_match["pattern"].as_str()),
        (
            Some("string"),
            Some(r#"^(W/)?("[0-9]{1,19}"|[0-9]{1,19})$"#)
        )
    );
    for path in [
        "/orders/{order_id}/items/{product_id}",
        "/products/{product_id}/stock",
    ] {
        let method = if path.starts_with("/orders") {
            "delete"
        } else {
            "post"
        };
        let product = param(path, method, "product_id");
        assert_eq!(
            (
                product["pattern"].as_str(),
                product["minLength"].as_u64(),
                product["maxLength"].as_u64()
            ),
            (Some("^[A-Za-z0-9_.:-]{1,64}$"), Some(1), Some(64)),
            "{path}"
        );
    }
    let key = param("/orders", "post", "Idempotency-Key");
    assert_eq!(key["pattern"].as_str(), Some("^[\t -~]{1,255}$"));
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let schema = &p["schema"];
                assert!(
                    schema["nullable"] != true
                        && !schema["type"]
                            .as_array()
                            .is_some_and(|t| t.contains(&json!("null"))),
                    "{method} {path} {} is declared nullable",
                    p["name"]
                );
            }
        }
    }

    // The code takes exactly those forms.
    let id = app.create_order().await;
    let confirm = format!("/orders/{id}/confirm");
    for bad in [
        "\"18446744073709551615\"",
        "18446744073709551615",
        "\"+1\"",
        "+1",
        "\"1",
        "W/1\"",
        "w/\"1\"",
        "\"\"",
        "\"-1\"",
        "*",
    ] {
        let r = app
            .send(Method::POST, &confirm, &[("if-match", bad)], None)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "invalid_header"),
            "If-Match: {bad}"
        );
    }
    for stale in [
        "\"9999999999999999999\"",
        "9999999999999999999",
        "W/\"0000000000000000000\"",
    ] {
        let r = app
            .send(
                Method::POST,
                &confirm,
                &[("if-match", stale)],
                Some(checkout()),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::PRECONDITION_FAILED,
            "If-Match: {stale}"
        );
    }
    let r = app
        .send(
            Method::POST,
            &confirm,
            &[("if-match", "W/\"01\"")],
            Some(checkout()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let cancel = format!("/orders/{id}/cancel");
    let r = app
        .send(Method::POST, &cancel, &[("if-match", "2")], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = app
        .post(
            &format!("/products/{}/stock", "p".repeat(64)),
            json!({"quantity": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .post(
            &format!("/products/{}/stock", "p".repeat(65)),
            json!({"quantity": 1}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    let r = app
        .send(
            Method::POST,
            "/products/sku-1/stock",
            &[("idempotency-key", "with space\tand tab")],
            Some(json!({"quantity": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

/// The documented methods of each path of the OpenAPI document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_openapi_document_describes_every_endpoint_and_error(pool: PgPool) {
    let app = App::new(pool);
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    // Every route of the router, with its methods, and nothing else.
    let documented = operations(&doc);
    let expected: BTreeSet<(String, String)> = [
        ("POST", "/orders"),
        ("POST", "/orders/{order_id}/items"),
        ("DELETE", "/orders/{order_id}/items/{product_id}"),
        ("POST", "/orders/{order_id}/confirm"),
        ("POST", "/orders/{order_id}/cancel"),
        ("POST", "/orders/{order_id}/ship"),
        ("POST", "/orders/{order_id}/deliver"),
        ("GET", "/orders/{order_id}/events"),
        ("GET", "/orders/{order_id}/state"),
        ("PUT", "/products/{product_id}"),
        ("GET", "/products/{product_id}"),
        ("POST", "/products/{product_id}/stock"),
        ("POST", "/products/{product_id}/stock/adjustments"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(documented, expected);
    // The router serves exactly the documented methods of each documented path (these
    // requests are refused before anything is written).
    let paths: BTreeSet<&str> = documented.iter().map(|(_, p)| p.as_str()).collect();
    for path in &paths {
        let uri = path
            .replace("{order_id}", &Uuid::new_v4().to_string())
            .replace("{product_id}", "sku-1");
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            let r = app.send(method.clone(), &uri, &[], None).await;
            if documented.contains(&(method.to_string(), path.to_string())) {
                assert_ne!(r.code(), "not_found", "{method} {path}");
                assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            } else {
                assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            }
        }
    }
    assert_eq!(app.event_count().await, 0);

    // Every error status where it applies, each with the error body and its headers.
    let commands = [
        "/orders",
        "/orders/{order_id}/items",
        "/orders/{order_id}/items/{product_id}",
        "/orders/{order_id}/confirm",
        "/orders/{order_id}/cancel",
        "/orders/{order_id}/ship",
        "/orders/{order_id}/deliver",
        "/products/{product_id}",
        "/products/{product_id}/stock",
        "/products/{product_id}/stock/adjustments",
    ];
    for (method, path) in &documented {
        let op = &doc["paths"][path][method.to_lowercase()];
        let is_command = method != "GET" && commands.contains(&path.as_str());
        let mut codes: BTreeSet<&str> = match path.as_str() {
            "/orders" => ["201"].into(),
            "/health/ready" => ["200", "503"].into(),
            "/orders/{order_id}/events" => ["200", "400", "404", "422", "503"].into(),
            "/orders/{order_id}/state" => ["200", "400", "404", "422", "503"].into(),
            "/products/{product_id}" if method == "GET" => {
                ["200", "400", "404", "422", "503"].into()
            }
            _ => ["200"].into(),
        };
        if is_command {
            codes.extend(["400", "409", "412", "413", "415", "422", "503"]);
            if path.contains("{order_id}") {
                codes.insert("404");
            }
        }
        // Every route but the ops ones needs a token; staff routes, and a customer naming
        // another in `userId`, are 403.
        let ops = path.starts_with("/health") || path == "/metrics" || path == "/openapi.json";
        if !ops {
            codes.extend(["401", "429"]);
        }
        let staff_only = path.ends_with("/ship")
            || path.ends_with("/deliver")
            || (path.starts_with("/products") && method != "GET");
        if staff_only || path == "/orders" {
            codes.insert("403");
        }
        assert_eq!(keys(&op["responses"]), codes, "{method} {path}");
        for (code, response) in op["responses"].as_object().unwrap() {
            assert!(
                response["headers"]["x-request-id"].is_object(),
                "{method} {path} {code}"
            );
            if code.starts_with('2') || path == "/health/ready" {
                continue;
            }
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path} {code}"
            );
            if code == "401" {
                assert!(
                    response["headers"]["WWW-Authenticate"].is_object(),
                    "{method} {path}"
                );
            }
            if code == "503" || code == "429" {
                assert!(
                    response["headers"]["Retry-After"].is_object(),
                    "{method} {path}"
                );
            }
        }
        // Path parameters as the router names them.
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let named = |place: &str| -> BTreeSet<String> {
            params
                .iter()
                .filter(|p| p["in"] == place)
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let in_path: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_owned)
            .collect();
        assert_eq!(named("path"), in_path, "{method} {path}");
        if !is_command {
            continue;
        }
        // The headers a command reads, and those its success sets.
        assert_eq!(
            named("header"),
            [
                "If-Match",
                "Idempotency-Key",
                "X-Causation-Id",
                "x-request-id"
            ]
            .map(str::to_owned)
            .into(),
            "{method} {path}"
        );
        let success = if path == "/orders" { "201" } else { "200" };
        let mut headers = BTreeSet::from(["ETag", "Idempotent-Replayed", "x-request-id"]);
        if path == "/orders" {
            headers.insert("Location");
        }
        assert_eq!(
            keys(&op["responses"][success]["headers"]),
            headers,
            "{method} {path}"
        );
        let accepted = if path.starts_with("/products") {
            "ProductAccepted"
        } else {
            "OrderAccepted"
        };
        assert_eq!(
            op["responses"][success]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{accepted}"),
            "{method} {path}"
        );
        let (body, required) = match path.rsplit('/').next().unwrap() {
            "orders" => ("CreateOrder", true),
            "items" => ("Item", true),
            "ship" => ("Ship", true),
            "stock" => ("ReceiveStock", true),
            "adjustments" => ("AdjustStock", true),
            "{product_id}" if method == "PUT" => ("SetDetails", true),
            "confirm" => ("Confirm", true),
            "cancel" => ("Cancel", false),
            _ => ("NoFields", false),
        };
        let request = &op["requestBody"];
        assert_eq!(
            request["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{body}"),
            "{method} {path}"
        );
        assert_eq!(
            request["required"].as_bool().unwrap_or(false),
            required,
            "{method} {path}"
        );
    }
    let state_query: BTreeSet<&str> = doc["paths"]["/orders/{order_id}/state"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(state_query, BTreeSet::from(["at", "version"]));

    // Every reference resolves.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = vec![];
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(schemas.contains_key(name), "dangling {r}");
    }

    // The bounds the document states are the ones the service enforces.
    let prop = |schema: &str, field: &str| schemas[schema]["properties"][field].clone();
    for (schema, field, min, max) in [
        (
            "Item",
            "quantity",
            Quantity::MIN as i64,
            Quantity::MAX as i64,
        ),
        (
            "Item",
            "unitPriceCents",
            UnitPriceCents::MIN,
            UnitPriceCents::MAX,
        ),
        (
            "ReceiveStock",
            "quantity",
            StockQuantity::MIN as i64,
            StockQuantity::MAX as i64,
        ),
        ("AdjustStock", "quantity", StockDelta::MIN, StockDelta::MAX),
        (
            "SetDetails",
            "unitPriceCents",
            UnitPriceCents::MIN,
            UnitPriceCents::MAX,
        ),
    ] {
        let p = prop(schema, field);
        assert_eq!(
            (p["minimum"].as_i64(), p["maximum"].as_i64()),
            (Some(min), Some(max)),
            "{schema}.{field}"
        );
    }
    for (schema, field) in [
        ("Cancel", "reason"),
        ("Ship", "carrier"),
        ("Ship", "trackingNumber"),
        ("SetDetails", "name"),
        ("AdjustStock", "reason"),
    ] {
        assert_eq!(
            prop(schema, field)["maxLength"].as_u64(),
            Some(MAX_TEXT_LEN as u64),
            "{schema}.{field}"
        );
    }
    let key = doc["paths"]["/orders"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap();
    assert_eq!(
        key["schema"]["maxLength"].as_u64(),
        Some(MAX_IDEMPOTENCY_KEY_LEN as u64)
    );
    assert_eq!(
        schemas["OrderStatus"]["enum"],
        json!([
            "pending",
            "confirmed",
            "paid",
            "shipped",
            "delivered",
            "cancelled"
        ])
    );
    for schema in [
        "CreateOrder",
        "Item",
        "NoFields",
        "Confirm",
        "Cancel",
        "Ship",
        "ReceiveStock",
        "AdjustStock",
        "SetDetails",
    ] {
        assert_eq!(
            schemas[schema]["additionalProperties"], false,
            "{schema} refuses unknown fields"
        );
    }

    // What the service answers has the documented fields, no more, no fewer.
    let fields = |schema: &str| keys(&schemas[schema]["properties"]);
    let created = app
        .post(
            "/orders",
            json!({"userId": "alice", "items": [{"productId": "sku-1", "quantity": 2, "unitPriceCents": 1250}]}),
        )
        .await;
    assert_eq!(keys(&created.body), fields("OrderAccepted"));
    let id = created.body["orderId"].as_str().unwrap();
    let state = app.get(&format!("/orders/{id}/state")).await;
    assert_eq!(keys(&state.body), fields("OrderSnapshot"));
    assert_eq!(keys(&state.body["items"][0]), fields("OrderLine"));
    let events = app.get(&format!("/orders/{id}/events")).await;
    assert_eq!(keys(&events.body), fields("AuditTrail"));
    assert_eq!(keys(&events.body["events"][0]), fields("AuditEvent"));
    let stock = app
        .post("/products/sku-1/stock", json!({"quantity": 1}))
        .await;
    assert_eq!(keys(&stock.body), fields("ProductAccepted"));
    let product = app.get("/products/sku-1").await;
    assert_eq!(keys(&product.body), fields("ProductSnapshot"));
    let error = app.post("/orders", json!({"userId": "alice"})).await;
    assert_eq!(keys(&error.body), fields("ErrorBody"));
    assert!(keys(&error.body["error"]).is_subset(&fields("ErrorDetail")));
    // An error with details: every field documented.
    app.price(&[("scarce", 5)]).await;
    let scarce = app
        .post(
            "/orders",
            json!({"userId": "alice", "items": [{"productId": "scarce", "quantity": 1}]}),
        )
        .await;
    let scarce = scarce.body["orderId"].as_str().unwrap().to_owned();
    let error = app
        .send(
            Method::POST,
            &format!("/orders/{scarce}/confirm"),
            &[],
            Some(checkout()),
        )
        .await;
    assert_eq!(error.code(), "insufficient_stock");
    assert!(keys(&error.body["error"]).contains("details"));
    assert!(keys(&error.body["error"]).is_subset(&fields("ErrorDetail")));
    assert_eq!(
        schemas["ErrorDetail"]["properties"]["details"]["type"],
        "array"
    );
    let live = app.get("/health/live").await;
    assert!(keys(&live.body).is_subset(&fields("Health")));
}

/// Every route but `state` takes no query parameters: any is refused with the JSON error
/// body naming it (as the read-service does), before anything is written; the ops routes,
/// which probes and scrapers call, ignore them. The document says which is which.
#[sqlx::test(migrations = "../migrations")]
async fn a_query_parameter_where_none_is_taken_is_422_with_the_error_body(pool: PgPool) {
    let app = App::new(pool);
    let id = app.create_order().await;
    let before = app.event_count().await;
    let doc = app.get("/openapi.json").await.body;
    let body = json!({"productId": "sku-9", "quantity": 1, "unitPriceCents": 100});
    for (method, path) in operations(&doc) {
        let uri = path
            .replace("{order_id}", &id)
            .replace("{product_id}", "sku-1");
        let method: Method = method.parse().unwrap();
        let r = app
            .send(
                method.clone(),
                &format!("{uri}?bogus=1"),
                &[],
                Some(body.clone()),
            )
            .await;
        let op = &doc["paths"][&path][method.as_str().to_lowercase()];
        let takes_query = op["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
        if path.starts_with("/health") || path == "/metrics" || path == "/openapi.json" {
            assert_ne!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {path}"
            );
            continue;
        }
        assert_eq!(
            (r.status, r.code(), r.body["error"]["field"].as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_parameter",
                Some("bogus")
            ),
            "{method} {path}: {:?}",
            r.body
        );
        assert_eq!(r.headers["content-type"], "application/json");
        let documented = op["responses"]["422"]["description"].as_str().unwrap_or("");
        assert_eq!(
            documented.contains("a query parameter was given")
                || documented.starts_with("A query parameter was given"),
            !takes_query,
            "{method} {path}: {documented}"
        );
    }
    assert_eq!(
        app.event_count().await,
        before,
        "refused commands write nothing"
    );
    // Without the parameter the same request goes through.
    let r = app.get(&format!("/orders/{id}/events")).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_bad_state_query_parameter_is_named_in_the_error_body(pool: PgPool) {
    let app = App::new(pool);
    let id = app.create_order().await;
    for (query, field) in [
        ("bogus=1", "bogus"),
        ("version=1&version=2", "version"),
        ("at=2000-01-01T00:00:00Z&at=2001-01-01T00:00:00Z", "at"),
        ("version=x", "version"),
        ("at[$gt]=1", "at[$gt]"),
    ] {
        let r = app.get(&format!("/orders/{id}/state?{query}")).await;
        assert_eq!(
            (r.status, r.code(), r.body["error"]["field"].as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_parameter",
                Some(field)
            ),
            "{query}: {:?}",
            r.body
        );
        assert_eq!(r.headers["content-type"], "application/json");
    }
}

/// The checkout names a payment method (required) and may name an email: a missing or bad
/// one is 422 naming the field, checked as the request is read (before the order is looked
/// up or `If-Match` compared), and nothing is written, neither on the order nor its stock.
#[sqlx::test(migrations = "../migrations")]
async fn confirm_needs_a_payment_method_and_takes_an_optional_email(pool: PgPool) {
    let app = App::new(pool);
    let id = app.create_order().await;
    let confirm = format!("/orders/{id}/confirm");
    let stock_before = app.get("/products/sku-1").await.body;
    let r = app.send(Method::POST, &confirm, &[], None).await;
    assert_eq!(
        (r.status, r.code(), r.field()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "paymentMethod"
        ),
        "no body: {:?}",
        r.body
    );
    let long = format!("pm_{}", "x".repeat(101));
    let long_email = format!("{}@example.com", "a".repeat(243));
    let cases = [
        (json!({}), "paymentMethod"),
        (json!({"email": "alice@example.com"}), "paymentMethod"),
        (json!({"paymentMethod": null}), "paymentMethod"),
        (json!({"paymentMethod": 7}), "paymentMethod"),
        (json!({"paymentMethod": ""}), "paymentMethod"),
        (json!({"paymentMethod": "card_visa"}), "paymentMethod"),
        (json!({"paymentMethod": "pm_"}), "paymentMethod"),
        (json!({"paymentMethod": "pm_card visa"}), "paymentMethod"),
        (json!({"paymentMethod": "pm_card-visa"}), "paymentMethod"),
        (json!({"paymentMethod": "pm_é"}), "paymentMethod"),
        (json!({"paymentMethod": long}), "paymentMethod"),
        (
            json!({"paymentMethod": "pm_card_visa", "email": null}),
            "email",
        ),
        (
            json!({"paymentMethod": "pm_card_visa", "email": ""}),
            "email",
        ),
        (
            json!({"paymentMethod": "pm_card_visa", "email": "alice"}),
            "email",
        ),
        (
            json!({"paymentMethod": "pm_card_visa", "email": "a@b"}),
            "email",
        ),
        (
            json!({"paymentMethod": "pm_card_visa", "email": "a@@b.c"}),
            "email",
        ),
        (
            json!({"paymentMethod": "pm_card_visa", "email": "a b@c.d"}),
            "email",
        ),
        (
            json!({"paymentMethod": "pm_card_visa", "email": "@b.c"}),
            "email",
        ),
        (
            json!({"paymentMethod": "pm_card_visa", "email": "a@.b.c"}),
            "email",
        ),
        (
            json!({"paymentMethod": "pm_card_visa", "email": "a@b.c."}),
            "email",
        ),
        (
            json!({"paymentMethod": "pm_card_visa", "email": "a\u{0}@b.c"}),
            "email",
        ),
        (
            json!({"paymentMethod": "pm_card_visa", "email": long_email}),
            "email",
        ),
        (
            json!({"paymentMethod": "pm_card_visa", "email": ["a@b.c"]}),
            "email",
        ),
        (
            json!({"paymentMethod": "pm_card_visa", "extra": 1}),
            "extra",
        ),
    ];
    let missing = Uuid::new_v4();
    for (body, field) in cases {
        for (uri, headers) in [
            (confirm.clone(), vec![]),
            (confirm.clone(), vec![("if-match", "\"7\"")]),
            (format!("/orders/{missing}/confirm"), vec![]),
        ] {
            let r = app
                .send(Method::POST, &uri, &headers, Some(body.clone()))
                .await;
            assert_eq!(
                (r.status, r.code(), r.field()),
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", field),
                "{uri} {headers:?} {body}: {:?}",
                r.body
            );
            let message = r.body["error"]["message"].as_str().unwrap();
            assert!(message.starts_with(field), "{message}");
        }
    }
    assert_eq!(app.event_count().await, 1, "nothing written on the order");
    assert_eq!(
        app.get("/products/sku-1").await.body,
        stock_before,
        "nor on its stock"
    );
    let state = app.get(&format!("/orders/{id}/state")).await.body;
    assert_eq!(
        (
            &state["status"],
            &state["paymentMethod"],
            &state["paymentStatus"],
            &state["paymentIntentId"]
        ),
        (&json!("pending"), &Value::Null, &Value::Null, &Value::Null)
    );

    // The longest payment method and email there may be are taken.
    let longest = format!("pm_{}", "x".repeat(100));
    let email = format!("{}@example.com", "a".repeat(242));
    assert_eq!(email.len(), 254);
    let r = app
        .post(&confirm, json!({"paymentMethod": longest, "email": email}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let data = &app.get(&format!("/orders/{id}/events")).await.body["events"][1]["data"];
    assert_eq!(
        data,
        &json!({"paymentMethod": longest, "email": email, "stockReserved": true})
    );

    // The order shows its payment awaited after the checkout, captured once recorded.
    let other = app.create_order().await;
    let r = app
        .post(
            &format!("/orders/{other}/confirm"),
            json!({"paymentMethod": "pm_card_visa", "email": "alice@example.com"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let state = app.get(&format!("/orders/{other}/state")).await.body;
    assert_eq!(
        (
            &state["status"],
            &state["paymentMethod"],
            &state["paymentStatus"],
            &state["paymentIntentId"]
        ),
        (
            &json!("confirmed"),
            &json!("pm_card_visa"),
            &json!("awaiting"),
            &Value::Null
        )
    );
    app.pay(&other).await;
    let state = app.get(&format!("/orders/{other}/state")).await.body;
    assert_eq!(
        (&state["status"], &state["paymentStatus"], &state["version"]),
        (&json!("paid"), &json!("captured"), &json!(3))
    );
    assert!(
        state["paymentIntentId"]
            .as_str()
            .is_some_and(|pi| pi.starts_with("pi_")),
        "{state}"
    );
    // A paid order is confirmed already.
    let r = app
        .post(&format!("/orders/{other}/confirm"), checkout())
        .await;
    assert_eq!(
        (r.status, r.code(), r.body["error"]["message"].as_str()),
        (
            StatusCode::CONFLICT,
            "invalid_state",
            Some("cannot confirm a paid order")
        )
    );

    // The document states the same rules.
    let doc = app.get("/openapi.json").await.body;
    let schema = &doc["components"]["schemas"]["Confirm"];
    assert_eq!(schema["required"], json!(["paymentMethod"]));
    assert_eq!(schema["additionalProperties"], false);
    let method = &schema["properties"]["paymentMethod"];
    assert_eq!(
        (method["pattern"].as_str(), method["maxLength"].as_u64()),
        (Some("^pm_[A-Za-z0-9_]{1,100}$"), Some(103))
    );
    let email = &schema["properties"]["email"];
    assert_eq!(
        (email["maxLength"].as_u64(), email["type"].as_str()),
        (Some(254), Some("string")),
        "{email}"
    );
    let order_state = &doc["components"]["schemas"]["OrderSnapshot"]["properties"];
    assert!(order_state["paymentStatus"].is_object(), "{order_state}");
    assert_eq!(
        doc["components"]["schemas"]["PaymentStatus"]["enum"],
        json!(["awaiting", "captured", "declined", "refunded"])
    );
}

/// Only a paid order ships (409 otherwise, nothing written); a paid one may be cancelled.
#[sqlx::test(migrations = "../migrations")]
async fn only_a_paid_order_ships(pool: PgPool) {
    let app = App::new(pool);
    let id = app.create_order().await;
    let ship = json!({"carrier": "DHL", "trackingNumber": "T1"});
    let r = app.post(&format!("/orders/{id}/ship"), ship.clone()).await;
    assert_eq!(
        (r.status, r.code(), r.body["error"]["message"].as_str()),
        (
            StatusCode::CONFLICT,
            "invalid_state",
            Some("cannot ship a pending order")
        )
    );
    assert_eq!(
        app.post(&format!("/orders/{id}/confirm"), checkout())
            .await
            .status,
        StatusCode::OK
    );
    let r = app.post(&format!("/orders/{id}/ship"), ship.clone()).await;
    assert_eq!(
        (r.status, r.code(), r.body["error"]["message"].as_str()),
        (
            StatusCode::CONFLICT,
            "invalid_state",
            Some("cannot ship a confirmed order")
        ),
        "{:?}",
        r.body
    );
    assert_eq!(app.event_count().await, 2, "create and confirm only");
    app.pay(&id).await;
    let r = app.post(&format!("/orders/{id}/ship"), ship).await;
    assert_eq!(
        (r.status, r.body["version"].as_u64()),
        (StatusCode::OK, Some(4))
    );
    // A shipped order is not cancelled; a paid one is (see the stock tests for its units).
    let r = app
        .send(Method::POST, &format!("/orders/{id}/cancel"), &[], None)
        .await;
    assert_eq!(
        (r.status, r.body["error"]["message"].as_str()),
        (StatusCode::CONFLICT, Some("cannot cancel a shipped order"))
    );
    let paid = app.create_order().await;
    app.post(&format!("/orders/{paid}/confirm"), checkout())
        .await;
    app.pay(&paid).await;
    let r = app
        .send(Method::POST, &format!("/orders/{paid}/cancel"), &[], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}
