//! `alerts`: rules over the event-time minutes and each customer's recent orders, folded from
//! the log alone, so a rebuild reproduces every alert with the same id and times.
//!
//! The shop's document counts each minute's orders and revenue until the log's event time
//! passes the minute's end plus the grace, then judges it once against the baseline (the mean
//! of the latest ordinary minutes) and moves on, minute by minute, quiet minutes included.
//! A rule opens its alert after `consecutive_minutes` minutes that meet it and closes it after
//! as many that clear it (a lower bar: hysteresis), at the end of the deciding minute. Events
//! for a minute already judged are counted (`lateEvents`), not judged again.
//!
//! A customer's document opens fraud alerts at the event that trips them; they close
//! `hold_minutes` after their last trigger, and a new trigger while open extends the alert.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use domain::events::{DomainEvent, OrderEvent};
use mongodb::bson::{self, Document};
use read_model::{Alert, AlertsDoc, CustomerRules, RuleRun, SalesCounts, ShopRules, WindowTally};

use super::daily_sales::tally;
use super::{Projection, Thresholds, date};
use crate::context::{Enriched, advance};

pub struct AlertsProjection;

pub const SHOP: &str = "shop";

fn customer_subject(user: &str) -> String {
    format!("customer:{user}")
}

fn time(d: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(d.timestamp_millis()).unwrap_or_default()
}

fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(Duration::minutes(1)).unwrap_or(at)
}

impl Projection for AlertsProjection {
    type Doc = AlertsDoc;

    fn keys(e: &Enriched) -> Vec<String> {
        // Every event moves the log's event time on, and with it the shop's minutes.
        let mut keys = vec![SHOP.to_owned()];
        if let (
            DomainEvent::Order(OrderEvent::OrderCreated(_) | OrderEvent::PaymentDeclined(_)),
            Some(after),
        ) = (&e.event.event, &e.after)
        {
            keys.push(customer_subject(&after.order.user_id.to_string()));
        }
        keys
    }

    fn apply(doc: &mut AlertsDoc, key: &str, e: &Enriched, rules: &Thresholds) {
        doc.subject = key.to_owned();
        let at = date(e.event.recorded_at);
        let newest = doc.updated_at.map_or(at, |u| u.max(at));
        doc.updated_at = Some(newest);
        let before = doc.alerts.clone();
        if key == SHOP {
            let mut state = doc.shop.take().unwrap_or_default();
            shop(&mut state, &mut doc.alerts, e, rules);
            doc.shop = Some(state);
        } else {
            let mut state = doc.customer.take().unwrap_or_default();
            customer(&mut state, &mut doc.alerts, key, e, rules);
            doc.customer = Some(state);
        }
        for a in &doc.alerts {
            if !before.contains(a) {
                doc.changed.push(a.clone());
            }
        }
        // Keep only what a later event can still change: the shop's open alerts; a
        // customer's alerts that closed less than a day (of event time) before its newest
        // event, for an event that arrives that late.
        let keep_after = time(newest) - Duration::days(1);
        doc.alerts.retain(|a| match a.closed_at {
            None => true,
            Some(c) => key != SHOP && time(c) > keep_after,
        });
    }

    fn side_documents(doc: &mut AlertsDoc) -> Vec<(String, Document)> {
        doc.changed
            .drain(..)
            .filter_map(|a| Some((a.id.clone(), bson::to_document(&a).ok()?)))
            .collect()
    }
}

// ---- the shop: window rules -------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Metric {
    Orders,
    Revenue,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Spike,
    Drop,
}

const WINDOW_RULES: [(&str, Metric, Direction); 4] = [
    ("orders_spike", Metric::Orders, Direction::Spike),
    ("orders_drop", Metric::Orders, Direction::Drop),
    ("revenue_spike", Metric::Revenue, Direction::Spike),
    ("revenue_drop", Metric::Revenue, Direction::Drop),
];

impl Metric {
    fn of(self, t: &WindowTally) -> i64 {
        match self {
            Metric::Orders => t.orders,
            Metric::Revenue => t.revenue_cents,
        }
    }
}

/// One minute judged against the baseline, in integers: `observed * windows` against
/// `factor * total`, so no rate is ever rounded.
struct Judged<'a> {
    minute: &'a WindowTally,
    baseline: &'a [WindowTally],
    rules: &'a Thresholds,
}

impl Judged<'_> {
    fn windows(&self) -> i64 {
        i64::try_from(self.baseline.len()).unwrap_or(i64::MAX)
    }

    fn total(&self, metric: Metric) -> i64 {
        self.baseline.iter().map(|t| metric.of(t)).sum()
    }

    /// Whether the minute meets the rule (`factor` is the opening or the clearing bar).
    fn meets(&self, metric: Metric, direction: Direction, factor: i64) -> bool {
        let n = self.windows();
        let observed = metric.of(self.minute).saturating_mul(n);
        let total = self.total(metric);
        let min = self.rules.min_orders_per_minute;
        // A rate of nothing is no news: a spike needs something in the minute, a drop
        // something in the baseline, and both the order volume that makes rates meaningful.
        match direction {
            Direction::Spike => {
                self.minute.orders >= min
                    && observed > 0
                    && observed >= factor.saturating_mul(total)
            }
            Direction::Drop => {
                self.total(Metric::Orders) >= min.saturating_mul(n)
                    && total > 0
                    && observed.saturating_mul(factor) <= total
            }
        }
    }
}

fn shop(state: &mut ShopRules, alerts: &mut Vec<Alert>, e: &Enriched, rules: &Thresholds) {
    let at = e.event.recorded_at;
    let mut sales = SalesCounts::default();
    if tally(&mut sales, e) {
        let minute = minute_of(at);
        let next = *state.next_window.get_or_insert(date(minute));
        if date(minute) < next {
            state.late_events += 1;
        } else {
            let slot = match state
                .pending
                .binary_search_by_key(&Some(date(minute)), |t| t.start)
            {
                Ok(i) => i,
                Err(i) => {
                    state.pending.insert(
                        i,
                        WindowTally {
                            start: Some(date(minute)),
                            ..WindowTally::default()
                        },
                    );
                    i
                }
            };
            state.pending[slot].orders += sales.orders_placed;
            state.pending[slot].revenue_cents += sales.revenue_cents;
        }
    }

    // Judge every minute the log's event time (after this event) has made final.
    let Some(watermark) = advance(e.watermark, at) else {
        return;
    };
    while let Some(next) = state.next_window.map(time) {
        let end = next + Duration::minutes(1);
        if end + rules.grace() > watermark {
            break;
        }
        let minute = match state.pending.first() {
            Some(t) if t.start == Some(date(next)) => state.pending.remove(0),
            _ => WindowTally {
                start: Some(date(next)),
                ..WindowTally::default()
            },
        };
        judge(state, alerts, &minute, end, rules);
        state.next_window = Some(date(end));
        if quiet(state, rules) {
            // Nothing but empty minutes until the next pending one, and empty minutes no
            // longer change anything: skip to it (or to the watermark) at once.
            let until = state.pending.first().and_then(|t| t.start).map(time);
            let last_final = minute_of(watermark - rules.grace()) - Duration::minutes(1);
            let skip_to = until.unwrap_or(last_final + Duration::minutes(1));
            if skip_to > end {
                state.next_window = Some(date(skip_to));
            }
        }
    }
}

/// Whether an empty minute would leave the state as it is: no open alert, no run under way,
/// and a full baseline of empty minutes.
fn quiet(state: &ShopRules, rules: &Thresholds) -> bool {
    state
        .runs
        .iter()
        .all(|r| r.streak == 0 && r.open_alert.is_none())
        && i64::try_from(state.baseline.len()).unwrap_or(i64::MAX) >= rules.baseline_minutes
        && state
            .baseline
            .iter()
            .all(|t| t.orders == 0 && t.revenue_cents == 0)
}

fn judge(
    state: &mut ShopRules,
    alerts: &mut Vec<Alert>,
    minute: &WindowTally,
    end: DateTime<Utc>,
    rules: &Thresholds,
) {
    let warm = i64::try_from(state.baseline.len()).unwrap_or(0)
        >= rules.warmup_minutes.min(rules.baseline_minutes);
    let mut ordinary = true;
    if warm {
        let judged = Judged {
            minute,
            baseline: &state.baseline,
            rules,
        };
        for (name, metric, direction) in WINDOW_RULES {
            let i = match state.runs.iter().position(|r| r.rule == name) {
                Some(i) => i,
                None => {
                    state.runs.push(RuleRun {
                        rule: name.to_owned(),
                        ..RuleRun::default()
                    });
                    state.runs.len() - 1
                }
            };
            let run = &mut state.runs[i];
            let opens = judged.meets(metric, direction, rules.spike_factor);
            match &run.open_alert {
                None => {
                    if opens {
                        ordinary = false;
                        run.streak += 1;
                        if run.streak >= rules.consecutive_minutes {
                            let alert = window_alert(name, metric, &judged, end, rules);
                            run.open_alert = Some(alert.id.clone());
                            run.streak = 0;
                            alerts.push(alert);
                        }
                    } else {
                        run.streak = 0;
                    }
                }
                Some(id) => {
                    ordinary = false;
                    let alert = alerts.iter_mut().find(|a| &a.id == id);
                    let observed = metric.of(minute);
                    if let Some(a) = alert {
                        let peak = a.figures.entry("peak".to_owned()).or_insert(observed);
                        *peak = match direction {
                            Direction::Spike => (*peak).max(observed),
                            Direction::Drop => (*peak).min(observed),
                        };
                        let clears = !judged.meets(metric, direction, rules.clear_factor);
                        if clears {
                            run.streak += 1;
                            if run.streak >= rules.consecutive_minutes {
                                a.close_at(date(end));
                                run.open_alert = None;
                                run.streak = 0;
                            }
                        } else {
                            run.streak = 0;
                        }
                    } else {
                        // The alert is gone from the document: nothing to keep open.
                        run.open_alert = None;
                        run.streak = 0;
                    }
                }
            }
        }
    }
    if ordinary {
        state.baseline.push(minute.clone());
        let keep = usize::try_from(rules.baseline_minutes).unwrap_or(usize::MAX);
        if state.baseline.len() > keep {
            let extra = state.baseline.len() - keep;
            state.baseline.drain(..extra);
        }
    }
}

fn window_alert(
    rule: &str,
    metric: Metric,
    judged: &Judged<'_>,
    end: DateTime<Utc>,
    rules: &Thresholds,
) -> Alert {
    let opened = date(end);
    let start = end - Duration::minutes(1);
    let observed = metric.of(judged.minute);
    let figures = BTreeMap::from([
        ("windowStart".to_owned(), start.timestamp_millis()),
        ("windowEnd".to_owned(), end.timestamp_millis()),
        ("observed".to_owned(), observed),
        ("peak".to_owned(), observed),
        ("baselineTotal".to_owned(), judged.total(metric)),
        ("baselineMinutes".to_owned(), judged.windows()),
        ("factor".to_owned(), rules.spike_factor),
        ("consecutiveMinutes".to_owned(), rules.consecutive_minutes),
    ]);
    Alert::new(
        format!("{rule}:{SHOP}:{}", opened.timestamp_millis()),
        rule,
        SHOP,
        opened,
        figures,
    )
}

// ---- customers: fraud patterns ----------------------------------------------------------

fn customer(
    state: &mut CustomerRules,
    alerts: &mut Vec<Alert>,
    subject: &str,
    e: &Enriched,
    rules: &Thresholds,
) {
    let (DomainEvent::Order(event), Some(after)) = (&e.event.event, &e.after) else {
        return;
    };
    let at = e.event.recorded_at;
    let hold = Duration::minutes(rules.hold_minutes);
    match event {
        OrderEvent::OrderCreated(_) => {
            state.orders += 1;
            let total = after.order.total_cents;
            if state.orders == 1 && total >= rules.large_first_order_cents {
                let figures = BTreeMap::from([
                    ("totalCents".to_owned(), total),
                    ("thresholdCents".to_owned(), rules.large_first_order_cents),
                ]);
                raise(alerts, "large_first_order", subject, at, at + hold, figures);
            }
            let within = Duration::minutes(rules.velocity_minutes);
            let count = recent(&mut state.recent_orders, at, within);
            if count >= rules.velocity_orders {
                let figures = BTreeMap::from([
                    ("orders".to_owned(), count),
                    ("withinMinutes".to_owned(), rules.velocity_minutes),
                    ("threshold".to_owned(), rules.velocity_orders),
                ]);
                raise(alerts, "order_velocity", subject, at, at + hold, figures);
            }
        }
        OrderEvent::PaymentDeclined(_) => {
            let within = Duration::minutes(rules.decline_minutes);
            let count = recent(&mut state.recent_declines, at, within);
            if count >= rules.declines {
                let figures = BTreeMap::from([
                    ("declines".to_owned(), count),
                    ("withinMinutes".to_owned(), rules.decline_minutes),
                    ("threshold".to_owned(), rules.declines),
                ]);
                raise(alerts, "repeated_declines", subject, at, at + hold, figures);
            }
        }
        _ => {}
    }
}

/// Adds `at` to `times` and returns how many fall in `[at - within, at]`; forgets times too old
/// to count for any later event.
fn recent(times: &mut Vec<bson::DateTime>, at: DateTime<Utc>, within: Duration) -> i64 {
    times.push(date(at));
    times.sort();
    let newest = times.last().copied().map_or(at, time);
    times.retain(|t| time(*t) >= newest - within);
    let count = times
        .iter()
        .filter(|t| {
            let t = time(**t);
            t >= at - within && t <= at
        })
        .count();
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Opens the rule's alert for `subject`, or extends the one still open at `at`.
fn raise(
    alerts: &mut Vec<Alert>,
    rule: &str,
    subject: &str,
    at: DateTime<Utc>,
    closes: DateTime<Utc>,
    figures: BTreeMap<String, i64>,
) {
    let open = alerts.iter_mut().find(|a| {
        a.rule == rule
            && a.opened_at.is_some_and(|o| time(o) <= at)
            && a.closed_at.is_some_and(|c| time(c) > at)
    });
    match open {
        Some(a) => {
            if a.closed_at < Some(date(closes)) {
                a.close_at(date(closes));
            }
            for (k, v) in figures {
                let f = a.figures.entry(k).or_insert(v);
                *f = (*f).max(v);
            }
        }
        None => {
            let mut alert = Alert::new(
                format!("{rule}:{subject}:{}", at.timestamp_millis()),
                rule,
                subject,
                date(at),
                figures,
            );
            alert.close_at(date(closes));
            alerts.push(alert);
        }
    }
}
