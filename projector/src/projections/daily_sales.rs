//! `daily_sales`: one document per UTC day. Revenue counts on the day an order is
//! confirmed; a confirmed order cancelled later is a refund on the day it is cancelled.

use domain::events::{DomainEvent, OrderEvent};
use domain::order::OrderStatus;
use read_model::DayDoc;

use super::{Projection, date};
use crate::context::Enriched;

pub struct DailySalesProjection;

impl Projection for DailySalesProjection {
    type Doc = DayDoc;

    fn keys(e: &Enriched) -> Vec<String> {
        match &e.event.event {
            DomainEvent::Order(
                OrderEvent::OrderCreated(_)
                | OrderEvent::OrderConfirmed(_)
                | OrderEvent::OrderCancelled(_),
            ) if e.after.is_some() => vec![e.event.recorded_at.format("%Y-%m-%d").to_string()],
            _ => vec![],
        }
    }

    fn apply(doc: &mut DayDoc, key: &str, e: &Enriched) {
        let (Some(after), DomainEvent::Order(event)) = (&e.after, &e.event.event) else {
            return;
        };
        doc.date = key.to_owned();
        doc.updated_at = Some(date(e.event.recorded_at));
        let total = after.order.total_cents;
        match event {
            OrderEvent::OrderCreated(_) => doc.orders_placed += 1,
            OrderEvent::OrderConfirmed(_) => {
                doc.orders_confirmed += 1;
                doc.revenue_cents += total;
                doc.units_sold += after
                    .order
                    .items
                    .iter()
                    .map(|l| i64::from(l.quantity))
                    .sum::<i64>();
            }
            OrderEvent::OrderCancelled(_) => {
                doc.orders_cancelled += 1;
                if e.before
                    .as_ref()
                    .is_some_and(|b| b.order.status == OrderStatus::Confirmed)
                {
                    doc.refunded_cents += total;
                }
            }
            _ => {}
        }
        doc.net_revenue_cents = doc.revenue_cents - doc.refunded_cents;
    }
}
