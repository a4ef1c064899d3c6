//! `orders_view`: one document per order, as an order page shows it.

use read_model::{OrderDoc, OrderItem};

use super::{Projection, Thresholds, date};
use crate::context::Enriched;

pub struct OrdersProjection;

impl Projection for OrdersProjection {
    type Doc = OrderDoc;

    fn keys(e: &Enriched) -> Vec<String> {
        e.after
            .iter()
            .map(|f| f.order.order_id.to_string())
            .collect()
    }

    fn apply(doc: &mut OrderDoc, _key: &str, e: &Enriched, _: &Thresholds) {
        let Some(f) = &e.after else { return };
        let o = &f.order;
        let items: Vec<OrderItem> = o
            .items
            .iter()
            .map(|l| OrderItem {
                product_id: l.product_id.to_string(),
                quantity: i64::from(l.quantity),
                unit_price_cents: l.unit_price_cents.get(),
                line_total_cents: i64::from(l.quantity).saturating_mul(l.unit_price_cents.get()),
            })
            .collect();
        *doc = OrderDoc {
            order_id: o.order_id.to_string(),
            user_id: o.user_id.to_string(),
            currency: o.currency.to_string(),
            item_count: items.iter().map(|i| i.quantity).sum(),
            items,
            total_cents: o.total_cents,
            status: o.status,
            created_at: Some(date(f.created_at)),
            updated_at: Some(date(f.updated_at)),
            confirmed_at: f.confirmed_at.map(date),
            cancelled_at: f.cancelled_at.map(date),
            cancel_reason: o.cancel_reason.clone(),
            shipped_at: f.shipped_at.map(date),
            carrier: o.carrier.clone(),
            tracking_number: o.tracking_number.clone(),
            delivered_at: f.delivered_at.map(date),
            payment_status: o.payment,
            payment_method: o.payment_method.clone(),
            payment_intent_id: o.payment_intent_id.clone(),
            paid_cents: f.paid_cents,
            paid_at: f.paid_at.map(date),
            refunded_cents: f.refunded_cents,
            refunded_at: f.refunded_at.map(date),
            payment_declined_at: f.payment_declined_at.map(date),
            payment_decline_code: f.payment_decline_code.clone(),
            version: i64::try_from(f.version).unwrap_or(i64::MAX),
        };
    }
}
