//! `sales_by_minute`: the sales figures of each event-time minute and hour, `[start, end)` in
//! UTC, by `daily_sales`' recognition rule. An event counts in the window of its own recorded
//! time whenever it reaches the log's tail: a transaction that began in one minute and
//! committed in the next revises the earlier window. A window is final once the log's event
//! time passes its end plus the grace; an event that still arrives for it is counted all the
//! same, and in `lateEvents`, never dropped.

use chrono::{DateTime, Duration, DurationRound, Utc};
use domain::events::{DomainEvent, OrderEvent};
use read_model::SalesWindowDoc;

use super::daily_sales::{counts, tally};
use super::{Projection, Thresholds, date};
use crate::context::Enriched;

pub struct SalesWindowsProjection;

/// A window size: its `_id` prefix, its length and how its start is written in the `_id`.
#[derive(Clone, Copy)]
struct Size {
    name: &'static str,
    length: fn() -> Duration,
    format: &'static str,
}

const MINUTE: Size = Size {
    name: "minute",
    length: || Duration::minutes(1),
    format: "%Y-%m-%dT%H:%M",
};
const HOUR: Size = Size {
    name: "hour",
    length: || Duration::hours(1),
    format: "%Y-%m-%dT%H",
};

impl Size {
    fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        // Only fails out of chrono's range; an event time never is.
        at.duration_trunc((self.length)()).unwrap_or(at)
    }

    fn key(self, at: DateTime<Utc>) -> String {
        format!("{}:{}", self.name, self.start(at).format(self.format))
    }
}

/// `_id` of the minute window holding `at`.
pub fn minute_key(at: DateTime<Utc>) -> String {
    MINUTE.key(at)
}

/// `_id` of the hour window holding `at`.
pub fn hour_key(at: DateTime<Utc>) -> String {
    HOUR.key(at)
}

impl Projection for SalesWindowsProjection {
    type Doc = SalesWindowDoc;

    fn keys(e: &Enriched) -> Vec<String> {
        match (&e.event.event, &e.after) {
            (DomainEvent::Order(event), Some(after)) if counts(event, after) => {
                let at = e.event.recorded_at;
                vec![minute_key(at), hour_key(at)]
            }
            _ => vec![],
        }
    }

    fn apply(doc: &mut SalesWindowDoc, key: &str, e: &Enriched, rules: &Thresholds) {
        if !tally(&mut doc.sales, e) {
            return;
        }
        let at = e.event.recorded_at;
        let size = if key.starts_with(HOUR.name) {
            HOUR
        } else {
            MINUTE
        };
        let start = size.start(at);
        let end = start + (size.length)();
        let final_at = end + rules.grace();
        doc.window = size.name.to_owned();
        doc.start = Some(date(start));
        doc.end = Some(date(end));
        doc.final_at = Some(date(final_at));
        doc.events += 1;
        if let Some(watermark) = e.watermark {
            if at < watermark {
                doc.out_of_order_events += 1;
            }
            if watermark >= final_at {
                doc.late_events += 1;
            }
        }
        if let (DomainEvent::Order(OrderEvent::OrderCreated(_)), Some(after)) =
            (&e.event.event, &e.after)
        {
            let user = after.order.user_id.to_string();
            if let Err(i) = doc.customers.binary_search(&user) {
                doc.customers.insert(i, user);
            }
            doc.distinct_customers = i64::try_from(doc.customers.len()).unwrap_or(i64::MAX);
        }
        let at = date(at);
        doc.updated_at = Some(doc.updated_at.map_or(at, |u| u.max(at)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_keyed_by_their_utc_start() {
        let at = DateTime::parse_from_rfc3339("2026-11-29T21:05:59.999+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(minute_key(at), "minute:2026-11-29T20:05");
        assert_eq!(hour_key(at), "hour:2026-11-29T20");
    }
}
