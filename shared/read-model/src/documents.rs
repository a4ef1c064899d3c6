//! One document type per view, as the projector writes it and the read-service reads it.
//!
//! Every field has a default, so a document written before a field was added still reads.
//! Integers are `i64` and decode from Int32 or Int64 alike (some servers shrink small Int64
//! values). The projector adds `_id` and [`crate::APPLIED_POSITION`]; readers ignore both.

use bson::{Document, doc};
use domain::order::{OrderStatus, PaymentStatus};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::View;

/// A view's document type.
pub trait ViewDocument: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    const VIEW: View;

    /// The indexes the read-service's queries on this view need; the projector creates them
    /// on every generation.
    fn indexes() -> Vec<Document>;
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OrderItem {
    pub product_id: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

/// `orders_view`: one per order, as an order page shows it; `_id` is the order id.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OrderDoc {
    pub order_id: String,
    pub user_id: String,
    pub currency: String,
    pub items: Vec<OrderItem>,
    /// Units across all lines.
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
    /// Where the payment is; null until the order is confirmed. Orders confirmed before
    /// payments existed stay `awaiting` and are never charged.
    pub payment_status: Option<PaymentStatus>,
    /// Named at checkout; null on orders confirmed before payments existed.
    pub payment_method: Option<String>,
    /// The provider's id of the captured payment.
    pub payment_intent_id: Option<String>,
    /// Amount captured (0 until then).
    pub paid_cents: i64,
    pub paid_at: Option<bson::DateTime>,
    /// Amount refunded (0 unless refunded).
    pub refunded_cents: i64,
    pub refunded_at: Option<bson::DateTime>,
    pub payment_declined_at: Option<bson::DateTime>,
    /// The provider's decline code (e.g. `insufficient_funds`), else its error code.
    pub payment_decline_code: Option<String>,
    /// The order stream's version after the last event applied.
    pub version: i64,
}

impl ViewDocument for OrderDoc {
    const VIEW: View = View::Orders;

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

/// How many of a user's newest orders [`UserDoc::recent_orders`] keeps.
pub const RECENT_ORDERS: usize = 50;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RecentOrder {
    pub order_id: String,
    pub total_cents: i64,
    pub status: OrderStatus,
    pub payment_status: Option<PaymentStatus>,
    pub created_at: Option<bson::DateTime>,
}

/// `users_orders_view`: one per user; `_id` is the user id. A user's whole history is paged
/// from `orders_view`; `recent_orders` is capped at [`RECENT_ORDERS`].
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserDoc {
    pub user_id: String,
    pub order_count: i64,
    /// Payments captured minus refunds; orders confirmed before payments existed count
    /// their total from confirmation until they are cancelled.
    pub total_spent_cents: i64,
    pub recent_orders: Vec<RecentOrder>,
    pub updated_at: Option<bson::DateTime>,
}

impl ViewDocument for UserDoc {
    const VIEW: View = View::Users;

    fn indexes() -> Vec<Document> {
        vec![]
    }
}

/// `daily_sales`: one per UTC day of the events; `_id` is the day, `YYYY-MM-DD`.
///
/// Revenue is recognised on the day the payment is captured and refunds on the day they
/// are made. Orders confirmed before payments existed (no payment method) keep the rule
/// they were counted by: revenue and units on the day they were confirmed, reversed in
/// `refunded_cents` on the day a confirmed one is cancelled; so an old log's days keep
/// their figures.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DayDoc {
    pub date: String,
    #[serde(flatten)]
    pub sales: SalesCounts,
    pub updated_at: Option<bson::DateTime>,
}

/// The sales figures of a period (a day, a minute, an hour), by the recognition rule of
/// [`DayDoc`].
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SalesCounts {
    /// Orders created.
    pub orders_placed: i64,
    /// Orders checked out (confirmed), paid or not.
    pub orders_confirmed: i64,
    /// Orders cancelled, whatever their state before.
    pub orders_cancelled: i64,
    /// Orders whose payment was captured.
    pub orders_paid: i64,
    /// Orders whose payment was refunded.
    pub orders_refunded: i64,
    /// Charges the provider declined.
    pub payments_declined: i64,
    /// Payments captured, plus the totals of old orders confirmed in the period.
    pub revenue_cents: i64,
    /// Refunds made, plus the totals of old confirmed orders cancelled in the period.
    pub refunded_cents: i64,
    /// `revenue - refunded`.
    pub net_revenue_cents: i64,
    /// Units of the orders whose revenue counts in the period (paid, or old and confirmed);
    /// not reduced by later refunds or cancellations.
    pub units_sold: i64,
}

impl ViewDocument for DayDoc {
    const VIEW: View = View::DailySales;

    fn indexes() -> Vec<Document> {
        // `_id` is the date: range queries by day use the primary index.
        vec![]
    }
}

/// `sales_by_minute`: one document per event-time window, `[start, end)` in UTC: a minute
/// (`_id` `minute:YYYY-MM-DDTHH:MM`) or its hourly roll-up (`_id` `hour:YYYY-MM-DDTHH`).
///
/// An event counts in the window of its own recorded time, whenever it reaches the log's
/// tail. A window is final once the log's event time (the watermark: the latest recorded
/// time of any event before it in the log) reaches `final_at` (its end plus the grace);
/// events that still arrive for it are counted in its figures and in `late_events`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SalesWindowDoc {
    /// `minute` or `hour`.
    pub window: String,
    pub start: Option<bson::DateTime>,
    pub end: Option<bson::DateTime>,
    /// `end` plus the projector's grace: final when the watermark reaches it.
    pub final_at: Option<bson::DateTime>,
    #[serde(flatten)]
    pub sales: SalesCounts,
    /// Distinct users who placed orders in the window, sorted.
    pub customers: Vec<String>,
    pub distinct_customers: i64,
    /// Events counted, in order, out of order (an event of later time came before them in the
    /// log) and late (after the window was final).
    pub events: i64,
    pub out_of_order_events: i64,
    pub late_events: i64,
    /// Recorded time of the last event applied.
    pub updated_at: Option<bson::DateTime>,
}

impl ViewDocument for SalesWindowDoc {
    const VIEW: View = View::SalesByMinute;

    fn indexes() -> Vec<Document> {
        // `_id` sorts by window and then time: ranges use the primary index.
        vec![]
    }
}

/// `alerts`: two kinds of documents, both folded from the log alone so a rebuild reproduces
/// them with the same ids and times:
/// - one per subject (`_id` `shop`, `customer:<userId>`): the rules' state and the alerts
///   it may still change (the shop's open ones; a customer's closed less than a day ago);
/// - one per alert (`_id` the alert's id, the fields of [`Alert`]), written whenever the
///   alert changes, for the read-service to list: these have a `rule` field.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AlertsDoc {
    pub subject: String,
    pub alerts: Vec<Alert>,
    pub shop: Option<ShopRules>,
    pub customer: Option<CustomerRules>,
    pub updated_at: Option<bson::DateTime>,
    /// The alerts the events just applied opened or changed: written as their own
    /// documents, never stored in this one.
    #[serde(skip)]
    pub changed: Vec<Alert>,
}

/// One alert. Open until `closed_at`, in the log's event time: a shop alert gets it when
/// its rule stops holding; a customer alert gets it when opened (its hold), and later
/// triggers push it back. So an alert is open while the watermark is before `closed_at`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Alert {
    /// `<rule>:<subject>:<opened at, ms since the epoch>`.
    pub id: String,
    pub rule: String,
    pub subject: String,
    pub opened_at: Option<bson::DateTime>,
    pub closed_at: Option<bson::DateTime>,
    /// `opened_at` and `closed_at` in ms since the epoch, `closed_ms` [`Alert::OPEN`] while
    /// no close is set: what `/alerts` filters and sorts on, exact on every server
    /// (nx-27017 compares dates to the whole second, and inside `$or` a `null` matches only
    /// a missing field).
    pub opened_ms: i64,
    pub closed_ms: i64,
    /// What triggered it (integers: counts, cents, window bounds in ms).
    pub figures: std::collections::BTreeMap<String, i64>,
}

impl Alert {
    /// `closed_ms` of an alert with no close set.
    pub const OPEN: i64 = i64::MAX;

    pub fn new(
        id: String,
        rule: &str,
        subject: &str,
        opened: bson::DateTime,
        figures: std::collections::BTreeMap<String, i64>,
    ) -> Alert {
        Alert {
            id,
            rule: rule.to_owned(),
            subject: subject.to_owned(),
            opened_at: Some(opened),
            closed_at: None,
            opened_ms: opened.timestamp_millis(),
            closed_ms: Alert::OPEN,
            figures,
        }
    }

    /// Sets when it closes (or closed).
    pub fn close_at(&mut self, at: bson::DateTime) {
        self.closed_at = Some(at);
        self.closed_ms = at.timestamp_millis();
    }
}

/// A minute's figures as the shop's rules see them.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WindowTally {
    pub start: Option<bson::DateTime>,
    pub orders: i64,
    pub revenue_cents: i64,
}

/// The shop's rule state: the minutes not yet final, the baseline (the latest ordinary
/// final minutes), and each rule's run.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ShopRules {
    /// Start of the first minute not yet evaluated.
    pub next_window: Option<bson::DateTime>,
    pub pending: Vec<WindowTally>,
    pub baseline: Vec<WindowTally>,
    pub runs: Vec<RuleRun>,
    /// Events for minutes already evaluated: counted in `sales_by_minute`, not here.
    pub late_events: i64,
}

/// A window rule's hysteresis: consecutive minutes that met its condition (while closed)
/// or did not (while open), and its open alert.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RuleRun {
    pub rule: String,
    pub streak: i64,
    pub open_alert: Option<String>,
}

/// A customer's rule state: orders so far and the recent orders' and declines' times.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CustomerRules {
    pub orders: i64,
    pub recent_orders: Vec<bson::DateTime>,
    pub recent_declines: Vec<bson::DateTime>,
}

impl ViewDocument for AlertsDoc {
    const VIEW: View = View::Alerts;

    fn indexes() -> Vec<Document> {
        // The alert documents, newest first. (Not with `_id`: nx-27017 then fails every
        // write to the collection.)
        vec![doc! {"openedMs": -1}]
    }
}

/// `inventory_view`: one per product; `_id` is the product id. Driven by the product
/// stream alone: deliveries and adjustments, and each order's reservation from confirmation
/// to shipping or cancellation. Orders confirmed before reservations existed reserved
/// nothing, so they count here neither as reserved nor as shipped.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProductDoc {
    pub product_id: String,
    /// The catalog name, once staff set it.
    pub name: Option<String>,
    /// Deliveries plus adjustments (counts, write-offs).
    pub received_units: i64,
    /// Held for confirmed orders not yet shipped or cancelled.
    pub reserved_units: i64,
    pub shipped_units: i64,
    /// `received - reserved - shipped`: what the product can still promise.
    pub available_units: i64,
    /// `reserved + shipped`: what the dashboard ranks products by, stored so that the
    /// ranking is an indexed sort.
    pub sold_units: i64,
    /// Time of the last event applied.
    pub updated_at: Option<bson::DateTime>,
}

impl ProductDoc {
    /// Recomputes the derived counters from received, reserved and shipped.
    pub fn derive(&mut self) {
        self.available_units = self
            .received_units
            .saturating_sub(self.reserved_units)
            .saturating_sub(self.shipped_units);
        self.sold_units = self.reserved_units.saturating_add(self.shipped_units);
    }
}

impl ViewDocument for ProductDoc {
    const VIEW: View = View::Inventory;

    fn indexes() -> Vec<Document> {
        vec![
            // the low-stock list
            doc! {"availableUnits": 1},
            // the dashboard's top products
            doc! {"soldUnits": -1},
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_read_back_what_was_written_and_small_integers_as_int32() {
        let order = OrderDoc {
            order_id: "o".into(),
            status: OrderStatus::Confirmed,
            total_cents: 1234,
            items: vec![OrderItem {
                product_id: "p".into(),
                quantity: 2,
                unit_price_cents: 617,
                line_total_cents: 1234,
            }],
            ..OrderDoc::default()
        };
        let mut written = bson::to_document(&order).unwrap();
        assert_eq!(written.get_str("status").unwrap(), "confirmed");
        // What some servers hand back for a small Int64.
        written.insert("totalCents", 1234_i32);
        written.insert("_id", "o");
        written.insert(crate::APPLIED_POSITION, "1-1");
        assert_eq!(bson::from_document::<OrderDoc>(written).unwrap(), order);
    }

    #[test]
    fn a_product_derives_available_and_sold_and_old_documents_read_as_zero() {
        let mut p = ProductDoc {
            received_units: 10,
            reserved_units: 3,
            shipped_units: 2,
            ..ProductDoc::default()
        };
        p.derive();
        assert_eq!((p.available_units, p.sold_units), (5, 5));
        // Written before reservations existed.
        let old = doc! {"productId": "p", "receivedUnits": 7_i32, "soldUnits": 2_i64,
        "availableUnits": 5_i64};
        let old = bson::from_document::<ProductDoc>(old).unwrap();
        assert_eq!(
            (old.reserved_units, old.shipped_units, old.name),
            (0, 0, None)
        );
    }

    #[test]
    fn payments_read_back_and_documents_written_before_them_read_as_unpaid() {
        let order = OrderDoc {
            order_id: "o".into(),
            status: OrderStatus::Paid,
            payment_status: Some(PaymentStatus::Captured),
            payment_method: Some("pm_card_visa".into()),
            paid_cents: 1200,
            paid_at: Some(bson::DateTime::from_millis(1_000)),
            ..OrderDoc::default()
        };
        let written = bson::to_document(&order).unwrap();
        assert_eq!(written.get_str("status").unwrap(), "paid");
        assert_eq!(written.get_str("paymentStatus").unwrap(), "captured");
        assert_eq!(bson::from_document::<OrderDoc>(written).unwrap(), order);
        let old = doc! {"orderId": "o", "status": "confirmed", "totalCents": 5_i64};
        let old = bson::from_document::<OrderDoc>(old).unwrap();
        assert_eq!(
            (old.payment_status, old.paid_cents, old.refunded_at),
            (None, 0, None)
        );
        let old_day = doc! {"date": "2026-01-01", "revenueCents": 5_i32};
        let old_day = bson::from_document::<DayDoc>(old_day).unwrap();
        assert_eq!(
            (old_day.sales.revenue_cents, old_day.sales.orders_paid),
            (5, 0)
        );
        // The figures are flattened: a day is written with the same fields as before.
        let written = bson::to_document(&old_day).unwrap();
        assert_eq!(written.get_i64("revenueCents").unwrap(), 5);
    }

    #[test]
    fn an_unknown_status_is_an_error_not_a_default() {
        let written = doc! {"orderId": "o", "status": "lost"};
        assert!(bson::from_document::<OrderDoc>(written).is_err());
    }
}
