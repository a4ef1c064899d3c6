//! `daily_sales`: one document per UTC day. Revenue is recognised on the day the payment is
//! captured, refunds on the day they are made. Orders confirmed before payments existed
//! (`OrderConfirmed` v1, no payment method) keep the rule they were counted by: revenue on
//! the day the order is confirmed, reversed (`refundedCents`) on the day a confirmed one is
//! cancelled; payment events never apply to them. So an old log's days keep their figures
//! and need no rebuild.

use domain::events::{DomainEvent, OrderEvent};
use domain::order::OrderStatus;
use read_model::{DayDoc, SalesCounts};

use super::{Projection, Thresholds, date};
use crate::context::{Enriched, OrderFacts};

pub struct DailySalesProjection;

/// Whether `event` changes a period's sales figures.
pub fn counts(event: &OrderEvent, after: &OrderFacts) -> bool {
    match event {
        OrderEvent::OrderCreated(_)
        | OrderEvent::OrderConfirmed(_)
        | OrderEvent::OrderCancelled(_) => true,
        OrderEvent::PaymentCaptured(_)
        | OrderEvent::PaymentRefunded(_)
        | OrderEvent::PaymentDeclined(_) => !after.is_legacy(),
        _ => false,
    }
}

fn units(after: &OrderFacts) -> i64 {
    after
        .order
        .items
        .iter()
        .map(|l| i64::from(l.quantity))
        .sum()
}

impl Projection for DailySalesProjection {
    type Doc = DayDoc;

    fn keys(e: &Enriched) -> Vec<String> {
        match (&e.event.event, &e.after) {
            (DomainEvent::Order(event), Some(after)) if counts(event, after) => {
                vec![e.event.recorded_at.format("%Y-%m-%d").to_string()]
            }
            _ => vec![],
        }
    }

    fn apply(doc: &mut DayDoc, key: &str, e: &Enriched, _: &Thresholds) {
        if tally(&mut doc.sales, e) {
            doc.date = key.to_owned();
            doc.updated_at = Some(date(e.event.recorded_at));
        }
    }
}

/// Counts `e` in a period's figures; `false` when it does not change them.
pub fn tally(sales: &mut SalesCounts, e: &Enriched) -> bool {
    let (Some(after), DomainEvent::Order(event)) = (&e.after, &e.event.event) else {
        return false;
    };
    if !counts(event, after) {
        return false;
    }
    let legacy = after.is_legacy();
    let total = after.order.total_cents;
    match event {
        OrderEvent::OrderCreated(_) => sales.orders_placed += 1,
        OrderEvent::OrderConfirmed(_) => {
            sales.orders_confirmed += 1;
            if legacy {
                sales.revenue_cents += total;
                sales.units_sold += units(after);
            }
        }
        OrderEvent::OrderCancelled(_) => {
            sales.orders_cancelled += 1;
            // An old order's revenue counted from confirmation: a cancellation after it
            // gives it back. (Such orders are never charged, so they are never `paid`
            // in practice; the rule covers it all the same.)
            let was_counted = e.before.as_ref().is_some_and(|b| {
                matches!(b.order.status, OrderStatus::Confirmed | OrderStatus::Paid)
            });
            if legacy && was_counted {
                sales.refunded_cents += total;
            }
        }
        OrderEvent::PaymentCaptured(p) => {
            // Also a late capture on an order cancelled meanwhile: the money was taken,
            // and its refund counts in the period it is made.
            sales.orders_paid += 1;
            sales.revenue_cents += p.amount_cents;
            sales.units_sold += units(after);
        }
        OrderEvent::PaymentRefunded(r) => {
            sales.orders_refunded += 1;
            sales.refunded_cents += r.amount_cents;
        }
        OrderEvent::PaymentDeclined(_) => sales.payments_declined += 1,
        _ => {}
    }
    sales.net_revenue_cents = sales.revenue_cents - sales.refunded_cents;
    true
}
