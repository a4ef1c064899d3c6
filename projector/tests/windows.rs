//! The event-time views, `sales_by_minute` and `alerts`, against real PostgreSQL and a real
//! MongoDB wire-protocol server. Each test writes commands as the services do and then
//! gives every event a chosen `recorded_at`, so event time (and its disorder) is the test's.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, DurationRound, TimeZone, Utc};
use common::{TestEnv, create, int, line};
use domain::OrderId;
use mongodb::bson::{Bson, Document};
use projector::for_view;
use projector::projections::View;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const GRACE: i64 = 10;

/// Writes commands and dates their events: everything a command appends gets `at`.
struct Clock<'a> {
    env: &'a TestEnv,
    seen: i64,
    /// The log's event time after each dated command, as the projector must compute it.
    watermark: Option<DateTime<Utc>>,
}

impl<'a> Clock<'a> {
    fn new(env: &'a TestEnv) -> Self {
        Clock {
            env,
            seen: 0,
            watermark: None,
        }
    }

    /// Gives the events appended since the last call the time `at`; returns the log's
    /// event time just before them.
    async fn date(&mut self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "update events set recorded_at = $1 where global_position > $2 returning global_position",
        )
        .bind(at)
        .bind(self.seen)
        .fetch_all(&self.env.pool)
        .await
        .unwrap();
        assert!(!rows.is_empty(), "the command appended nothing");
        self.seen = rows.iter().map(|r| r.0).max().unwrap_or(self.seen);
        let before = self.watermark;
        self.watermark = Some(before.map_or(at, |w| w.max(at)));
        before
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap()
}

fn minute_id(at: DateTime<Utc>) -> String {
    let m = at.duration_trunc(Duration::minutes(1)).unwrap();
    format!("minute:{}", m.format("%Y-%m-%dT%H:%M"))
}

fn hour_id(at: DateTime<Utc>) -> String {
    let h = at.duration_trunc(Duration::hours(1)).unwrap();
    format!("hour:{}", h.format("%Y-%m-%dT%H"))
}

/// What a window must show, computed from the commands the test ran.
#[derive(Debug, Default, Clone, PartialEq)]
struct Expected {
    placed: i64,
    confirmed: i64,
    cancelled: i64,
    paid: i64,
    revenue: i64,
    units: i64,
    customers: BTreeSet<String>,
    events: i64,
    out_of_order: i64,
    late: i64,
}

#[derive(Clone, Copy)]
enum Step {
    Placed,
    Confirmed,
    Cancelled,
    Paid { cents: i64, units: i64 },
}

#[derive(Default)]
struct Model {
    windows: BTreeMap<String, Expected>,
}

impl Model {
    fn count(&mut self, at: DateTime<Utc>, before: Option<DateTime<Utc>>, user: &str, step: Step) {
        let minute_end = at.duration_trunc(Duration::minutes(1)).unwrap() + Duration::minutes(1);
        let hour_end = at.duration_trunc(Duration::hours(1)).unwrap() + Duration::hours(1);
        for (id, end) in [(minute_id(at), minute_end), (hour_id(at), hour_end)] {
            let w = self.windows.entry(id).or_default();
            w.events += 1;
            if before.is_some_and(|b| at < b) {
                w.out_of_order += 1;
            }
            if before.is_some_and(|b| b >= end + Duration::seconds(GRACE)) {
                w.late += 1;
            }
            match step {
                Step::Placed => {
                    w.placed += 1;
                    w.customers.insert(user.to_owned());
                }
                Step::Confirmed => w.confirmed += 1,
                Step::Cancelled => w.cancelled += 1,
                Step::Paid { cents, units } => {
                    w.paid += 1;
                    w.revenue += cents;
                    w.units += units;
                }
            }
        }
    }
}

fn shown(d: &Document) -> Expected {
    let customers = d
        .get_array("customers")
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(int(d, "netRevenueCents"), int(d, "revenueCents"));
    assert_eq!(
        int(d, "distinctCustomers"),
        d.get_array("customers").unwrap().len() as i64
    );
    Expected {
        placed: int(d, "ordersPlaced"),
        confirmed: int(d, "ordersConfirmed"),
        cancelled: int(d, "ordersCancelled"),
        paid: int(d, "ordersPaid"),
        revenue: int(d, "revenueCents"),
        units: int(d, "unitsSold"),
        customers,
        events: int(d, "events"),
        out_of_order: int(d, "outOfOrderEvents"),
        late: int(d, "lateEvents"),
    }
}

/// A small deterministic generator, so a failure replays.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Every minute and hour window equals the figures of the commands that fell in it, by event
/// time: orders committed out of order revise the older window (counted as out of order), and
/// those that come after the window was final are counted too, as late. A rebuild reproduces
/// both event-time views document for document.
#[sqlx::test(migrations = "../migrations")]
async fn windows_are_exact_and_late_events_revise_their_window(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let mut clock = Clock::new(&env);
    let mut model = Model::default();
    let mut rng = Lcg(15);
    env.stock("x", 100_000).await;
    clock.date(t0() - Duration::minutes(5)).await;

    let mut now = t0();
    for i in 0..90 {
        let user = format!("u{}", rng.below(25));
        let qty = 1 + rng.below(3) as i64;
        let price = 100 + 10 * rng.below(50) as i64;
        // Mostly forward, sometimes a transaction that began earlier commits now: up to 25 s
        // back, past a minute's end plus the grace now and then.
        now += Duration::seconds(rng.below(9) as i64);
        let at = if rng.below(5) == 0 {
            now - Duration::seconds(rng.below(26) as i64)
        } else {
            now
        };
        let id = OrderId::new();
        env.order(id, create(id, &user, vec![line("x", qty, price)]))
            .await;
        let before = clock.date(at).await;
        model.count(at, before, &user, Step::Placed);
        if i % 3 == 0 {
            continue;
        }
        let at = at + Duration::seconds(rng.below(20) as i64);
        env.events().confirm(id).await;
        let before = clock.date(at).await;
        model.count(at, before, &user, Step::Confirmed);
        match i % 4 {
            0 => {
                env.events().try_cancel(id, None).await.unwrap();
                let before = clock.date(at + Duration::seconds(3)).await;
                model.count(at + Duration::seconds(3), before, &user, Step::Cancelled);
            }
            1 | 2 => {
                env.events().pay(id).await;
                let before = clock.date(at + Duration::seconds(1)).await;
                let step = Step::Paid {
                    cents: qty * price,
                    units: qty,
                };
                model.count(at + Duration::seconds(1), before, &user, step);
            }
            _ => {}
        }
    }
    env.catch_up_all().await;

    let docs = env.docs(View::SalesByMinute, 1).await;
    let got: BTreeMap<String, Expected> = docs
        .iter()
        .map(|d| (d.get_str("_id").unwrap().to_owned(), shown(d)))
        .collect();
    assert_eq!(got, model.windows);
    let late: i64 = got
        .iter()
        .filter(|(k, _)| k.starts_with("minute:"))
        .map(|(_, w)| w.late)
        .sum();
    let out_of_order: i64 = got.values().map(|w| w.out_of_order).sum();
    assert!(late > 0, "the scenario has late events");
    assert!(out_of_order > late, "and out-of-order ones not late");

    // Bounds and the grace are on each window.
    let first = docs
        .iter()
        .find(|d| d.get_str("window") == Ok("minute"))
        .unwrap();
    let start = first.get_datetime("start").unwrap().timestamp_millis();
    assert_eq!(
        first.get_datetime("end").unwrap().timestamp_millis(),
        start + 60_000
    );
    assert_eq!(
        first.get_datetime("finalAt").unwrap().timestamp_millis(),
        start + 60_000 + GRACE * 1000
    );

    // The checkpoint carries the log's event time.
    let progress = env
        .projector
        .engine
        .views
        .progress(View::SalesByMinute, 1)
        .await
        .unwrap();
    assert_eq!(progress.watermark, clock.watermark);

    let before = (
        env.docs(View::SalesByMinute, 1).await,
        env.docs(View::Alerts, 1).await,
    );
    rebuild_event_time_views(&env).await;
    let after = (
        env.docs(View::SalesByMinute, 2).await,
        env.docs(View::Alerts, 2).await,
    );
    assert_eq!(after, before, "a rebuild reproduces windows and alerts");
    env.cleanup().await;
}

async fn rebuild_event_time_views(env: &TestEnv) {
    let cancel = CancellationToken::new();
    for name in [View::SalesByMinute, View::Alerts] {
        let report = for_view!(
            name,
            projector::rebuild::rebuild(&env.projector, false, &cancel)
        )
        .unwrap();
        assert_eq!(report.generation, 2);
    }
}

/// The alert documents of `subject` (all subjects with `None`), oldest first.
async fn alerts_for(env: &TestEnv, subject: Option<&str>) -> Vec<Document> {
    let mut alerts: Vec<Document> = env
        .docs(View::Alerts, 1)
        .await
        .into_iter()
        .filter(|d| d.contains_key("rule"))
        .filter(|d| subject.is_none_or(|s| d.get_str("subject") == Ok(s)))
        .collect();
    alerts.sort_by_key(|a| a.get_datetime("openedAt").unwrap().timestamp_millis());
    alerts
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// Places `n` orders, each from a new customer, spread over the minute starting at `minute`.
async fn minute_of_orders(
    env: &TestEnv,
    clock: &mut Clock<'_>,
    minute: DateTime<Utc>,
    n: i64,
    seq: &mut i64,
) {
    for k in 0..n {
        *seq += 1;
        let id = OrderId::new();
        env.order(id, create(id, &format!("c{seq}"), vec![line("x", 1, 500)]))
            .await;
        clock
            .date(minute + Duration::milliseconds(k * 59_000 / n))
            .await;
    }
}

/// A spike of orders opens exactly one alert after two spiking minutes and closes it after
/// two ordinary ones, at those minutes' ends (event time), with the figures that triggered
/// it; the baseline does not learn the spike, so the return to normal opens no drop. Quiet
/// minutes are judged too: a silent shop opens a drop. A rebuild gives the same alerts, ids
/// and times included.
#[sqlx::test(migrations = "../migrations")]
async fn a_spike_opens_and_then_closes_exactly_one_alert(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let mut clock = Clock::new(&env);
    let mut seq = 0;
    let minute = |m: i64| t0() + Duration::minutes(m);
    // 20 ordinary minutes at 6 orders, 3 at 30, then 6 at 6 again.
    let plan: Vec<i64> = (0..20)
        .map(|_| 6)
        .chain([30, 30, 30])
        .chain((0..6).map(|_| 6))
        .collect();
    for (m, &n) in plan.iter().enumerate() {
        minute_of_orders(&env, &mut clock, minute(m as i64), n, &mut seq).await;
        if m == 21 || m == 22 {
            // Minute 21 is final once minute 22 is under way: then, and not before, the
            // second spiking minute opens the alert.
            env.catch_up_all().await;
            let open = alerts_for(&env, Some("shop")).await;
            assert_eq!(open.len(), usize::from(m == 22), "{open:?}");
            if let Some(a) = open.first() {
                assert!(matches!(a.get("closedAt"), None | Some(Bson::Null)), "{a}");
            }
        }
    }
    env.catch_up_all().await;

    // Nobody ordered twice, nothing was paid: no customer alert, no revenue rule.
    let alerts = alerts_for(&env, None).await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.get_str("rule").unwrap(), "orders_spike");
    assert_eq!(a.get_str("subject").unwrap(), "shop");
    // Opened at the end of the second spiking minute (minute 21), closed at the end of the
    // second ordinary one after it (minute 24).
    let opened = minute(22);
    let closed = minute(25);
    assert_eq!(
        a.get_str("id").unwrap(),
        format!("orders_spike:shop:{}", millis(opened))
    );
    assert_eq!(
        a.get_datetime("openedAt").unwrap().timestamp_millis(),
        millis(opened)
    );
    assert_eq!(
        a.get_datetime("closedAt").unwrap().timestamp_millis(),
        millis(closed)
    );
    let figures = a.get_document("figures").unwrap();
    assert_eq!(int(figures, "observed"), 30);
    assert_eq!(int(figures, "peak"), 30);
    assert_eq!(int(figures, "baselineMinutes"), 15);
    assert_eq!(int(figures, "baselineTotal"), 15 * 6);
    // The shop's own document keeps only what can still change: no closed alert.
    let shop = env.doc(View::Alerts, "shop").await;
    assert!(shop.get_array("alerts").unwrap().is_empty(), "{shop}");

    // Then the shop goes quiet until one order at minute 40: the empty minutes are judged
    // too, and two of them open a drop at the end of minute 30, still open.
    minute_of_orders(&env, &mut clock, minute(40), 1, &mut seq).await;
    env.catch_up_all().await;
    let alerts = alerts_for(&env, Some("shop")).await;
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let drop = &alerts[1];
    assert_eq!(
        drop.get_str("id").unwrap(),
        format!("orders_drop:shop:{}", millis(minute(31)))
    );
    assert!(matches!(drop.get("closedAt"), None | Some(Bson::Null)));
    assert_eq!(int(drop.get_document("figures").unwrap(), "observed"), 0);

    let before = env.docs(View::Alerts, 1).await;
    rebuild_event_time_views(&env).await;
    assert_eq!(env.docs(View::Alerts, 2).await, before);
    env.cleanup().await;
}

/// The fraud rules: a customer's fifth order within ten minutes opens `order_velocity`
/// (a sixth extends it), a first order of 500.00 or more opens `large_first_order`, and a
/// third declined payment within thirty minutes opens `repeated_declines`. Each closes thirty
/// minutes after its last trigger.
#[sqlx::test(migrations = "../migrations")]
async fn fraud_patterns_open_customer_alerts(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let mut clock = Clock::new(&env);
    env.stock("x", 1_000).await;
    clock.date(t0()).await;

    // Velocity: orders at 0, 2, 4, 6, 8 and 9 minutes.
    for m in [0, 2, 4, 6, 8, 9] {
        let id = OrderId::new();
        env.order(id, create(id, "speedy", vec![line("x", 1, 100)]))
            .await;
        clock.date(t0() + Duration::minutes(m)).await;
    }
    // A big first order, and a small first order (no alert).
    for (user, price) in [("whale", 60_000), ("minnow", 49_999)] {
        let id = OrderId::new();
        env.order(id, create(id, user, vec![line("x", 1, price)]))
            .await;
        clock.date(t0() + Duration::minutes(1)).await;
    }
    // Declines at 10, 20 and 45 minutes: never three within 30 minutes.
    for m in [10, 20, 45] {
        decline_one(&env, &mut clock, t0() + Duration::minutes(m)).await;
    }
    env.catch_up_all().await;

    let speedy = alerts_for(&env, Some("customer:speedy")).await;
    assert_eq!(speedy.len(), 1, "{speedy:#?}");
    let fifth = t0() + Duration::minutes(8);
    assert_eq!(
        speedy[0].get_str("id").unwrap(),
        format!("order_velocity:customer:speedy:{}", millis(fifth))
    );
    assert_eq!(
        speedy[0]
            .get_datetime("closedAt")
            .unwrap()
            .timestamp_millis(),
        millis(t0() + Duration::minutes(9 + 30)),
        "the sixth order extends it"
    );
    assert_eq!(int(speedy[0].get_document("figures").unwrap(), "orders"), 6);

    let whale = alerts_for(&env, Some("customer:whale")).await;
    assert_eq!(whale.len(), 1);
    assert_eq!(whale[0].get_str("rule").unwrap(), "large_first_order");
    assert_eq!(
        int(whale[0].get_document("figures").unwrap(), "totalCents"),
        60_000
    );
    assert!(alerts_for(&env, Some("customer:minnow")).await.is_empty());

    let decliner = alerts_for(&env, Some("customer:decliner")).await;
    assert!(decliner.is_empty(), "{decliner:#?}");
    // A fourth at 50 minutes is the third within 30 (20, 45, 50).
    let third = decline_one(&env, &mut clock, t0() + Duration::minutes(50)).await;
    env.catch_up_all().await;
    let decliner = alerts_for(&env, Some("customer:decliner")).await;
    assert_eq!(decliner.len(), 1, "{decliner:#?}");
    assert_eq!(decliner[0].get_str("rule").unwrap(), "repeated_declines");
    assert_eq!(
        decliner[0]
            .get_datetime("openedAt")
            .unwrap()
            .timestamp_millis(),
        millis(third)
    );
    assert_eq!(
        decliner[0].get("closedAt"),
        Some(&Bson::DateTime(mongodb::bson::DateTime::from_millis(
            millis(third + Duration::minutes(30))
        )))
    );
    env.cleanup().await;
}

/// An order from `decliner`, confirmed and declined; returns the decline's time.
async fn decline_one(env: &TestEnv, clock: &mut Clock<'_>, at: DateTime<Utc>) -> DateTime<Utc> {
    let id = OrderId::new();
    env.order(id, create(id, "decliner", vec![line("x", 1, 100)]))
        .await;
    clock.date(at).await;
    env.events().confirm(id).await;
    clock.date(at).await;
    env.events().decline(id).await;
    let declined = at + Duration::seconds(5);
    clock.date(declined).await;
    declined
}
