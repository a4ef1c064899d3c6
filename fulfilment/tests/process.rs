//! The fulfilment process end to end: checkout → charge → paid or cancelled, refunds,
//! outages and timeouts, deadlines of finished processes, and a standby taking over.

mod common;

use std::time::Duration;

use common::{Shop, Tuning, eventually};
use serde_json::json;
use sqlx::PgPool;

const WITHIN: Duration = Duration::from_secs(30);

#[sqlx::test(migrations = "../migrations")]
async fn visa_is_paid_and_a_declined_card_cancels_with_its_stock_back(pool: PgPool) {
    let shop = Shop::open(pool).await;
    shop.product("mug", 1250, 10).await;
    let _f = shop.fulfilment(&Tuning::default());

    let paid = shop.checkout("alice", &[("mug", 2)], "pm_card_visa").await;
    let declined = shop
        .checkout("bob", &[("mug", 3)], "pm_card_chargeDeclined")
        .await;
    let short = shop
        .checkout(
            "carol",
            &[("mug", 1)],
            "pm_card_chargeDeclinedInsufficientFunds",
        )
        .await;
    shop.reaches(&paid, "paid", WITHIN).await;
    shop.reaches(&declined, "cancelled", WITHIN).await;
    shop.reaches(&short, "cancelled", WITHIN).await;

    let order = shop.order(&paid).await;
    assert_eq!(order["paymentStatus"], "captured");
    assert!(
        order["paymentIntentId"]
            .as_str()
            .unwrap()
            .starts_with("pi_")
    );
    let order = shop.order(&declined).await;
    assert_eq!(order["paymentStatus"], "declined");
    assert_eq!(order["cancelReason"], "payment_declined");
    assert_eq!(
        shop.events_of(&declined).await,
        [
            "OrderCreated",
            "OrderConfirmed",
            "PaymentDeclined",
            "OrderCancelled"
        ]
    );
    // Only alice's two mugs stay promised.
    assert_eq!(shop.available("mug").await, 8);

    let money = shop.money_by_order().await;
    assert_eq!(money.get(&paid), Some(&(1, 0)));
    assert_eq!(money.get(&declined), None, "no successful charge");

    eventually(WITHIN, "all mail sent", || shop.settled()).await;
    let mail = shop.mail_about(&paid);
    let subjects: Vec<&str> = mail.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(mail.len(), 2, "{subjects:?}");
    assert!(
        subjects
            .iter()
            .any(|s| s.starts_with("We received your order"))
    );
    assert!(subjects.iter().any(|s| s.starts_with("Payment received")));
    assert!(mail.iter().all(|m| m.to == ["alice@shop.example"]));
    assert!(mail.iter().all(|m| {
        m.message_id
            .as_deref()
            .is_some_and(|id| id.ends_with("@order-backend"))
    }));
    let mail = shop.mail_about(&declined);
    assert_eq!(mail.len(), 2);
    assert!(mail.iter().any(|m| m.subject.starts_with("Payment failed")));
    assert!(mail.iter().any(|m| m.body.contains("declined")));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_paid_order_that_is_cancelled_is_refunded_exactly_once(pool: PgPool) {
    let shop = Shop::open(pool).await;
    shop.product("lamp", 4000, 5).await;
    let _f = shop.fulfilment(&Tuning::default());
    let id = shop.checkout("dana", &[("lamp", 1)], "pm_card_visa").await;
    shop.reaches(&id, "paid", WITHIN).await;

    let r = shop
        .command(&id, "cancel", Some(json!({"reason": "changed my mind"})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    eventually(WITHIN, "the refund recorded", || async {
        shop.order(&id).await["paymentStatus"] == "refunded"
    })
    .await;
    assert_eq!(shop.available("lamp").await, 5);
    assert_eq!(shop.money_by_order().await.get(&id), Some(&(1, 1)));
    let ledger = shop.ledger().await;
    assert_eq!(ledger["refunds"][0]["amount"], 4000);

    eventually(WITHIN, "all mail sent", || shop.settled()).await;
    let subjects: Vec<String> = shop
        .mail_about(&id)
        .into_iter()
        .map(|m| m.subject)
        .collect();
    assert_eq!(
        subjects.len(),
        4,
        "received, paid, cancelled, refunded: {subjects:?}"
    );
    assert!(subjects.iter().any(|s| s.starts_with("Refund for order")));
}

#[sqlx::test(migrations = "../migrations")]
async fn charges_wait_out_a_thirty_second_outage_and_succeed_once_it_ends(pool: PgPool) {
    let shop = Shop::open(pool).await;
    shop.product("pen", 300, 10).await;
    shop.set_mode("unavailable").await;
    let f = shop.fulfilment(&Tuning::default());
    let mut orders = Vec::new();
    for i in 0..5 {
        orders.push(
            shop.checkout(&format!("erin{i}"), &[("pen", 1)], "pm_card_visa")
                .await,
        );
    }
    // The outage is the scenario: the provider answers 503 for 30 s.
    let outage = std::time::Instant::now();
    eventually(
        WITHIN,
        "every charge refused at least three times",
        || async {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from fulfilment_outbox where kind = 'charge' and attempts >= 3",
            )
            .fetch_one(&shop.pool)
            .await
            .unwrap()
                == 5
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    for id in &orders {
        assert_eq!(
            shop.status(id).await,
            "confirmed",
            "still waiting for its payment"
        );
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", f.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "fulfilment_lag_events",
        "fulfilment_work_waiting",
        "fulfilment_work_retries_total",
        "fulfilment_provider_errors_total",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }
    shop.set_mode("normal").await;
    let money = || shop.money_by_order();
    for id in &orders {
        shop.reaches(id, "paid", WITHIN).await;
    }
    let money = money().await;
    for id in &orders {
        assert_eq!(money.get(id), Some(&(1, 0)), "one charge for {id}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn an_outage_past_the_payment_timeout_cancels_once_and_charges_nothing(pool: PgPool) {
    let shop = Shop::open(pool).await;
    shop.product("cup", 700, 4).await;
    shop.set_mode("unavailable").await;
    let tuning = Tuning {
        payment_timeout: "1500ms",
        ..Tuning::default()
    };
    let _f = shop.fulfilment(&tuning);
    let id = shop.checkout("fay", &[("cup", 2)], "pm_card_visa").await;
    shop.reaches(&id, "cancelled", WITHIN).await;
    assert_eq!(shop.order(&id).await["cancelReason"], "payment_timeout");
    assert_eq!(shop.available("cup").await, 4);
    // The provider comes back: the dropped charge stays dropped.
    shop.set_mode("normal").await;
    eventually(WITHIN, "outbox drained", || shop.settled()).await;
    assert_eq!(shop.money_by_order().await.get(&id), None);
    let subjects: Vec<String> = shop
        .mail_about(&id)
        .into_iter()
        .map(|m| m.subject)
        .collect();
    let cancellations = subjects.iter().filter(|s| s.contains("cancelled")).count();
    assert_eq!(cancellations, 1, "{subjects:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_provider_that_hangs_past_the_timeout_is_asked_before_the_order_is_let_go(pool: PgPool) {
    let shop = Shop::open(pool).await;
    shop.product("hat", 900, 3).await;
    shop.set_mode("hang").await;
    let tuning = Tuning {
        payment_timeout: "1500ms",
        request_timeout: "300ms",
    };
    let _f = shop.fulfilment(&tuning);
    let id = shop.checkout("gus", &[("hat", 1)], "pm_card_visa").await;
    shop.reaches(&id, "cancelled", WITHIN).await;
    assert_eq!(shop.available("hat").await, 3);
    // The charge's answer was lost: once the provider answers again, the process asks it
    // whether the charge went through (it did not) instead of charging.
    shop.set_mode("normal").await;
    eventually(WITHIN, "the charge settled", || shop.settled()).await;
    let (status, unknown): (String, bool) = sqlx::query_as(
        "select status, outcome_unknown from fulfilment_outbox where kind = 'charge'",
    )
    .fetch_one(&shop.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), unknown), ("cancelled", true));
    assert_eq!(shop.money_by_order().await.get(&id), None);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_deadline_of_a_finished_process_does_nothing(pool: PgPool) {
    let shop = Shop::open(pool).await;
    shop.product("box", 100, 2).await;
    let f = shop.fulfilment(&Tuning::default());
    let id = shop.checkout("hal", &[("box", 1)], "pm_card_visa").await;
    shop.reaches(&id, "paid", WITHIN).await;
    let events = shop.events_of(&id).await;
    // The paid process's timeout, as if it had not been cancelled and were now due.
    let revived = sqlx::query(
        "update fulfilment_deadlines set status = 'pending', due_at = now() - interval '1 second'",
    )
    .execute(&shop.pool)
    .await
    .unwrap();
    assert_eq!(revived.rows_affected(), 1);
    eventually(WITHIN, "the deadline handled", || async {
        sqlx::query_scalar::<_, String>("select status from fulfilment_deadlines")
            .fetch_one(&shop.pool)
            .await
            .unwrap()
            != "pending"
    })
    .await;
    let status: String = sqlx::query_scalar("select status from fulfilment_deadlines")
        .fetch_one(&shop.pool)
        .await
        .unwrap();
    assert_eq!(status, "cancelled", "moot, not fired");
    assert_eq!(shop.events_of(&id).await, events, "nothing appended");
    assert_eq!(shop.status(&id).await, "paid");
    f.kill().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_standby_takes_over_when_the_leader_dies(pool: PgPool) {
    let shop = Shop::open(pool).await;
    shop.product("key", 250, 5).await;
    let first = shop.fulfilment(&Tuning::default());
    eventually(WITHIN, "the first instance leads", || first.is_leader()).await;
    let second = shop.fulfilment(&Tuning::default());
    eventually(WITHIN, "the second instance answers", || async {
        reqwest::get(format!("http://127.0.0.1:{}/health/live", second.port))
            .await
            .is_ok()
    })
    .await;
    assert!(!second.is_leader().await, "one leader at a time");
    first.kill().await;
    eventually(WITHIN, "the standby leads", || second.is_leader()).await;
    let id = shop.checkout("ivy", &[("key", 1)], "pm_card_visa").await;
    shop.reaches(&id, "paid", WITHIN).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn shipping_and_delivery_are_mailed_with_the_tracking_number(pool: PgPool) {
    let shop = Shop::open(pool).await;
    shop.product("rug", 8000, 1).await;
    let _f = shop.fulfilment(&Tuning::default());
    let id = shop.checkout("jo", &[("rug", 1)], "pm_card_visa").await;
    shop.reaches(&id, "paid", WITHIN).await;
    let r = shop
        .command(
            &id,
            "ship",
            Some(json!({"carrier": "DHL", "trackingNumber": "JD014600"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = shop.command(&id, "deliver", None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    eventually(WITHIN, "four messages", || async {
        shop.mail_about(&id).len() == 4
    })
    .await;
    let mail = shop.mail_about(&id);
    let shipped = mail
        .iter()
        .find(|m| m.subject.contains("has shipped"))
        .unwrap();
    assert!(shipped.body.contains("DHL, tracking number JD014600"));
    assert!(mail.iter().any(|m| m.subject.contains("was delivered")));
}
