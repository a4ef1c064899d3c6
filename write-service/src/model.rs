//! What clients receive, described in the OpenAPI document by the same types, and the order
//! line, which they also send. Handlers (`crate::routes`) use these types; nothing here
//! uses a handler.
//!
//! The domain types live in the `domain` crate and carry no schema; where a response holds one, the
//! field keeps the domain type (so it serialises exactly as the domain does) and names its
//! schema with `value_type`, or the response mirrors it field by field with an exhaustive
//! conversion, so a change in `domain` fails to compile here instead of drifting.

use chrono::{DateTime, Utc};
use domain::events::LineItem;
use domain::order::{Order, OrderStatus, PaymentStatus};
use domain::product::ProductState;
use domain::{Currency, OrderId, Position, ProductId, Quantity, UnitPriceCents, UserId};
use event_store::RecordedEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
pub use service_kit::api_error::{ErrorBody, ErrorDetail};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::decisions::RequestedLine;

/// The answer to an order command: the order's new version and its consistency token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderAccepted {
    /// The order's id, a UUID (generated unless the create named one).
    #[schema(value_type = String, format = "uuid")]
    pub order_id: OrderId,
    /// The order stream's version after the command (also the `ETag`); send it as
    /// `If-Match` to make the next command conditional on nothing having changed.
    pub version: u64,
    /// Where the command's last event sits in the log: pass it to the read-service as
    /// `X-Consistency-Token` to read this write.
    #[schema(value_type = String, pattern = "^[0-9a-f]{16}-[0-9a-f]{16}$")]
    pub position: Position,
}

/// One event of an order as stored, its data upcast to the current schema version.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// The event's place in the global read order (a consistency token).
    #[schema(value_type = String, pattern = "^[0-9a-f]{16}-[0-9a-f]{16}$")]
    pub position: Position,
    /// The event's position in the whole log.
    pub global_position: i64,
    /// The order stream's version this event made, from 1.
    pub version: u64,
    #[schema(value_type = String, format = "uuid")]
    pub event_id: Uuid,
    /// The event type, e.g. `OrderCreated`, `ItemAdded`, `OrderShipped`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The schema version of `data` as returned (after upcasting).
    pub schema_version: i32,
    /// The schema version `data` was written with.
    pub stored_schema_version: i32,
    /// The event's data; its shape depends on `type` and `schemaVersion`.
    pub data: Value,
    /// What the command carried: `requestId`, `idempotencyKey`, `causationId`.
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

impl From<RecordedEvent> for AuditEvent {
    fn from(e: RecordedEvent) -> Self {
        Self {
            position: e.position,
            global_position: e.position.global_position,
            version: e.stream_position,
            event_id: e.event_id,
            event_type: e.event_type,
            schema_version: e.schema_version,
            stored_schema_version: e.stored_schema_version,
            data: e.data,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
        }
    }
}

/// The audit trail of an order: every event, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditTrail {
    #[schema(value_type = String, format = "uuid")]
    pub order_id: OrderId,
    /// The order stream's current version (the last event's).
    pub version: u64,
    pub events: Vec<AuditEvent>,
}

/// A line as a client sends it; unknown fields (typos) are refused.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Item {
    /// 1 to 64 characters of A-Z, a-z, 0-9, `_`, `.`, `:`, `-`: a product with a price in
    /// the catalog (`PUT /products/{productId}`), in the order's currency. A product appears
    /// once per order: adding it again adds to its quantity, at the line's unit price.
    #[schema(value_type = String, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    product_id: ProductId,
    /// Units of the product; a line holds at most 10000.
    #[schema(value_type = i64, minimum = 1, maximum = 10000)]
    quantity: Quantity,
    /// Optional: the unit price the client was shown, in minor units. The order takes the
    /// catalog's price whatever is sent; a different one here is refused with 409
    /// `price_changed` (the current prices in `details`) and nothing is written.
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 100000000, nullable = false)]
    #[serde(default, deserialize_with = "present")]
    unit_price_cents: Option<UnitPriceCents>,
}

impl From<Item> for RequestedLine {
    fn from(i: Item) -> RequestedLine {
        RequestedLine {
            product_id: i.product_id,
            quantity: i.quantity,
            unit_price_cents: i.unit_price_cents,
        }
    }
}

/// An optional field that may be left out but not sent as `null`: the schema says it is
/// never null, and a client generator must not learn otherwise from the server.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A line of an order: the product, its units and the unit price it was added at (the
/// catalog's price then; a client's price for lines recorded before the catalog).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    #[schema(value_type = String)]
    pub product_id: ProductId,
    #[schema(value_type = i64, minimum = 1, maximum = 10000)]
    pub quantity: Quantity,
    /// Price of one unit in minor units of the order's currency.
    #[schema(value_type = i64, minimum = 0, maximum = 100000000)]
    pub unit_price_cents: UnitPriceCents,
}

impl From<LineItem> for OrderLine {
    fn from(l: LineItem) -> Self {
        let LineItem {
            product_id,
            quantity,
            unit_price_cents,
        } = l;
        Self {
            product_id,
            quantity,
            unit_price_cents,
        }
    }
}

/// The answer to a product command: the product stream's new version and its consistency
/// token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductAccepted {
    #[schema(value_type = String)]
    pub product_id: ProductId,
    /// The product stream's version after the command (also the `ETag`).
    pub version: u64,
    /// Where the product's last event sits in the log: pass it to the read-service as
    /// `X-Consistency-Token` to read this write.
    #[schema(value_type = String, pattern = "^[0-9a-f]{16}-[0-9a-f]{16}$")]
    pub position: Position,
}

/// A product as its events build it: the catalog's details and what it can promise.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductSnapshot {
    #[schema(value_type = String)]
    pub product_id: ProductId,
    /// Null until staff set it (`PUT /products/{productId}`).
    #[schema(required = true)]
    pub name: Option<String>,
    /// ISO 4217 code of the price; null until set.
    #[schema(value_type = Option<String>, pattern = "^[A-Z]{3}$", required = true)]
    pub currency: Option<Currency>,
    /// Price of one unit in minor units of `currency`; null until set: the product cannot
    /// be ordered before.
    #[schema(value_type = Option<i64>, required = true)]
    pub unit_price_cents: Option<UnitPriceCents>,
    /// Deliveries plus adjustments.
    pub received_units: i64,
    /// Held for confirmed or paid orders not yet shipped or cancelled.
    pub reserved_units: i64,
    pub shipped_units: i64,
    /// What confirmations can still reserve: received - reserved - shipped.
    pub available_units: i64,
    /// The product stream's version this state is at.
    pub version: u64,
}

impl ProductSnapshot {
    pub fn new(product_id: ProductId, state: &ProductState, version: u64) -> Self {
        let ProductState {
            name,
            price,
            received_units,
            reserved_units,
            shipped_units,
            reservations: _,
        } = state.clone();
        Self {
            product_id,
            name,
            currency: price.map(|p| p.currency),
            unit_price_cents: price.map(|p| p.unit_price_cents),
            received_units,
            reserved_units,
            shipped_units,
            available_units: state.available_units(),
            version,
        }
    }
}

/// An order as its events build it, at `version`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderSnapshot {
    #[schema(value_type = String, format = "uuid")]
    pub order_id: OrderId,
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// ISO 4217 code, e.g. `USD`.
    #[schema(value_type = String, pattern = "^[A-Z]{3}$")]
    pub currency: Currency,
    /// One line per product.
    pub items: Vec<OrderLine>,
    /// Sum of quantity × unit price over the lines, in minor units of `currency`.
    pub total_cents: i64,
    pub status: OrderStatus,
    /// The reason given when it was cancelled, if any.
    #[schema(required = true)]
    pub cancel_reason: Option<String>,
    /// Set when it was shipped.
    #[schema(required = true)]
    pub carrier: Option<String>,
    /// Set when it was shipped.
    #[schema(required = true)]
    pub tracking_number: Option<String>,
    /// Named at checkout; null before, and on orders confirmed before payments existed.
    #[schema(required = true)]
    pub payment_method: Option<String>,
    /// Null until the order is confirmed; then `awaiting` until the payment is captured
    /// (`captured`), declined (`declined`) or refunded after a cancel (`refunded`).
    #[schema(required = true)]
    pub payment_status: Option<PaymentStatus>,
    /// The provider's id of the captured payment; null until one is captured.
    #[schema(required = true)]
    pub payment_intent_id: Option<String>,
    /// The order stream's version this state is at.
    pub version: u64,
}

impl OrderSnapshot {
    pub fn new(order: &Order, version: u64) -> Self {
        let Order {
            order_id,
            user_id,
            currency,
            items,
            total_cents,
            status,
            cancel_reason,
            carrier,
            tracking_number,
            payment_method,
            email: _,
            payment,
            payment_intent_id,
            // Bookkeeping between the order and its products: `reservedUnits` on the product
            // tells clients what is held.
            stock_reserved: _,
        } = order.clone();
        Self {
            order_id,
            user_id,
            currency,
            items: items.into_iter().map(OrderLine::from).collect(),
            total_cents,
            status,
            cancel_reason,
            carrier,
            tracking_number,
            payment_method,
            payment_status: payment,
            payment_intent_id,
            version,
        }
    }
}

/// The success of a command on an existing order.
#[derive(utoipa::IntoResponses)]
pub enum OrderApplied {
    /// Applied, or replayed with `Idempotent-Replayed: true`
    #[response(
        status = 200,
        headers(
            ("ETag" = String, description = "The order's new version in quotes, e.g. `\"2\"`"),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`"),
        )
    )]
    Applied(OrderAccepted),
}

/// The answers every command shares, beside its own success, 400, 404, 409 and 422.
#[derive(utoipa::IntoResponses)]
pub enum CommandFailures {
    /// `If-Match` names another version than the stream's (`precondition_failed`)
    #[response(status = 412)]
    PreconditionFailed(ErrorBody),
    /// The body is over 64 KiB (`payload_too_large`)
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
    /// A body that is not `application/json` (`unsupported_media_type`)
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
}

/// What every endpoint that reads or writes the event store may answer when PostgreSQL is away.
#[derive(utoipa::IntoResponses)]
pub enum StoreUnavailable {
    /// PostgreSQL is unavailable (`unavailable`); see Retry-After
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    /// PostgreSQL's state when it is not reachable (`unreachable`, `timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub postgres: Option<String>,
    /// `disabled` when `AUTH_DISABLED=true`: tokens are not checked and every request is
    /// served as staff. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub auth: Option<String>,
}
