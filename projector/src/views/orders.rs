//! `orders_view`: one document per order, as an order page shows it.

use mongodb::bson::{self, Document, doc};
use serde::{Deserialize, Serialize};

use super::{View, date};
use crate::context::Enriched;

pub const NAME: &str = "orders_view";

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Item {
    pub product_id: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OrderDoc {
    pub order_id: String,
    pub user_id: String,
    pub currency: String,
    pub items: Vec<Item>,
    /// Units across all lines.
    pub item_count: i64,
    pub total_cents: i64,
    pub status: String,
    pub created_at: Option<bson::DateTime>,
    pub updated_at: Option<bson::DateTime>,
    pub confirmed_at: Option<bson::DateTime>,
    pub cancelled_at: Option<bson::DateTime>,
    pub cancel_reason: Option<String>,
    pub shipped_at: Option<bson::DateTime>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub delivered_at: Option<bson::DateTime>,
    pub version: i64,
}

pub struct OrdersView;

impl View for OrdersView {
    const NAME: &'static str = NAME;
    type Doc = OrderDoc;

    fn keys(e: &Enriched) -> Vec<String> {
        e.after
            .iter()
            .map(|f| f.order.order_id.to_string())
            .collect()
    }

    fn apply(doc: &mut OrderDoc, _key: &str, e: &Enriched) {
        let Some(f) = &e.after else { return };
        let o = &f.order;
        let items: Vec<Item> = o
            .items
            .iter()
            .map(|l| Item {
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
            status: o.status.as_str().to_owned(),
            created_at: Some(date(f.created_at)),
            updated_at: Some(date(f.updated_at)),
            confirmed_at: f.confirmed_at.map(date),
            cancelled_at: f.cancelled_at.map(date),
            cancel_reason: o.cancel_reason.clone(),
            shipped_at: f.shipped_at.map(date),
            carrier: o.carrier.clone(),
            tracking_number: o.tracking_number.clone(),
            delivered_at: f.delivered_at.map(date),
            version: i64::try_from(f.version).unwrap_or(i64::MAX),
        };
    }

    fn indexes() -> Vec<Document> {
        vec![
            // a user's full history, newest first
            doc! {"userId": 1, "createdAt": -1},
            doc! {"status": 1, "createdAt": -1},
            doc! {"createdAt": -1},
            doc! {"totalCents": 1},
            doc! {"items.productId": 1},
        ]
    }
}
