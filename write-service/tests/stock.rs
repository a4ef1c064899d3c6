//! The catalog and the stock over HTTP, against a real PostgreSQL: prices come from the
//! catalog, and no sequence of concurrent commands makes a product promise more than it has.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use domain::OrderId;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use test_support::events::Events;
use test_support::http::{InProcess, Reply};
use write_service::{AppState, router};

mod common;
use common::{auth, settings};

struct App {
    http: InProcess,
    pool: PgPool,
}

impl App {
    /// The service on a pool like its own: 10 connections, 3 s to get one.
    fn new(pool: PgPool) -> Self {
        let app_pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with((*pool.connect_options()).clone());
        Self {
            http: InProcess::new(router(AppState::new(app_pool, &settings(), auth()))),
            pool,
        }
    }

    async fn put(&self, uri: &str, body: Value) -> Reply {
        self.http.send(Method::PUT, uri, &[], Some(body)).await
    }

    async fn post(&self, uri: &str, body: Value) -> Reply {
        self.http.post(uri, body).await
    }

    async fn product(&self, id: &str, cents: i64, stock: i64) {
        let r = self
            .put(
                &format!("/products/{id}"),
                json!({"name": format!("Product {id}"), "unitPriceCents": cents}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        if stock > 0 {
            let r = self
                .post(&format!("/products/{id}/stock"), json!({"quantity": stock}))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        }
    }

    /// Creates a pending order of `lines` (product, quantity) and returns its id.
    async fn order(&self, lines: &[(&str, i64)]) -> String {
        let items: Vec<Value> = lines
            .iter()
            .map(|(p, q)| json!({"productId": p, "quantity": q}))
            .collect();
        let r = self
            .post("/orders", json!({"userId": "u", "items": items}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["orderId"].as_str().unwrap().to_owned()
    }

    async fn command(&self, order: &str, action: &str) -> Reply {
        let body = match action {
            "confirm" => Some(json!({"paymentMethod": "pm_card_visa"})),
            "ship" => Some(json!({"carrier": "DHL", "trackingNumber": "T1"})),
            _ => None,
        };
        self.http
            .send(
                Method::POST,
                &format!("/orders/{order}/{action}"),
                &[],
                body,
            )
            .await
    }

    /// Records the capture of a confirmed order's payment, as the fulfilment process does
    /// (through the event store: there is no endpoint for it); only a paid order ships.
    async fn pay(&self, order: &str) {
        let id = OrderId(order.parse().expect("an order id"));
        Events::new(self.pool.clone()).pay(id).await;
    }

    async fn stock(&self, product: &str) -> Value {
        self.http.get(&format!("/products/{product}")).await.ok()
    }

    /// A product's reserved, shipped and available units.
    async fn units(&self, product: &str) -> [i64; 3] {
        let stock = self.stock(product).await;
        ["reservedUnits", "shippedUnits", "availableUnits"].map(|k| {
            stock[k]
                .as_i64()
                .unwrap_or_else(|| panic!("{k} in {stock}"))
        })
    }

    /// Per product, the units its `StockReserved`, `StockReleased` and `StockShipped` events
    /// moved, and its received units, straight from the events table.
    async fn ledger(&self) -> BTreeMap<String, [i64; 4]> {
        let rows: Vec<(String, String, Value)> = sqlx::query_as(
            "select stream_id, event_type, data from events where stream_id like 'product-%'",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        let mut ledger = BTreeMap::<String, [i64; 4]>::new();
        for (stream, event_type, data) in rows {
            let units = data["quantity"]
                .as_i64()
                .or_else(|| data["delta"].as_i64())
                .unwrap_or(0);
            let slot = match event_type.as_str() {
                "StockReceived" | "StockAdjusted" => 0,
                "StockReserved" => 1,
                "StockReleased" => 2,
                "StockShipped" => 3,
                _ => continue,
            };
            ledger.entry(stream).or_default()[slot] += units;
        }
        ledger
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn two_hundred_confirmations_of_fifty_units_reserve_exactly_fifty(pool: PgPool) {
    let app = App::new(pool);
    app.product("hot", 999, 50).await;
    let mut orders = Vec::new();
    for _ in 0..200 {
        orders.push(app.order(&[("hot", 1)]).await);
    }
    let app = std::sync::Arc::new(app);
    let confirm_all = |orders: Vec<String>| {
        let app = app.clone();
        async move {
            let tasks: Vec<_> = orders
                .into_iter()
                .map(|order| {
                    let app = app.clone();
                    tokio::spawn(async move {
                        let r = app.command(&order, "confirm").await;
                        (order, r)
                    })
                })
                .collect();
            let mut answers = Vec::new();
            for t in tasks {
                answers.push(t.await.unwrap());
            }
            answers
        }
    };
    let answers = confirm_all(orders).await;
    let (mut confirmed, mut refused) = (Vec::new(), Vec::new());
    for (order, r) in answers {
        match (r.status, r.code()) {
            (StatusCode::OK, _) => confirmed.push(order),
            (StatusCode::CONFLICT, "insufficient_stock") => {
                let details = &r.body["error"]["details"];
                assert_eq!(
                    details,
                    &json!([{"productId": "hot", "askedUnits": 1, "availableUnits": 0}]),
                    "{:?}",
                    r.body
                );
                refused.push(order);
            }
            other => panic!("unexpected answer {other:?}: {:?}", r.body),
        }
    }
    assert_eq!((confirmed.len(), refused.len()), (50, 150));
    let hot = app.stock("hot").await;
    assert_eq!(
        (
            &hot["availableUnits"],
            &hot["reservedUnits"],
            &hot["receivedUnits"]
        ),
        (&json!(0), &json!(50), &json!(50))
    );

    // Ten cancellations give ten units back; ten of the refused then get them.
    for order in &confirmed[..10] {
        let r = app.command(order, "cancel").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    assert_eq!(app.stock("hot").await["availableUnits"], 10);
    let answers = confirm_all(refused[..10].to_vec()).await;
    for (_, r) in &answers {
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let hot = app.stock("hot").await;
    assert_eq!(
        (&hot["availableUnits"], &hot["reservedUnits"]),
        (&json!(0), &json!(50))
    );
    let ledger = app.ledger().await;
    assert_eq!(ledger["product-hot"], [50, 60, 10, 0]);
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_orders_over_several_products_never_oversell_or_deadlock(pool: PgPool) {
    let app = App::new(pool);
    let products = ["p1", "p2", "p3", "p4", "p5"];
    for p in products {
        app.product(p, 100, 20).await;
    }
    // Lines in every order of the products, so that lock order matters.
    let mut orders = Vec::new();
    for i in 0..120usize {
        let n = 2 + i % 4;
        let lines: Vec<(&str, i64)> = (0..n)
            .map(|k| (products[(i * 7 + k * (1 + i % 3)) % 5], 1 + (i % 3) as i64))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        let mut lines = lines;
        if i % 2 == 1 {
            lines.reverse();
        }
        orders.push(app.order(&lines).await);
    }
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = orders
        .iter()
        .enumerate()
        .map(|(i, order)| {
            let (app, order) = (app.clone(), order.clone());
            tokio::spawn(async move {
                // Some confirmed orders are cancelled or shipped at once, concurrently with
                // the other confirmations.
                let r = app.command(&order, "confirm").await;
                let mut answers = vec![(r.status, r.code().to_owned())];
                if r.status == StatusCode::OK && i % 5 == 0 {
                    let then = if i % 10 == 0 { "cancel" } else { "ship" };
                    if then == "ship" {
                        app.pay(&order).await;
                    }
                    let r = app.command(&order, then).await;
                    answers.push((r.status, r.code().to_owned()));
                }
                answers
            })
        })
        .collect();
    let mut confirmed = 0;
    for t in tasks {
        for (status, code) in t.await.unwrap() {
            match (status, code.as_str()) {
                (StatusCode::OK, _) => confirmed += 1,
                (StatusCode::CONFLICT, "insufficient_stock") => {}
                other => panic!("unexpected answer {other:?}"),
            }
        }
    }
    assert!(confirmed > 0);
    let ledger = app.ledger().await;
    for p in products {
        let view = app.stock(p).await;
        let [received, reserved, released, shipped] = ledger[&format!("product-{p}")];
        // What the events say is what the product says, and it never promised more than it had.
        assert_eq!(view["receivedUnits"], received, "{p}");
        assert_eq!(view["reservedUnits"], reserved - released - shipped, "{p}");
        assert_eq!(view["shippedUnits"], shipped, "{p}");
        assert!(reserved - released <= received, "{p}: {view}");
        let available = view["availableUnits"].as_i64().unwrap();
        assert!(available >= 0, "{p}: {view}");
        assert_eq!(available, received - (reserved - released), "{p}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn lines_take_the_catalogs_price(pool: PgPool) {
    let app = App::new(pool);
    app.product("mouse", 2499, 0).await;
    app.product("pad", 999, 0).await;
    // No price sent, or the current one: the catalog's price is taken.
    let r = app
        .post(
            "/orders",
            json!({"userId": "u", "items": [
                {"productId": "mouse", "quantity": 2},
                {"productId": "pad", "quantity": 1, "unitPriceCents": 999}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["orderId"].as_str().unwrap().to_owned();
    let state = app.http.get(&format!("/orders/{id}/state")).await.ok();
    assert_eq!(state["totalCents"], 2 * 2499 + 999);

    let count = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from events")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let before = count().await;
    // A price the client was shown that is no longer the catalog's: 409, every line named.
    let r = app
        .post(
            "/orders",
            json!({"userId": "u", "items": [
                {"productId": "pad", "quantity": 1, "unitPriceCents": 999},
                {"productId": "mouse", "quantity": 1, "unitPriceCents": 0}
            ]}),
        )
        .await;
    assert_eq!(
        (r.status, r.code(), r.field()),
        (
            StatusCode::CONFLICT,
            "price_changed",
            "items[1].unitPriceCents"
        )
    );
    assert_eq!(
        r.body["error"]["details"],
        json!([{"productId": "mouse", "unitPriceCents": 2499}])
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2499")
    );
    let r = app
        .post(
            &format!("/orders/{id}/items"),
            json!({"productId": "pad", "quantity": 1, "unitPriceCents": 1}),
        )
        .await;
    assert_eq!(
        (r.status, r.code(), r.field()),
        (StatusCode::CONFLICT, "price_changed", "unitPriceCents")
    );

    // Not in the catalog, or without a price: it cannot be ordered.
    let r = app
        .post("/products/stocked/stock", json!({"quantity": 5}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for product in ["unknown", "stocked"] {
        let r = app
            .post(
                "/orders",
                json!({"userId": "u", "items": [
                    {"productId": "mouse", "quantity": 1},
                    {"productId": product, "quantity": 1}
                ]}),
            )
            .await;
        assert_eq!(
            (r.status, r.code(), r.field()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "items[1].productId"
            ),
            "{product}"
        );
        let r = app
            .post(
                &format!("/orders/{id}/items"),
                json!({"productId": product, "quantity": 1}),
            )
            .await;
        assert_eq!(
            (r.status, r.field()),
            (StatusCode::UNPROCESSABLE_ENTITY, "productId"),
            "{product}"
        );
    }
    // Priced in another currency than the order.
    let r = app
        .post(
            "/orders",
            json!({"userId": "u", "currency": "EUR", "items": [{"productId": "mouse", "quantity": 1}]}),
        )
        .await;
    assert_eq!(
        (r.status, r.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, "items[0].productId")
    );
    assert!(r.body["error"]["message"].as_str().unwrap().contains("USD"));
    assert_eq!(count().await, before + 1, "only the stock delivery");

    // A new price applies to lines added from now on; the order keeps what it took.
    app.product("mouse", 1999, 0).await;
    let r = app
        .post(
            &format!("/orders/{id}/items"),
            json!({"productId": "mouse", "quantity": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let state = app.http.get(&format!("/orders/{id}/state")).await.ok();
    assert_eq!(
        state["totalCents"],
        3 * 2499 + 999,
        "units added at the line's price"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_catalog_is_set_with_put_and_read_with_get(pool: PgPool) {
    let app = App::new(pool);
    let r = app.http.get("/products/mouse").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "product_not_found")
    );

    let details = json!({"name": "Mouse", "unitPriceCents": 2499, "currency": "EUR"});
    let first = app.put("/products/mouse", details.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.body["version"], 1);
    assert_eq!(first.header("etag"), Some("\"1\""));
    // The same details again: nothing written, the current version and token.
    let again = app.put("/products/mouse", details).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        (&again.body["version"], &again.body["position"]),
        (&json!(1), &first.body["position"])
    );
    let changed = app
        .put(
            "/products/mouse",
            json!({"name": "Mouse", "unitPriceCents": 1999}),
        )
        .await;
    assert_eq!(changed.body["version"], 2);
    let product = app.stock("mouse").await;
    assert_eq!(
        product,
        json!({
            "productId": "mouse", "name": "Mouse", "currency": "USD", "unitPriceCents": 1999,
            "receivedUnits": 0, "reservedUnits": 0, "shippedUnits": 0, "availableUnits": 0,
            "version": 2
        })
    );
    // Stock alone makes a product known, without a price.
    app.post("/products/bare/stock", json!({"quantity": 3}))
        .await;
    let bare = app.stock("bare").await;
    assert_eq!(
        (
            &bare["name"],
            &bare["unitPriceCents"],
            &bare["availableUnits"]
        ),
        (&Value::Null, &Value::Null, &json!(3))
    );
    for (body, field) in [
        (json!({"name": " ", "unitPriceCents": 1}), "name"),
        (
            json!({"name": "x".repeat(201), "unitPriceCents": 1}),
            "name",
        ),
        (json!({"name": "a\u{0}b", "unitPriceCents": 1}), "name"),
        (json!({"name": "M", "unitPriceCents": -1}), "unitPriceCents"),
        (json!({"name": "M"}), "unitPriceCents"),
        (
            json!({"name": "M", "unitPriceCents": 1, "currency": "usd"}),
            "currency",
        ),
        (
            json!({"name": "M", "unitPriceCents": 1, "currency": null}),
            "currency",
        ),
        (
            json!({"name": "M", "unitPriceCents": 1, "stock": 1}),
            "stock",
        ),
    ] {
        let r = app.put("/products/mouse", body.clone()).await;
        assert_eq!(
            (r.status, r.field()),
            (StatusCode::UNPROCESSABLE_ENTITY, field),
            "{body}: {:?}",
            r.body
        );
    }
    assert_eq!(app.stock("mouse").await["version"], 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn adjustments_never_go_below_what_is_committed(pool: PgPool) {
    let app = App::new(pool);
    app.product("cable", 500, 10).await;
    let order = app.order(&[("cable", 6)]).await;
    assert_eq!(app.command(&order, "confirm").await.status, StatusCode::OK);
    let adjust = |quantity: i64| {
        app.post(
            "/products/cable/stock/adjustments",
            json!({"quantity": quantity, "reason": "stock count"}),
        )
    };
    let r = adjust(-5).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "below_committed"),
        "{:?}",
        r.body
    );
    let r = adjust(-4).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let cable = app.stock("cable").await;
    assert_eq!(
        (&cable["receivedUnits"], &cable["availableUnits"]),
        (&json!(6), &json!(0))
    );
    let r = adjust(3).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(app.stock("cable").await["availableUnits"], 3);
    for (body, field) in [
        (json!({"quantity": 0}), "quantity"),
        (json!({"quantity": 1_000_001}), "quantity"),
        (json!({"quantity": -1_000_001}), "quantity"),
        (json!({"quantity": 1, "reason": ""}), "reason"),
        (json!({"reason": "x"}), "quantity"),
    ] {
        let r = app
            .post("/products/cable/stock/adjustments", body.clone())
            .await;
        assert_eq!(
            (r.status, r.field()),
            (StatusCode::UNPROCESSABLE_ENTITY, field),
            "{body}: {:?}",
            r.body
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn cancelling_releases_and_shipping_ships_in_the_orders_commit(pool: PgPool) {
    let app = App::new(pool);
    app.product("a", 100, 10).await;
    app.product("b", 200, 10).await;
    let (cancelled, shipped) = (
        app.order(&[("a", 2), ("b", 3)]).await,
        app.order(&[("b", 4), ("a", 1)]).await,
    );
    for order in [&cancelled, &shipped] {
        assert_eq!(app.command(order, "confirm").await.status, StatusCode::OK);
    }
    assert_eq!(app.stock("a").await["availableUnits"], 7);
    assert_eq!(app.stock("b").await["availableUnits"], 3);
    // A short line refuses the whole confirmation, naming every short line.
    let greedy = app.order(&[("a", 8), ("b", 4)]).await;
    let r = app.command(&greedy, "confirm").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "insufficient_stock")
    );
    assert_eq!(
        r.body["error"]["details"],
        json!([
            {"productId": "a", "askedUnits": 8, "availableUnits": 7},
            {"productId": "b", "askedUnits": 4, "availableUnits": 3}
        ])
    );
    assert_eq!(app.stock("a").await["reservedUnits"], 3);

    assert_eq!(
        app.command(&cancelled, "cancel").await.status,
        StatusCode::OK
    );
    app.pay(&shipped).await;
    assert_eq!(app.command(&shipped, "ship").await.status, StatusCode::OK);
    assert_eq!(app.units("a").await, [0, 1, 9]);
    assert_eq!(app.units("b").await, [0, 4, 6]);
    let a = app.stock("a").await;
    // Each order event shares its transaction with its products' events.
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select string_agg(event_type, ',' order by event_type), count(*)
         from events
         where event_type in ('OrderConfirmed', 'StockReserved', 'OrderCancelled',
                              'StockReleased', 'OrderShipped', 'StockShipped')
         group by tx_id order by min(global_position)",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("OrderConfirmed,StockReserved,StockReserved".to_owned(), 3),
            ("OrderConfirmed,StockReserved,StockReserved".to_owned(), 3),
            ("OrderCancelled,StockReleased,StockReleased".to_owned(), 3),
            ("OrderShipped,StockShipped,StockShipped".to_owned(), 3),
        ]
    );
    // Cancelling a pending order touches no product.
    let pending = app.order(&[("a", 1)]).await;
    let r = app.command(&pending, "cancel").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(app.stock("a").await["version"], a["version"]);
}

/// Orders confirmed before they carried their reservations are listed by their products:
/// cancelling or shipping one moves the listed units, beside orders confirmed today.
#[sqlx::test(migrations = "../migrations")]
async fn reservations_the_products_list_are_released_and_shipped_as_listed(pool: PgPool) {
    let app = App::new(pool);
    app.product("a", 100, 10).await;
    app.product("b", 200, 10).await;
    let events = Events::new(app.pool.clone());
    let id = |o: &str| OrderId(o.parse().expect("an order id"));
    let (cancelled, shipped, today) = (
        app.order(&[("a", 2), ("b", 3)]).await,
        app.order(&[("b", 4)]).await,
        app.order(&[("a", 1), ("b", 1)]).await,
    );
    events.confirm_listing_reservations(id(&cancelled)).await;
    events.confirm_listing_reservations(id(&shipped)).await;
    assert_eq!(app.command(&today, "confirm").await.status, StatusCode::OK);
    assert_eq!(app.stock("a").await["reservedUnits"], 3);
    assert_eq!(app.stock("b").await["reservedUnits"], 8);

    assert_eq!(
        app.command(&cancelled, "cancel").await.status,
        StatusCode::OK
    );
    app.pay(&shipped).await;
    assert_eq!(app.command(&shipped, "ship").await.status, StatusCode::OK);
    assert_eq!(app.units("a").await, [1, 0, 9]);
    assert_eq!(app.units("b").await, [1, 4, 5]);
    // Today's order moves what its lines say.
    assert_eq!(app.command(&today, "cancel").await.status, StatusCode::OK);
    for p in ["a", "b"] {
        assert_eq!(app.stock(p).await["reservedUnits"], 0, "{p}");
    }
    let ledger = app.ledger().await;
    assert_eq!(ledger["product-a"], [10, 3, 3, 0]);
    assert_eq!(ledger["product-b"], [10, 8, 4, 4]);
}

/// Only a paid order ships: a confirmed one waiting for its payment is refused and nothing
/// moves. A paid order may still be cancelled (the fulfilment process refunds it): its
/// reserved units come back, in the order's commit.
#[sqlx::test(migrations = "../migrations")]
async fn an_unpaid_order_does_not_ship_and_a_cancelled_paid_one_releases_its_stock(pool: PgPool) {
    let app = App::new(pool);
    app.product("a", 100, 10).await;
    app.product("b", 200, 10).await;
    let order = app.order(&[("a", 2), ("b", 3)]).await;
    assert_eq!(app.command(&order, "confirm").await.status, StatusCode::OK);
    let (a, b) = (app.stock("a").await, app.stock("b").await);
    let events = |pool: PgPool| async move {
        let n: i64 = sqlx::query_scalar("select count(*) from events")
            .fetch_one(&pool)
            .await
            .unwrap();
        n
    };
    let before = events(app.pool.clone()).await;
    let r = app.command(&order, "ship").await;
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
    assert_eq!(events(app.pool.clone()).await, before, "nothing written");
    assert_eq!(app.stock("a").await, a);
    assert_eq!(app.stock("b").await, b);

    app.pay(&order).await;
    let state = app.http.get(&format!("/orders/{order}/state")).await.ok();
    assert_eq!(state["status"], "paid");
    let r = app
        .http
        .send(
            Method::POST,
            &format!("/orders/{order}/cancel"),
            &[],
            Some(json!({"reason": "changed my mind"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    for (product, ordered) in [("a", 2), ("b", 3)] {
        let p = app.stock(product).await;
        assert_eq!(
            (
                &p["reservedUnits"],
                &p["shippedUnits"],
                &p["availableUnits"]
            ),
            (&json!(0), &json!(0), &json!(10)),
            "{product}: the {ordered} reserved units are back"
        );
    }
    let state = app.http.get(&format!("/orders/{order}/state")).await.ok();
    assert_eq!(
        (
            &state["status"],
            &state["paymentStatus"],
            &state["cancelReason"]
        ),
        (
            &json!("cancelled"),
            &json!("captured"),
            &json!("changed my mind")
        )
    );
    // The release shares the cancel's transaction.
    let rows: Vec<(String,)> = sqlx::query_as(
        "select string_agg(event_type, ',' order by event_type)
         from events where event_type in ('OrderCancelled', 'StockReleased')
         group by tx_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![("OrderCancelled,StockReleased,StockReleased".to_owned(),)]
    );
    // A cancelled order does not ship either.
    let r = app.command(&order, "ship").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "invalid_state")
    );
}
