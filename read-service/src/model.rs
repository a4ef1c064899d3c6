//! What clients receive: clean JSON (camelCase, RFC 3339 times, integer money in cents),
//! described in the OpenAPI document by the same types.

pub use service_kit::api_error::{ErrorBody, ErrorDetail};
use std::ops::AddAssign;

use chrono::{DateTime, NaiveDate, Utc};
pub use domain::order::{OrderStatus, PaymentStatus};
use mongodb::bson;
use read_model::{DayDoc, OrderDoc, ProductDoc, SalesCounts};
use serde::Serialize;
use utoipa::ToSchema;

pub(crate) fn time(t: Option<bson::DateTime>) -> Option<DateTime<Utc>> {
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
        Self::from(&d.sales)
    }
}

impl From<&SalesCounts> for SalesFigures {
    fn from(d: &SalesCounts) -> Self {
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrdersByStatus {
    pub pending: u64,
    pub confirmed: u64,
    pub paid: u64,
    pub cancelled: u64,
    pub shipped: u64,
    pub delivered: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

/// `minute` or `hour`: the length of an event-time window of `sales_by_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    Minute,
    Hour,
}

/// One event-time window `[start, end)` (UTC) of `sales_by_minute`; a window without
/// events is all zeros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Whether the log's event time (the view's `watermark`) has passed the window's end
    /// plus the projector's grace: later events for it are still counted, as `lateEvents`.
    #[serde(rename = "final")]
    pub is_final: bool,
    #[serde(flatten)]
    pub figures: SalesFigures,
    /// Distinct users who placed orders in the window.
    pub distinct_customers: i64,
    /// Events counted in the window.
    pub events: i64,
    /// Events that reached the log after an event of a later time.
    pub out_of_order_events: i64,
    /// Events that reached the log after the window was final.
    pub late_events: i64,
}

/// Every window of `[from, to)`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesWindows {
    pub window: WindowKind,
    /// Start of the first window.
    pub from: DateTime<Utc>,
    /// End of the last window.
    pub to: DateTime<Utc>,
    /// The log's event time as `sales_by_minute` has applied it: the latest recorded time
    /// of the events in its checkpoint; null before the first event.
    pub watermark: Option<DateTime<Utc>>,
    pub windows: Vec<SalesWindow>,
    /// The windows' figures summed (distinct customers do not add up, so they are not).
    pub totals: SalesFigures,
}

/// Whether an alert holds at the log's event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Open,
    Closed,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Closed => "closed",
        }
    }
}

/// An alert the rules raised, as the `alerts` view holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertItem {
    /// `<rule>:<subject>:<opened at, ms since the epoch>`: the same after a rebuild.
    pub id: String,
    /// `orders_spike`, `orders_drop`, `revenue_spike`, `revenue_drop` (subject `shop`),
    /// `order_velocity`, `large_first_order`, `repeated_declines` (subject `customer:<userId>`).
    pub rule: String,
    /// `shop` or `customer:<userId>`.
    pub subject: String,
    /// Event time it opened at.
    pub opened_at: Option<DateTime<Utc>>,
    /// Event time it closes (or closed) at, as the view holds it: a customer alert gets it
    /// when opened (later triggers push it back); a shop alert when its rule stops holding
    /// (null until then).
    pub closed_at: Option<DateTime<Utc>>,
    /// `open` while `closedAt` is null or after the view's watermark, else `closed`.
    pub status: AlertStatus,
    /// What triggered it: counts, cents, window bounds in ms since the epoch.
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub figures: std::collections::BTreeMap<String, i64>,
}

/// One page of alerts, newest `openedAt` first (ties by id, descending).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertPage {
    pub alerts: Vec<AlertItem>,
    /// The `alerts` view's watermark the statuses were decided at; null before any event.
    pub watermark: Option<DateTime<Utc>>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The last 60 minutes of the dashboard stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentMinutes {
    pub watermark: Option<DateTime<Utc>>,
    /// Oldest first; the last is the minute holding the watermark (the current minute
    /// before any event).
    pub windows: Vec<SalesWindow>,
}

/// The open alerts of the dashboard stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenAlerts {
    /// How many alerts are open.
    pub count: u64,
    /// The newest 20 of them, newest first.
    pub items: Vec<AlertItem>,
}

/// One view's distance from the head of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewLag {
    pub view: String,
    pub generation: i64,
    pub position: String,
    /// Global positions between its checkpoint and the log's head: about the events it
    /// has still to apply (0 when the head is not recorded yet).
    pub behind_head: i64,
}

/// How far the views trail the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionLag {
    /// Events the slowest view is behind the log's head, as the projector last recorded
    /// the head (it does so every poll interval, so a little behind the real head).
    pub events: i64,
    /// The head's global position; null before the projector first recorded it.
    pub log_head: Option<i64>,
    /// The lowest checkpoint: what every figure of the frame includes.
    pub position: String,
    pub views: Vec<ViewLag>,
}

/// One event of `/dashboard/stream`, as an SSE client parses it.
#[derive(ToSchema)]
pub struct DashboardEvent {
    /// `snapshot` or `delta`.
    #[schema(pattern = "^(snapshot|delta)$")]
    pub event: String,
    /// The log position the event reflects (see the operation).
    pub id: String,
    /// JSON: a `DashboardState`, whole in a `snapshot`, only the changed sections in a
    /// `delta`.
    pub data: String,
}

/// The whole state a `snapshot` frame of `/dashboard/stream` carries; a `delta` frame
/// carries only the sections that changed, each whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardState {
    /// Today (UTC), as `/dashboard/summary` reports it.
    pub today: DaySales,
    pub by_status: OrdersByStatus,
    pub top_products: Vec<TopProduct>,
    /// Products with at most 5 units available, fewest first (ties by id), at most 10.
    pub low_stock: Vec<InventoryItem>,
    pub minutes: RecentMinutes,
    pub alerts: OpenAlerts,
    pub lag: ProjectionLag,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    /// MongoDB's state when it is not reachable (`unreachable`, `timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mongodb: Option<String>,
}
