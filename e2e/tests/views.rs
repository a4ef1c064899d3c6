//! The read-service over views the real projector filled from real events: each test has a
//! fresh PostgreSQL database (events written as the write-service writes them) and a fresh
//! MongoDB database, applies the events with the projector's own code, and reads through the
//! read-service's router (or server). The read-service's own tests seed documents directly.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::sync::Arc;

use axum::http::StatusCode;
use chrono::{DateTime, Days, NaiveDate, Utc};
use domain::order::OrderCommand;
use domain::{OrderId, Position};
use projector::for_view;
use projector::mongo::ViewStore;
use projector::projections::inventory::InventoryProjection;
use projector::projections::orders::OrdersProjection;
use projector::projections::{Projection, View};
use projector::settings::{OnPoison, Transactions};
use projector::{Projector, Settings as ProjectorSettings};
use read_model::ViewDocument;
use read_service::{AppState, Application, Settings, router};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_support::events::{Events, create, line};
use test_support::http::Service;
use test_support::servers::{database_url, fresh_database_name, mongodb_uri};

/// Events in PostgreSQL, a projector that applies them on demand, and views of their own.
struct Env {
    events: Events,
    projector: Projector,
    mongo_database: String,
}

impl Deref for Env {
    type Target = Events;
    fn deref(&self) -> &Events {
        &self.events
    }
}

impl Env {
    async fn new(pool: PgPool) -> Self {
        let pg_db = pool
            .connect_options()
            .get_database()
            .unwrap_or("postgres")
            .to_owned();
        let mongo_database = fresh_database_name("v");
        let settings = ProjectorSettings {
            database_url: database_url(&pg_db).into(),
            mongodb_uri: mongodb_uri().into(),
            mongodb_database: mongo_database.clone(),
            batch_size: 500,
            on_poison: OnPoison::Stop,
            addr: "127.0.0.1:0".parse().unwrap(),
            poll_interval_ms: 50,
            transactions: Transactions::Off,
            thresholds: projector::projections::Thresholds::default(),
        };
        Env {
            events: Events::new(pool),
            projector: Projector::connect(&settings).await.unwrap(),
            mongo_database,
        }
    }

    fn views(&self) -> &ViewStore {
        &self.projector.engine.views
    }

    /// The read-service's settings for these views, checking tokens with the tests' secret.
    fn settings(&self) -> Settings {
        Settings {
            auth: test_support::auth::settings(),
            ..Settings::new(mongodb_uri(), &self.mongo_database)
        }
    }

    async fn app(&self) -> App {
        app(self.settings()).await
    }

    /// Applies everything committed into `generation` of the view `P` maintains.
    async fn catch_up_generation<P: Projection>(&self, generation: i64) -> Position {
        let head = self.head().await;
        self.projector
            .catch_up(P::VIEW, generation, head)
            .await
            .unwrap()
    }

    /// Applies everything committed into the active generation of the view `P` maintains.
    async fn catch_up<P: Projection>(&self) -> Position {
        let g = self.views().active_generation(P::VIEW).await.unwrap();
        self.catch_up_generation::<P>(g).await
    }

    async fn catch_up_all(&self) {
        let head = self.head().await;
        for &view in View::ALL {
            let g = self.views().active_generation(view).await.unwrap();
            self.projector.catch_up(view, g, head).await.unwrap();
        }
    }

    /// The checkpoint of the active generation of a view.
    async fn checkpoint(&self, view: View) -> Position {
        let g = self.views().active_generation(view).await.unwrap();
        self.views().checkpoint(view, g).await.unwrap()
    }

    async fn cleanup(self) {
        let _ = self.views().database().drop().await;
    }
}

/// The read-service's router, called in-process.
type App = Service<AppState>;

async fn app(settings: Settings) -> App {
    let state = AppState::connect(&settings).await.unwrap();
    Service::new(router(state.clone()), state)
}

fn ids(orders: &[Value]) -> Vec<String> {
    orders
        .iter()
        .map(|o| o["orderId"].as_str().unwrap().to_owned())
        .collect()
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

fn day(v: &Value) -> String {
    time(v).format("%Y-%m-%d").to_string()
}

fn confirm() -> OrderCommand {
    OrderCommand::Confirm {
        payment_method: "pm_card_visa".into(),
        email: None,
    }
}

fn cancel() -> OrderCommand {
    OrderCommand::Cancel {
        reason: Some("changed my mind".into()),
    }
}

fn ship() -> OrderCommand {
    OrderCommand::Ship {
        carrier: "DHL".into(),
        tracking_number: "T-1".into(),
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn an_order_reads_as_clean_json(pool: PgPool) {
    let env = Env::new(pool).await;
    let id = env
        .new_order("alice", vec![line("sku-1", 2, 1250), line("sku-2", 1, 99)])
        .await;
    env.order(id, confirm()).await;
    env.pay(id).await;
    let shipped = env.order(id, ship()).await;
    env.catch_up_all().await;
    let app = env.app().await;

    let r = app.get(&format!("/orders/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.headers.contains_key("x-request-id"));
    assert_eq!(r.position(), env.checkpoint(View::Orders).await);
    assert!(r.position() >= shipped);
    let o = r.body;
    let keys: BTreeSet<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "orderId",
            "userId",
            "currency",
            "items",
            "itemCount",
            "totalCents",
            "status",
            "createdAt",
            "updatedAt",
            "confirmedAt",
            "cancelledAt",
            "cancelReason",
            "shippedAt",
            "carrier",
            "trackingNumber",
            "deliveredAt",
            "paymentStatus",
            "paymentMethod",
            "paymentIntentId",
            "paidCents",
            "paidAt",
            "refundedCents",
            "refundedAt",
            "paymentDeclinedAt",
            "paymentDeclineCode",
            "version",
        ]),
        "no _id, no appliedPosition: {o}"
    );
    assert_eq!(o["orderId"], id.to_string());
    assert_eq!(o["userId"], "alice");
    assert_eq!(o["currency"], "USD");
    assert_eq!(o["status"], "shipped");
    assert_eq!(o["carrier"], "DHL");
    assert_eq!(o["trackingNumber"], "T-1");
    assert!(o["totalCents"].is_i64() && o["itemCount"].is_i64() && o["version"].is_i64());
    assert_eq!(
        (&o["totalCents"], &o["itemCount"], &o["version"]),
        (&json!(2599), &json!(3), &json!(4))
    );
    assert_eq!(
        (
            &o["paymentStatus"],
            &o["paymentMethod"],
            &o["paidCents"],
            &o["refundedCents"]
        ),
        (
            &json!("captured"),
            &json!("pm_card_visa"),
            &json!(2599),
            &json!(0)
        )
    );
    assert_eq!(o["paymentIntentId"], format!("pi_test_{}", id.0.simple()));
    assert_eq!(
        o["items"][0],
        json!({"productId": "sku-1", "quantity": 2, "unitPriceCents": 1250, "lineTotalCents": 2500})
    );
    assert!(time(&o["createdAt"]) <= time(&o["confirmedAt"]));
    assert!(time(&o["confirmedAt"]) <= time(&o["paidAt"]));
    assert!(time(&o["paidAt"]) <= time(&o["shippedAt"]));
    assert_eq!(time(&o["updatedAt"]), time(&o["shippedAt"]));
    assert!(o["cancelledAt"].is_null() && o["deliveredAt"].is_null());
    assert!(o["refundedAt"].is_null() && o["paymentDeclinedAt"].is_null());
    assert!(o["paymentDeclineCode"].is_null());

    let missing = app.get(&format!("/orders/{}", OrderId::new())).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "order_not_found")
    );
    assert!(missing.headers.contains_key("x-request-id"));
    assert_eq!(missing.position(), env.checkpoint(View::Orders).await);
    let malformed = app.get("/orders/not-a-uuid").await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    let extra = app.get(&format!("/orders/{id}?expand=items")).await;
    assert_eq!(
        (extra.status, extra.field()),
        (StatusCode::UNPROCESSABLE_ENTITY, "expand")
    );
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_users_history_pages_past_the_recent_orders_cap(pool: PgPool) {
    let env = Env::new(pool).await;
    // More than the 50 recent orders users_orders_view keeps.
    let mut placed = BTreeSet::new();
    for i in 0..55 {
        placed.insert(
            env.new_order("alice", vec![line("sku-1", 1, 100 + i)])
                .await
                .to_string(),
        );
    }
    let some: Vec<OrderId> = placed.iter().take(3).map(|s| s.parse().unwrap()).collect();
    let mut spent = 0;
    // Two of the three confirmed orders are paid: only payments count as spent.
    for (i, id) in some.iter().enumerate() {
        env.order(*id, confirm()).await;
        if i < 2 {
            env.pay(*id).await;
        }
    }
    env.new_order("bob", vec![line("sku-1", 1, 1)]).await;
    env.catch_up_all().await;
    let app = env.app().await;
    for id in &some {
        spent += app.get(&format!("/orders/{id}")).await.ok()["paidCents"]
            .as_i64()
            .unwrap();
    }

    let first = app.get("/users/alice/orders?limit=20").await;
    let lowest = env
        .checkpoint(View::Orders)
        .await
        .min(env.checkpoint(View::Users).await);
    assert_eq!(first.position(), lowest);
    let first = first.ok();
    assert_eq!(first["userId"], "alice");
    assert_eq!(first["orderCount"], 55);
    assert_eq!(first["totalSpentCents"], spent);

    let pages = app
        .all_pages("/users/alice/orders?limit=20", "orders")
        .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [20, 20, 15]);
    let all = pages.concat();
    let listed = ids(&all);
    assert_eq!(
        listed.iter().cloned().collect::<BTreeSet<_>>(),
        placed,
        "every order once"
    );
    assert_eq!(listed.len(), 55);
    assert!(all.iter().all(|o| o["userId"] == "alice"));
    // Newest first; the same instant is ordered by id.
    for w in all.windows(2) {
        let key = |o: &Value| {
            (
                time(&o["createdAt"]),
                o["orderId"].as_str().unwrap().to_owned(),
            )
        };
        assert!(key(&w[0]) > key(&w[1]), "{} before {}", w[0], w[1]);
    }

    let nobody = app.get("/users/nobody/orders").await;
    assert_eq!(
        (nobody.status, nobody.code()),
        (StatusCode::NOT_FOUND, "user_not_found")
    );
    assert_eq!(nobody.position(), lowest);
    let malformed = app.get("/users/a%20b/orders").await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    let alices = first["nextCursor"].as_str().unwrap();
    let foreign = app.get(&format!("/users/bob/orders?cursor={alices}")).await;
    assert_eq!(
        (foreign.status, foreign.code(), foreign.field()),
        (StatusCode::BAD_REQUEST, "invalid_cursor", "cursor")
    );
    env.cleanup().await;
}

/// Sort key of an order in a listing sorted by `sort`, id as tie-breaker.
fn sort_key(sort: &str, o: &Value) -> (i64, String) {
    let key = match sort.trim_start_matches('-') {
        "createdAt" => time(&o["createdAt"]).timestamp_millis(),
        _ => o["totalCents"].as_i64().unwrap(),
    };
    (key, o["orderId"].as_str().unwrap().to_owned())
}

#[sqlx::test(migrations = "../migrations")]
async fn search_pages_stay_stable_while_orders_arrive(pool: PgPool) {
    let env = Env::new(pool).await;
    let mut before = BTreeSet::new();
    for i in 0..25 {
        // Few distinct totals: ties must be broken by id.
        let id = env
            .new_order(
                &format!("u{}", i % 3),
                vec![line("sku-1", 1, 100 * (i % 4 + 1))],
            )
            .await;
        before.insert(id.to_string());
    }
    env.catch_up::<OrdersProjection>().await;
    let app = env.app().await;

    for sort in ["-createdAt", "createdAt", "totalCents", "-totalCents"] {
        let first = format!("/orders?sort={sort}&limit=10");
        let mut uri = first.clone();
        let mut listed = vec![];
        for page in 1.. {
            assert!(page < 20, "paging never ends for {sort}");
            let body = app.get(&uri).await.ok();
            listed.extend(body["orders"].as_array().unwrap().iter().cloned());
            // Orders keep arriving between pages, with totals anywhere in the range.
            env.new_order("late", vec![line("sku-9", 1, 100 * (page % 4 + 1))])
                .await;
            env.catch_up::<OrdersProjection>().await;
            match body["nextCursor"].as_str() {
                Some(c) => uri = format!("{first}&cursor={c}"),
                None => break,
            }
        }
        let listed_ids = ids(&listed);
        let unique: BTreeSet<String> = listed_ids.iter().cloned().collect();
        assert_eq!(unique.len(), listed_ids.len(), "a duplicate in {sort}");
        assert!(before.is_subset(&unique), "an order was skipped in {sort}");
        let descending = sort.starts_with('-');
        for w in listed.windows(2) {
            let (a, b) = (sort_key(sort, &w[0]), sort_key(sort, &w[1]));
            assert!(
                if descending { a > b } else { a < b },
                "{sort}: {a:?} then {b:?}"
            );
        }
    }
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn search_combines_criteria_sorts_and_never_runs_client_operators(pool: PgPool) {
    let env = Env::new(pool).await;
    let o1 = env.new_order("u1", vec![line("p1", 1, 1000)]).await;
    env.order(o1, confirm()).await;
    let o2 = env.new_order("u1", vec![line("p2", 2, 1500)]).await;
    env.order(o2, confirm()).await;
    env.pay(o2).await;
    let o3 = env
        .new_order("u2", vec![line("p1", 1, 500), line("p2", 1, 500)])
        .await;
    env.order(o3, cancel()).await;
    let o4 = env.new_order("u2", vec![line("p3", 1, 7000)]).await;
    env.order(o4, confirm()).await;
    env.pay(o4).await;
    env.order(o4, ship()).await;
    env.catch_up_all().await;
    let app = env.app().await;
    let names = BTreeMap::from([
        (o1.to_string(), "o1"),
        (o2.to_string(), "o2"),
        (o3.to_string(), "o3"),
        (o4.to_string(), "o4"),
    ]);
    let found = |q: String| {
        let app = app.clone();
        let names = names.clone();
        async move {
            let body = app.get(&format!("/orders?{q}")).await.ok();
            ids(body["orders"].as_array().unwrap())
                .iter()
                .map(|id| names[id])
                .collect::<BTreeSet<_>>()
        }
    };
    let set = |s: &[&'static str]| s.iter().copied().collect::<BTreeSet<_>>();
    assert_eq!(found("userId=u1".into()).await, set(&["o1", "o2"]));
    assert_eq!(found("status=confirmed".into()).await, set(&["o1"]));
    assert_eq!(found("status=paid".into()).await, set(&["o2"]));
    assert_eq!(found("status=shipped".into()).await, set(&["o4"]));
    assert_eq!(found("productId=p1".into()).await, set(&["o1", "o3"]));
    assert_eq!(found("productId=p2".into()).await, set(&["o2", "o3"]));
    assert_eq!(
        found("minTotalCents=1000&maxTotalCents=3000".into()).await,
        set(&["o1", "o2", "o3"])
    );
    assert_eq!(found("minTotalCents=3001".into()).await, set(&["o4"]));
    assert_eq!(
        found("userId=u2&productId=p1&status=cancelled".into()).await,
        set(&["o3"])
    );
    assert_eq!(found("userId=a.b:c".into()).await, set(&[]));

    // Time range: from inclusive, to exclusive, by the orders' own times.
    let all = app.get("/orders").await.ok()["orders"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(all.len(), 4);
    let created_of_o3 = all
        .iter()
        .find(|o| o["orderId"] == o3.to_string())
        .map(|o| o["createdAt"].as_str().unwrap().to_owned())
        .unwrap();
    let expect = |keep: &dyn Fn(DateTime<Utc>) -> bool| {
        all.iter()
            .filter(|o| keep(time(&o["createdAt"])))
            .map(|o| names[o["orderId"].as_str().unwrap()])
            .collect::<BTreeSet<_>>()
    };
    let from = DateTime::parse_from_rfc3339(&created_of_o3).unwrap();
    let encoded = created_of_o3.replace('+', "%2B");
    assert_eq!(
        found(format!("createdFrom={encoded}")).await,
        expect(&|t| t >= from)
    );
    assert_eq!(
        found(format!("createdTo={encoded}")).await,
        expect(&|t| t < from)
    );

    // Sorts, with ties (o1 and o3 both total 1000) broken by id.
    let sorted = |sort: &'static str| {
        let app = app.clone();
        async move {
            ids(
                app.get(&format!("/orders?sort={sort}")).await.ok()["orders"]
                    .as_array()
                    .unwrap(),
            )
        }
    };
    let mut by_total = all.clone();
    by_total.sort_by_key(|o| sort_key("totalCents", o));
    assert_eq!(sorted("totalCents").await, ids(&by_total));
    by_total.reverse();
    assert_eq!(sorted("-totalCents").await, ids(&by_total));
    let mut newest_first = all.clone();
    newest_first.sort_by_key(|o| std::cmp::Reverse(sort_key("createdAt", o)));
    assert_eq!(ids(&all), ids(&newest_first), "default: -createdAt");
    let page = app.get("/orders?limit=3").await.ok();
    assert_eq!(page["orders"].as_array().unwrap().len(), 3);
    assert!(page["nextCursor"].is_string());
    assert!(app.get("/orders").await.ok()["nextCursor"].is_null());

    // Client input never becomes an operator: a bracketed name is an unknown parameter,
    // a JSON-looking value is an invalid id.
    for (query, field) in [
        ("userId[$ne]=x", "userId[$ne]"),
        ("userId%5B%24ne%5D=x", "userId[$ne]"),
        ("userId=%7B%22%24gt%22%3A%22%22%7D", "userId"),
        ("status[$exists]=true", "status[$exists]"),
        ("productId=$where", "productId"),
        ("minTotalCents[$gt]=0", "minTotalCents[$gt]"),
        ("userId=u1&userId[$ne]=u1", "userId[$ne]"),
    ] {
        let r = app.get(&format!("/orders?{query}")).await;
        assert_eq!(
            (r.status, r.code(), r.field()),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", field),
            "{query}: {:?}",
            r.body
        );
    }
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn cursors_are_bound_to_their_listing_and_sort(pool: PgPool) {
    let env = Env::new(pool).await;
    for total in [300, 100, 200] {
        env.new_order("carol", vec![line("sku-1", 1, total)]).await;
    }
    env.stock("sku-1", 5).await;
    env.stock("sku-2", 6).await;
    env.catch_up_all().await;
    let app = env.app().await;
    let next = |uri: &'static str| {
        let app = app.clone();
        async move {
            app.get(uri).await.ok()["nextCursor"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let newest = next("/orders?limit=1").await;
    let by_total = next("/orders?limit=1&sort=totalCents").await;
    let user = next("/users/carol/orders?limit=1").await;
    let stock = next("/inventory?limit=1").await;

    // The same sort, named or by default, accepts it.
    let again = app
        .get(&format!("/orders?limit=1&sort=-createdAt&cursor={newest}"))
        .await
        .ok();
    assert_eq!(again["orders"].as_array().unwrap().len(), 1);
    let second = app
        .get(&format!(
            "/orders?limit=5&sort=totalCents&cursor={by_total}"
        ))
        .await
        .ok();
    let totals: Vec<i64> = second["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["totalCents"].as_i64().unwrap())
        .collect();
    assert_eq!(totals, [200, 300]);

    let mut tampered = newest.clone();
    // Version 1, as cursors were before they were signed: the signature no longer matches.
    tampered.replace_range(0..2, "31");
    for uri in [
        format!("/orders?sort=totalCents&cursor={newest}"),
        format!("/orders?sort=-totalCents&cursor={by_total}"),
        format!("/orders?cursor={by_total}"),
        format!("/orders?cursor={user}"),
        format!("/orders?cursor={stock}"),
        format!("/orders?cursor={tampered}"),
        format!("/users/carol/orders?cursor={newest}"),
        format!("/inventory?cursor={newest}"),
    ] {
        let r = app.get(&uri).await;
        assert_eq!(
            (r.status, r.code(), r.field()),
            (StatusCode::BAD_REQUEST, "invalid_cursor", "cursor"),
            "{uri}"
        );
    }
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn daily_sales_fill_days_without_sales_with_zeros(pool: PgPool) {
    let env = Env::new(pool).await;
    // a: paid. b: paid, cancelled and refunded. c: pending. d: declined and cancelled.
    let a = env.new_order("alice", vec![line("sku-1", 2, 1000)]).await;
    env.order(a, confirm()).await;
    env.pay(a).await;
    let b = env.new_order("bob", vec![line("sku-2", 1, 500)]).await;
    env.order(b, confirm()).await;
    env.pay(b).await;
    env.order(b, cancel()).await;
    env.refund(b).await;
    let c = env.new_order("carol", vec![line("sku-1", 1, 300)]).await;
    let d = env.new_order("dan", vec![line("sku-3", 4, 100)]).await;
    env.order(d, confirm()).await;
    env.decline(d).await;
    env.order(d, cancel()).await;
    // f and g were confirmed before payments existed: revenue on confirmation, g's
    // reversed on its cancellation.
    let f = env.new_order("fay", vec![line("sku-3", 1, 700)]).await;
    env.confirm_legacy(f).await;
    let g = env.new_order("gil", vec![line("sku-3", 2, 100)]).await;
    env.confirm_legacy(g).await;
    env.order(g, cancel()).await;
    env.catch_up_all().await;
    let app = env.app().await;

    // What each day should show, from the orders' own event times.
    let zero = json!({"ordersPlaced": 0, "ordersConfirmed": 0, "ordersCancelled": 0,
                      "ordersPaid": 0, "ordersRefunded": 0, "paymentsDeclined": 0,
                      "revenueCents": 0, "refundedCents": 0, "netRevenueCents": 0,
                      "unitsSold": 0});
    let mut expected: BTreeMap<String, Value> = BTreeMap::new();
    let mut bump = |day: String, field: &str, by: i64| {
        let d = expected.entry(day).or_insert_with(|| zero.clone());
        d[field] = json!(d[field].as_i64().unwrap() + by);
    };
    for id in [a, b, c, d, f, g] {
        let o = app.get(&format!("/orders/{id}")).await.ok();
        let total = o["totalCents"].as_i64().unwrap();
        let units = o["itemCount"].as_i64().unwrap();
        let legacy = !o["confirmedAt"].is_null() && o["paymentMethod"].is_null();
        bump(day(&o["createdAt"]), "ordersPlaced", 1);
        if !o["confirmedAt"].is_null() {
            bump(day(&o["confirmedAt"]), "ordersConfirmed", 1);
            if legacy {
                bump(day(&o["confirmedAt"]), "revenueCents", total);
                bump(day(&o["confirmedAt"]), "netRevenueCents", total);
                bump(day(&o["confirmedAt"]), "unitsSold", units);
            }
        }
        if !o["cancelledAt"].is_null() {
            bump(day(&o["cancelledAt"]), "ordersCancelled", 1);
            if legacy {
                bump(day(&o["cancelledAt"]), "refundedCents", total);
                bump(day(&o["cancelledAt"]), "netRevenueCents", -total);
            }
        }
        if !o["paidAt"].is_null() {
            let paid = o["paidCents"].as_i64().unwrap();
            bump(day(&o["paidAt"]), "ordersPaid", 1);
            bump(day(&o["paidAt"]), "revenueCents", paid);
            bump(day(&o["paidAt"]), "netRevenueCents", paid);
            bump(day(&o["paidAt"]), "unitsSold", units);
        }
        if !o["refundedAt"].is_null() {
            let refunded = o["refundedCents"].as_i64().unwrap();
            bump(day(&o["refundedAt"]), "ordersRefunded", 1);
            bump(day(&o["refundedAt"]), "refundedCents", refunded);
            bump(day(&o["refundedAt"]), "netRevenueCents", -refunded);
        }
        if !o["paymentDeclinedAt"].is_null() {
            bump(day(&o["paymentDeclinedAt"]), "paymentsDeclined", 1);
        }
    }
    let first: NaiveDate = expected.keys().next().unwrap().parse().unwrap();
    let last: NaiveDate = expected.keys().last().unwrap().parse().unwrap();
    let (from, to) = (first - Days::new(2), last + Days::new(1));

    let r = app.get(&format!("/sales/daily?from={from}&to={to}")).await;
    assert_eq!(r.position(), env.checkpoint(View::DailySales).await);
    let range = r.ok();
    assert_eq!(
        (&range["from"], &range["to"]),
        (&json!(from.to_string()), &json!(to.to_string()))
    );
    let days = range["days"].as_array().unwrap();
    assert_eq!(days.len() as u64, (to - from).num_days() as u64 + 1);
    for (i, d) in days.iter().enumerate() {
        let date = (from + Days::new(i as u64)).to_string();
        let mut want = expected.get(&date).unwrap_or(&zero).clone();
        want["date"] = json!(date);
        assert_eq!(d, &want);
        let one = app.get(&format!("/sales/daily/{date}")).await;
        assert_eq!(one.position(), env.checkpoint(View::DailySales).await);
        assert_eq!(one.ok(), want);
    }
    assert_eq!(
        range["totals"],
        json!({"ordersPlaced": 6, "ordersConfirmed": 5, "ordersCancelled": 3, "ordersPaid": 2,
               "ordersRefunded": 1, "paymentsDeclined": 1, "revenueCents": 2000 + 500 + 700 + 200,
               "refundedCents": 500 + 200, "netRevenueCents": 2700, "unitsSold": 2 + 1 + 1 + 2})
    );
    let long_ago = app.get("/sales/daily/1999-12-31").await.ok();
    assert_eq!(long_ago["ordersPlaced"], 0);
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn inventory_lists_low_stock_first_and_pages(pool: PgPool) {
    let env = Env::new(pool).await;
    env.details("sku-a", "Mouse", 100).await;
    for (sku, units) in [("sku-a", 10), ("sku-b", 3), ("sku-c", 50), ("sku-d", 1)] {
        env.stock(sku, units).await;
    }
    env.try_adjust("sku-c", -2).await.unwrap();
    let o = env
        .new_order("alice", vec![line("sku-a", 2, 100), line("sku-d", 1, 100)])
        .await;
    env.confirm(o).await;
    // More than sku-b holds: refused, nothing reserved.
    let o = env.new_order("bob", vec![line("sku-b", 5, 100)]).await;
    assert_eq!(env.try_confirm(o).await, None);
    // A catalog item nobody received stock for: listed, with nothing available.
    env.details("sku-e", "Pad", 100).await;
    env.catch_up_all().await;
    let app = env.app().await;

    let r = app.get("/inventory/sku-a").await;
    assert_eq!(r.position(), env.checkpoint(View::Inventory).await);
    let mut a = r.ok();
    time(&a["updatedAt"]);
    a["updatedAt"] = Value::Null;
    assert_eq!(
        a,
        json!({"productId": "sku-a", "name": "Mouse", "receivedUnits": 10, "reservedUnits": 2,
               "shippedUnits": 0, "availableUnits": 8, "updatedAt": null}),
        "no _id, no appliedPosition"
    );
    let c = app.get("/inventory/sku-c").await.ok();
    assert_eq!(
        (&c["receivedUnits"], &c["availableUnits"]),
        (&json!(48), &json!(48))
    );
    let b = app.get("/inventory/sku-b").await.ok();
    assert_eq!(
        (&b["reservedUnits"], &b["availableUnits"]),
        (&json!(0), &json!(3))
    );
    let missing = app.get("/inventory/sku-zzz").await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "product_not_found")
    );

    let product_ids = |pages: Vec<Vec<Value>>| -> Vec<Vec<String>> {
        pages
            .iter()
            .map(|p| {
                p.iter()
                    .map(|x| x["productId"].as_str().unwrap().to_owned())
                    .collect()
            })
            .collect()
    };
    assert_eq!(
        product_ids(app.all_pages("/inventory?limit=2", "products").await),
        [
            vec!["sku-d", "sku-e"],
            vec!["sku-b", "sku-a"],
            vec!["sku-c"]
        ]
    );
    assert_eq!(
        product_ids(app.all_pages("/inventory?maxAvailable=3", "products").await),
        [vec!["sku-d", "sku-e", "sku-b"]]
    );
    assert_eq!(
        product_ids(
            app.all_pages("/inventory?maxAvailable=0&limit=1", "products")
                .await
        ),
        [vec!["sku-d"], vec!["sku-e"]]
    );
    assert_eq!(
        product_ids(
            app.all_pages("/inventory?maxAvailable=-1", "products")
                .await
        ),
        [Vec::<String>::new()],
        "nothing is oversold"
    );
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_dashboard_summarises_every_view(pool: PgPool) {
    let env = Env::new(pool).await;
    for sku in ["sku-a", "sku-b", "sku-c"] {
        env.stock(sku, 10).await;
    }
    let confirmed = env.new_order("u1", vec![line("sku-a", 3, 100)]).await;
    env.confirm(confirmed).await;
    let shipped = env.new_order("u2", vec![line("sku-b", 5, 200)]).await;
    env.confirm(shipped).await;
    env.pay(shipped).await;
    env.try_ship(shipped, "DHL", "T-1").await.unwrap();
    env.new_order("u3", vec![line("sku-a", 1, 100)]).await;
    let cancelled = env.new_order("u1", vec![line("sku-c", 10, 10)]).await;
    env.confirm(cancelled).await;
    env.try_cancel(cancelled, None).await.unwrap();
    let delivered = env.new_order("u4", vec![line("sku-a", 1, 100)]).await;
    env.confirm(delivered).await;
    env.pay(delivered).await;
    env.try_ship(delivered, "DHL", "T-2").await.unwrap();
    let paid = env.new_order("u5", vec![line("sku-a", 1, 100)]).await;
    env.confirm(paid).await;
    env.pay(paid).await;
    env.order(delivered, OrderCommand::Deliver).await;
    env.catch_up_all().await;
    // One view ahead of the others.
    env.stock("sku-z", 1).await;
    env.catch_up::<InventoryProjection>().await;
    let app = env.app().await;

    let r = app.get("/dashboard/summary").await;
    let mut checkpoints = BTreeMap::new();
    for &view in View::ALL {
        checkpoints.insert(view.name(), env.checkpoint(view).await);
    }
    let lowest = *checkpoints.values().min().unwrap();
    let newest = checkpoints["inventory_view"];
    assert!(lowest < newest);
    assert_eq!(r.position(), lowest);
    let s = r.ok();
    assert_eq!(
        s["ordersByStatus"],
        json!({"pending": 1, "confirmed": 1, "paid": 1, "cancelled": 1, "shipped": 1,
               "delivered": 1})
    );
    assert_eq!(
        s["topProducts"],
        json!([{"productId": "sku-a", "soldUnits": 5}, {"productId": "sku-b", "soldUnits": 5}]),
        "sold = reserved + shipped, ties by id; sku-c's reservation was released"
    );
    let today = s["today"]["date"].as_str().unwrap().to_owned();
    assert_eq!(
        s["today"],
        app.get(&format!("/sales/daily/{today}")).await.ok()
    );
    let today: NaiveDate = today.parse().unwrap();
    let week_start = today - Days::new(6);
    let week = app
        .get(&format!("/sales/daily?from={week_start}&to={today}"))
        .await
        .ok();
    assert_eq!(
        s["last7Days"],
        json!({
            "from": week_start.to_string(), "to": today.to_string(),
            "ordersConfirmed": week["totals"]["ordersConfirmed"],
            "ordersPaid": week["totals"]["ordersPaid"],
            "netRevenueCents": week["totals"]["netRevenueCents"],
        })
    );
    let p = &s["projection"];
    assert_eq!(p["position"], lowest.to_string());
    assert_eq!(p["newestPosition"], newest.to_string());
    let views = p["views"].as_array().unwrap();
    assert_eq!(views.len(), 4);
    for v in views {
        let name = v["view"].as_str().unwrap();
        let at: Position = v["position"].as_str().unwrap().parse().unwrap();
        assert_eq!(at, checkpoints[name], "{name}");
        assert_eq!(v["generation"], 1);
        assert_eq!(v["caughtUpWithNewest"], name == "inventory_view", "{name}");
        assert_eq!(
            v["lagGlobalPositions"],
            newest.global_position - at.global_position
        );
    }
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_token_already_applied_is_answered_at_once(pool: PgPool) {
    let env = Env::new(pool).await;
    let id = OrderId::new();
    let token = env
        .order(id, create(id, "alice", vec![line("sku-1", 1, 100)]))
        .await;
    env.catch_up_all().await;
    // A timeout of zero: any wait at all would be a 503.
    let mut settings = env.settings();
    settings.consistency_timeout_ms = 0;
    let app = app(settings).await;
    for uri in [
        format!("/orders/{id}"),
        "/orders".into(),
        "/users/alice/orders".into(),
        "/inventory".into(),
        "/dashboard/summary".into(),
    ] {
        let r = app.get_at(&uri, token).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {:?}", r.body);
        assert!(r.position() >= token);
    }
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_token_ahead_waits_until_the_view_applies_it(pool: PgPool) {
    let env = Env::new(pool).await;
    let id = OrderId::new();
    let token = env
        .order(id, create(id, "alice", vec![line("sku-1", 1, 100)]))
        .await;
    let mut settings = env.settings();
    settings.consistency_timeout_ms = 30_000;
    let app = app(settings).await;
    let mut waiting = app.state.views.waiting();

    let mut request = tokio::spawn({
        let app = app.clone();
        async move { app.get_at(&format!("/orders/{id}"), token).await }
    });
    // Only once the request is known to wait does the projector apply the write.
    tokio::select! {
        answered = &mut request => panic!("answered without waiting: {answered:?}"),
        waits = waiting.wait_for(|n| *n > 0) => { waits.unwrap(); }
    }
    env.catch_up::<OrdersProjection>().await;
    let r = request.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.position() >= token);
    assert_eq!(r.body["orderId"], id.to_string());
    assert_eq!(*waiting.borrow(), 0);
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_token_not_applied_in_time_is_503_per_view(pool: PgPool) {
    let env = Env::new(pool).await;
    let id = OrderId::new();
    let token = env
        .order(id, create(id, "alice", vec![line("sku-1", 1, 100)]))
        .await;
    let day = Utc::now().date_naive();
    // Only orders_view has applied the write.
    env.catch_up::<OrdersProjection>().await;
    let mut settings = env.settings();
    settings.consistency_timeout_ms = 50;
    let app = app(settings).await;

    // An order page waits only on orders_view.
    let r = app.get_at(&format!("/orders/{id}"), token).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let behind = [
        "/users/alice/orders".to_owned(),
        format!("/sales/daily/{day}"),
        "/inventory".into(),
        "/dashboard/summary".into(),
    ];
    for uri in &behind {
        let r = app.get_at(uri, token).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "not_caught_up"),
            "{uri}"
        );
        assert_eq!(r.headers["retry-after"], "1");
        assert!(r.position() < token, "{uri}");
    }
    // Without the header nothing waits: the user already shows from orders_view.
    let r = app.get("/users/alice/orders").await.ok();
    assert_eq!(
        (
            r["orderCount"].as_i64(),
            ids(r["orders"].as_array().unwrap())
        ),
        (Some(0), vec![id.to_string()])
    );

    env.catch_up_all().await;
    for uri in &behind {
        app.get_at(uri, token).await.ok();
    }
    // A token no write has reached yet.
    let ahead: Position = "7fffffffffffffff-7fffffffffffffff".parse().unwrap();
    let r = app.get_at(&format!("/orders/{id}"), ahead).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "not_caught_up")
    );
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_generation_switch_mid_traffic_fails_no_request(pool: PgPool) {
    let env = Env::new(pool).await;
    let first = env.new_order("alice", vec![line("sku-1", 1, 100)]).await;
    env.order(first, confirm()).await;
    env.catch_up_all().await;
    // A rebuild fills generation 2 of every view while generation 1 serves; one more order
    // exists only there, so the switch shows.
    env.new_order("alice", vec![line("sku-2", 2, 100)]).await;
    async fn build<P: Projection>(env: &Env) -> i64 {
        let g = env.views().reserve_generation(P::VIEW).await.unwrap();
        env.views()
            .ensure_indexes(&P::VIEW.collection(g), <P::Doc as ViewDocument>::indexes())
            .await
            .unwrap();
        env.catch_up_generation::<P>(g).await;
        g
    }
    let mut built = vec![];
    for &view in View::ALL {
        built.push((view, for_view!(view, build(&env))));
    }
    assert!(built.iter().all(|(_, g)| *g == 2));

    let server = Application::build(env.settings()).await.unwrap();
    let base = format!("http://127.0.0.1:{}", server.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));

    let (count_tx, mut count) = tokio::sync::watch::channel(0usize);
    let count_tx = Arc::new(count_tx);
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let (base, count_tx) = (base.clone(), count_tx.clone());
            // Four members of staff, each within the rate one caller may have.
            let token =
                test_support::auth::sign(&test_support::auth::claims(&format!("staff-{i}"), true));
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let get = |path: &str| {
                    let request = client
                        .get(format!("{base}{path}"))
                        .bearer_auth(&token)
                        .send();
                    async move {
                        let r = request.await.unwrap();
                        assert_eq!(r.status(), 200);
                        r.json::<Value>().await.unwrap()
                    }
                };
                let mut switched_seen = 0;
                for _ in 0..500 {
                    let dash = get("/dashboard/summary").await;
                    let user = get("/users/alice/orders").await;
                    let order = get(&format!("/orders/{first}")).await;
                    assert_eq!(order["status"], "confirmed");
                    let generations: Vec<i64> = dash["projection"]["views"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v["generation"].as_i64().unwrap())
                        .collect();
                    let count = user["orderCount"].as_i64().unwrap();
                    assert!(count == 1 || count == 2, "{user}");
                    if generations.iter().all(|g| *g == 2) {
                        // Pointers only move forward: reads after this see generation 2.
                        let user = get("/users/alice/orders").await;
                        assert_eq!(user["orderCount"], 2);
                        switched_seen += 1;
                        if switched_seen == 3 {
                            return;
                        }
                    }
                    count_tx.send_modify(|n| *n += 1);
                }
                panic!("the switch never showed");
            })
        })
        .collect();
    // Only readers count: if they all fail, the wait below ends instead of hanging.
    drop(count_tx);
    // Switch once traffic flows.
    count.wait_for(|n| *n >= 8).await.unwrap();
    for (name, g) in &built {
        env.views().activate(*name, *g).await.unwrap();
    }
    for r in readers {
        r.await.unwrap();
    }
    // The old generation may go now, as `rebuild --drop-old` does once nothing writes it.
    for (name, g) in &built {
        env.views().drop_generation(*name, g - 1).await.unwrap();
    }
    let user = reqwest::Client::new()
        .get(format!("{base}/users/alice/orders"))
        .bearer_auth(test_support::auth::staff())
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(user["orderCount"], 2);
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    env.cleanup().await;
}
