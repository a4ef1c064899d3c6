//! What clients receive: clean JSON (camelCase, RFC 3339 times, integer money in cents),
//! described in the OpenAPI document by the same types.

pub use service_kit::api_error::{ErrorBody, ErrorDetail};
use std::ops::AddAssign;

use chrono::{DateTime, NaiveDate, Utc};
pub use domain::order::OrderStatus;
use mongodb::bson;
use read_model::{DayDoc, OrderDoc, ProductDoc};
use serde::Serialize;
use utoipa::ToSchema;

fn time(t: Option<bson::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp_millis(t.timestamp_millis()))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderItem {
    pub product_id: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

/// An order as `orders_view` holds it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// A UUID.
    #[schema(format = Uuid)]
    pub order_id: String,
    pub user_id: String,
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
    pub items: Vec<OrderItem>,
    /// Units across all lines.
    pub item_count: i64,
    pub total_cents: i64,
    pub status: OrderStatus,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The order stream's version: what `If-Match` of the write-service expects.
    pub version: i64,
}

impl From<read_model::OrderItem> for OrderItem {
    fn from(i: read_model::OrderItem) -> Self {
        Self {
            product_id: i.product_id,
            quantity: i.quantity,
            unit_price_cents: i.unit_price_cents,
            line_total_cents: i.line_total_cents,
        }
    }
}

impl From<OrderDoc> for Order {
    fn from(o: OrderDoc) -> Self {
        Self {
            order_id: o.order_id,
            user_id: o.user_id,
            currency: o.currency,
            items: o.items.into_iter().map(OrderItem::from).collect(),
            item_count: o.item_count,
            total_cents: o.total_cents,
            status: o.status,
            created_at: time(o.created_at),
            updated_at: time(o.updated_at),
            confirmed_at: time(o.confirmed_at),
            cancelled_at: time(o.cancelled_at),
            cancel_reason: o.cancel_reason,
            shipped_at: time(o.shipped_at),
            carrier: o.carrier,
            tracking_number: o.tracking_number,
            delivered_at: time(o.delivered_at),
            version: o.version,
        }
    }
}

/// One page of orders, newest first unless sorted otherwise.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    pub orders: Vec<Order>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A user's counters and one page of their full order history, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserOrders {
    pub user_id: String,
    pub order_count: i64,
    /// Orders confirmed and not cancelled.
    pub total_spent_cents: i64,
    pub orders: Vec<Order>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Sales figures of a UTC day or a period. Revenue counts on the day an order is
/// confirmed; a confirmed order cancelled later is a refund on the day it is cancelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesFigures {
    pub orders_placed: i64,
    pub orders_confirmed: i64,
    pub orders_cancelled: i64,
    pub revenue_cents: i64,
    pub refunded_cents: i64,
    pub net_revenue_cents: i64,
    /// Units on orders confirmed that day (not reduced by later cancellations).
    pub units_sold: i64,
}

impl AddAssign for SalesFigures {
    fn add_assign(&mut self, o: Self) {
        self.orders_placed += o.orders_placed;
        self.orders_confirmed += o.orders_confirmed;
        self.orders_cancelled += o.orders_cancelled;
        self.revenue_cents += o.revenue_cents;
        self.refunded_cents += o.refunded_cents;
        self.net_revenue_cents += o.net_revenue_cents;
        self.units_sold += o.units_sold;
    }
}

impl From<&DayDoc> for SalesFigures {
    fn from(d: &DayDoc) -> Self {
        Self {
            orders_placed: d.orders_placed,
            orders_confirmed: d.orders_confirmed,
            orders_cancelled: d.orders_cancelled,
            revenue_cents: d.revenue_cents,
            refunded_cents: d.refunded_cents,
            net_revenue_cents: d.net_revenue_cents,
            units_sold: d.units_sold,
        }
    }
}

/// One UTC day; a day without sales is all zeros.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaySales {
    pub date: NaiveDate,
    #[serde(flatten)]
    pub figures: SalesFigures,
}

/// Every day of `from..=to`, in order, and their sum.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub days: Vec<DaySales>,
    pub totals: SalesFigures,
}

/// A product's stock, from its own stream: deliveries and adjustments, and the units each
/// confirmed order holds from confirmation until it ships or is cancelled.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryItem {
    pub product_id: String,
    /// The catalog name; null until staff set it.
    pub name: Option<String>,
    /// Units delivered plus stock adjustments (counts, write-offs).
    pub received_units: i64,
    /// Units held for confirmed orders not yet shipped or cancelled.
    pub reserved_units: i64,
    /// Units that left with shipped orders.
    pub shipped_units: i64,
    /// Received minus reserved minus shipped: what can still be promised. Orders confirmed
    /// before reservations existed reserved nothing and are not counted.
    pub available_units: i64,
    /// Time of the last stock or catalog event.
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<ProductDoc> for InventoryItem {
    fn from(p: ProductDoc) -> Self {
        Self {
            product_id: p.product_id,
            name: p.name,
            received_units: p.received_units,
            reserved_units: p.reserved_units,
            shipped_units: p.shipped_units,
            available_units: p.available_units,
            updated_at: time(p.updated_at),
        }
    }
}

/// Products by ascending available units, then product id.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryPage {
    pub products: Vec<InventoryItem>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeriodSales {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub orders_confirmed: i64,
    pub net_revenue_cents: i64,
}

/// Orders per status, counted in `orders_view`.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrdersByStatus {
    pub pending: u64,
    pub confirmed: u64,
    pub cancelled: u64,
    pub shipped: u64,
    pub delivered: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopProduct {
    pub product_id: String,
    /// Units reserved by confirmed orders plus units shipped (cancelled orders released
    /// theirs).
    pub sold_units: i64,
}

/// How far one view has applied the event log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewProgress {
    pub view: String,
    /// The generation serving reads.
    pub generation: i64,
    /// Its checkpoint (a consistency token); all zeros when nothing is applied.
    pub position: String,
    /// Whether its checkpoint is the newest of the four.
    pub caught_up_with_newest: bool,
    /// Global positions between its checkpoint and the newest one: about the number of
    /// events it trails the most advanced view by.
    pub lag_global_positions: i64,
}

/// The projection's progress as the views record it. The read-service has no access to
/// the event store, so lag is relative to the most advanced view, not to the log's head
/// (the projector's `/health/ready` and `projector status` report that).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionProgress {
    /// The lowest checkpoint: what every figure of the summary includes.
    pub position: String,
    /// The highest checkpoint.
    pub newest_position: String,
    pub views: Vec<ViewProgress>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardSummary {
    /// Today, UTC.
    pub today: DaySales,
    /// The seven UTC days ending today.
    pub last_7_days: PeriodSales,
    pub orders_by_status: OrdersByStatus,
    /// Up to ten products by units sold (reserved plus shipped), most first, ties by
    /// product id.
    pub top_products: Vec<TopProduct>,
    pub projection: ProjectionProgress,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    /// MongoDB's state when it is not reachable (`unreachable`, `timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongodb: Option<String>,
}
