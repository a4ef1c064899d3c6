//! The four views against real PostgreSQL and a real MongoDB wire-protocol server.

mod common;

use common::{TestEnv, create, int, line};
use domain::order::OrderCommand;
use domain::{OrderId, Position};
use mongodb::bson::{Bson, doc};
use projector::projections::alerts::AlertsProjection;
use projector::projections::daily_sales::DailySalesProjection;
use projector::projections::inventory::InventoryProjection;
use projector::projections::orders::OrdersProjection;
use projector::projections::sales_windows::SalesWindowsProjection;
use projector::projections::users::UsersProjection;
use projector::projections::{Projection, View};
use projector::rebuild::{CatchUpError, catch_up};
use projector::settings::OnPoison;
use projector::{Projector, for_view};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// A small shop history whose every number is known, written as the write-service and the
/// fulfilment process write it now: confirming reserves, cancelling releases, shipping ships,
/// and the payment provider's answers are recorded on the order.
async fn scripted_history(env: &TestEnv) -> [OrderId; 6] {
    let [a, b, c, d, e, f] = [(); 6].map(|_| OrderId::new());
    let events = env.events();
    events.details("sku-1", "Keyboard", 1000).await;
    env.stock("sku-1", 100).await;
    env.stock("sku-2", 5).await;
    events.try_adjust("sku-2", 3).await.unwrap();
    // a: alice, confirmed, awaiting its payment: 2 x 1000 + 1 x 500 = 2500, no revenue yet
    env.order(
        a,
        create(
            a,
            "alice",
            vec![line("sku-1", 2, 1000), line("sku-2", 1, 500)],
        ),
    )
    .await;
    events.confirm(a).await;
    // b: alice, edited then cancelled while pending: never revenue, never reserved
    env.order(b, create(b, "alice", vec![line("sku-1", 1, 1000)]))
        .await;
    env.order(b, OrderCommand::AddItem(line("sku-3", 4, 250)))
        .await;
    env.order(b, OrderCommand::RemoveItem("sku-3".parse().unwrap()))
        .await;
    events.try_cancel(b, Some("duplicate")).await.unwrap();
    // c: bob, paid, cancelled and refunded: revenue and a refund of 3 x 500 = 1500; its 3
    // units of sku-2 reserved, then released
    env.order(c, create(c, "bob", vec![line("sku-2", 3, 500)]))
        .await;
    events.confirm(c).await;
    events.pay(c).await;
    events.try_cancel(c, None).await.unwrap();
    events.refund(c).await;
    // d: bob, paid and delivered: 6 x 1000 = 6000; 6 units of sku-1 shipped
    env.order(d, create(d, "bob", vec![line("sku-1", 6, 1000)]))
        .await;
    events.confirm(d).await;
    events.pay(d).await;
    events.try_ship(d, "DHL", "JD1").await.unwrap();
    env.order(d, OrderCommand::Deliver).await;
    // e: carol, declined and cancelled: 1 x 500, never revenue; its unit of sku-2 released
    env.order(e, create(e, "carol", vec![line("sku-2", 1, 500)]))
        .await;
    events.confirm(e).await;
    events.decline(e).await;
    events
        .try_cancel(e, Some(domain::order::REASON_PAYMENT_DECLINED))
        .await
        .unwrap();
    // f: carol, paid: 1 x 1000; its unit of sku-1 stays reserved until it ships
    env.order(f, create(f, "carol", vec![line("sku-1", 1, 1000)]))
        .await;
    events.confirm(f).await;
    events.pay(f).await;
    [a, b, c, d, e, f]
}

/// `(received, reserved, shipped, available, sold)` of an `inventory_view` document.
fn stock_of(d: &mongodb::bson::Document) -> (i64, i64, i64, i64, i64) {
    (
        int(d, "receivedUnits"),
        int(d, "reservedUnits"),
        int(d, "shippedUnits"),
        int(d, "availableUnits"),
        int(d, "soldUnits"),
    )
}

#[sqlx::test(migrations = "../migrations")]
async fn every_view_shows_the_exact_numbers(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let [a, b, c, d, e, f] = scripted_history(&env).await;
    env.catch_up_all().await;

    let order_a = env.doc(View::Orders, &a.to_string()).await;
    assert_eq!(order_a.get_str("status").unwrap(), "confirmed");
    assert_eq!(int(&order_a, "totalCents"), 2500);
    assert_eq!(int(&order_a, "itemCount"), 3);
    assert_eq!(int(&order_a, "version"), 2);
    assert_eq!(order_a.get_str("userId").unwrap(), "alice");
    let items = order_a.get_array("items").unwrap();
    assert_eq!(int(items[0].as_document().unwrap(), "lineTotalCents"), 2000);
    assert!(order_a.get_datetime("confirmedAt").is_ok());
    assert_eq!(order_a.get_str("paymentStatus").unwrap(), "awaiting");
    assert_eq!(order_a.get_str("paymentMethod").unwrap(), "pm_card_visa");
    assert_eq!(
        (int(&order_a, "paidCents"), int(&order_a, "refundedCents")),
        (0, 0)
    );
    assert_eq!(order_a.get("paidAt"), Some(&Bson::Null));
    let order_b = env.doc(View::Orders, &b.to_string()).await;
    assert_eq!(
        (
            order_b.get_str("status").unwrap(),
            int(&order_b, "totalCents")
        ),
        ("cancelled", 1000)
    );
    assert_eq!(order_b.get_str("cancelReason").unwrap(), "duplicate");
    assert_eq!(
        order_b.get("paymentStatus"),
        Some(&Bson::Null),
        "never confirmed"
    );
    assert_eq!(order_b.get("paymentMethod"), Some(&Bson::Null));

    // The times are the events' own.
    let recorded = event_times(&env, c).await;
    let order_c = env.doc(View::Orders, &c.to_string()).await;
    assert_eq!(
        (
            order_c.get_str("status").unwrap(),
            order_c.get_str("paymentStatus").unwrap()
        ),
        ("cancelled", "refunded")
    );
    assert_eq!(
        (int(&order_c, "paidCents"), int(&order_c, "refundedCents")),
        (1500, 1500)
    );
    assert_eq!(
        order_c.get_datetime("paidAt").unwrap(),
        &recorded["PaymentCaptured"]
    );
    assert_eq!(
        order_c.get_datetime("refundedAt").unwrap(),
        &recorded["PaymentRefunded"]
    );
    assert_eq!(
        order_c.get_datetime("cancelledAt").unwrap(),
        &recorded["OrderCancelled"]
    );
    assert_eq!(
        order_c.get_str("paymentIntentId").unwrap(),
        format!("pi_test_{}", c.0.simple())
    );
    let order_d = env.doc(View::Orders, &d.to_string()).await;
    assert_eq!(order_d.get_str("status").unwrap(), "delivered");
    assert_eq!(order_d.get_str("paymentStatus").unwrap(), "captured");
    assert_eq!(int(&order_d, "paidCents"), 6000);
    assert_eq!(order_d.get_str("trackingNumber").unwrap(), "JD1");
    assert!(order_d.get_datetime("deliveredAt").is_ok());
    let recorded = event_times(&env, e).await;
    let order_e = env.doc(View::Orders, &e.to_string()).await;
    assert_eq!(
        (
            order_e.get_str("status").unwrap(),
            order_e.get_str("paymentStatus").unwrap(),
            order_e.get_str("cancelReason").unwrap(),
            order_e.get_str("paymentDeclineCode").unwrap(),
        ),
        (
            "cancelled",
            "declined",
            "payment_declined",
            "insufficient_funds"
        )
    );
    assert_eq!(
        order_e.get_datetime("paymentDeclinedAt").unwrap(),
        &recorded["PaymentDeclined"]
    );
    assert_eq!(order_e.get("paidAt"), Some(&Bson::Null));
    let order_f = env.doc(View::Orders, &f.to_string()).await;
    assert_eq!(
        (
            order_f.get_str("status").unwrap(),
            order_f.get_str("paymentStatus").unwrap()
        ),
        ("paid", "captured")
    );
    assert_eq!(env.docs(View::Orders, 1).await.len(), 6);

    let alice = env.doc(View::Users, "alice").await;
    assert_eq!(
        (int(&alice, "orderCount"), int(&alice, "totalSpentCents")),
        (2, 0),
        "a is not paid yet"
    );
    let recent = alice.get_array("recentOrders").unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(
        recent[0].as_document().unwrap().get_str("orderId").unwrap(),
        b.to_string(),
        "newest first"
    );
    assert_eq!(
        recent[0].as_document().unwrap().get_str("status").unwrap(),
        "cancelled"
    );
    assert_eq!(
        recent[1]
            .as_document()
            .unwrap()
            .get_str("paymentStatus")
            .unwrap(),
        "awaiting"
    );
    let bob = env.doc(View::Users, "bob").await;
    assert_eq!(
        (int(&bob, "orderCount"), int(&bob, "totalSpentCents")),
        (2, 6000),
        "c was refunded"
    );
    let carol = env.doc(View::Users, "carol").await;
    assert_eq!(
        (int(&carol, "orderCount"), int(&carol, "totalSpentCents")),
        (2, 1000),
        "e was declined"
    );

    let day = env.doc(View::DailySales, &today()).await;
    assert_eq!(int(&day, "ordersPlaced"), 6);
    assert_eq!(int(&day, "ordersConfirmed"), 5);
    assert_eq!(int(&day, "ordersCancelled"), 3);
    assert_eq!(int(&day, "ordersPaid"), 3);
    assert_eq!(int(&day, "ordersRefunded"), 1);
    assert_eq!(int(&day, "paymentsDeclined"), 1);
    // Revenue on capture (c, d, f), refunds when made (c); a awaits its payment.
    assert_eq!(int(&day, "revenueCents"), 1500 + 6000 + 1000);
    assert_eq!(int(&day, "refundedCents"), 1500);
    assert_eq!(int(&day, "netRevenueCents"), 7000);
    assert_eq!(int(&day, "unitsSold"), 3 + 6 + 1);

    let sku1 = env.doc(View::Inventory, "sku-1").await;
    assert_eq!(stock_of(&sku1), (100, 3, 6, 91, 9));
    assert_eq!(sku1.get_str("name").unwrap(), "Keyboard");
    let sku2 = env.doc(View::Inventory, "sku-2").await;
    assert_eq!(
        stock_of(&sku2),
        (8, 1, 0, 7, 1),
        "c's and e's units were released"
    );
    assert_eq!(sku2.get("name"), Some(&Bson::Null));
    // sku-3 was only ever on a pending order: no stock event, no document.
    assert_eq!(env.docs(View::Inventory, 1).await.len(), 2);
    env.cleanup().await;
}

/// The `recorded_at` of each event type of an order's stream (the last of each), as the
/// views store times (milliseconds).
async fn event_times(
    env: &TestEnv,
    id: OrderId,
) -> std::collections::HashMap<String, mongodb::bson::DateTime> {
    let rows: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select event_type, recorded_at from events where stream_id = $1 order by stream_position",
    )
    .bind(id.stream_id())
    .fetch_all(&env.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(t, at)| {
            (
                t,
                mongodb::bson::DateTime::from_millis(at.timestamp_millis()),
            )
        })
        .collect()
}

/// A capture that answers after the order was cancelled (a late answer) is money taken:
/// revenue when captured, given back when refunded; the order stays cancelled.
#[sqlx::test(migrations = "../migrations")]
async fn a_late_capture_counts_until_its_refund(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let events = env.events();
    env.stock("late", 5).await;
    let id = events.new_order("lou", vec![line("late", 2, 450)]).await;
    events.confirm(id).await;
    events
        .try_cancel(id, Some("payment_timeout"))
        .await
        .unwrap();
    events.pay(id).await;
    env.catch_up_all().await;
    let order = env.doc(View::Orders, &id.to_string()).await;
    assert_eq!(
        (
            order.get_str("status").unwrap(),
            order.get_str("paymentStatus").unwrap(),
            int(&order, "paidCents")
        ),
        ("cancelled", "captured", 900)
    );
    let day = env.doc(View::DailySales, &today()).await;
    let money = |d: &mongodb::bson::Document| {
        [
            "ordersPaid",
            "ordersRefunded",
            "revenueCents",
            "refundedCents",
            "netRevenueCents",
        ]
        .map(|k| int(d, k))
    };
    assert_eq!(money(&day), [1, 0, 900, 0, 900]);
    assert_eq!(
        int(&env.doc(View::Users, "lou").await, "totalSpentCents"),
        900
    );
    events.refund(id).await;
    env.catch_up_all().await;
    let day = env.doc(View::DailySales, &today()).await;
    assert_eq!(money(&day), [1, 1, 900, 900, 0]);
    assert_eq!(
        int(&env.doc(View::Users, "lou").await, "totalSpentCents"),
        0
    );
    let order = env.doc(View::Orders, &id.to_string()).await;
    assert_eq!(order.get_str("paymentStatus").unwrap(), "refunded");
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn availability_never_goes_negative(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let events = env.events();
    env.stock("rare", 1).await;
    let (big, small) = (OrderId::new(), OrderId::new());
    env.order(big, create(big, "carol", vec![line("rare", 3, 10)]))
        .await;
    env.order(small, create(small, "dan", vec![line("rare", 1, 10)]))
        .await;
    assert_eq!(events.try_confirm(big).await, None, "3 asked, 1 available");
    events.confirm(small).await;
    assert_eq!(
        events.try_adjust("rare", -1).await,
        None,
        "below what is reserved"
    );
    env.catch_up_all().await;
    let rare = env.doc(View::Inventory, "rare").await;
    assert_eq!(stock_of(&rare), (1, 1, 0, 0, 1));
    let refused = env.doc(View::Orders, &big.to_string()).await;
    assert_eq!(refused.get_str("status").unwrap(), "pending");
    env.cleanup().await;
}

/// A log written before reservations and payments existed: orders confirmed (`OrderConfirmed`
/// v1, no payment method), cancelled and shipped with no product events, only deliveries on
/// the product streams. It projects without a poison event; such orders reserved nothing, so
/// the inventory shows what was received, nothing reserved or shipped (the write side agrees:
/// cancelling or shipping them moves no stock); and the sales views keep the rule they were
/// counted by (revenue on confirmation, reversed on cancellation). Reservations and payments
/// written after the upgrade count from there on, and a rebuild agrees.
#[sqlx::test(migrations = "../migrations")]
async fn an_old_log_without_reservations_still_projects(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let events = env.events();
    env.stock("old", 10).await;
    let [kept, cancelled, shipped, later] = [(); 4].map(|_| OrderId::new());
    for (id, qty) in [(kept, 2), (cancelled, 3), (shipped, 4), (later, 1)] {
        env.order(id, create(id, "olga", vec![line("old", qty, 100)]))
            .await;
        events.confirm_legacy(id).await;
    }
    env.order(cancelled, OrderCommand::Cancel { reason: None })
        .await;
    env.order(
        shipped,
        OrderCommand::Ship {
            carrier: "DHL".into(),
            tracking_number: "OLD".into(),
        },
    )
    .await;
    env.catch_up_all().await;
    let head = env.events().head().await;
    for &view in View::ALL {
        let checkpoint = env.projector.engine.views.checkpoint(view, 1).await;
        assert_eq!(
            checkpoint.unwrap(),
            head,
            "{view} stopped short of the head"
        );
    }
    let old = env.doc(View::Inventory, "old").await;
    assert_eq!(stock_of(&old), (10, 0, 0, 10, 0));
    let day = env.doc(View::DailySales, &today()).await;
    let figures = |day: &mongodb::bson::Document| {
        [
            "ordersConfirmed",
            "ordersCancelled",
            "ordersPaid",
            "ordersRefunded",
            "revenueCents",
            "refundedCents",
            "netRevenueCents",
            "unitsSold",
        ]
        .map(|k| int(day, k))
    };
    // The old rule: revenue and units on confirmation, the cancelled order's total given
    // back; nothing is paid.
    assert_eq!(
        figures(&day),
        [4, 1, 0, 0, 1000, 300, 700, 2 + 3 + 4 + 1],
        "sales still count as before"
    );
    let olga = env.doc(View::Users, "olga").await;
    assert_eq!(int(&olga, "totalSpentCents"), 700);
    let kept_doc = env.doc(View::Orders, &kept.to_string()).await;
    assert_eq!(
        (
            kept_doc.get_str("status").unwrap(),
            kept_doc.get_str("paymentStatus").unwrap()
        ),
        ("confirmed", "awaiting")
    );
    assert_eq!(kept_doc.get("paymentMethod"), Some(&Bson::Null));

    // After the upgrade: an old confirmed order ships unpaid and moves no stock; a new one
    // reserves and counts when it is paid.
    assert!(events.try_ship(later, "DHL", "NEW").await.is_some());
    let fresh = OrderId::new();
    env.order(fresh, create(fresh, "olga", vec![line("old", 6, 100)]))
        .await;
    events.confirm(fresh).await;
    env.catch_up_all().await;
    let day = env.doc(View::DailySales, &today()).await;
    assert_eq!(figures(&day), [5, 1, 0, 0, 1000, 300, 700, 10]);
    events.pay(fresh).await;
    env.catch_up_all().await;
    let day = env.doc(View::DailySales, &today()).await;
    assert_eq!(figures(&day), [5, 1, 1, 0, 1600, 300, 1300, 16]);
    let olga = env.doc(View::Users, "olga").await;
    assert_eq!(int(&olga, "totalSpentCents"), 1300);
    let old = env.doc(View::Inventory, "old").await;
    assert_eq!(stock_of(&old), (10, 6, 0, 4, 6));
    let shipped_later = env.doc(View::Orders, &later.to_string()).await;
    assert_eq!(shipped_later.get_str("status").unwrap(), "shipped");

    let incremental = all_docs(&env, 1).await;
    let cancel = CancellationToken::new();
    for &name in View::ALL {
        for_view!(
            name,
            projector::rebuild::rebuild(&env.projector, false, &cancel)
        )
        .unwrap();
    }
    assert_eq!(all_docs(&env, 2).await, incremental);
    env.cleanup().await;
}

/// Writer A takes a lower position and stays open while writer B commits; the projector
/// runs; then A commits. Both must reach the views.
#[sqlx::test(migrations = "../migrations")]
async fn out_of_order_commits_both_reach_the_views(pool: PgPool) {
    let env = TestEnv::new(pool.clone()).await;
    let (a, b) = (OrderId::new(), OrderId::new());
    let created =
        domain::order::decide(&Default::default(), create(a, "ann", vec![line("x", 1, 1)]))
            .unwrap();
    let encoded = domain::events::DomainEvent::Order(created[0].clone()).encode();
    let mut writer_a = pool.begin().await.unwrap();
    sqlx::query("insert into streams (stream_id, stream_type, version) values ($1, 'order', 1)")
        .bind(a.stream_id())
        .execute(&mut *writer_a)
        .await
        .unwrap();
    sqlx::query(
        "insert into events (stream_id, stream_position, event_id, event_type, schema_version, data)
         values ($1, 1, $2, $3, $4, $5)",
    )
    .bind(a.stream_id())
    .bind(Uuid::new_v4())
    .bind(encoded.event_type)
    .bind(encoded.schema_version)
    .bind(&encoded.data)
    .execute(&mut *writer_a)
    .await
    .unwrap();

    env.order(b, create(b, "bea", vec![line("x", 1, 1)])).await;
    // The projector runs while A is open: B is not readable yet, and must not be skipped.
    env.catch_up_all_to(Position::ZERO).await;
    writer_a.commit().await.unwrap();
    env.catch_up_all().await;

    let orders = env.docs(View::Orders, 1).await;
    let ids: Vec<&str> = orders.iter().map(|d| d.get_str("_id").unwrap()).collect();
    assert!(
        ids.contains(&a.to_string().as_str()),
        "A, committed late, was skipped"
    );
    assert!(ids.contains(&b.to_string().as_str()));
    let day = env.doc(View::DailySales, &today()).await;
    assert_eq!(int(&day, "ordersPlaced"), 2);
    env.cleanup().await;
}

/// A crash between view writes and the checkpoint replays events the views already have.
/// Whatever the batch boundaries of the replay, nothing is counted twice.
#[sqlx::test(migrations = "../migrations")]
async fn replays_after_a_crash_count_nothing_twice(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    scripted_history(&env).await;
    env.catch_up_all().await;
    let before: Vec<_> = all_docs(&env, 1).await;

    let views = &env.projector.engine.views;
    for batch_size in [1, 3, 7, 500] {
        for &name in View::ALL {
            // Forget the checkpoint, as if the process died right after writing the views.
            views
                .save_checkpoint(name, 1, Position::ZERO, None)
                .await
                .unwrap();
        }
        let env = TestEnv {
            projector: Projector {
                batch_size,
                ..env.projector.clone()
            },
            ..clone_env(&env)
        };
        env.catch_up_all().await;
        assert_eq!(all_docs(&env, 1).await, before, "batch size {batch_size}");
    }
    env.cleanup().await;
}

fn clone_env(env: &TestEnv) -> TestEnv {
    TestEnv {
        pool: env.pool.clone(),
        store: env.store.clone(),
        settings: env.settings.clone(),
        projector: env.projector.clone(),
        mongo: env.mongo.clone(),
    }
}

async fn all_docs(env: &TestEnv, generation: i64) -> Vec<Vec<mongodb::bson::Document>> {
    let mut all = vec![];
    for &name in View::ALL {
        all.push(env.docs(name, generation).await);
    }
    all
}

/// Rebuilding from scratch into a new generation gives byte-identical documents and then
/// switches the pointer; `--drop-old` removes the previous generation.
#[sqlx::test(migrations = "../migrations")]
async fn a_rebuild_reproduces_the_views_and_switches_generation(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    scripted_history(&env).await;
    // Incremental: many small batches, interleaved with more writes.
    let small = clone_env(&env);
    let small = TestEnv {
        projector: Projector {
            batch_size: 2,
            ..small.projector
        },
        ..small
    };
    small.catch_up_all().await;
    env.stock("sku-9", 20).await;
    for i in 0..5 {
        let o = OrderId::new();
        env.order(
            o,
            create(o, &format!("u{i}"), vec![line("sku-9", i + 1, 100)]),
        )
        .await;
        env.events().confirm(o).await;
        if i % 2 == 0 {
            env.events().pay(o).await;
            env.events().try_ship(o, "UPS", "T").await.unwrap();
        }
        env.events().try_adjust("sku-9", -1).await.unwrap();
        small.catch_up_all().await;
    }
    let incremental = all_docs(&env, 1).await;
    // 1 + 3 + 5 shipped, 2 + 4 reserved, 5 written off: every new event type is in there.
    let sku9 = env.doc(View::Inventory, "sku-9").await;
    assert_eq!(stock_of(&sku9), (15, 6, 9, 0, 15));

    let cancel = CancellationToken::new();
    for &name in View::ALL {
        let report = for_view!(
            name,
            projector::rebuild::rebuild(&env.projector, true, &cancel)
        )
        .unwrap();
        assert_eq!((report.previous, report.generation), (1, 2));
    }
    let rebuilt = all_docs(&env, 2).await;
    assert_eq!(rebuilt, incremental);
    let views = &env.projector.engine.views;
    for &name in View::ALL {
        assert_eq!(views.active_generation(name).await.unwrap(), 2);
    }
    let collections = env.mongo.list_collection_names().await.unwrap();
    assert!(
        !collections.contains(&"orders_view_g1".to_string()),
        "{collections:?}"
    );
    assert!(
        collections.contains(&"orders_view_g2".to_string()),
        "{collections:?}"
    );
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_cancelled_rebuild_leaves_the_serving_generation_alone(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    scripted_history(&env).await;
    env.catch_up_all().await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let result =
        projector::rebuild::rebuild::<OrdersProjection>(&env.projector, true, &cancel).await;
    assert!(result.is_err());
    let views = &env.projector.engine.views;
    assert_eq!(views.active_generation(View::Orders).await.unwrap(), 1);
    assert_eq!(env.docs(View::Orders, 1).await.len(), 6);
    let collections = env.mongo.list_collection_names().await.unwrap();
    assert!(
        !collections.contains(&"orders_view_g2".to_string()),
        "partial generation removed"
    );
    env.cleanup().await;
}

async fn insert_poison(pool: &PgPool) {
    let id = Uuid::new_v4();
    sqlx::query("insert into streams (stream_id, stream_type, version) values ($1, 'order', 1)")
        .bind(format!("order-{id}"))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into events (stream_id, stream_position, event_id, event_type, schema_version, data)
         values ($1, 1, $2, 'OrderTeleported', 1, '{\"to\": \"mars\"}')",
    )
    .bind(format!("order-{id}"))
    .bind(Uuid::new_v4())
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_poison_event_stops_the_projection_by_default(pool: PgPool) {
    let env = TestEnv::new(pool.clone()).await;
    let a = OrderId::new();
    env.order(a, create(a, "pat", vec![line("p", 1, 1)])).await;
    insert_poison(&pool).await;
    let b = OrderId::new();
    let head = env.order(b, create(b, "pat", vec![line("p", 1, 1)])).await;

    let err = catch_up::<OrdersProjection>(
        &env.projector.engine,
        1,
        Position::ZERO,
        head,
        500,
        &CancellationToken::new(),
        |_| {},
    )
    .await
    .unwrap_err();
    let CatchUpError::Poisoned { event_type, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(event_type, "OrderTeleported");
    let docs = env.docs(View::Orders, 1).await;
    assert_eq!(
        docs.len(),
        1,
        "events before the poison were applied, none after"
    );
    assert_eq!(docs[0].get_str("_id").unwrap(), a.to_string());
    let checkpoint = env
        .projector
        .engine
        .views
        .checkpoint(View::Orders, 1)
        .await
        .unwrap();
    assert!(checkpoint > Position::ZERO);
    env.cleanup().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn park_mode_records_a_dead_letter_and_goes_on(pool: PgPool) {
    let env = TestEnv::with(pool.clone(), |s| s.on_poison = OnPoison::Park).await;
    insert_poison(&pool).await;
    let b = OrderId::new();
    env.order(b, create(b, "pat", vec![line("p", 1, 1)])).await;
    env.catch_up::<OrdersProjection>(1).await;
    env.catch_up::<UsersProjection>(1).await;
    assert_eq!(env.docs(View::Orders, 1).await.len(), 1);
    let letters = env
        .mongo
        .collection::<mongodb::bson::Document>("projection_dead_letters")
        .find_one(doc! {"projection": "orders_view"})
        .await
        .unwrap()
        .expect("dead letter");
    assert_eq!(letters.get_str("eventType").unwrap(), "OrderTeleported");
    assert!(
        letters
            .get_str("error")
            .unwrap()
            .contains("unknown event type")
    );
    assert!(letters.get_str("streamId").unwrap().starts_with("order-"));
    env.cleanup().await;
}

/// Each view has one projection, and `for_view!` picks it.
#[test]
fn every_view_has_its_projection() {
    assert_eq!(
        [
            OrdersProjection::VIEW,
            UsersProjection::VIEW,
            DailySalesProjection::VIEW,
            InventoryProjection::VIEW,
            SalesWindowsProjection::VIEW,
            AlertsProjection::VIEW,
        ],
        View::ALL
    );
}

/// A batch's view writes and its checkpoint are one ordered `update`, the checkpoint last, so
/// a batch can stop part-way (a conflict, or a connection lost mid-command): some documents
/// written, the checkpoint not moved. Replaying the batch from the checkpoint changes nothing
/// already written and completes the rest.
#[sqlx::test(migrations = "../migrations")]
async fn a_partly_applied_batch_replays_to_the_same_views(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    scripted_history(&env).await;
    let head = env.events().head().await;
    env.catch_up_all().await;
    let whole = all_docs(&env, 1).await;
    for (&view, docs) in View::ALL.iter().zip(&whole) {
        // What one batch over the whole log may leave: every other document (side documents
        // included) at its final state, and no checkpoint.
        let part: Vec<_> = docs.iter().step_by(2).cloned().collect();
        assert!(!part.is_empty(), "{view}");
        env.mongo
            .collection::<mongodb::bson::Document>(&view.collection(2))
            .insert_many(part)
            .await
            .unwrap();
        assert_eq!(
            env.projector
                .engine
                .views
                .checkpoint(view, 2)
                .await
                .unwrap(),
            Position::ZERO
        );
        let reached = env.projector.catch_up(view, 2, head).await.unwrap();
        assert!(reached >= head, "{view}");
    }
    assert_eq!(all_docs(&env, 2).await, whole);
    env.cleanup().await;
}

/// The runners' shared tail reader: a read serves every suffix of itself, concurrent readers
/// at the end share one read, and what is appended later is read, not missed.
#[sqlx::test(migrations = "../migrations")]
async fn the_shared_tail_serves_suffixes_of_one_read(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    scripted_history(&env).await;
    let tail = projector::tail::SharedTail::new();
    let positions = |rows: &[event_store::TailRow]| {
        rows.iter()
            .map(|r| match r {
                Ok(e) => e.position,
                Err(u) => u.position,
            })
            .collect::<Vec<_>>()
    };
    let direct = env
        .store
        .read_committed_after(Position::ZERO, 500)
        .await
        .unwrap();
    assert!(direct.len() > 3);
    let first = tail
        .read_after(&env.store, Position::ZERO, 500)
        .await
        .unwrap();
    assert_eq!(positions(&first), positions(&direct));
    let mid = positions(&direct)[2];
    let suffix = tail.read_after(&env.store, mid, 2).await.unwrap();
    let from_mid = env.store.read_committed_after(mid, 2).await.unwrap();
    assert_eq!(positions(&suffix), positions(&from_mid));
    assert_eq!(tail.reads(), 1, "served from the first read");

    let end = *positions(&direct).last().unwrap();
    // Six runners at the end at once, as after a wake-up: they share the reads (normally one;
    // a runner that looks only after the first read ended reads again).
    let read = || tail.read_after(&env.store, end, 500);
    let at_end = tokio::join!(read(), read(), read(), read(), read(), read());
    let at_end = [at_end.0, at_end.1, at_end.2, at_end.3, at_end.4, at_end.5];
    assert!(at_end.into_iter().all(|r| r.unwrap().is_empty()));
    // How many reads six concurrent runners share is not asserted: under the full parallel
    // suite it was once 3 of 6 for a reason not yet found (issue 16's note); never more than
    // one per runner, which is what single flight promises at worst.
    assert!(
        tail.reads() - 1 <= 6,
        "{} reads for six runners",
        tail.reads() - 1
    );

    env.stock("sku-later", 1).await;
    let later = tail.read_after(&env.store, end, 500).await.unwrap();
    assert!(!later.is_empty(), "an empty read is not kept as the answer");
    env.cleanup().await;
}

/// The scripted history, and the log it wrote as one tail read.
async fn scripted_log(pool: PgPool) -> (TestEnv, Vec<event_store::TailRow>) {
    let env = TestEnv::new(pool).await;
    scripted_history(&env).await;
    let rows = env
        .store
        .read_committed_after(Position::ZERO, 500)
        .await
        .unwrap();
    (env, rows)
}

/// Order facts kept between batches give every batch exactly what reading the orders'
/// histories gives, at every split of the log into two batches, also when a batch is
/// enriched again after the cache moved past it (a retried batch).
#[sqlx::test(migrations = "../migrations")]
async fn kept_order_facts_equal_the_histories_they_replace(pool: PgPool) {
    use projector::context::{Enriched, FactsCache, enrich};
    let (env, rows) = scripted_log(pool).await;
    let facts = |out: Vec<Result<Enriched, projector::context::Poison>>| {
        out.into_iter()
            .map(|r| {
                let e = r.expect("the scripted history is readable");
                (e.event.position, e.before, e.after)
            })
            .collect::<Vec<_>>()
    };
    for split in 1..rows.len() {
        let (first, second) = (rows[..split].to_vec(), rows[split..].to_vec());
        let cache = FactsCache::default();
        enrich(&env.store, &cache, first, &mut None).await.unwrap();
        let read = facts(
            enrich(
                &env.store,
                &FactsCache::default(),
                second.clone(),
                &mut None,
            )
            .await
            .unwrap(),
        );
        let kept = facts(
            enrich(&env.store, &cache, second.clone(), &mut None)
                .await
                .unwrap(),
        );
        assert_eq!(kept, read, "split at {split}");
        let again = facts(enrich(&env.store, &cache, second, &mut None).await.unwrap());
        assert_eq!(again, read, "split at {split}, enriched again");
    }
    env.cleanup().await;
}

/// MongoDB requests per batch: the `find` of the touched documents and one `update` carrying
/// the writes and the checkpoint (it was three: find, update, checkpoint).
#[sqlx::test(migrations = "../migrations")]
async fn a_batch_is_two_requests(pool: PgPool) {
    let (env, rows) = scripted_log(pool).await;
    let engine = &env.projector.engine;
    let applied = engine
        .apply_batch::<OrdersProjection>(1, Position::ZERO.into(), rows)
        .await
        .unwrap();
    let projector::engine::BatchOutcome::Applied {
        round_trips,
        checkpoint,
        ..
    } = applied
    else {
        panic!("{applied:?}");
    };
    assert_eq!(round_trips, 2);
    assert_eq!(
        engine.views.progress(View::Orders, 1).await.unwrap(),
        checkpoint
    );
    env.cleanup().await;
}
