//! The read-service over HTTP, against views the real projector filled from real events
//! (a fresh PostgreSQL database and a fresh MongoDB database per test).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Days, NaiveDate, SecondsFormat, Utc};
use common::{App, Env, Mongo, all_pages, line};
use domain::order::OrderCommand;
use domain::{OrderId, Position};
use mongodb::bson::{Bson, doc};
use projector::for_view;
use projector::mongo::collection_name;
use projector::views::ALL;
use projector::views::orders::OrdersView;
use read_service::query::OrderSearch;
use read_service::{Application, Settings};
use serde_json::{Value, json};
use sqlx::PgPool;

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

const CONFIRM: OrderCommand = OrderCommand::Confirm;

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
    env.order(id, CONFIRM).await;
    let shipped = env.order(id, ship()).await;
    env.catch_up_all().await;
    let app = env.app().await;

    let r = app.get(&format!("/orders/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.headers.contains_key("x-request-id"));
    assert_eq!(r.position(), env.checkpoint("orders_view").await);
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
        (&json!(2599), &json!(3), &json!(3))
    );
    assert_eq!(
        o["items"][0],
        json!({"productId": "sku-1", "quantity": 2, "unitPriceCents": 1250, "lineTotalCents": 2500})
    );
    assert!(time(&o["createdAt"]) <= time(&o["confirmedAt"]));
    assert!(time(&o["confirmedAt"]) <= time(&o["shippedAt"]));
    assert_eq!(time(&o["updatedAt"]), time(&o["shippedAt"]));
    assert!(o["cancelledAt"].is_null() && o["deliveredAt"].is_null());

    let missing = app.get(&format!("/orders/{}", OrderId::new())).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "order_not_found")
    );
    assert!(missing.headers.contains_key("x-request-id"));
    assert_eq!(missing.position(), env.checkpoint("orders_view").await);
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
    for id in &some {
        env.order(*id, CONFIRM).await;
    }
    env.new_order("bob", vec![line("sku-1", 1, 1)]).await;
    env.catch_up_all().await;
    let app = env.app().await;
    for id in &some {
        spent += app.get(&format!("/orders/{id}")).await.ok()["totalCents"]
            .as_i64()
            .unwrap();
    }

    let first = app.get("/users/alice/orders?limit=20").await;
    let lowest = env
        .checkpoint("orders_view")
        .await
        .min(env.checkpoint("users_orders_view").await);
    assert_eq!(first.position(), lowest);
    let first = first.ok();
    assert_eq!(first["userId"], "alice");
    assert_eq!(first["orderCount"], 55);
    assert_eq!(first["totalSpentCents"], spent);

    let pages = all_pages(&app, "/users/alice/orders?limit=20", "orders").await;
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
    env.catch_up::<OrdersView>().await;
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
            env.catch_up::<OrdersView>().await;
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
    env.order(o1, CONFIRM).await;
    let o2 = env.new_order("u1", vec![line("p2", 2, 1500)]).await;
    let o3 = env
        .new_order("u2", vec![line("p1", 1, 500), line("p2", 1, 500)])
        .await;
    env.order(o3, cancel()).await;
    let o4 = env.new_order("u2", vec![line("p3", 1, 7000)]).await;
    env.order(o4, CONFIRM).await;
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

/// An `orders_view` document as the projector writes it.
fn order_doc(n: u64, user: &str, created_ms: i64) -> mongodb::bson::Document {
    let id = format!("00000000-0000-4000-8000-{n:012}");
    let at = mongodb::bson::DateTime::from_millis(created_ms);
    doc! {
        "_id": &id, "orderId": &id, "userId": user, "currency": "USD", "items": [],
        "itemCount": 0_i64, "totalCents": 100_i64, "status": "pending", "createdAt": at,
        "updatedAt": at, "confirmedAt": Bson::Null, "cancelledAt": Bson::Null,
        "cancelReason": Bson::Null, "shippedAt": Bson::Null, "carrier": Bson::Null,
        "trackingNumber": Bson::Null, "deliveredAt": Bson::Null, "version": 1_i64,
        "appliedPosition": "0000000000000001-0000000000000001",
    }
}

/// nx-27017 compares dates in filters at whole seconds only: many orders inside one second
/// (some at the same millisecond) still page exactly, and time bounds cut to the millisecond.
#[tokio::test]
async fn paging_is_exact_within_one_second() {
    let mongo = Mongo::new().await;
    let second = 1_795_000_000_000_i64;
    let mut docs = vec![];
    for n in 0..60 {
        docs.push(order_doc(n, "crowd", second + (n as i64 / 3)));
    }
    for n in 60..65 {
        docs.push(order_doc(n, "crowd", second - 1000 + n as i64));
    }
    for n in 65..70 {
        docs.push(order_doc(n, "crowd", second + 1000 + n as i64));
    }
    let g = mongo.views.active_generation("orders_view").await.unwrap();
    mongo
        .db()
        .collection::<mongodb::bson::Document>(&collection_name("orders_view", g))
        .insert_many(docs)
        .await
        .unwrap();
    let app = mongo.app().await;
    let everything = app.get("/orders?sort=createdAt&limit=100").await.ok()["orders"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(everything.len(), 70);
    let mut oldest_first = everything.clone();
    oldest_first.sort_by_key(|o| sort_key("createdAt", o));
    assert_eq!(ids(&everything), ids(&oldest_first));

    let from = DateTime::from_timestamp_millis(second + 5).unwrap();
    let to = DateTime::from_timestamp_millis(second + 15).unwrap();
    let bounded = |o: &&Value| {
        let t = time(&o["createdAt"]);
        t >= from && t < to
    };
    let within: Vec<Value> = oldest_first.iter().filter(bounded).cloned().collect();
    assert_eq!(within.len(), 30);
    let range = format!(
        "createdFrom={}&createdTo={}",
        from.to_rfc3339_opts(SecondsFormat::Millis, true),
        to.to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    let mut newest_first = oldest_first.clone();
    newest_first.reverse();
    let newest_within: Vec<Value> = newest_first.iter().filter(bounded).cloned().collect();
    for (first, expected, limit) in [
        (
            "/orders?sort=createdAt&limit=7".to_owned(),
            &oldest_first,
            7,
        ),
        (
            "/orders?sort=-createdAt&limit=7".to_owned(),
            &newest_first,
            7,
        ),
        ("/users/crowd/orders?limit=7".to_owned(), &newest_first, 7),
        (
            format!("/orders?sort=createdAt&limit=4&{range}"),
            &within,
            4,
        ),
        (format!("/orders?limit=4&{range}"), &newest_within, 4),
    ] {
        let pages = all_pages(&app, &first, "orders").await;
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        let (last, full) = sizes.split_last().unwrap();
        assert!(
            full.iter().all(|n| *n == limit) && *last <= limit,
            "{first}: {sizes:?}"
        );
        assert_eq!(ids(&pages.concat()), ids(expected), "{first}");
    }
    mongo.drop().await;
}

#[tokio::test]
async fn invalid_criteria_are_422_naming_the_parameter() {
    let mongo = Mongo::new().await;
    let app = mongo.app().await;
    let long = "x".repeat(65);
    let too_long = format!("/orders?userId={long}");
    let cases: Vec<(&str, &str)> = vec![
        ("/orders?sort=userId", "sort"),
        ("/orders?sort=createdat", "sort"),
        ("/orders?limit=0", "limit"),
        ("/orders?limit=101", "limit"),
        ("/orders?limit=ten", "limit"),
        ("/orders?limit=5&limit=6", "limit"),
        ("/orders?status=open", "status"),
        ("/orders?userId=", "userId"),
        (&too_long, "userId"),
        ("/orders?productId=a%20b", "productId"),
        ("/orders?minTotalCents=-5", "minTotalCents"),
        ("/orders?maxTotalCents=1e3", "maxTotalCents"),
        ("/orders?minTotalCents=10&maxTotalCents=9", "maxTotalCents"),
        ("/orders?createdFrom=2026-11-26", "createdFrom"),
        ("/orders?createdTo=tomorrow", "createdTo"),
        (
            "/orders?createdFrom=2026-11-27T00:00:00Z&createdTo=2026-11-26T00:00:00Z",
            "createdTo",
        ),
        ("/orders?page=2", "page"),
        ("/users/alice/orders?limit=1000", "limit"),
        ("/users/alice/orders?status=pending", "status"),
        ("/sales/daily?from=2026-11-01", "to"),
        ("/sales/daily?to=2026-11-01", "from"),
        ("/sales/daily?from=2026-11-31&to=2026-12-01", "from"),
        ("/sales/daily?from=20261101&to=2026-12-01", "from"),
        ("/sales/daily?from=2026-12-02&to=2026-12-01", "from"),
        ("/sales/daily?from=2025-01-01&to=2026-01-02", "to"),
        ("/sales/daily/2026-11-26?x=1", "x"),
        ("/inventory?maxAvailable=few", "maxAvailable"),
        ("/inventory?limit=0", "limit"),
        ("/inventory?sort=availableUnits", "sort"),
        ("/inventory/sku-1?fields=all", "fields"),
        ("/dashboard/summary?verbose=1", "verbose"),
    ];
    for (uri, field) in cases {
        let r = app.get(uri).await;
        assert_eq!(
            (r.status, r.code(), r.field()),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", field),
            "{uri}: {:?}",
            r.body
        );
        assert!(r.headers.contains_key("x-request-id"));
    }

    for (uri, code, field) in [
        ("/orders?cursor=zz", "invalid_cursor", "cursor"),
        ("/orders?cursor=", "invalid_cursor", "cursor"),
        ("/users/alice/orders?cursor=abc", "invalid_cursor", "cursor"),
        ("/inventory?cursor=31", "invalid_cursor", "cursor"),
        ("/sales/daily/2026-02-30", "invalid_path", "date"),
        ("/inventory/bad$id", "invalid_path", ""),
        ("/orders/123", "invalid_path", "orderId"),
    ] {
        let r = app.get(uri).await;
        assert_eq!(
            (r.status, r.code(), r.field()),
            (StatusCode::BAD_REQUEST, code, field),
            "{uri}: {:?}",
            r.body
        );
    }

    // A malformed consistency token is refused before anything is read, on every endpoint.
    for uri in [
        format!("/orders/{}", OrderId::new()),
        "/orders".into(),
        "/users/alice/orders".into(),
        "/sales/daily?from=2026-11-01&to=2026-11-02".into(),
        "/sales/daily/2026-11-01".into(),
        "/inventory".into(),
        "/inventory/sku-1".into(),
        "/dashboard/summary".into(),
    ] {
        for token in [
            "",
            "42",
            "0000000000000001",
            "000000000000000g-0000000000000001",
        ] {
            let r = app.get_with(&uri, &[("x-consistency-token", token)]).await;
            assert_eq!(
                (r.status, r.code(), r.field()),
                (
                    StatusCode::BAD_REQUEST,
                    "invalid_consistency_token",
                    "X-Consistency-Token"
                ),
                "{uri} {token:?}"
            );
        }
    }
    mongo.drop().await;
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

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Whether the OpenAPI document lists `status` among the answers of `GET template`.
async fn documented(app: &App, template: &str, status: StatusCode) -> bool {
    let doc = app.get("/openapi.json").await.ok();
    doc["paths"][template]["get"]["responses"][status.as_str()].is_object()
}

/// Two orders of `user` in the active `orders_view`, a second apart.
async fn two_orders(mongo: &Mongo, user: &str) {
    let g = mongo.views.active_generation("orders_view").await.unwrap();
    mongo
        .db()
        .collection::<mongodb::bson::Document>(&collection_name("orders_view", g))
        .insert_many([
            order_doc(1, user, 1_795_000_000_000),
            order_doc(2, user, 1_795_000_001_000),
        ])
        .await
        .unwrap();
}

/// Cursors the service did not issue: keys at the ends of i64 (they overflowed the paging
/// arithmetic: a panic and a dropped connection in debug builds, a wrap in release), times
/// outside years 1..=9999, and a plausible cursor written by hand. Each is a 400 in the API's
/// body, documented; a cursor the service issued still pages, and a tampered copy does not.
#[tokio::test]
async fn a_cursor_the_service_did_not_issue_is_400() {
    let mongo = Mongo::new().await;
    two_orders(&mongo, "alice").await;
    mongo
        .put(
            "inventory_view",
            doc! {"_id": "sku-1", "productId": "sku-1", "receivedUnits": 5_i64, "soldUnits": 0_i64,
            "availableUnits": 5_i64, "updatedAt": Bson::Null, "appliedPosition": "0000000000000001-0000000000000001"},
        )
        .await;
    let app = mongo.app().await;
    let id = "00000000-0000-4000-8000-000000000001";
    // 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z in milliseconds.
    let (year_0, year_10000) = (-62_167_219_200_000_i64, 253_402_300_800_000_i64);
    let keys = [
        i64::MAX,
        i64::MIN,
        i64::MIN + 1,
        year_0,
        year_10000 - 1,
        year_10000,
        1_795_000_000_000,
    ];
    let mut cases = vec![];
    for sort in ["createdAt", "-createdAt", "totalCents", "-totalCents"] {
        for key in keys {
            let c = hex(&format!("1|orders:{sort}|{key}|{id}"));
            cases.push(("/orders", format!("/orders?sort={sort}&cursor={c}")));
        }
    }
    for key in keys {
        let c = hex(&format!("1|user:alice|{key}|{id}"));
        cases.push((
            "/users/{userId}/orders",
            format!("/users/alice/orders?cursor={c}"),
        ));
        let c = hex(&format!("1|inventory:availableUnits|{key}|sku-0"));
        cases.push(("/inventory", format!("/inventory?cursor={c}")));
    }
    for (template, uri) in cases {
        let r = app.get(&uri).await;
        assert_eq!(
            (r.status, r.code(), r.field()),
            (StatusCode::BAD_REQUEST, "invalid_cursor", "cursor"),
            "{uri}: {:?}",
            r.body
        );
        assert!(r.headers.contains_key("x-request-id"), "{uri}");
        assert!(documented(&app, template, r.status).await, "{template}");
    }

    for first in ["/orders?limit=1", "/users/alice/orders?limit=1"] {
        let page = app.get(first).await.ok();
        let issued = page["nextCursor"].as_str().unwrap().to_owned();
        let next = app.get(&format!("{first}&cursor={issued}")).await.ok();
        assert_eq!(next["orders"].as_array().unwrap().len(), 1, "{first}");
        // Any single character changed (a hex digit for another) is refused.
        for at in 0..issued.len() {
            let mut forged = issued.clone().into_bytes();
            forged[at] = if forged[at] == b'0' { b'1' } else { b'0' };
            let forged = String::from_utf8(forged).unwrap();
            let r = app.get(&format!("{first}&cursor={forged}")).await;
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::BAD_REQUEST, "invalid_cursor"),
                "{first} {forged}"
            );
        }
    }
    mongo.drop().await;
}

/// Cursors are signed with `READ_CURSOR_SECRET`: instances that share it accept each other's
/// cursors (and would after a restart); without it each process signs with a random key of
/// its own, and another process's cursor is a 400 telling the client to start again.
#[tokio::test]
async fn cursors_work_across_instances_only_with_a_shared_secret() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }
    use clap::Parser;
    let short = Cli::try_parse_from(["read-service", "--cursor-secret", "too short"]);
    assert!(
        short.is_err(),
        "a secret under 32 bytes is refused at start-up"
    );
    let secret = "a-secret-shared-by-every-instance";
    let parsed = Cli::try_parse_from(["read-service", "--cursor-secret", secret]).unwrap();
    assert_eq!(parsed.settings.cursor_secret.as_deref(), Some(secret));
    assert!(!format!("{:?}", parsed.settings).contains(secret));

    let mongo = Mongo::new().await;
    two_orders(&mongo, "alice").await;
    let with = |secret: Option<&str>| Settings {
        cursor_secret: secret.map(str::to_owned),
        ..mongo.settings()
    };
    let one = App::new(with(Some(secret))).await;
    let two = App::new(with(Some(secret))).await;
    let other = App::new(with(Some("another-secret-of-at-least-32-bytes"))).await;
    let (own_a, own_b) = (mongo.app().await, mongo.app().await);
    let next = |app: &App, uri: String| {
        let app = app.clone();
        async move { app.get(&uri).await }
    };
    for first in ["/orders?limit=1", "/users/alice/orders?limit=1"] {
        for (issuer, accepts, refuses) in [
            (&one, vec![&one, &two], vec![&other, &own_a]),
            (&own_a, vec![&own_a], vec![&own_b, &one]),
        ] {
            let c = next(issuer, first.to_owned()).await.ok()["nextCursor"]
                .as_str()
                .unwrap()
                .to_owned();
            let uri = format!("{first}&cursor={c}");
            for app in accepts {
                let page = next(app, uri.clone()).await.ok();
                assert_eq!(page["orders"].as_array().unwrap().len(), 1, "{uri}");
            }
            for app in refuses {
                let r = next(app, uri.clone()).await;
                assert_eq!(
                    (r.status, r.code(), r.field()),
                    (StatusCode::BAD_REQUEST, "invalid_cursor", "cursor"),
                    "{uri}"
                );
                let message = r.body["error"]["message"].as_str().unwrap();
                assert!(message.contains("start paging again"), "{message}");
            }
        }
    }
    mongo.drop().await;
}

/// Times and days are years 1 to 9999 (UTC) on every endpoint: outside, a 422 naming the
/// parameter (never a 500 from MongoDB nor an overflow); at the very edges, an answer.
#[tokio::test]
async fn dates_outside_years_1_to_9999_are_422() {
    let mongo = Mongo::new().await;
    two_orders(&mongo, "alice").await;
    let app = mongo.app().await;
    for (template, uri, field) in [
        (
            "/orders",
            "/orders?createdFrom=0000-01-01T00:00:00Z",
            "createdFrom",
        ),
        (
            "/orders",
            "/orders?createdTo=0000-12-31T23:59:59Z",
            "createdTo",
        ),
        // UTC, these are 0000-12-31T23:00:00Z and 10000-01-01T00:59:59Z.
        (
            "/orders",
            "/orders?createdFrom=0001-01-01T00:00:00%2B01:00",
            "createdFrom",
        ),
        (
            "/orders",
            "/orders?createdTo=9999-12-31T23:59:59-01:00",
            "createdTo",
        ),
        (
            "/orders",
            "/orders?sort=createdAt&createdFrom=0000-06-01T00:00:00Z&createdTo=2026-01-01T00:00:00Z",
            "createdFrom",
        ),
        (
            "/sales/daily",
            "/sales/daily?from=0000-01-01&to=0000-01-02",
            "from",
        ),
        (
            "/sales/daily",
            "/sales/daily?from=0000-12-31&to=0001-01-01",
            "from",
        ),
        ("/sales/daily/{date}", "/sales/daily/0000-01-01", "date"),
        ("/sales/daily/{date}", "/sales/daily/0000-12-31", "date"),
    ] {
        let r = app.get(uri).await;
        assert_eq!(
            (r.status, r.code(), r.field()),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", field),
            "{uri}: {:?}",
            r.body
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("9999"),
            "{uri}: {:?}",
            r.body
        );
        assert!(documented(&app, template, r.status).await, "{template}");
    }

    // The edges themselves answer, including the whole-second widening past the last
    // millisecond of 9999 and a range that ends on 9999-12-31.
    let all = |r: common::Reply| r.ok()["orders"].as_array().unwrap().len();
    for sort in ["createdAt", "-createdAt"] {
        let everything = format!(
            "/orders?sort={sort}&createdFrom=0001-01-01T00:00:00Z&createdTo=9999-12-31T23:59:59.999Z"
        );
        assert_eq!(all(app.get(&everything).await), 2, "{everything}");
        let later = format!("/orders?sort={sort}&createdFrom=9999-12-31T23:59:59.999Z");
        assert_eq!(all(app.get(&later).await), 0, "{later}");
        let before = format!("/orders?sort={sort}&createdTo=0001-01-01T00:00:00.001Z");
        assert_eq!(all(app.get(&before).await), 0, "{before}");
    }
    let year = app
        .get("/sales/daily?from=9999-01-01&to=9999-12-31")
        .await
        .ok();
    assert_eq!(year["days"].as_array().unwrap().len(), 365);
    assert_eq!(year["days"][364]["date"], "9999-12-31");
    let first = app
        .get("/sales/daily?from=0001-01-01&to=0001-01-01")
        .await
        .ok();
    assert_eq!(first["days"][0]["date"], "0001-01-01");
    for d in ["0001-01-01", "9999-12-31"] {
        assert_eq!(app.get(&format!("/sales/daily/{d}")).await.ok()["date"], d);
    }
    mongo.drop().await;
}

/// Every query string is checked by the endpoint's own list: an unknown, repeated or
/// undecodable parameter is a 422 in the API's body, on every endpoint that reads the views.
#[tokio::test]
async fn every_endpoint_answers_bad_query_strings_with_the_error_body() {
    let mongo = Mongo::new().await;
    let app = mongo.app().await;
    let order = OrderId::new();
    for base in [
        "/orders?".to_owned(),
        format!("/orders/{order}?"),
        "/users/alice/orders?".into(),
        "/sales/daily?from=2026-11-01&to=2026-11-02&".into(),
        "/sales/daily/2026-11-01?".into(),
        "/inventory?".into(),
        "/inventory/sku-1?".into(),
        "/dashboard/summary?".into(),
    ] {
        for (query, field) in [
            ("x=1", "x"),
            ("%ff=1", "\u{fffd}"),
            ("userId%5B%24ne%5D=x", "userId[$ne]"),
            ("%00=1", "\0"),
        ] {
            let uri = format!("{base}{query}");
            let r = app.get(&uri).await;
            assert_eq!(
                (r.status, r.code(), r.field()),
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", field),
                "{uri}: {:?}",
                r.body
            );
        }
    }
    for uri in [
        "/orders?limit=%ff",
        "/orders?limit=1&limit=1",
        "/inventory?limit=1e1",
    ] {
        let r = app.get(uri).await;
        assert_eq!(
            (r.status, r.code(), r.field()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "limit"
            ),
            "{uri}: {:?}",
            r.body
        );
    }
    mongo.drop().await;
}

/// What a client generator needs: typed path parameters with the patterns the code checks,
/// and the range rules the code enforces, stated where OpenAPI can state them.
#[tokio::test]
async fn the_openapi_document_states_the_rules_the_code_enforces() {
    let mongo = Mongo::new().await;
    let app = mongo.app().await;
    let doc = app.get("/openapi.json").await.ok();
    let param = |path: &str, name: &str| -> Value {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} has no parameter {name}"))
            .clone()
    };
    let key = "^[A-Za-z0-9_.:-]{1,64}$";
    let order_id = param("/orders/{orderId}", "orderId");
    assert_eq!(
        (
            &order_id["schema"]["type"],
            &order_id["schema"]["format"],
            &order_id["schema"]["pattern"]
        ),
        (
            &json!("string"),
            &json!("uuid"),
            &json!(read_service::query::ORDER_ID_PATTERN)
        ),
        "{order_id}"
    );
    assert_eq!(
        doc["components"]["schemas"]["Order"]["properties"]["orderId"]["format"],
        "uuid"
    );
    // The code takes exactly what the pattern says: the other spellings the uuid crate
    // would parse are 400, a hyphenated UUID in capitals is looked up (404 here).
    let id = OrderId::new().to_string();
    for other in [
        id.replace('-', ""),
        format!("urn:uuid:{id}"),
        format!("%7B{id}%7D"),
        format!("{id}0"),
    ] {
        let r = app.get(&format!("/orders/{other}")).await;
        assert_eq!(
            (r.status, r.code(), r.field()),
            (StatusCode::BAD_REQUEST, "invalid_path", "orderId"),
            "{other}: {:?}",
            r.body
        );
    }
    let r = app.get(&format!("/orders/{}", id.to_uppercase())).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "order_not_found")
    );
    assert_eq!(
        param("/inventory/{productId}", "productId")["schema"]["pattern"],
        key
    );
    assert_eq!(
        param("/users/{userId}/orders", "userId")["schema"]["pattern"],
        key
    );
    assert_eq!(param("/orders", "userId")["schema"]["pattern"], key);
    assert_eq!(param("/orders", "productId")["schema"]["pattern"], key);
    let day = param("/sales/daily/{date}", "date");
    assert_eq!(day["schema"]["format"], "date", "{day}");
    assert_eq!(
        day["schema"]["pattern"], "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
        "{day}"
    );
    for name in ["from", "to"] {
        let p = param("/sales/daily", name);
        assert_eq!(p["required"], true, "{p}");
        assert_eq!(p["schema"]["format"], "date", "{p}");
        assert_eq!(
            p["schema"]["pattern"], "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
            "{p}"
        );
        assert!(p["description"].as_str().unwrap().contains("366"), "{p}");
    }
    for name in ["createdFrom", "createdTo"] {
        let p = param("/orders", name);
        assert_eq!(p["schema"]["format"], "date-time", "{p}");
        assert!(p["description"].as_str().unwrap().contains("9999"), "{p}");
    }
    let max = param("/orders", "maxTotalCents");
    assert!(
        max["description"]
            .as_str()
            .unwrap()
            .contains("minTotalCents"),
        "{max}"
    );
    for (path, name) in [("/orders", "minTotalCents"), ("/orders", "maxTotalCents")] {
        let p = param(path, name);
        assert_eq!(p["schema"]["minimum"], 0, "{p}");
        assert_eq!(p["schema"]["format"], "int64", "{p}");
    }
    for path in ["/orders", "/users/{userId}/orders", "/inventory"] {
        let limit = param(path, "limit");
        assert_eq!(
            (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
            (&json!(1), &json!(100)),
            "{path}"
        );
        let cursor = param(path, "cursor");
        assert!(
            cursor["description"]
                .as_str()
                .unwrap()
                .contains("nextCursor"),
            "{path}"
        );
    }
    mongo.drop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn daily_sales_fill_days_without_sales_with_zeros(pool: PgPool) {
    let env = Env::new(pool).await;
    let a = env.new_order("alice", vec![line("sku-1", 2, 1000)]).await;
    env.order(a, CONFIRM).await;
    let b = env.new_order("bob", vec![line("sku-2", 1, 500)]).await;
    env.order(b, CONFIRM).await;
    env.order(b, cancel()).await;
    let c = env.new_order("carol", vec![line("sku-1", 1, 300)]).await;
    env.catch_up_all().await;
    let app = env.app().await;

    // What each day should show, from the orders' own event times.
    let mut expected: BTreeMap<String, Value> = BTreeMap::new();
    let mut bump = |day: String, field: &str, by: i64| {
        let d = expected.entry(day).or_insert_with(|| {
            json!({"ordersPlaced": 0, "ordersConfirmed": 0, "ordersCancelled": 0, "revenueCents": 0,
                   "refundedCents": 0, "netRevenueCents": 0, "unitsSold": 0})
        });
        d[field] = json!(d[field].as_i64().unwrap() + by);
    };
    for id in [a, b, c] {
        let o = app.get(&format!("/orders/{id}")).await.ok();
        let total = o["totalCents"].as_i64().unwrap();
        bump(day(&o["createdAt"]), "ordersPlaced", 1);
        if !o["confirmedAt"].is_null() {
            bump(day(&o["confirmedAt"]), "ordersConfirmed", 1);
            bump(day(&o["confirmedAt"]), "revenueCents", total);
            bump(day(&o["confirmedAt"]), "netRevenueCents", total);
            bump(
                day(&o["confirmedAt"]),
                "unitsSold",
                o["itemCount"].as_i64().unwrap(),
            );
        }
        if !o["cancelledAt"].is_null() {
            bump(day(&o["cancelledAt"]), "ordersCancelled", 1);
            bump(day(&o["cancelledAt"]), "refundedCents", total);
            bump(day(&o["cancelledAt"]), "netRevenueCents", -total);
        }
    }
    let first: NaiveDate = expected.keys().next().unwrap().parse().unwrap();
    let last: NaiveDate = expected.keys().last().unwrap().parse().unwrap();
    let (from, to) = (first - Days::new(2), last + Days::new(1));

    let r = app.get(&format!("/sales/daily?from={from}&to={to}")).await;
    assert_eq!(r.position(), env.checkpoint("daily_sales").await);
    let range = r.ok();
    assert_eq!(
        (&range["from"], &range["to"]),
        (&json!(from.to_string()), &json!(to.to_string()))
    );
    let days = range["days"].as_array().unwrap();
    assert_eq!(days.len() as u64, (to - from).num_days() as u64 + 1);
    let zero = json!({"ordersPlaced": 0, "ordersConfirmed": 0, "ordersCancelled": 0, "revenueCents": 0,
                      "refundedCents": 0, "netRevenueCents": 0, "unitsSold": 0});
    for (i, d) in days.iter().enumerate() {
        let date = (from + Days::new(i as u64)).to_string();
        let mut want = expected.get(&date).unwrap_or(&zero).clone();
        want["date"] = json!(date);
        assert_eq!(d, &want);
        let one = app.get(&format!("/sales/daily/{date}")).await;
        assert_eq!(one.position(), env.checkpoint("daily_sales").await);
        assert_eq!(one.ok(), want);
    }
    assert_eq!(
        range["totals"],
        json!({"ordersPlaced": 3, "ordersConfirmed": 2, "ordersCancelled": 1, "revenueCents": 2500,
               "refundedCents": 500, "netRevenueCents": 2000, "unitsSold": 3})
    );
    let long_ago = app.get("/sales/daily/1999-12-31").await.ok();
    assert_eq!(long_ago["ordersPlaced"], 0);
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn inventory_lists_low_stock_first_and_pages(pool: PgPool) {
    let env = Env::new(pool).await;
    for (sku, units) in [("sku-a", 10), ("sku-b", 3), ("sku-c", 50), ("sku-d", 1)] {
        env.stock(sku, units).await;
    }
    let o = env
        .new_order("alice", vec![line("sku-a", 2, 100), line("sku-d", 2, 100)])
        .await;
    env.order(o, CONFIRM).await;
    // Sold without any stock received: oversold shows as negative.
    let o = env.new_order("bob", vec![line("sku-e", 1, 100)]).await;
    env.order(o, CONFIRM).await;
    env.catch_up_all().await;
    let app = env.app().await;

    let r = app.get("/inventory/sku-a").await;
    assert_eq!(r.position(), env.checkpoint("inventory_view").await);
    let a = r.ok();
    assert_eq!(
        (
            &a["productId"],
            &a["receivedUnits"],
            &a["soldUnits"],
            &a["availableUnits"]
        ),
        (&json!("sku-a"), &json!(10), &json!(2), &json!(8))
    );
    time(&a["updatedAt"]);
    assert!(a.get("_id").is_none() && a.get("appliedPosition").is_none());
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
        product_ids(all_pages(&app, "/inventory?limit=2", "products").await),
        [
            vec!["sku-d", "sku-e"],
            vec!["sku-b", "sku-a"],
            vec!["sku-c"]
        ]
    );
    assert_eq!(
        product_ids(all_pages(&app, "/inventory?maxAvailable=3", "products").await),
        [vec!["sku-d", "sku-e", "sku-b"]]
    );
    assert_eq!(
        product_ids(all_pages(&app, "/inventory?maxAvailable=-1&limit=1", "products").await),
        [vec!["sku-d"], vec!["sku-e"]]
    );
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_dashboard_summarises_every_view(pool: PgPool) {
    let env = Env::new(pool).await;
    let confirmed = env.new_order("u1", vec![line("sku-a", 3, 100)]).await;
    env.order(confirmed, CONFIRM).await;
    let shipped = env.new_order("u2", vec![line("sku-b", 5, 200)]).await;
    env.order(shipped, CONFIRM).await;
    env.order(shipped, ship()).await;
    env.new_order("u3", vec![line("sku-a", 1, 100)]).await;
    let cancelled = env.new_order("u1", vec![line("sku-c", 10, 10)]).await;
    env.order(cancelled, CONFIRM).await;
    env.order(cancelled, cancel()).await;
    let delivered = env.new_order("u4", vec![line("sku-a", 1, 100)]).await;
    env.order(delivered, CONFIRM).await;
    env.order(delivered, ship()).await;
    env.order(delivered, OrderCommand::Deliver).await;
    env.catch_up_all().await;
    // One view ahead of the others.
    env.stock("sku-z", 1).await;
    env.catch_up::<projector::views::inventory::InventoryView>()
        .await;
    let app = env.app().await;

    let r = app.get("/dashboard/summary").await;
    let mut checkpoints = BTreeMap::new();
    for view in ALL {
        checkpoints.insert(view, env.checkpoint(view).await);
    }
    let lowest = *checkpoints.values().min().unwrap();
    let newest = checkpoints["inventory_view"];
    assert!(lowest < newest);
    assert_eq!(r.position(), lowest);
    let s = r.ok();
    assert_eq!(
        s["ordersByStatus"],
        json!({"pending": 1, "confirmed": 1, "cancelled": 1, "shipped": 1, "delivered": 1})
    );
    assert_eq!(
        s["topProducts"],
        json!([{"productId": "sku-b", "soldUnits": 5}, {"productId": "sku-a", "soldUnits": 4}]),
        "sku-c's sale was cancelled"
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
        .order(id, common::create(id, "alice", vec![line("sku-1", 1, 100)]))
        .await;
    env.catch_up_all().await;
    // A timeout of zero: any wait at all would be a 503.
    let mut settings = env.mongo.settings();
    settings.consistency_timeout_ms = 0;
    let app = App::new(settings).await;
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
        .order(id, common::create(id, "alice", vec![line("sku-1", 1, 100)]))
        .await;
    let mut settings = env.mongo.settings();
    settings.consistency_timeout_ms = 30_000;
    let app = App::new(settings).await;
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
    env.catch_up::<OrdersView>().await;
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
        .order(id, common::create(id, "alice", vec![line("sku-1", 1, 100)]))
        .await;
    let day = Utc::now().date_naive();
    // Only orders_view has applied the write.
    env.catch_up::<OrdersView>().await;
    let mut settings = env.mongo.settings();
    settings.consistency_timeout_ms = 50;
    let app = App::new(settings).await;

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

/// A TCP proxy that can drop every connection and refuse new ones.
struct Switch {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Switch {
    async fn start(target: (String, u16)) -> Switch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees a reset
                }
                let target = target.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(handle);
            }
        });
        Switch { port, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Host and port of MONGODB_URI (a single `mongodb://host:port` server).
fn mongodb_host_port() -> (String, u16) {
    let uri = common::mongodb_uri();
    let rest = uri.trim_start_matches("mongodb://");
    let authority = rest.split(['/', '?']).next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "27017"));
    (host.to_owned(), port.parse().unwrap())
}

#[tokio::test]
async fn mongodb_going_away_is_503_and_the_service_recovers() {
    let mongo = Mongo::new().await;
    mongo
        .put(
            "inventory_view",
            doc! {"_id": "sku-1", "productId": "sku-1", "receivedUnits": 5_i64, "soldUnits": 0_i64,
            "availableUnits": 5_i64, "updatedAt": Bson::Null, "appliedPosition": "x"},
        )
        .await;
    let switch = Switch::start(mongodb_host_port()).await;
    let mut settings = Settings::new(format!("mongodb://127.0.0.1:{}", switch.port), &mongo.name);
    settings.mongodb_timeout_ms = 1000;
    let app = App::new(settings).await;
    assert_eq!(app.get("/inventory/sku-1").await.ok()["availableUnits"], 5);

    switch.cut();
    let r = app.get("/inventory/sku-1").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{:?}",
        r.body
    );
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(
        app.get("/health/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(app.get("/health/live").await.status, StatusCode::OK);

    switch.restore();
    // The driver finds the server again by itself; a client retries as Retry-After says
    // (each try is bounded by the server selection timeout).
    let mut tries = 0;
    let recovered = loop {
        tries += 1;
        let r = app.get("/inventory/sku-1").await;
        if r.status == StatusCode::OK || tries == 10 {
            break r;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    };
    assert_eq!(recovered.ok()["availableUnits"], 5);
    assert_eq!(app.get("/health/ready").await.status, StatusCode::OK);

    // A MongoDB that is not there at all: a closed port fails fast too.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut settings = Settings::new(format!("mongodb://127.0.0.1:{closed}"), "shop");
    settings.mongodb_timeout_ms = 300;
    let app = App::new(settings).await;
    let r = app.get("/orders").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(r.headers.contains_key("retry-after"));
    mongo.drop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_generation_switch_mid_traffic_fails_no_request(pool: PgPool) {
    let env = Env::new(pool).await;
    let first = env.new_order("alice", vec![line("sku-1", 1, 100)]).await;
    env.order(first, CONFIRM).await;
    env.catch_up_all().await;
    // A rebuild fills generation 2 of every view while generation 1 serves; one more order
    // exists only there, so the switch shows.
    env.new_order("alice", vec![line("sku-2", 2, 100)]).await;
    async fn build<V: projector::views::View>(env: &Env) -> i64 {
        let g = env.views().reserve_generation(V::NAME).await.unwrap();
        env.views()
            .ensure_indexes(&collection_name(V::NAME, g), V::indexes())
            .await
            .unwrap();
        env.catch_up_generation::<V>(g).await;
        g
    }
    let mut built = vec![];
    for name in ALL {
        built.push((name, for_view!(name, build(&env)).unwrap()));
    }
    assert!(built.iter().all(|(_, g)| *g == 2));

    let server = Application::build(env.mongo.settings()).await.unwrap();
    let base = format!("http://127.0.0.1:{}", server.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));

    let (count_tx, mut count) = tokio::sync::watch::channel(0usize);
    let count_tx = Arc::new(count_tx);
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (base, count_tx) = (base.clone(), count_tx.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let get = |path: &str| {
                    let request = client.get(format!("{base}{path}")).send();
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
        env.views().activate(name, *g).await.unwrap();
    }
    for r in readers {
        r.await.unwrap();
    }
    // The old generation may go now, as `rebuild --drop-old` does once nothing writes it.
    for (name, g) in &built {
        env.views().drop_generation(name, g - 1).await.unwrap();
    }
    let user = reqwest::get(format!("{base}/users/alice/orders"))
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

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint_and_error() {
    let mongo = Mongo::new().await;
    let app = mongo.app().await;
    let doc = app.get("/openapi.json").await.ok();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        paths,
        BTreeSet::from([
            "/orders",
            "/orders/{orderId}",
            "/users/{userId}/orders",
            "/sales/daily",
            "/sales/daily/{date}",
            "/inventory",
            "/inventory/{productId}",
            "/dashboard/summary",
            "/health/live",
            "/health/ready",
            "/metrics",
            "/openapi.json",
        ])
    );
    let with_404 = [
        "/orders/{orderId}",
        "/users/{userId}/orders",
        "/inventory/{productId}",
    ];
    for path in paths
        .iter()
        .filter(|p| !p.starts_with("/health") && !["/metrics", "/openapi.json"].contains(p))
    {
        let op = &doc["paths"][path]["get"];
        let mut codes = vec!["200", "400", "422", "503"];
        if with_404.contains(path) {
            codes.push("404");
        }
        for code in codes {
            assert!(op["responses"][code].is_object(), "{path} {code}");
            if code != "200" {
                assert_eq!(
                    op["responses"][code]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{path} {code}"
                );
            }
        }
        assert!(
            op["responses"]["200"]["headers"]["X-Projection-Position"].is_object(),
            "{path}"
        );
        assert!(
            op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "X-Consistency-Token" && p["in"] == "header"),
            "{path}"
        );
    }
    let search: BTreeSet<&str> = doc["paths"]["/orders"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(search, OrderSearch::PARAMS.into_iter().collect());
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "Order",
        "OrderPage",
        "UserOrders",
        "SalesRange",
        "DaySales",
        "InventoryItem",
        "InventoryPage",
        "DashboardSummary",
        "ErrorBody",
        "OrderStatus",
        "OrderSort",
    ] {
        assert!(schemas.contains_key(name), "{name}");
    }
    // Every reference resolves.
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
    assert_eq!(
        schemas["OrderSort"]["enum"],
        json!(["createdAt", "-createdAt", "totalCents", "-totalCents"])
    );
    mongo.drop().await;
}

#[tokio::test]
async fn health_metrics_and_unknown_routes() {
    let mongo = Mongo::new().await;
    let app = mongo.app().await;
    assert_eq!(app.get("/health/live").await.ok()["status"], "ok");
    assert_eq!(app.get("/health/ready").await.ok()["status"], "ready");
    app.get("/orders").await.ok();
    let metrics = app.get("/metrics").await.ok();
    assert!(
        metrics.as_str().unwrap().contains("http_requests_total"),
        "{metrics}"
    );
    let r = app.get("/nowhere").await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
    assert!(r.headers.contains_key("x-request-id"));
    let r = app.request(Method::POST, "/orders", &[]).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    // A view with no documents yet answers empty, at position zero.
    let r = app.get("/orders").await;
    assert_eq!(r.position(), Position::ZERO);
    assert_eq!(r.ok(), json!({"orders": [], "nextCursor": null}));
    mongo.drop().await;
}

/// A query parameter a route does not take is refused with the JSON error body naming it,
/// on every view route, including those that take none (as on the write-service); the ops
/// routes, which probes and scrapers call, ignore it.
#[tokio::test]
async fn an_unknown_query_parameter_is_422_naming_it_on_every_view_route() {
    let mongo = Mongo::new().await;
    let app = mongo.app().await;
    let doc = app.get("/openapi.json").await.ok();
    for path in doc["paths"].as_object().unwrap().keys() {
        let uri = path
            .replace("{orderId}", &OrderId::new().to_string())
            .replace("{userId}", "alice")
            .replace("{date}", "2026-01-31")
            .replace("{productId}", "sku-1");
        let r = app.get(&format!("{uri}?bogus=1")).await;
        if path.starts_with("/health") || path == "/metrics" || path == "/openapi.json" {
            assert_ne!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
            continue;
        }
        assert_eq!(
            (r.status, r.field()),
            (StatusCode::UNPROCESSABLE_ENTITY, "bogus"),
            "{path}: {:?}",
            r.body
        );
        assert_eq!(r.headers["content-type"], "application/json", "{path}");
    }
    mongo.drop().await;
}
