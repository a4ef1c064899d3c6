//! `daily_sales`: one document per UTC day. Revenue is recognised on the day the payment is
//! captured, refunds on the day they are made. Orders confirmed before payments existed
//! (`OrderConfirmed` v1, no payment method) keep the rule they were counted by: revenue on
//! the day the order is confirmed, reversed (`refundedCents`) on the day a confirmed one is
//! cancelled; payment events never apply to them. So an old log's days keep their figures
//! and need no rebuild.

use domain::events::{DomainEvent, OrderEvent};
use domain::order::OrderStatus;
use read_model::DayDoc;

use super::{Projection, date};
use crate::context::{Enriched, OrderFacts};

pub struct DailySalesProjection;

/// Whether `event` changes a day's figures.
fn counts(event: &OrderEvent, after: &OrderFacts) -> bool {
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

    fn apply(doc: &mut DayDoc, key: &str, e: &Enriched) {
        let (Some(after), DomainEvent::Order(event)) = (&e.after, &e.event.event) else {
            return;
        };
        if !counts(event, after) {
            return;
        }
        doc.date = key.to_owned();
        doc.updated_at = Some(date(e.event.recorded_at));
        let legacy = after.is_legacy();
        let total = after.order.total_cents;
        match event {
            OrderEvent::OrderCreated(_) => doc.orders_placed += 1,
            OrderEvent::OrderConfirmed(_) => {
                doc.orders_confirmed += 1;
                if legacy {
                    doc.revenue_cents += total;
                    doc.units_sold += units(after);
                }
            }
            OrderEvent::OrderCancelled(_) => {
                doc.orders_cancelled += 1;
                // An old order's revenue counted from confirmation: a cancellation after it
                // gives it back. (Such orders are never charged, so they are never `paid`
                // in practice; the rule covers it all the same.)
                let was_counted = e.before.as_ref().is_some_and(|b| {
                    matches!(b.order.status, OrderStatus::Confirmed | OrderStatus::Paid)
                });
                if legacy && was_counted {
                    doc.refunded_cents += total;
                }
            }
            OrderEvent::PaymentCaptured(p) => {
                // Also a late capture on an order cancelled meanwhile: the money was taken,
                // and its refund counts on the day it is made.
                doc.orders_paid += 1;
                doc.revenue_cents += p.amount_cents;
                doc.units_sold += units(after);
            }
            OrderEvent::PaymentRefunded(r) => {
                doc.orders_refunded += 1;
                doc.refunded_cents += r.amount_cents;
            }
            OrderEvent::PaymentDeclined(_) => doc.payments_declined += 1,
            _ => {}
        }
        doc.net_revenue_cents = doc.revenue_cents - doc.refunded_cents;
    }
}
