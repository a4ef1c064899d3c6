//! Event-time windows, alerts, the live dashboard stream and its page, against documents
//! written straight into the views of a fresh MongoDB database. The stream is read over a
//! real TCP connection, as a browser would.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::StatusCode;
use common::{Mongo, SseClient, SseEvent};
use domain::Position;
use mongodb::bson::{self, Bson, Document, doc};
use read_model::{LogHead, View};
use read_service::Application;
use serde_json::{Map, Value, json};
use test_support::auth::customer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// 2026-11-26T10:00:00Z.
const T10: i64 = 1_795_687_200_000;
const MINUTE: i64 = 60_000;
const GRACE: i64 = 30_000;
const WAIT: Duration = Duration::from_secs(10);

fn pos(n: u64) -> Position {
    Position {
        tx_id: n,
        global_position: n as i64,
    }
}

fn date(ms: i64) -> Bson {
    Bson::DateTime(bson::DateTime::from_millis(ms))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A `sales_by_minute` document as the projector writes it.
fn window_doc(kind: &str, start: i64, orders: i64, revenue: i64) -> Document {
    let length = if kind == "minute" {
        MINUTE
    } else {
        60 * MINUTE
    };
    let t = chrono::DateTime::from_timestamp_millis(start).unwrap();
    let id = if kind == "minute" {
        format!("minute:{}", t.format("%Y-%m-%dT%H:%M"))
    } else {
        format!("hour:{}", t.format("%Y-%m-%dT%H"))
    };
    doc! {
        "_id": id, "window": kind, "start": date(start), "end": date(start + length),
        "finalAt": date(start + length + GRACE),
        "ordersPlaced": orders, "ordersConfirmed": 0_i64, "ordersCancelled": 0_i64,
        "ordersPaid": orders, "ordersRefunded": 0_i64, "paymentsDeclined": 0_i64,
        "revenueCents": revenue, "refundedCents": 0_i64, "netRevenueCents": revenue,
        "unitsSold": orders, "customers": ["alice"], "distinctCustomers": 1_i64,
        "events": orders * 2, "outOfOrderEvents": 1_i64, "lateEvents": 0_i64,
        "updatedAt": date(start),
    }
}

fn alert(rule: &str, subject: &str, opened: i64, closed: Option<i64>) -> Document {
    doc! {
        "id": format!("{rule}:{subject}:{opened}"), "rule": rule, "subject": subject,
        "openedAt": date(opened), "closedAt": closed.map_or(Bson::Null, date),
        "openedMs": opened, "closedMs": closed.unwrap_or(i64::MAX),
        "figures": {"orders": 9_i64, "totalCents": 25_000_i64},
    }
}

/// A subject's documents as the projector writes them: its rule state (which keeps only
/// alerts a later event may change; none here) and a document per alert.
fn alerts_doc(subject: &str, alerts: Vec<Document>) -> Vec<Document> {
    let mut docs =
        vec![doc! {"_id": subject, "subject": subject, "alerts": [], "updatedAt": date(T10)}];
    for mut a in alerts {
        a.insert("_id", a.get_str("id").unwrap().to_owned());
        docs.push(a);
    }
    docs
}

#[tokio::test]
async fn minutely_windows_are_all_there_with_zeros_and_final_flags_from_the_watermark() {
    let mongo = Mongo::new().await;
    mongo
        .insert(
            View::SalesByMinute,
            [
                window_doc("minute", T10, 3, 3000),
                window_doc("minute", T10 + 2 * MINUTE, 1, 500),
                window_doc("minute", T10 + 5 * MINUTE, 7, 7000),
                window_doc("hour", T10, 11, 10_500),
            ],
        )
        .await;
    // 10:03:15: 10:00 and the empty 10:01 are final (grace 30 s), 10:02 is not yet.
    let watermark = T10 + 3 * MINUTE + 15_000;
    mongo
        .checkpoint_at(View::SalesByMinute, pos(40), Some(watermark))
        .await;
    let app = mongo.app().await;

    let r = app
        .get(&format!(
            "/sales/minutely?from={}&to={}",
            rfc3339(T10 + 20_000),
            rfc3339(T10 + 4 * MINUTE)
        ))
        .await;
    assert_eq!(r.position(), pos(40));
    let body = r.ok();
    assert_eq!(body["window"], "minute");
    assert_eq!(body["from"], rfc3339(T10));
    assert_eq!(body["to"], rfc3339(T10 + 4 * MINUTE));
    assert_eq!(body["watermark"], rfc3339(watermark));
    let windows = body["windows"].as_array().unwrap();
    let seen: Vec<(String, bool, i64, i64)> = windows
        .iter()
        .map(|w| {
            (
                w["start"].as_str().unwrap().to_owned(),
                w["final"].as_bool().unwrap(),
                w["ordersPlaced"].as_i64().unwrap(),
                w["netRevenueCents"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (rfc3339(T10), true, 3, 3000),
            (rfc3339(T10 + MINUTE), true, 0, 0),
            (rfc3339(T10 + 2 * MINUTE), false, 1, 500),
            (rfc3339(T10 + 3 * MINUTE), false, 0, 0),
        ]
    );
    assert_eq!(windows[0]["end"], rfc3339(T10 + MINUTE));
    assert_eq!(
        (
            &windows[0]["distinctCustomers"],
            &windows[0]["events"],
            &windows[0]["outOfOrderEvents"],
            &windows[0]["lateEvents"]
        ),
        (&json!(1), &json!(6), &json!(1), &json!(0))
    );
    assert_eq!(windows[1]["events"], 0);
    assert_eq!(body["totals"]["ordersPlaced"], 4);
    assert_eq!(body["totals"]["netRevenueCents"], 3500);

    // A `to` inside a window includes it; without a range, the hour ending with the
    // watermark's minute.
    let inside = app
        .get(&format!(
            "/sales/minutely?from={}&to={}",
            rfc3339(T10),
            rfc3339(T10 + 5 * MINUTE + 1000)
        ))
        .await
        .ok();
    assert_eq!(inside["windows"].as_array().unwrap().len(), 6);
    assert_eq!(inside["windows"][5]["ordersPlaced"], 7);
    let default = app.get("/sales/minutely").await.ok();
    let all = default["windows"].as_array().unwrap();
    assert_eq!(all.len(), 60);
    assert_eq!(all[59]["start"], rfc3339(T10 + 3 * MINUTE));
    assert_eq!(all[56]["ordersPlaced"], 3);

    let hours = app
        .get(&format!("/sales/hourly?to={}", rfc3339(T10 + 90 * MINUTE)))
        .await
        .ok();
    let hours = hours["windows"].as_array().unwrap();
    assert_eq!(
        hours.len(),
        25,
        "24 hours back from 11:30, both ends partial"
    );
    assert_eq!(hours[23]["start"], rfc3339(T10));
    assert_eq!(hours[23]["ordersPlaced"], 11);
    assert_eq!(hours[23]["final"], false);
    mongo.drop().await;
}

#[tokio::test]
async fn bad_window_ranges_are_422_naming_the_parameter() {
    let mongo = Mongo::new().await;
    let app = mongo.app().await;
    let t = |ms| rfc3339(T10 + ms);
    for (uri, field) in [
        (format!("/sales/minutely?from={}&to={}", t(0), t(0)), "to"),
        (
            format!("/sales/minutely?from={}&to={}", t(MINUTE), t(0)),
            "to",
        ),
        (
            format!("/sales/minutely?from={}&to={}", t(0), t(1441 * MINUTE)),
            "to",
        ),
        (
            format!("/sales/hourly?from={}&to={}", t(0), t(745 * 60 * MINUTE)),
            "to",
        ),
        ("/sales/minutely?from=yesterday".to_owned(), "from"),
        ("/sales/hourly?to=2026-11-26".to_owned(), "to"),
        (
            "/sales/minutely?from=10000-01-01T00:00:00Z".to_owned(),
            "from",
        ),
        ("/sales/minutely?window=hour".to_owned(), "window"),
    ] {
        let r = app.get(&uri).await;
        assert_eq!(
            (r.status, r.field()),
            (StatusCode::UNPROCESSABLE_ENTITY, field),
            "{uri}: {:?}",
            r.body
        );
    }
    // The longest ranges pass, ending at the end of time.
    let r = app
        .get(&format!(
            "/sales/minutely?from={}&to={}",
            t(0),
            t(1440 * MINUTE)
        ))
        .await
        .ok();
    assert_eq!(r["windows"].as_array().unwrap().len(), 1440);
    let r = app
        .get("/sales/hourly?from=9999-12-31T12:00:00Z")
        .await
        .ok();
    assert_eq!(r["windows"].as_array().unwrap().len(), 12);
    mongo.drop().await;
}

/// Alerts opened and closing within one second of each other are told apart to the
/// millisecond, in status and in paging (nx-27017 compares dates to the whole second; the
/// read-service filters on the alerts' ms fields).
#[tokio::test]
async fn alerts_are_told_apart_to_the_millisecond() {
    let mongo = Mongo::new().await;
    let watermark = T10 + 30 * MINUTE + 500;
    let alerts = vec![
        alert(
            "order_velocity",
            "customer:a",
            T10 + 100,
            Some(watermark + 1),
        ),
        alert("order_velocity", "customer:b", T10 + 200, Some(watermark)),
        alert(
            "order_velocity",
            "customer:c",
            T10 + 300,
            Some(watermark - 1),
        ),
        alert(
            "order_velocity",
            "customer:d",
            T10 + 400,
            Some(watermark + 400),
        ),
    ];
    mongo
        .insert(View::Alerts, alerts_doc("customers", alerts))
        .await;
    mongo
        .checkpoint_at(View::Alerts, pos(9), Some(watermark))
        .await;
    let app = mongo.app().await;
    let subjects = |page: &[Value]| -> Vec<String> {
        page.iter()
            .map(|a| a["subject"].as_str().unwrap().to_owned())
            .collect()
    };
    let open: Vec<Value> = app
        .all_pages("/alerts?status=open&limit=1", "alerts")
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(subjects(&open), ["customer:d", "customer:a"]);
    let closed: Vec<Value> = app
        .all_pages("/alerts?status=closed&limit=1", "alerts")
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(subjects(&closed), ["customer:c", "customer:b"]);
}

#[tokio::test]
async fn alerts_are_open_or_closed_by_the_watermark_newest_first_and_paged() {
    let mongo = Mongo::new().await;
    mongo
        .insert(
            View::Alerts,
            [
                alerts_doc(
                    "shop",
                    vec![
                        alert("orders_spike", "shop", T10, Some(T10 + 10 * MINUTE)),
                        alert("orders_drop", "shop", T10 + 20 * MINUTE, None),
                    ],
                ),
                alerts_doc(
                    "customer:alice",
                    vec![alert(
                        "order_velocity",
                        "customer:alice",
                        T10 + 5 * MINUTE,
                        Some(T10 + 35 * MINUTE),
                    )],
                ),
                alerts_doc(
                    "customer:bob",
                    vec![alert(
                        "large_first_order",
                        "customer:bob",
                        T10 + 5 * MINUTE,
                        Some(T10 + 15 * MINUTE),
                    )],
                ),
                // A customer the rules follow who has no alert.
                vec![
                    doc! {"_id": "customer:carol", "subject": "customer:carol", "alerts": [],
                    "customer": {"orders": 1_i64, "recentOrders": [], "recentDeclines": []}},
                ],
            ]
            .concat(),
        )
        .await;
    mongo
        .checkpoint_at(View::Alerts, pos(9), Some(T10 + 30 * MINUTE))
        .await;
    let app = mongo.app().await;
    let ids = |body: &Value| -> Vec<String> {
        body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let id = |rule: &str, subject: &str, opened: i64| format!("{rule}:{subject}:{opened}");
    let drop = id("orders_drop", "shop", T10 + 20 * MINUTE);
    let velocity = id("order_velocity", "customer:alice", T10 + 5 * MINUTE);
    let large = id("large_first_order", "customer:bob", T10 + 5 * MINUTE);
    let spike = id("orders_spike", "shop", T10);

    let r = app.get("/alerts?status=open").await;
    assert_eq!(r.position(), pos(9));
    let open = r.ok();
    assert_eq!(ids(&open), vec![drop.clone(), velocity.clone()]);
    assert_eq!(open["nextCursor"], Value::Null);
    assert_eq!(open["alerts"][0]["closedAt"], Value::Null);
    assert_eq!(open["alerts"][0]["status"], "open");
    assert_eq!(
        open["alerts"][0]["figures"],
        json!({"orders": 9, "totalCents": 25000})
    );
    assert_eq!(open["alerts"][1]["rule"], "order_velocity");
    assert_eq!(open["alerts"][1]["subject"], "customer:alice");
    let closed = app.get("/alerts?status=closed").await.ok();
    assert_eq!(ids(&closed), vec![large.clone(), spike.clone()]);
    assert!(
        closed["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] == "closed")
    );

    // Everything, one at a time: newest first, ties by id descending.
    let pages = app.all_pages("/alerts?limit=1", "alerts").await;
    let all: Vec<String> = pages
        .iter()
        .map(|p| {
            assert_eq!(p.len(), 1);
            p[0]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(all, vec![drop, velocity, large, spike]);

    // The watermark moves on: alice's alert closes.
    mongo
        .checkpoint_at(View::Alerts, pos(10), Some(T10 + 35 * MINUTE))
        .await;
    assert_eq!(ids(&app.get("/alerts?status=open").await.ok()).len(), 1);

    let first = app.get("/alerts?status=open&limit=1").await.ok();
    let cursor = first["nextCursor"].as_str().unwrap_or_default().to_owned();
    let second = app.get("/alerts?status=closed&limit=1").await.ok();
    let other = second["nextCursor"].as_str().unwrap().to_owned();
    let r = app
        .get(&format!("/alerts?status=open&cursor={other}"))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_cursor")
    );
    assert!(cursor.is_empty(), "one open alert: no next page");
    for (uri, field) in [
        ("/alerts?status=pending", "status"),
        ("/alerts?limit=0", "limit"),
        ("/alerts?limit=201", "limit"),
        ("/alerts?sort=openedAt", "sort"),
    ] {
        let r = app.get(uri).await;
        assert_eq!(
            (r.status, r.field()),
            (StatusCode::UNPROCESSABLE_ENTITY, field),
            "{uri}"
        );
    }
    assert_eq!(
        app.get("/alerts?limit=200").await.ok()["alerts"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    mongo.drop().await;
}

#[tokio::test]
async fn the_new_routes_are_for_staff_and_the_page_for_anyone() {
    let mongo = Mongo::new().await;
    let app = mongo.app().await;
    let alice = app.as_caller(Some(&customer("alice")));
    for uri in [
        "/alerts",
        "/sales/minutely",
        "/sales/hourly",
        "/dashboard/stream",
    ] {
        let r = alice.get(uri).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{uri}"
        );
        assert_eq!(
            app.as_caller(None).get(uri).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let anyone = app.as_caller(None);
    let page = anyone.get("/dashboard").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.body.as_str().unwrap();
    for id in [
        "conn",
        "position",
        "orders-today",
        "revenue-today",
        "paid-today",
        "status-pending",
        "status-confirmed",
        "status-paid",
        "status-cancelled",
        "status-shipped",
        "status-delivered",
        "alerts-open",
        "alerts",
        "lag",
        "chart-orders",
        "chart-revenue",
        "top-products",
        "low-stock",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "#{id}");
    }
    for (file, content_type) in [
        ("dashboard.js", "text/javascript; charset=utf-8"),
        ("dashboard.css", "text/css; charset=utf-8"),
        ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        ("uPlot.min.css", "text/css; charset=utf-8"),
    ] {
        let r = anyone.get(&format!("/dashboard/assets/{file}")).await;
        assert_eq!(r.status, StatusCode::OK, "{file}");
        assert_eq!(r.header("content-type"), Some(content_type), "{file}");
        assert!(
            html.contains(&format!("/dashboard/assets/{file}")),
            "{file}"
        );
    }
    let r = anyone.get("/dashboard/assets/secrets.txt").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "asset_not_found")
    );
    mongo.drop().await;
}

// --- the stream ---

/// The read-service on a real port, and what stops it.
struct Server {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(mongo: &Mongo) -> Self {
        let settings = read_service::Settings {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..mongo.settings()
        };
        let app = Application::build(settings).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            stop: Some(stop),
            task,
        }
    }

    async fn stream(&self, last: Option<&str>) -> SseClient {
        SseClient::connect(&format!("{}/dashboard/stream", self.base), last).await
    }
}

/// Every view applied up to `p`, at event time `watermark`, and the log's head at `head`.
async fn all_at(mongo: &Mongo, p: Position, watermark: i64, head: i64) {
    // The old layout (one collection of checkpoints), so `move_all` moves them together; it
    // also keeps the read-service's fallback to that layout tested.
    for &view in View::ALL {
        mongo.legacy_checkpoint_at(view, p, Some(watermark)).await;
    }
    mongo
        .log_head(LogHead {
            max_global_position: head,
            next_tx_id: head + 1,
        })
        .await;
}

/// Moves every view's checkpoint (written by [`all_at`]) in one command, so the stream's
/// poller does not see some views moved and others not. (The watermark stays: nx-27017
/// stores a date `$set` by `update_many` as a string.)
async fn move_all(mongo: &Mongo, p: Position) {
    let names: Vec<&str> = View::ALL.iter().map(|v| v.name()).collect();
    let moved = mongo
        .db()
        .collection::<Document>(read_model::CHECKPOINTS)
        .update_many(
            doc! {"projection": {"$in": names}},
            doc! {"$set": {"position": p.to_string()}},
        )
        .await
        .unwrap();
    assert_eq!(moved.matched_count, View::ALL.len() as u64);
}

/// The next events up to the one at position `p`: a poll may see some of a change before
/// the rest, so one change can come as more than one frame.
async fn frames_until(client: &mut SseClient, p: Position) -> Vec<SseEvent> {
    let mut frames = vec![];
    loop {
        let e = client.next_within(WAIT).await.unwrap();
        let done =
            e.id.as_deref()
                .is_some_and(|id| id.starts_with(&p.to_string()));
        frames.push(e);
        if done {
            return frames;
        }
    }
}

fn product(id: &str, available: i64, sold: i64) -> Document {
    doc! {"_id": id, "productId": id, "name": Bson::Null, "receivedUnits": available + sold,
    "reservedUnits": sold, "shippedUnits": 0_i64, "availableUnits": available,
    "soldUnits": sold, "updatedAt": date(T10)}
}

fn sections(e: &SseEvent) -> BTreeSet<String> {
    e.json().as_object().unwrap().keys().cloned().collect()
}

/// A client's state: a snapshot replaces it, a delta replaces the sections it carries.
fn apply(state: &mut Map<String, Value>, e: &SseEvent) {
    let Value::Object(data) = e.json() else {
        panic!("not an object: {}", e.data)
    };
    match e.event.as_str() {
        "snapshot" => *state = data,
        "delta" => state.extend(data),
        other => panic!("unexpected event {other}"),
    }
}

#[tokio::test]
async fn the_stream_starts_with_a_snapshot_and_sends_only_what_changed() {
    let mongo = Mongo::new().await;
    mongo
        .insert(View::SalesByMinute, [window_doc("minute", T10, 2, 900)])
        .await;
    mongo
        .insert(
            View::Alerts,
            alerts_doc("shop", vec![alert("orders_spike", "shop", T10, None)]),
        )
        .await;
    all_at(&mongo, pos(5), T10 + 30_000, 8).await;
    let server = Server::start(&mongo).await;
    let mut client = server.stream(None).await;
    assert_eq!(
        client.response.headers()["content-type"],
        "text/event-stream"
    );
    assert_eq!(client.response.headers()["x-accel-buffering"], "no");

    let first = client.next_within(WAIT).await.unwrap();
    assert_eq!(first.event, "snapshot");
    assert_eq!(first.id.as_deref(), Some(pos(5).to_string().as_str()));
    let state = first.json();
    assert_eq!(
        sections(&first),
        [
            "alerts",
            "byStatus",
            "lag",
            "lowStock",
            "minutes",
            "today",
            "topProducts"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(state["lag"]["events"], 3, "head 8, views at 5");
    assert_eq!(state["alerts"]["count"], 1);
    let minutes = state["minutes"]["windows"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    assert_eq!(minutes[59]["start"], rfc3339(T10));
    assert_eq!(minutes[59]["ordersPlaced"], 2);
    assert_eq!(state["byStatus"]["pending"], 0);

    // Stock changes and every view moves on: stock and lag, nothing else.
    mongo
        .insert(
            View::Inventory,
            [product("sku-low", 2, 4), product("sku-ok", 50, 1)],
        )
        .await;
    move_all(&mongo, pos(6)).await;
    let frames = frames_until(&mut client, pos(6)).await;
    let delta = frames.last().unwrap();
    assert_eq!(delta.id.as_deref(), Some(pos(6).to_string().as_str()));
    let mut changed = BTreeSet::new();
    let mut d = Map::new();
    for f in &frames {
        assert_eq!(f.event, "delta");
        changed.extend(sections(f));
        apply(&mut d, f);
    }
    assert_eq!(
        changed,
        ["lag", "lowStock", "topProducts"].map(String::from).into()
    );
    assert_eq!(d["lowStock"][0]["productId"], "sku-low");
    assert_eq!(d["lowStock"].as_array().unwrap().len(), 1);
    assert_eq!(
        d["topProducts"][0],
        json!({"productId": "sku-low", "soldUnits": 4})
    );

    // Only orders_view moves: the lowest checkpoint stays, so the id gets a counter.
    mongo
        .insert(View::Orders, [common::order_doc(1, "alice", T10)])
        .await;
    mongo
        .checkpoint_at(View::Orders, pos(7), Some(T10 + 30_000))
        .await;
    let same = client.next_within(WAIT).await.unwrap();
    assert_eq!(same.id, Some(format!("{}.00000001", pos(6))));
    assert_eq!(
        sections(&same),
        ["byStatus", "lag"].map(String::from).into()
    );
    assert_eq!(same.json()["byStatus"]["pending"], 1);
    mongo.drop().await;
}

#[tokio::test]
async fn a_stream_cut_mid_way_resumes_after_its_last_event_without_gaps_or_repeats() {
    let mongo = Mongo::new().await;
    all_at(&mongo, pos(1), T10, 100).await;
    let server = Server::start(&mongo).await;
    // A client that never disconnects, to compare with.
    let mut steady = server.stream(None).await;
    let mut steady_state = Map::new();
    let first = steady.next_within(WAIT).await.unwrap();
    apply(&mut steady_state, &first);

    let mut cut = server.stream(None).await;
    let mut cut_state = Map::new();
    let e = cut.next_within(WAIT).await.unwrap();
    assert_eq!(e.event, "snapshot");
    apply(&mut cut_state, &e);
    let change = |n: u64| {
        let mongo = &mongo;
        async move {
            mongo
                .insert(View::Orders, [common::order_doc(n, "alice", T10)])
                .await;
            move_all(mongo, pos(n + 1)).await;
        }
    };
    let mut steady_frames = vec![];
    change(1).await;
    let e = steady.next_within(WAIT).await.unwrap();
    apply(&mut steady_state, &e);
    steady_frames.push(e.clone());
    let seen_before_cut = cut.next_within(WAIT).await.unwrap();
    assert_eq!(seen_before_cut, e);
    apply(&mut cut_state, &seen_before_cut);
    drop(cut);

    // Frames the cut client misses.
    for n in 2..=4 {
        change(n).await;
        let e = steady.next_within(WAIT).await.unwrap();
        apply(&mut steady_state, &e);
        steady_frames.push(e);
    }
    let mut resumed = server.stream(seen_before_cut.id.as_deref()).await;
    let mut caught_up = vec![];
    for _ in 0..3 {
        let e = resumed.next_within(WAIT).await.unwrap();
        apply(&mut cut_state, &e);
        caught_up.push(e);
    }
    assert_eq!(caught_up, steady_frames[1..]);
    assert_eq!(cut_state, steady_state);

    // And both go on alike.
    change(5).await;
    let a = steady.next_within(WAIT).await.unwrap();
    let b = resumed.next_within(WAIT).await.unwrap();
    assert_eq!(a, b);
    apply(&mut steady_state, &a);
    apply(&mut cut_state, &b);
    assert_eq!(cut_state, steady_state);

    // An id the ring does not hold (older than its frames, or from elsewhere) gets one
    // snapshot of the latest state.
    let mut last = a.id.clone();
    for unknown in [Position::ZERO.to_string(), "not-an-id".to_owned()] {
        let mut fresh = server.stream(Some(&unknown)).await;
        let e = fresh.next_within(WAIT).await.unwrap();
        assert_eq!(e.event, "snapshot");
        // Should a change have come as two frames, the steady client reads the second too.
        while last < e.id {
            let more = steady.next_within(WAIT).await.unwrap();
            apply(&mut steady_state, &more);
            last = more.id;
        }
        assert_eq!(last, e.id);
        assert_eq!(e.json(), Value::Object(steady_state.clone()));
    }
    // The latest id itself: nothing until something changes.
    let mut current = server.stream(last.as_deref()).await;
    change(6).await;
    let next = current.next_within(WAIT).await.unwrap();
    assert_eq!(next, steady.next_within(WAIT).await.unwrap());
    assert_eq!(next.event, "delta");
    mongo.drop().await;
}

#[tokio::test]
async fn shutting_down_ends_open_streams() {
    let mongo = Mongo::new().await;
    all_at(&mongo, pos(1), T10, 1).await;
    let mut server = Server::start(&mongo).await;
    let mut client = server.stream(None).await;
    assert_eq!(client.next_within(WAIT).await.unwrap().event, "snapshot");
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(WAIT, &mut server.task)
        .await
        .expect("the server stops despite an open stream")
        .unwrap()
        .unwrap();
    assert_eq!(client.next_within(WAIT).await, None, "the stream ended");
    mongo.drop().await;
}
