//! `users_orders_view`: one document per user: counters and the 50 newest orders. The full
//! history is served from `orders_view` by its `(userId, createdAt)` index, so a big
//! customer never outgrows MongoDB's 16 MiB document limit.
//!
//! `totalSpentCents` follows `daily_sales`' recognition rule: payments captured minus
//! refunds made; orders confirmed before payments existed count their total from
//! confirmation until they are cancelled.

use domain::events::{DomainEvent, OrderEvent};
use domain::order::OrderStatus;
use read_model::{RECENT_ORDERS, RecentOrder, UserDoc};

use super::{Projection, Thresholds, date};
use crate::context::Enriched;

pub struct UsersProjection;

impl Projection for UsersProjection {
    type Doc = UserDoc;

    fn keys(e: &Enriched) -> Vec<String> {
        e.after
            .iter()
            .map(|f| f.order.user_id.to_string())
            .collect()
    }

    fn apply(doc: &mut UserDoc, key: &str, e: &Enriched, _: &Thresholds) {
        let (Some(after), DomainEvent::Order(event)) = (&e.after, &e.event.event) else {
            return;
        };
        doc.user_id = key.to_owned();
        doc.updated_at = Some(date(e.event.recorded_at));
        let order_id = after.order.order_id.to_string();
        let legacy = after.is_legacy();
        let was_counted = e
            .before
            .as_ref()
            .is_some_and(|b| matches!(b.order.status, OrderStatus::Confirmed | OrderStatus::Paid));
        match event {
            OrderEvent::OrderCreated(_) => {
                doc.order_count += 1;
                doc.recent_orders.push(RecentOrder {
                    order_id: order_id.clone(),
                    total_cents: after.order.total_cents,
                    status: after.order.status,
                    payment_status: after.order.payment,
                    created_at: Some(date(after.created_at)),
                });
                // Newest first; ties by id so a rebuild orders them the same way.
                doc.recent_orders.sort_by(|a, b| {
                    b.created_at
                        .cmp(&a.created_at)
                        .then_with(|| b.order_id.cmp(&a.order_id))
                });
                doc.recent_orders.truncate(RECENT_ORDERS);
            }
            OrderEvent::OrderConfirmed(_) if legacy => {
                doc.total_spent_cents += after.order.total_cents
            }
            OrderEvent::OrderCancelled(_) if legacy && was_counted => {
                doc.total_spent_cents -= after.order.total_cents
            }
            OrderEvent::PaymentCaptured(p) if !legacy => doc.total_spent_cents += p.amount_cents,
            OrderEvent::PaymentRefunded(r) if !legacy => doc.total_spent_cents -= r.amount_cents,
            _ => {}
        }
        if let Some(recent) = doc
            .recent_orders
            .iter_mut()
            .find(|r| r.order_id == order_id)
        {
            recent.total_cents = after.order.total_cents;
            recent.status = after.order.status;
            recent.payment_status = after.order.payment;
        }
    }
}
