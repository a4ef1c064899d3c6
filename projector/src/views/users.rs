//! `users_orders_view`: one document per user: counters and the 50 newest orders. The full
//! history is served from `orders_view` by its `(userId, createdAt)` index, so a big
//! customer never outgrows MongoDB's 16 MiB document limit.

use domain::events::{DomainEvent, OrderEvent};
use domain::order::OrderStatus;
use mongodb::bson::{self, Document};
use serde::{Deserialize, Serialize};

use super::{View, date};
use crate::context::Enriched;

pub const NAME: &str = "users_orders_view";
pub const RECENT_ORDERS: usize = 50;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecentOrder {
    pub order_id: String,
    pub total_cents: i64,
    pub status: String,
    pub created_at: Option<bson::DateTime>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserDoc {
    pub user_id: String,
    pub order_count: i64,
    /// Orders confirmed and not cancelled.
    pub total_spent_cents: i64,
    /// Newest first.
    pub recent_orders: Vec<RecentOrder>,
    pub updated_at: Option<bson::DateTime>,
}

pub struct UsersView;

impl View for UsersView {
    const NAME: &'static str = NAME;
    type Doc = UserDoc;

    fn keys(e: &Enriched) -> Vec<String> {
        e.after
            .iter()
            .map(|f| f.order.user_id.to_string())
            .collect()
    }

    fn apply(doc: &mut UserDoc, key: &str, e: &Enriched) {
        let (Some(after), DomainEvent::Order(event)) = (&e.after, &e.event.event) else {
            return;
        };
        doc.user_id = key.to_owned();
        doc.updated_at = Some(date(e.event.recorded_at));
        let order_id = after.order.order_id.to_string();
        let was_confirmed = e
            .before
            .as_ref()
            .is_some_and(|b| b.order.status == OrderStatus::Confirmed);
        match event {
            OrderEvent::OrderCreated(_) => {
                doc.order_count += 1;
                doc.recent_orders.push(RecentOrder {
                    order_id: order_id.clone(),
                    total_cents: after.order.total_cents,
                    status: after.order.status.as_str().to_owned(),
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
            OrderEvent::OrderConfirmed => doc.total_spent_cents += after.order.total_cents,
            OrderEvent::OrderCancelled(_) if was_confirmed => {
                doc.total_spent_cents -= after.order.total_cents
            }
            _ => {}
        }
        if let Some(recent) = doc
            .recent_orders
            .iter_mut()
            .find(|r| r.order_id == order_id)
        {
            recent.total_cents = after.order.total_cents;
            recent.status = after.order.status.as_str().to_owned();
        }
    }

    fn indexes() -> Vec<Document> {
        vec![]
    }
}
