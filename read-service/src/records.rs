//! The view documents as the projector writes them (`projector/src/views/*.rs`), decoded
//! for reading. MongoDB internals (`_id`, `appliedPosition`) are ignored; integers decode
//! from Int32 or Int64 alike, since some servers shrink small Int64 values.

use mongodb::bson;
use serde::Deserialize;

use crate::model::OrderStatus;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemRecord {
    pub product_id: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

/// `orders_view`: `_id` is the order id.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRecord {
    pub order_id: String,
    pub user_id: String,
    pub currency: String,
    pub items: Vec<ItemRecord>,
    pub item_count: i64,
    pub total_cents: i64,
    pub status: OrderStatus,
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

/// `users_orders_view`: `_id` is the user id. Its capped `recentOrders` are not read: a
/// user's history is paged from `orders_view`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub user_id: String,
    pub order_count: i64,
    pub total_spent_cents: i64,
}

/// `daily_sales`: `_id` is the UTC day, `YYYY-MM-DD`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayRecord {
    pub date: String,
    pub orders_placed: i64,
    pub orders_confirmed: i64,
    pub orders_cancelled: i64,
    pub revenue_cents: i64,
    pub refunded_cents: i64,
    pub net_revenue_cents: i64,
    pub units_sold: i64,
}

/// `inventory_view`: `_id` is the product id.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductRecord {
    pub product_id: String,
    pub received_units: i64,
    pub sold_units: i64,
    pub available_units: i64,
    pub updated_at: Option<bson::DateTime>,
}
