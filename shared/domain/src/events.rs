//! Event payloads, their stored form, and upcasting of older schema versions.
//!
//! Each event is stored as `(event_type, schema_version, data)`. Reading an older version
//! upcasts its JSON to the current shape before decoding, so the rest of the code only
//! ever sees current events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{
    Currency, OrderId, ProductId, Quantity, StockDelta, StockQuantity, UnitPriceCents, UserId,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub product_id: ProductId,
    pub quantity: Quantity,
    pub unit_price_cents: UnitPriceCents,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub currency: Currency,
    pub items: Vec<LineItem>,
    pub total_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemRemoved {
    pub product_id: ProductId,
}

/// The checkout: the order is final and its stock reserved (in the same commit); the
/// fulfilment process charges `payment_method`. Orders confirmed before payments existed
/// (schema version 1) name none and are never charged.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderConfirmed {
    pub payment_method: Option<String>,
    /// Where the customer's emails about this order go; none: the process's default.
    pub email: Option<String>,
    /// The order itself carries its reservations (schema version 3): each line's quantity is
    /// what its product holds for it, and what a cancellation releases or a shipment ships.
    /// Before (false), a confirmation may or may not have reserved, and the products' own
    /// lists of reservations say what each holds.
    #[serde(default)]
    pub stock_reserved: bool,
}

/// The payment provider took the order's amount. On a confirmed order it makes the order
/// paid; on one cancelled meanwhile (a late answer) it is recorded all the same, and the
/// fulfilment process refunds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCaptured {
    pub payment_intent_id: String,
    pub amount_cents: i64,
    pub currency: Currency,
}

/// The payment provider refused the charge (the process cancels the order in the same
/// commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentDeclined {
    pub code: String,
    pub decline_code: Option<String>,
    pub message: String,
}

/// A captured payment given back to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRefunded {
    pub refund_id: String,
    pub amount_cents: i64,
    pub currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderShipped {
    pub carrier: String,
    pub tracking_number: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockReceived {
    pub product_id: ProductId,
    pub quantity: StockQuantity,
}

/// A product's name and price as staff set them; the price lines take from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductDetailsSet {
    pub product_id: ProductId,
    pub name: String,
    pub currency: Currency,
    pub unit_price_cents: UnitPriceCents,
}

/// A stock count or a write-off: units added (positive) or removed (negative) outside a
/// delivery. Never below what is reserved and shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockAdjusted {
    pub product_id: ProductId,
    pub delta: StockDelta,
    pub reason: Option<String>,
}

/// Units promised to an order, written in the commit that confirms it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockReserved {
    pub product_id: ProductId,
    pub order_id: OrderId,
    pub quantity: Quantity,
    /// The order carries this reservation (schema version 2, with an `OrderConfirmed` whose
    /// `stock_reserved` is set), so the product need not list it: its state stays the size
    /// of its counters however many orders are open. Before (false), the product lists it.
    #[serde(default)]
    pub held_by_order: bool,
}

/// Why a reservation ended without shipping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    OrderCancelled,
}

/// An order's reservation given back, in the commit that cancels it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockReleased {
    pub product_id: ProductId,
    pub order_id: OrderId,
    pub quantity: Quantity,
    pub reason: ReleaseReason,
}

/// An order's reserved units leaving the warehouse, in the commit that ships it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockShipped {
    pub product_id: ProductId,
    pub order_id: OrderId,
    pub quantity: Quantity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    OrderCreated(OrderCreated),
    ItemAdded(LineItem),
    ItemRemoved(ItemRemoved),
    OrderConfirmed(OrderConfirmed),
    OrderCancelled(OrderCancelled),
    OrderShipped(OrderShipped),
    OrderDelivered,
    PaymentCaptured(PaymentCaptured),
    PaymentDeclined(PaymentDeclined),
    PaymentRefunded(PaymentRefunded),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductEvent {
    ProductDetailsSet(ProductDetailsSet),
    StockReceived(StockReceived),
    StockAdjusted(StockAdjusted),
    StockReserved(StockReserved),
    StockReleased(StockReleased),
    StockShipped(StockShipped),
}

/// Any event the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEvent {
    Order(OrderEvent),
    Product(ProductEvent),
}

impl From<OrderEvent> for DomainEvent {
    fn from(e: OrderEvent) -> Self {
        DomainEvent::Order(e)
    }
}

impl From<ProductEvent> for DomainEvent {
    fn from(e: ProductEvent) -> Self {
        DomainEvent::Product(e)
    }
}

/// An event as it is written: its type name, schema version and JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    pub event_type: &'static str,
    pub schema_version: i32,
    pub data: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("unsupported schema version {version} of `{event_type}`")]
    UnknownVersion { event_type: String, version: i32 },
    #[error("undecodable `{event_type}` data: {source}")]
    Data {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The one list of event types. Each is stored under its variant's name, with the schema
/// version written today; `EVENT_TYPES` and `DomainEvent`'s `event_type`, `schema_version`,
/// `encode` and `decode_current` are generated from this list, so a new event type is one
/// line in it (plus an upcaster in `upcast` when its version moves).
macro_rules! event_types {
    (@pattern $d:ident, $inner:ident::$name:ident, $payload:ty) => { $inner::$name($d) };
    (@pattern $d:ident, $inner:ident::$name:ident) => { $inner::$name };
    (@data $d:ident, $payload:ty) => { to_value($d) };
    (@data $d:ident) => { Value::Object(Default::default()) };
    (@decode $t:ident, $data:ident, $inner:ident::$name:ident, $payload:ty) => {
        $inner::$name(parse::<$payload>($t, $data)?)
    };
    (@decode $t:ident, $data:ident, $inner:ident::$name:ident) => { $inner::$name };
    ($(
        $outer:ident($inner:ident::$name:ident $(($payload:ty))?) = $version:literal
    ),* $(,)?) => {
        /// Every event type the store holds: the name it is stored under and the schema
        /// version written today.
        pub const EVENT_TYPES: &[(&str, i32)] = &[$((stringify!($name), $version)),*];

        impl DomainEvent {
            /// The name this event is stored under.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(DomainEvent::$outer($inner::$name { .. }) => stringify!($name),)*
                }
            }

            /// The schema version this event is written with.
            pub fn schema_version(&self) -> i32 {
                match self {
                    $(DomainEvent::$outer($inner::$name { .. }) => $version,)*
                }
            }

            fn data(&self) -> Value {
                match self {
                    $(DomainEvent::$outer(event_types!(@pattern d, $inner::$name $(, $payload)?))
                        => event_types!(@data d $(, $payload)?),)*
                }
            }

            /// Decodes data already at the current schema version of `event_type`, by
            /// reference, so a reader that keeps the stored JSON does not copy it.
            pub fn decode_current(event_type: &str, data: &Value) -> Result<Self, DecodeError> {
                Ok(match event_type {
                    $(stringify!($name) => {
                        event_types!(@decode event_type, data, $inner::$name $(, $payload)?).into()
                    })*
                    other => return Err(DecodeError::UnknownType(other.to_owned())),
                })
            }
        }
    };
}

event_types! {
    // v1 had no currency (everything was USD); v2 added it.
    Order(OrderEvent::OrderCreated(OrderCreated)) = 2,
    Order(OrderEvent::ItemAdded(LineItem)) = 1,
    Order(OrderEvent::ItemRemoved(ItemRemoved)) = 1,
    // v1 had no data (confirmed before payments); v2 names the payment method and email;
    // v3 says whether the order carries its reservations.
    Order(OrderEvent::OrderConfirmed(OrderConfirmed)) = 3,
    Order(OrderEvent::OrderCancelled(OrderCancelled)) = 1,
    Order(OrderEvent::OrderShipped(OrderShipped)) = 1,
    Order(OrderEvent::OrderDelivered) = 1,
    Order(OrderEvent::PaymentCaptured(PaymentCaptured)) = 1,
    Order(OrderEvent::PaymentDeclined(PaymentDeclined)) = 1,
    Order(OrderEvent::PaymentRefunded(PaymentRefunded)) = 1,
    Product(ProductEvent::ProductDetailsSet(ProductDetailsSet)) = 1,
    Product(ProductEvent::StockReceived(StockReceived)) = 1,
    Product(ProductEvent::StockAdjusted(StockAdjusted)) = 1,
    // v2 says whether the order carries the reservation.
    Product(ProductEvent::StockReserved(StockReserved)) = 2,
    Product(ProductEvent::StockReleased(StockReleased)) = 1,
    Product(ProductEvent::StockShipped(StockShipped)) = 1,
}

/// The schema version written for each event type today.
pub fn current_schema_version(event_type: &str) -> Option<i32> {
    EVENT_TYPES
        .iter()
        .find(|(name, _)| *name == event_type)
        .map(|&(_, version)| version)
}

/// Brings stored data of an older schema version up to the current one, one version at a
/// time. Returns the data and the version it now has.
pub fn upcast(
    event_type: &str,
    mut version: i32,
    mut data: Value,
) -> Result<(Value, i32), DecodeError> {
    let current = current_schema_version(event_type)
        .ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
    while version != current {
        let Value::Object(map) = &mut data else {
            break;
        };
        match (event_type, version) {
            ("OrderCreated", 1) => {
                map.entry("currency")
                    .or_insert_with(|| Value::String("USD".into()));
            }
            ("OrderConfirmed", 1) => {
                map.entry("paymentMethod").or_insert(Value::Null);
                map.entry("email").or_insert(Value::Null);
            }
            // Older confirmations and reservations leave the bookkeeping to the products.
            ("OrderConfirmed", 2) => {
                map.entry("stockReserved").or_insert(Value::Bool(false));
            }
            ("StockReserved", 1) => {
                map.entry("heldByOrder").or_insert(Value::Bool(false));
            }
            _ => {
                return Err(DecodeError::UnknownVersion {
                    event_type: event_type.to_owned(),
                    version,
                });
            }
        }
        version += 1;
    }
    Ok((data, version))
}

fn to_value<T: Serialize>(v: &T) -> Value {
    // Our payload types serialise to JSON objects by construction; this cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn parse<T: serde::de::DeserializeOwned>(event_type: &str, data: &Value) -> Result<T, DecodeError> {
    T::deserialize(data).map_err(|source| DecodeError::Data {
        event_type: event_type.to_owned(),
        source,
    })
}

impl DomainEvent {
    pub fn encode(&self) -> EncodedEvent {
        EncodedEvent {
            event_type: self.event_type(),
            schema_version: self.schema_version(),
            data: self.data(),
        }
    }

    /// Decodes a stored event of any known schema version.
    pub fn decode(event_type: &str, schema_version: i32, data: Value) -> Result<Self, DecodeError> {
        let (data, _) = upcast(event_type, schema_version, data)?;
        Self::decode_current(event_type, &data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn order_created_v1_upcasts_to_v2_with_usd() {
        let v1 = json!({
            "orderId": "6f1c1d8e-7a53-4a55-9d0f-2f5f6c0c8a11",
            "userId": "alice",
            "items": [{"productId": "sku-1", "quantity": 2, "unitPriceCents": 150}],
            "totalCents": 300
        });
        let (data, version) = upcast("OrderCreated", 1, v1.clone()).unwrap();
        assert_eq!(version, 2);
        assert_eq!(data["currency"], "USD");
        let DomainEvent::Order(OrderEvent::OrderCreated(e)) =
            DomainEvent::decode("OrderCreated", 1, v1).unwrap()
        else {
            panic!("wrong event")
        };
        assert_eq!(e.currency, Currency::USD);
        assert_eq!(e.total_cents, 300);
    }

    #[test]
    fn order_confirmed_v1_upcasts_without_a_payment_method_or_reservations() {
        let e = DomainEvent::decode("OrderConfirmed", 1, json!({})).unwrap();
        assert_eq!(
            e,
            DomainEvent::Order(OrderEvent::OrderConfirmed(OrderConfirmed::default()))
        );
        let (data, version) = upcast("OrderConfirmed", 1, json!({})).unwrap();
        assert_eq!(version, 3);
        assert_eq!(data["stockReserved"], false);
    }

    #[test]
    fn older_confirmations_and_reservations_leave_the_stock_to_the_products() {
        let v2 = json!({"paymentMethod": "pm_card_visa", "email": null});
        let Ok(DomainEvent::Order(OrderEvent::OrderConfirmed(c))) =
            DomainEvent::decode("OrderConfirmed", 2, v2)
        else {
            panic!("wrong event")
        };
        assert_eq!(c.payment_method.as_deref(), Some("pm_card_visa"));
        assert!(!c.stock_reserved);
        let v1 = json!({
            "productId": "sku-1",
            "orderId": "6f1c1d8e-7a53-4a55-9d0f-2f5f6c0c8a11",
            "quantity": 2
        });
        let Ok(DomainEvent::Product(ProductEvent::StockReserved(r))) =
            DomainEvent::decode("StockReserved", 1, v1)
        else {
            panic!("wrong event")
        };
        assert!(!r.held_by_order);
        assert_eq!(i64::from(r.quantity), 2);
    }

    /// One event of each type.
    fn one_of_each() -> Vec<DomainEvent> {
        let sku: ProductId = "sku-1".parse().unwrap();
        let order = OrderId::new();
        let line = LineItem {
            product_id: sku.clone(),
            quantity: Quantity::try_from(3).unwrap(),
            unit_price_cents: UnitPriceCents::try_from(250).unwrap(),
        };
        let events: Vec<DomainEvent> = vec![
            OrderEvent::OrderCreated(OrderCreated {
                order_id: OrderId::new(),
                user_id: "u1".parse().unwrap(),
                currency: Currency::try_from("EUR".to_string()).unwrap(),
                items: vec![line.clone()],
                total_cents: 750,
            })
            .into(),
            OrderEvent::ItemAdded(line).into(),
            OrderEvent::ItemRemoved(ItemRemoved {
                product_id: sku.clone(),
            })
            .into(),
            OrderEvent::OrderConfirmed(OrderConfirmed {
                payment_method: Some("pm_card_visa".into()),
                email: Some("a@example.com".into()),
                stock_reserved: true,
            })
            .into(),
            OrderEvent::OrderCancelled(OrderCancelled {
                reason: Some("changed mind".into()),
            })
            .into(),
            OrderEvent::OrderShipped(OrderShipped {
                carrier: "DHL".into(),
                tracking_number: "123".into(),
            })
            .into(),
            OrderEvent::OrderDelivered.into(),
            OrderEvent::PaymentCaptured(PaymentCaptured {
                payment_intent_id: "pi_1".into(),
                amount_cents: 750,
                currency: Currency::USD,
            })
            .into(),
            OrderEvent::PaymentDeclined(PaymentDeclined {
                code: "card_declined".into(),
                decline_code: Some("insufficient_funds".into()),
                message: "Your card was declined.".into(),
            })
            .into(),
            OrderEvent::PaymentRefunded(PaymentRefunded {
                refund_id: "re_1".into(),
                amount_cents: 750,
                currency: Currency::USD,
            })
            .into(),
            ProductEvent::ProductDetailsSet(ProductDetailsSet {
                product_id: sku.clone(),
                name: "Mouse".into(),
                currency: Currency::USD,
                unit_price_cents: UnitPriceCents::try_from(2499).unwrap(),
            })
            .into(),
            ProductEvent::StockReceived(StockReceived {
                product_id: sku.clone(),
                quantity: StockQuantity::try_from(10).unwrap(),
            })
            .into(),
            ProductEvent::StockAdjusted(StockAdjusted {
                product_id: sku.clone(),
                delta: StockDelta::try_from(-2).unwrap(),
                reason: Some("stock count".into()),
            })
            .into(),
            ProductEvent::StockReserved(StockReserved {
                product_id: sku.clone(),
                order_id: order,
                quantity: Quantity::try_from(3).unwrap(),
                held_by_order: true,
            })
            .into(),
            ProductEvent::StockReleased(StockReleased {
                product_id: sku.clone(),
                order_id: order,
                quantity: Quantity::try_from(3).unwrap(),
                reason: ReleaseReason::OrderCancelled,
            })
            .into(),
            ProductEvent::StockShipped(StockShipped {
                product_id: sku,
                order_id: order,
                quantity: Quantity::try_from(3).unwrap(),
            })
            .into(),
        ];
        events
    }

    #[test]
    fn every_event_round_trips_through_its_stored_form() {
        for e in one_of_each() {
            let enc = e.encode();
            let back = DomainEvent::decode(enc.event_type, enc.schema_version, enc.data).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn every_listed_event_type_round_trips_at_its_listed_version() {
        let events = one_of_each();
        let mut names: Vec<&str> = EVENT_TYPES.iter().map(|&(name, _)| name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EVENT_TYPES.len(), "a type is listed twice");
        assert_eq!(
            events.len(),
            EVENT_TYPES.len(),
            "one sample per listed type"
        );
        for &(name, version) in EVENT_TYPES {
            let e = events
                .iter()
                .find(|e| e.event_type() == name)
                .unwrap_or_else(|| panic!("no sample of `{name}`"));
            let enc = e.encode();
            assert_eq!((enc.event_type, enc.schema_version), (name, version));
            assert_eq!(current_schema_version(name), Some(version));
            assert_eq!(
                upcast(name, version, enc.data.clone()).unwrap(),
                (enc.data.clone(), version),
                "data at the current version is left alone"
            );
            assert_eq!(&DomainEvent::decode_current(name, &enc.data).unwrap(), e);
            assert_eq!(&DomainEvent::decode(name, version, enc.data).unwrap(), e);
        }
        assert_eq!(current_schema_version("Nope"), None);
    }

    #[test]
    fn unknown_types_versions_and_bad_data_are_errors_not_panics() {
        assert!(matches!(
            DomainEvent::decode("Nope", 1, json!({})),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            DomainEvent::decode("ItemAdded", 7, json!({})),
            Err(DecodeError::UnknownVersion { .. })
        ));
        assert!(matches!(
            DomainEvent::decode("ItemAdded", 1, json!({"productId": "a", "quantity": 0})),
            Err(DecodeError::Data { .. })
        ));
    }
}
