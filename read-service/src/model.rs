//! What clients receive: clean JSON (camelCase, RFC 3339 times, integer money in cents),
//! described in the OpenAPI document by the same types.

pub use service_kit::api_error::{ErrorBody, ErrorDetail};
use std::ops::AddAssign;

use chrono::{DateTime, NaiveDate, Utc};
pub use domain::order::{OrderStatus, PaymentStatus};
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
    /// Where the payment is: `awaiting` from checkout until the provider answers, then
    /// `captured` (the order is `paid`), `declined` or, once given back, `refunded`. Null
    /// before the order is confirmed. Orders confirmed before payments existed stay
    /// `awaiting` and are never charged.
    pub payment_status: Option<PaymentStatus>,
    /// The payment method named at checkout, e.g. `pm_card_visa`; null before it, and on
    /// orders confirmed before payments existed.
    pub payment_method: Option<String>,
    /// The provider's id of the captured payment (`pi_...`).
    pub payment_intent_id: Option<String>,
    /// Amount captured, in minor units (0 until then).
    pub paid_cents: i64,
    /// When the payment was captured.
    pub paid_at: Option<DateTime<Utc>>,
    /// Amount refunded, in minor units (0 unless refunded).
    pub refunded_cents: i64,
    /// When the payment was refunded.
    pub refunded_at: Option<DateTime<Utc>>,
    /// When the provider declined the charge.
    pub payment_declined_at: Option<DateTime<Utc>>,
    /// Why: the provider's decline code (e.g. `insufficient_funds`), else its error code
    /// (e.g. `card_declined`).
    pub payment_decline_code: Option<String>,
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
            payment_status: o.payment_status,
            payment_method: o.payment_method,
            payment_intent_id: o.payment_intent_id,
            paid_cents: o.paid_cents,
            paid_at: time(o.paid_at),
            refunded_cents: o.refunded_cents,
            refunded_at: time(o.refunded_at),
            payment_declined_at: time(o.payment_declined_at),
            payment_decline_code: o.payment_decline_code,
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
    /// Payments captured minus refunds made. Orders confirmed before payments existed
    /// count their total from confirmation until they are cancelled.
    pub total_spent_cents: i64,
    pub orders: Vec<Order>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Sales figures of a UTC day or a period. Revenue is recognised on the day the payment is
/// captured, and refunds count on the day they are made. Orders confirmed before payments
/// existed keep the rule they were counted by: revenue on the day they were confirmed,
/// given back in `refundedCents` on the day a confirmed one is cancelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesFigures {
    /// Orders created.
    pub orders_placed: i64,
    /// Orders checked out (confirmed), whether their payment succeeds or not.
    pub orders_confirmed: i64,
    /// Orders cancelled (by the customer, or for a declined or timed-out payment).
    pub orders_cancelled: i64,
    /// Orders whose payment was captured.
    pub orders_paid: i64,
    /// Orders whose payment was refunded.
    pub orders_refunded: i64,
    /// Charges the payment provider declined.
    pub payments_declined: i64,
    /// Payments captured, plus the totals of orders confirmed before payments existed.
    pub revenue_cents: i64,
    /// Refunds made, plus the totals of orders confirmed before payments existed and
    /// cancelled after confirmation.
    pub refunded_cents: i64,
    /// `revenueCents - refundedCents`.
    pub net_revenue_cents: i64,
    /// Units of the orders whose revenue counts that day (paid that day, or confirmed
    /// that day before payments existed); not reduced by later refunds or cancellations.
    pub units_sold: i64,
}

impl AddAssign for SalesFigures {
    fn add_assign(&mut self, o: Self) {
        self.orders_placed += o.orders_placed;
        self.orders_confirmed += o.orders_confirmed;
        self.orders_cancelled += o.orders_cancelled;
        self.orders_paid += o.orders_paid;
        self.orders_refunded += o.orders_refunded;
        self.payments_declined += o.payments_declined;
        self.revenue_cents += o.revenue_cents;
        self.refunded_cents += o.refunded_cents;
        self.net_revenue_cents += o.net_revenue_cents;
        self.units_sold += o.units_sold;
    }
}

impl From<&DayDoc> for SalesFigures {
    fn from(d: &DayDoc) -> Self {
        let d = &d.sales;
        Self {
            orders_placed: d.orders_placed,
            orders_confirmed: d.orders_confirmed,
            orders_cancelled: d.orders_cancelled,
            orders_paid: d.orders_paid,
            orders_refunded: d.orders_refunded,
            payments_declined: d.payments_declined,
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
    /// Orders whose payment was captured in the period.
    pub orders_paid: i64,
    /// Revenue recognised minus refunds (see `SalesFigures`).
    pub net_revenue_cents: i64,
}

/// Orders per status, counted in `orders_view`.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrdersByStatus {
    pub pending: u64,
    pub confirmed: u64,
    pub paid: u64,
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
