//! The crash test: 200 orders through checkout with a mix of payment methods, some
//! cancelled by their customer (while the charge is on its way, or once paid), the
//! provider down for a while in the middle, and the fulfilment process killed with SIGKILL
//! at random moments, at least 20 times, and restarted. Afterwards every order is paid or
//! cancelled with its stock released; the provider's ledger shows at most one successful
//! charge per order and a refund exactly for each charged order that ended cancelled;
//! every expected email is in the mailbox.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Shop, Tuning, eventually};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Mutex;

const ORDERS: usize = 200;
const MIN_KILLS: usize = 20;
const PRODUCTS: [(&str, i64); 4] = [
    ("p-red", 1250),
    ("p-green", 499),
    ("p-blue", 10_000),
    ("p-grey", 1),
];
const STOCK: i64 = 1_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Plan {
    /// Paid and kept.
    Keep,
    /// Declined by the provider.
    Declined,
    /// Cancelled by the customer right after checkout, racing the charge.
    CancelAtOnce,
    /// Cancelled by the customer once paid: refunded.
    CancelWhenPaid,
}

fn method(plan: Plan, i: usize) -> &'static str {
    match plan {
        Plan::Declined if i.is_multiple_of(2) => "pm_card_chargeDeclined",
        Plan::Declined => "pm_card_chargeDeclinedInsufficientFunds",
        _ => "pm_card_visa",
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn no_crash_charges_twice_loses_a_step_or_strands_stock(pool: PgPool) {
    let shop = Arc::new(Shop::open(pool).await);
    for (p, cents) in PRODUCTS {
        shop.product(p, cents, STOCK).await;
    }
    let tuning = Tuning {
        payment_timeout: "10m",
        request_timeout: "1s",
    };
    let current = Arc::new(Mutex::new(Some(shop.fulfilment(&tuning))));
    let driving = Arc::new(AtomicBool::new(true));

    // SIGKILL at random moments, restarting at once, until the orders are in and at least
    // MIN_KILLS kills happened.
    let killer = {
        let (shop, current, driving) = (shop.clone(), current.clone(), driving.clone());
        tokio::spawn(async move {
            let mut kills = 0;
            while kills < MIN_KILLS || driving.load(Ordering::SeqCst) {
                // A random moment of the instance's life: starting, catching up, mid-charge.
                tokio::time::sleep(Duration::from_millis(fastrand::u64(100..1200))).await;
                let mut slot = current.lock().await;
                if let Some(f) = slot.take() {
                    f.kill().await;
                    kills += 1;
                }
                *slot = Some(shop.fulfilment(&tuning));
            }
            kills
        })
    };

    let mut plans = BTreeMap::new();
    let mut lines_of = BTreeMap::new();
    let mut cancel_when_paid = Vec::new();
    for i in 0..ORDERS {
        if i == ORDERS * 3 / 10 {
            shop.set_mode("unavailable").await;
        }
        if i == ORDERS * 6 / 10 {
            shop.set_mode("normal").await;
        }
        let plan = match i % 10 {
            0 | 5 => Plan::Declined,
            3 => Plan::CancelAtOnce,
            7 => Plan::CancelWhenPaid,
            _ => Plan::Keep,
        };
        let lines: Vec<(&str, i64)> = (0..1 + i % 3)
            .map(|k| {
                (
                    PRODUCTS[(i + k) % PRODUCTS.len()].0,
                    1 + ((i + k) % 4) as i64,
                )
            })
            .collect();
        let id = shop
            .checkout(&format!("user{}", i % 37), &lines, method(plan, i))
            .await;
        if plan == Plan::CancelAtOnce {
            let r = shop
                .command(&id, "cancel", Some(json!({"reason": "too slow"})))
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
        if plan == Plan::CancelWhenPaid {
            cancel_when_paid.push(id.clone());
        }
        plans.insert(id.clone(), plan);
        lines_of.insert(id, lines);
        // Pacing, so that the kills land throughout the run.
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    for id in &cancel_when_paid {
        shop.reaches(id, "paid", Duration::from_secs(120)).await;
        let r = shop
            .command(id, "cancel", Some(json!({"reason": "changed my mind"})))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    driving.store(false, Ordering::SeqCst);
    let kills = killer.await.expect("the killer");
    assert!(kills >= MIN_KILLS, "{kills} kills");

    // Settle with the last instance running.
    eventually(
        Duration::from_secs(180),
        "every order settled and the outbox empty",
        || async {
            if !shop.settled().await {
                return false;
            }
            for id in plans.keys() {
                let o = shop.order(id).await;
                let settled = match o["status"].as_str() {
                    Some("paid") => true,
                    Some("cancelled") => o["paymentStatus"] != "captured",
                    _ => false,
                };
                if !settled {
                    return false;
                }
            }
            true
        },
    )
    .await;

    let money = shop.money_by_order().await;
    let mut paid = 0;
    let mut expected_available: BTreeMap<&str, i64> =
        PRODUCTS.iter().map(|&(p, _)| (p, STOCK)).collect();
    for (id, plan) in &plans {
        let o = shop.order(id).await;
        let status = o["status"].as_str().unwrap_or_default();
        let (charges, refunds) = money.get(id).copied().unwrap_or((0, 0));
        assert!(charges <= 1, "order {id}: {charges} successful charges");
        match status {
            "paid" => {
                assert_eq!((charges, refunds), (1, 0), "order {id} paid");
                assert_eq!(*plan, Plan::Keep, "order {id} should not be paid");
                paid += 1;
                for (p, q) in &lines_of[id] {
                    *expected_available.get_mut(p).unwrap() -= q;
                }
            }
            "cancelled" => {
                assert_eq!(
                    charges, refunds,
                    "order {id} cancelled: every charge refunded"
                );
                assert_ne!(*plan, Plan::Keep, "order {id} should not be cancelled");
                if *plan == Plan::CancelWhenPaid {
                    assert_eq!((charges, refunds), (1, 1), "order {id} refunded once");
                }
                if *plan == Plan::Declined {
                    assert_eq!(o["cancelReason"], "payment_declined");
                }
            }
            other => panic!("order {id} ended {other}"),
        }
    }
    for (p, want) in &expected_available {
        assert_eq!(shop.available(p).await, *want, "available units of {p}");
    }

    // Every message the log calls for, once; a copy after a kill would carry the same
    // Message-ID (at-least-once outside).
    let rows: Vec<(String, uuid::Uuid, String)> = sqlx::query_as(
        "select stream_id, event_id, event_type from events
         where stream_id like 'order-%' order by stream_id, stream_position",
    )
    .fetch_all(&shop.pool)
    .await
    .unwrap();
    let mut expected = BTreeSet::new();
    let mut cancelled = BTreeSet::new();
    for (stream, event_id, event_type) in rows {
        let kind = match event_type.as_str() {
            "OrderConfirmed" => "received",
            "PaymentCaptured" if !cancelled.contains(&stream) => "paid",
            "OrderCancelled" => {
                cancelled.insert(stream.clone());
                "cancelled"
            }
            "PaymentRefunded" => "refunded",
            _ => continue,
        };
        expected.insert(format!("{event_id}.{kind}@order-backend"));
    }
    let received: Vec<String> = shop
        .mail
        .messages()
        .into_iter()
        .filter_map(|m| m.message_id)
        .collect();
    let distinct: BTreeSet<String> = received.iter().cloned().collect();
    let duplicates = received.len() - distinct.len();
    eprintln!(
        "crash test: {kills} kills, {} messages, {duplicates} duplicates, {paid} orders paid, {} refunds",
        received.len(),
        money.values().map(|(_, r)| r).sum::<usize>()
    );
    let missing: Vec<_> = expected.difference(&distinct).collect();
    let unexpected: Vec<_> = distinct.difference(&expected).collect();
    assert!(missing.is_empty(), "missing messages: {missing:?}");
    assert!(unexpected.is_empty(), "unexpected messages: {unexpected:?}");
    // SMTP has no two-phase commit: a message whose last bytes left before the kill is stored
    // by the server though the process never heard its 250, and is sent again (with the
    // same Message-ID), at most once per piece of work in flight (16) per kill.
    assert!(duplicates <= 16 * kills, "{duplicates} duplicate messages");
}
