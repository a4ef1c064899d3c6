//! The order aggregate: `decide` checks a command against the current state and returns the
//! events to record; `apply` folds an event into the state. Both are pure.

use serde::{Deserialize, Serialize};

use crate::events::{
    ItemRemoved, LineItem, OrderCancelled, OrderConfirmed, OrderCreated, OrderEvent, OrderShipped,
    PaymentCaptured, PaymentDeclined, PaymentRefunded, ReleaseReason,
};
use crate::ids::{Currency, OrderId, ProductId, Quantity, TextProblem, UserId, text_problem};
use crate::product::ProductCommand;
pub use crate::refusal::ErrorKind;

pub const MAX_LINES: usize = 100;
pub use crate::ids::MAX_TEXT_LEN;

/// Bumped whenever `OrderState`'s serialised shape changes; snapshots of another version
/// are ignored and the state is rebuilt from events. 3: `stock_reserved`.
pub const STATE_SCHEMA_VERSION: i32 = 3;

/// Cancel reasons the fulfilment process writes.
pub const REASON_PAYMENT_DECLINED: &str = "payment_declined";
pub const REASON_PAYMENT_TIMEOUT: &str = "payment_timeout";

/// Where an order is in its life. Its lowercase name is the one in events' states, views
/// and APIs alike.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum OrderStatus {
    /// Where every order starts.
    #[default]
    Pending,
    /// Checked out: stock reserved, payment being taken.
    Confirmed,
    /// The payment was captured; the order may ship.
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where an order's payment is, once it is confirmed.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum PaymentStatus {
    /// Confirmed, not charged yet (or confirmed before payments existed).
    Awaiting,
    Captured,
    Declined,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A payment method as the provider names it: `pm_` and up to 100 letters, digits or `_`
/// (Stripe's test methods, e.g. `pm_card_visa`).
pub fn valid_payment_method(s: &str) -> bool {
    s.strip_prefix("pm_").is_some_and(|rest| {
        (1..=100).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// An email address, loosely: one `@` with text either side, at most 254 characters, no
/// whitespace or control characters. The mail server has the last word.
pub fn valid_email(s: &str) -> bool {
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && s.chars().count() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub currency: Currency,
    pub items: Vec<LineItem>,
    pub total_cents: i64,
    pub status: OrderStatus,
    pub cancel_reason: Option<String>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    /// Named at checkout; none on orders confirmed before payments existed.
    #[serde(default)]
    pub payment_method: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// None until the order is confirmed.
    #[serde(default)]
    pub payment: Option<PaymentStatus>,
    #[serde(default)]
    pub payment_intent_id: Option<String>,
    /// The confirmation reserved every line and the order carries those reservations
    /// (`OrderConfirmed::stock_reserved`): a release or shipment names each line's quantity.
    #[serde(default)]
    pub stock_reserved: bool,
}

impl Order {
    /// Confirmed before payments existed: never charged, and ships from `confirmed`.
    pub fn is_legacy_unpaid(&self) -> bool {
        self.status == OrderStatus::Confirmed && self.payment_method.is_none()
    }
}

/// The state `decide` works on: no order yet, or a placed one. (`New` is small and short-
/// lived: a state is built once per command, so boxing `Placed` would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "state", content = "order", rename_all = "camelCase")]
pub enum OrderState {
    #[default]
    New,
    Placed(Order),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    Create {
        order_id: OrderId,
        user_id: UserId,
        currency: Currency,
        items: Vec<LineItem>,
    },
    AddItem(LineItem),
    RemoveItem(ProductId),
    Confirm {
        payment_method: String,
        email: Option<String>,
    },
    Cancel {
        reason: Option<String>,
    },
    Ship {
        carrier: String,
        tracking_number: String,
    },
    Deliver,
    /// The provider's answers, recorded by the fulfilment process.
    CapturePayment {
        payment_intent_id: String,
        amount_cents: i64,
        currency: Currency,
    },
    DeclinePayment {
        code: String,
        decline_code: Option<String>,
        message: String,
    },
    RefundPayment {
        refund_id: String,
        amount_cents: i64,
        currency: Currency,
    },
}

impl OrderCommand {
    fn action(&self) -> &'static str {
        match self {
            OrderCommand::Create { .. } => "create",
            OrderCommand::AddItem(_) | OrderCommand::RemoveItem(_) => "modify",
            OrderCommand::Confirm { .. } => "confirm",
            OrderCommand::Cancel { .. } => "cancel",
            OrderCommand::Ship { .. } => "ship",
            OrderCommand::Deliver => "deliver",
            OrderCommand::CapturePayment { .. } => "record a payment of",
            OrderCommand::DeclinePayment { .. } => "record a declined payment of",
            OrderCommand::RefundPayment { .. } => "refund",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("order not found")]
    OrderNotFound,
    #[error("order already exists")]
    OrderAlreadyExists,
    #[error("product `{0}` is not on this order")]
    ItemNotFound(ProductId),
    #[error("cannot {action} a {status} order", status = .status.as_str())]
    InvalidTransition {
        action: &'static str,
        status: OrderStatus,
    },
    #[error("cannot remove the last item; cancel the order instead")]
    LastItem,
    #[error("an order needs at least one item")]
    NoItems,
    #[error("an order has at most {MAX_LINES} lines")]
    TooManyLines,
    #[error(
        "product `{product_id}` is already on the order at {existing} cents per unit; a product appears once per order"
    )]
    PriceMismatch {
        product_id: ProductId,
        existing: i64,
    },
    #[error("quantity of product `{0}` would exceed {max}", max = Quantity::MAX)]
    QuantityTooLarge(ProductId),
    #[error("order total overflows")]
    TotalOverflow,
    #[error("{field} must be at most {MAX_TEXT_LEN} characters and not blank")]
    InvalidText { field: &'static str },
    #[error(
        "{field} must not contain control characters such as NUL (U+0000); tab and line breaks are fine"
    )]
    ControlCharacter { field: &'static str },
    #[error(
        "paymentMethod must be a payment method id such as `pm_card_visa` (`pm_` and up to 100 letters, digits or `_`)"
    )]
    InvalidPaymentMethod,
    #[error("email must be an email address (one `@`, at most 254 characters, no spaces)")]
    InvalidEmail,
}

impl DomainError {
    pub fn kind(&self) -> ErrorKind {
        use DomainError::*;
        match self {
            OrderNotFound | ItemNotFound(_) => ErrorKind::NotFound,
            OrderAlreadyExists | InvalidTransition { .. } | LastItem => ErrorKind::Conflict,
            NoItems
            | TooManyLines
            | PriceMismatch { .. }
            | QuantityTooLarge(_)
            | TotalOverflow
            | InvalidText { .. }
            | ControlCharacter { .. }
            | InvalidPaymentMethod
            | InvalidEmail => ErrorKind::Invalid,
        }
    }

    /// The request field a rule violation is about.
    pub fn field(&self) -> Option<&'static str> {
        use DomainError::*;
        match self {
            NoItems | TooManyLines | TotalOverflow => Some("items"),
            PriceMismatch { .. } => Some("unitPriceCents"),
            QuantityTooLarge(_) => Some("quantity"),
            InvalidText { field } | ControlCharacter { field } => Some(field),
            InvalidPaymentMethod => Some("paymentMethod"),
            InvalidEmail => Some("email"),
            _ => None,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        use DomainError::*;
        match self {
            OrderNotFound => "order_not_found",
            OrderAlreadyExists => "order_exists",
            ItemNotFound(_) => "item_not_found",
            InvalidTransition { .. } => "invalid_state",
            LastItem => "last_item",
            NoItems
            | TooManyLines
            | PriceMismatch { .. }
            | QuantityTooLarge(_)
            | TotalOverflow
            | InvalidText { .. }
            | ControlCharacter { .. }
            | InvalidPaymentMethod
            | InvalidEmail => "validation_failed",
        }
    }
}

fn line_total(line: &LineItem) -> Option<i64> {
    i64::from(line.quantity).checked_mul(line.unit_price_cents.get())
}

fn total_of(items: &[LineItem]) -> Result<i64, DomainError> {
    items.iter().try_fold(0i64, |acc, l| {
        line_total(l)
            .and_then(|t| acc.checked_add(t))
            .ok_or(DomainError::TotalOverflow)
    })
}

fn check_text(field: &'static str, s: &str) -> Result<(), DomainError> {
    match text_problem(s) {
        None => Ok(()),
        Some(TextProblem::BlankOrTooLong) => Err(DomainError::InvalidText { field }),
        Some(TextProblem::ControlCharacter) => Err(DomainError::ControlCharacter { field }),
    }
}

/// Adds `line` to `items`, merging with an existing line of the same product and price.
fn merge_line(items: &mut Vec<LineItem>, line: LineItem) -> Result<(), DomainError> {
    let full = items.len() >= MAX_LINES;
    match items.iter_mut().find(|l| l.product_id == line.product_id) {
        Some(existing) if existing.unit_price_cents != line.unit_price_cents => {
            Err(DomainError::PriceMismatch {
                product_id: line.product_id,
                existing: existing.unit_price_cents.get(),
            })
        }
        Some(existing) => {
            let sum = i64::from(existing.quantity) + i64::from(line.quantity);
            existing.quantity = Quantity::try_from(sum)
                .map_err(|_| DomainError::QuantityTooLarge(line.product_id.clone()))?;
            Ok(())
        }
        None if full => Err(DomainError::TooManyLines),
        None => {
            items.push(line);
            Ok(())
        }
    }
}

pub fn decide(state: &OrderState, command: OrderCommand) -> Result<Vec<OrderEvent>, DomainError> {
    let order = match (state, &command) {
        (OrderState::New, OrderCommand::Create { .. }) => None,
        (OrderState::New, _) => return Err(DomainError::OrderNotFound),
        (OrderState::Placed(_), OrderCommand::Create { .. }) => {
            return Err(DomainError::OrderAlreadyExists);
        }
        (OrderState::Placed(o), _) => Some(o),
    };
    let transition = |status| DomainError::InvalidTransition {
        action: command.action(),
        status,
    };
    let event = match (order, command.clone()) {
        (
            None,
            OrderCommand::Create {
                order_id,
                user_id,
                currency,
                items,
            },
        ) => {
            if items.is_empty() {
                return Err(DomainError::NoItems);
            }
            // Lines of the same product and price merge; the order stores one line each.
            let mut merged = Vec::with_capacity(items.len());
            for line in items {
                merge_line(&mut merged, line)?;
            }
            let total_cents = total_of(&merged)?;
            OrderEvent::OrderCreated(OrderCreated {
                order_id,
                user_id,
                currency,
                items: merged,
                total_cents,
            })
        }
        (Some(o), OrderCommand::AddItem(line)) => {
            if o.status != OrderStatus::Pending {
                return Err(transition(o.status));
            }
            let mut items = o.items.clone();
            merge_line(&mut items, line.clone())?;
            total_of(&items)?;
            OrderEvent::ItemAdded(line)
        }
        (Some(o), OrderCommand::RemoveItem(product_id)) => {
            if o.status != OrderStatus::Pending {
                return Err(transition(o.status));
            }
            if !o.items.iter().any(|l| l.product_id == product_id) {
                return Err(DomainError::ItemNotFound(product_id));
            }
            if o.items.len() == 1 {
                return Err(DomainError::LastItem);
            }
            OrderEvent::ItemRemoved(ItemRemoved { product_id })
        }
        (
            Some(o),
            OrderCommand::Confirm {
                payment_method,
                email,
            },
        ) => {
            if !valid_payment_method(&payment_method) {
                return Err(DomainError::InvalidPaymentMethod);
            }
            if email.as_deref().is_some_and(|e| !valid_email(e)) {
                return Err(DomainError::InvalidEmail);
            }
            match o.status {
                // `stock_commands` reserves every line in the same commit.
                OrderStatus::Pending => OrderEvent::OrderConfirmed(OrderConfirmed {
                    payment_method: Some(payment_method),
                    email,
                    stock_reserved: true,
                }),
                s => return Err(transition(s)),
            }
        }
        (Some(o), OrderCommand::Cancel { reason }) => {
            if let Some(r) = &reason {
                check_text("reason", r)?;
            }
            match o.status {
                OrderStatus::Pending | OrderStatus::Confirmed | OrderStatus::Paid => {
                    OrderEvent::OrderCancelled(OrderCancelled { reason })
                }
                s => return Err(transition(s)),
            }
        }
        (
            Some(o),
            OrderCommand::Ship {
                carrier,
                tracking_number,
            },
        ) => {
            check_text("carrier", &carrier)?;
            check_text("trackingNumber", &tracking_number)?;
            // Only paid orders ship, and those confirmed before payments existed.
            if o.status == OrderStatus::Paid || o.is_legacy_unpaid() {
                OrderEvent::OrderShipped(OrderShipped {
                    carrier,
                    tracking_number,
                })
            } else {
                return Err(transition(o.status));
            }
        }
        (Some(o), OrderCommand::Deliver) => match o.status {
            OrderStatus::Shipped => OrderEvent::OrderDelivered,
            s => return Err(transition(s)),
        },
        (
            Some(o),
            OrderCommand::CapturePayment {
                payment_intent_id,
                amount_cents,
                currency,
            },
        ) => {
            // A capture that answers after the order was cancelled is still a fact: it is
            // recorded, and refunded.
            let status_ok = matches!(o.status, OrderStatus::Confirmed | OrderStatus::Cancelled);
            let payment_ok = matches!(
                o.payment,
                Some(PaymentStatus::Awaiting | PaymentStatus::Declined)
            );
            if !(status_ok && payment_ok) {
                return Err(transition(o.status));
            }
            OrderEvent::PaymentCaptured(PaymentCaptured {
                payment_intent_id,
                amount_cents,
                currency,
            })
        }
        (
            Some(o),
            OrderCommand::DeclinePayment {
                code,
                decline_code,
                message,
            },
        ) => {
            let status_ok = matches!(o.status, OrderStatus::Confirmed | OrderStatus::Cancelled);
            if !(status_ok && o.payment == Some(PaymentStatus::Awaiting)) {
                return Err(transition(o.status));
            }
            OrderEvent::PaymentDeclined(PaymentDeclined {
                code,
                decline_code,
                message,
            })
        }
        (
            Some(o),
            OrderCommand::RefundPayment {
                refund_id,
                amount_cents,
                currency,
            },
        ) => {
            if !(o.status == OrderStatus::Cancelled && o.payment == Some(PaymentStatus::Captured)) {
                return Err(transition(o.status));
            }
            OrderEvent::PaymentRefunded(PaymentRefunded {
                refund_id,
                amount_cents,
                currency,
            })
        }
        // Create on a placed order and anything on a new one were answered above.
        (Some(_), OrderCommand::Create { .. }) => return Err(DomainError::OrderAlreadyExists),
        (None, _) => return Err(DomainError::OrderNotFound),
    };
    Ok(vec![event])
}

impl OrderState {
    /// Folds one event in. Events come from the store and were valid when decided, so an
    /// event that does not fit (which `decide` never produces) leaves the state unchanged.
    pub fn apply(self, event: &OrderEvent) -> OrderState {
        match (self, event) {
            (OrderState::New, OrderEvent::OrderCreated(e)) => OrderState::Placed(Order {
                order_id: e.order_id,
                user_id: e.user_id.clone(),
                currency: e.currency,
                items: e.items.clone(),
                total_cents: e.total_cents,
                status: OrderStatus::Pending,
                cancel_reason: None,
                carrier: None,
                tracking_number: None,
                payment_method: None,
                email: None,
                payment: None,
                payment_intent_id: None,
                stock_reserved: false,
            }),
            (OrderState::Placed(mut o), e) => {
                match e {
                    OrderEvent::OrderCreated(_) => {}
                    OrderEvent::ItemAdded(line) => {
                        if merge_line(&mut o.items, line.clone()).is_ok() {
                            o.total_cents = total_of(&o.items).unwrap_or(o.total_cents);
                        }
                    }
                    OrderEvent::ItemRemoved(r) => {
                        o.items.retain(|l| l.product_id != r.product_id);
                        o.total_cents = total_of(&o.items).unwrap_or(o.total_cents);
                    }
                    OrderEvent::OrderConfirmed(c) => {
                        o.status = OrderStatus::Confirmed;
                        o.payment_method = c.payment_method.clone();
                        o.email = c.email.clone();
                        o.payment = Some(PaymentStatus::Awaiting);
                        o.stock_reserved = c.stock_reserved;
                    }
                    OrderEvent::OrderCancelled(c) => {
                        o.status = OrderStatus::Cancelled;
                        o.cancel_reason = c.reason.clone();
                    }
                    OrderEvent::OrderShipped(s) => {
                        o.status = OrderStatus::Shipped;
                        o.carrier = Some(s.carrier.clone());
                        o.tracking_number = Some(s.tracking_number.clone());
                    }
                    OrderEvent::OrderDelivered => o.status = OrderStatus::Delivered,
                    OrderEvent::PaymentCaptured(p) => {
                        if o.status == OrderStatus::Confirmed {
                            o.status = OrderStatus::Paid;
                        }
                        o.payment = Some(PaymentStatus::Captured);
                        o.payment_intent_id = Some(p.payment_intent_id.clone());
                    }
                    OrderEvent::PaymentDeclined(_) => o.payment = Some(PaymentStatus::Declined),
                    OrderEvent::PaymentRefunded(_) => o.payment = Some(PaymentStatus::Refunded),
                }
                OrderState::Placed(o)
            }
            (state @ OrderState::New, _) => state,
        }
    }

    pub fn order(&self) -> Option<&Order> {
        match self {
            OrderState::New => None,
            OrderState::Placed(o) => Some(o),
        }
    }
}

/// What an order command does to the stock, decided on the order's state before it:
/// confirming reserves every line, cancelling a confirmed or paid order releases every
/// line, shipping ships every line. Appended in the same commit as the order's event.
/// An order that carries its reservations names each line's quantity as what it holds;
/// for an older one the products' own lists say.
pub fn stock_commands(state: &OrderState, command: &OrderCommand) -> Vec<ProductCommand> {
    let Some(order) = state.order() else {
        return Vec::new();
    };
    let order_id = order.order_id;
    let held = |l: &LineItem| order.stock_reserved.then_some(l.quantity);
    let each = |f: &dyn Fn(&LineItem) -> ProductCommand| order.items.iter().map(f).collect();
    match command {
        OrderCommand::Confirm { .. } => each(&|l| ProductCommand::Reserve {
            product_id: l.product_id.clone(),
            order_id,
            quantity: l.quantity,
        }),
        OrderCommand::Cancel { .. }
            if matches!(order.status, OrderStatus::Confirmed | OrderStatus::Paid) =>
        {
            each(&|l| ProductCommand::Release {
                product_id: l.product_id.clone(),
                order_id,
                reason: ReleaseReason::OrderCancelled,
                held_by_order: held(l),
            })
        }
        OrderCommand::Ship { .. } => each(&|l| ProductCommand::Ship {
            product_id: l.product_id.clone(),
            order_id,
            held_by_order: held(l),
        }),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UnitPriceCents;

    #[test]
    fn a_status_has_one_name_in_json_and_in_text() {
        use strum::VariantArray;
        for &s in OrderStatus::VARIANTS {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(s.as_str().parse::<OrderStatus>().unwrap(), s);
        }
        assert!("Pending".parse::<OrderStatus>().is_err());
    }

    fn line(product: &str, qty: i64, price: i64) -> LineItem {
        LineItem {
            product_id: product.parse().unwrap(),
            quantity: Quantity::try_from(qty).unwrap(),
            unit_price_cents: UnitPriceCents::try_from(price).unwrap(),
        }
    }

    fn confirm() -> OrderCommand {
        OrderCommand::Confirm {
            payment_method: "pm_card_visa".into(),
            email: None,
        }
    }

    fn capture() -> OrderCommand {
        OrderCommand::CapturePayment {
            payment_intent_id: "pi_1".into(),
            amount_cents: 1,
            currency: Currency::USD,
        }
    }

    fn create(items: Vec<LineItem>) -> OrderCommand {
        OrderCommand::Create {
            order_id: OrderId(uuid::Uuid::nil()),
            user_id: "alice".parse().unwrap(),
            currency: Currency::USD,
            items,
        }
    }

    /// Given these commands already succeeded, when `cmd` runs, then the result.
    fn given_when(
        given: Vec<OrderCommand>,
        cmd: OrderCommand,
    ) -> Result<Vec<OrderEvent>, DomainError> {
        let mut state = OrderState::New;
        for c in given {
            for e in decide(&state, c).expect("given commands succeed") {
                state = state.apply(&e);
            }
        }
        decide(&state, cmd)
    }

    fn state_after(given: Vec<OrderCommand>) -> Order {
        let mut state = OrderState::New;
        for c in given {
            for e in decide(&state, c).unwrap() {
                state = state.apply(&e);
            }
        }
        state.order().cloned().unwrap()
    }

    #[test]
    fn create_computes_total_and_merges_same_price_lines() {
        let events = given_when(
            vec![],
            create(vec![
                line("a", 2, 150),
                line("b", 1, 999),
                line("a", 1, 150),
            ]),
        )
        .unwrap();
        let [OrderEvent::OrderCreated(e)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(e.total_cents, 3 * 150 + 999);
        assert_eq!(e.items.len(), 2);
        assert_eq!(i64::from(e.items[0].quantity), 3);
    }

    #[test]
    fn create_rejects_empty_too_many_lines_and_conflicting_prices() {
        assert_eq!(
            given_when(vec![], create(vec![])),
            Err(DomainError::NoItems)
        );
        let many = (0..101).map(|i| line(&format!("p{i}"), 1, 1)).collect();
        assert_eq!(
            given_when(vec![], create(many)),
            Err(DomainError::TooManyLines)
        );
        let hundred = (0..100).map(|i| line(&format!("p{i}"), 1, 1)).collect();
        assert!(given_when(vec![], create(hundred)).is_ok());
        let err =
            given_when(vec![], create(vec![line("a", 1, 100), line("a", 1, 200)])).unwrap_err();
        assert!(matches!(err, DomainError::PriceMismatch { .. }));
        assert_eq!(err.field(), Some("unitPriceCents"));
    }

    #[test]
    fn create_twice_is_a_conflict() {
        let err = given_when(
            vec![create(vec![line("a", 1, 1)])],
            create(vec![line("a", 1, 1)]),
        )
        .unwrap_err();
        assert_eq!(err, DomainError::OrderAlreadyExists);
        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn commands_on_a_missing_order_are_not_found() {
        for cmd in [
            confirm(),
            OrderCommand::Deliver,
            OrderCommand::AddItem(line("a", 1, 1)),
        ] {
            assert_eq!(given_when(vec![], cmd), Err(DomainError::OrderNotFound));
        }
    }

    #[test]
    fn adding_same_product_same_price_raises_quantity() {
        let o = state_after(vec![
            create(vec![line("a", 2, 100)]),
            OrderCommand::AddItem(line("a", 3, 100)),
        ]);
        assert_eq!(o.items.len(), 1);
        assert_eq!(i64::from(o.items[0].quantity), 5);
        assert_eq!(o.total_cents, 500);
    }

    #[test]
    fn adding_same_product_other_price_is_rejected() {
        let err = given_when(
            vec![create(vec![line("a", 2, 100)])],
            OrderCommand::AddItem(line("a", 1, 101)),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            DomainError::PriceMismatch { existing: 100, .. }
        ));
        assert_eq!(err.kind(), ErrorKind::Invalid);
    }

    #[test]
    fn merged_quantity_is_bounded() {
        let err = given_when(
            vec![create(vec![line("a", 10_000, 1)])],
            OrderCommand::AddItem(line("a", 1, 1)),
        )
        .unwrap_err();
        assert!(matches!(err, DomainError::QuantityTooLarge(_)));
        assert_eq!(err.field(), Some("quantity"));
    }

    #[test]
    fn the_101st_line_is_rejected() {
        let hundred = (0..100).map(|i| line(&format!("p{i}"), 1, 1)).collect();
        let err = given_when(
            vec![create(hundred)],
            OrderCommand::AddItem(line("new", 1, 1)),
        )
        .unwrap_err();
        assert_eq!(err, DomainError::TooManyLines);
    }

    #[test]
    fn largest_order_total_is_exact() {
        let items: Vec<_> = (0..100)
            .map(|i| line(&format!("p{i}"), 10_000, 100_000_000))
            .collect();
        let o = state_after(vec![create(items)]);
        assert_eq!(o.total_cents, 100 * 10_000 * 100_000_000);
    }

    #[test]
    fn removing_an_item_updates_total_and_the_last_one_is_refused() {
        let o = state_after(vec![
            create(vec![line("a", 2, 100), line("b", 1, 50)]),
            OrderCommand::RemoveItem("a".parse().unwrap()),
        ]);
        assert_eq!(o.total_cents, 50);
        let err = given_when(
            vec![create(vec![line("a", 2, 100)])],
            OrderCommand::RemoveItem("a".parse().unwrap()),
        )
        .unwrap_err();
        assert_eq!(err, DomainError::LastItem);
        let err = given_when(
            vec![create(vec![line("a", 2, 100)])],
            OrderCommand::RemoveItem("zzz".parse().unwrap()),
        )
        .unwrap_err();
        assert!(matches!(err, DomainError::ItemNotFound(_)));
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn items_change_only_while_pending() {
        let given = vec![create(vec![line("a", 1, 1), line("b", 1, 1)]), confirm()];
        let err = given_when(given.clone(), OrderCommand::AddItem(line("c", 1, 1))).unwrap_err();
        assert_eq!(err.to_string(), "cannot modify a confirmed order");
        assert_eq!(err.kind(), ErrorKind::Conflict);
        let err = given_when(given, OrderCommand::RemoveItem("a".parse().unwrap())).unwrap_err();
        assert_eq!(err.to_string(), "cannot modify a confirmed order");
    }

    #[test]
    fn lifecycle_runs_pending_confirmed_shipped_delivered() {
        let ship = || OrderCommand::Ship {
            carrier: "DHL".into(),
            tracking_number: "T1".into(),
        };
        let o = state_after(vec![
            create(vec![line("a", 1, 1)]),
            confirm(),
            capture(),
            ship(),
            OrderCommand::Deliver,
        ]);
        assert_eq!(o.status, OrderStatus::Delivered);
        assert_eq!(o.payment, Some(PaymentStatus::Captured));
        // An unpaid order does not ship.
        let err = given_when(vec![create(vec![line("a", 1, 1)]), confirm()], ship()).unwrap_err();
        assert_eq!(err.to_string(), "cannot ship a confirmed order");
        assert_eq!(o.carrier.as_deref(), Some("DHL"));

        // Skipping a step is refused.
        assert!(given_when(vec![create(vec![line("a", 1, 1)])], ship()).is_err());
        assert!(given_when(vec![create(vec![line("a", 1, 1)])], OrderCommand::Deliver).is_err());
        assert!(given_when(vec![create(vec![line("a", 1, 1)]), confirm()], confirm()).is_err());
        assert!(
            given_when(
                vec![create(vec![line("a", 1, 1)]), confirm()],
                OrderCommand::Deliver
            )
            .is_err()
        );
    }

    #[test]
    fn cancel_only_from_pending_or_confirmed() {
        let cancel = || OrderCommand::Cancel {
            reason: Some("no longer needed".into()),
        };
        let o = state_after(vec![create(vec![line("a", 1, 1)]), cancel()]);
        assert_eq!(o.status, OrderStatus::Cancelled);
        assert_eq!(o.cancel_reason.as_deref(), Some("no longer needed"));
        assert!(given_when(vec![create(vec![line("a", 1, 1)]), confirm()], cancel()).is_ok());
        let shipped = vec![
            create(vec![line("a", 1, 1)]),
            confirm(),
            capture(),
            OrderCommand::Ship {
                carrier: "c".into(),
                tracking_number: "t".into(),
            },
        ];
        let err = given_when(shipped, cancel()).unwrap_err();
        assert_eq!(err.to_string(), "cannot cancel a shipped order");
        let err = given_when(vec![create(vec![line("a", 1, 1)]), cancel()], cancel()).unwrap_err();
        assert_eq!(err.to_string(), "cannot cancel a cancelled order");
        assert!(given_when(vec![create(vec![line("a", 1, 1)]), cancel()], confirm()).is_err());
    }

    #[test]
    fn free_text_is_bounded_and_not_blank() {
        let given = vec![create(vec![line("a", 1, 1)]), confirm(), capture()];
        let err = given_when(
            given.clone(),
            OrderCommand::Ship {
                carrier: " ".into(),
                tracking_number: "t".into(),
            },
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("carrier"));
        let err = given_when(
            given,
            OrderCommand::Cancel {
                reason: Some("x".repeat(MAX_TEXT_LEN + 1)),
            },
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("reason"));
    }

    #[test]
    fn free_text_refuses_nul_and_control_characters_but_keeps_line_breaks() {
        let given = vec![create(vec![line("a", 1, 1)]), confirm(), capture()];
        let ship = |carrier: &str, tracking: &str| OrderCommand::Ship {
            carrier: carrier.into(),
            tracking_number: tracking.into(),
        };
        for (carrier, tracking, field) in [
            ("DH\0L", "t", "carrier"),
            ("DHL", "\u{1b}[2J", "trackingNumber"),
            ("DHL", "t\u{7f}", "trackingNumber"),
            ("\u{9b}", "t", "carrier"),
        ] {
            let err = given_when(given.clone(), ship(carrier, tracking)).unwrap_err();
            assert_eq!(
                (err.field(), err.code()),
                (Some(field), "validation_failed"),
                "{carrier:?} {tracking:?}"
            );
        }
        let err = given_when(
            given.clone(),
            OrderCommand::Cancel {
                reason: Some("no\0".into()),
            },
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("reason"));
        assert!(
            given_when(
                given,
                OrderCommand::Cancel {
                    reason: Some("line one\r\n\tline two, ünïcödé".into()),
                },
            )
            .is_ok()
        );
    }

    #[test]
    fn confirm_names_a_valid_payment_method_and_email() {
        let given = || vec![create(vec![line("a", 1, 1)])];
        for bad in ["", "pm_", "card_visa", "pm_card visa", "pm_é"] {
            let cmd = OrderCommand::Confirm {
                payment_method: bad.into(),
                email: None,
            };
            assert_eq!(
                given_when(given(), cmd),
                Err(DomainError::InvalidPaymentMethod)
            );
        }
        for bad in ["a", "a@b", "a@@b.c", "a b@c.d", "@b.c", "a@.c"] {
            let cmd = OrderCommand::Confirm {
                payment_method: "pm_card_visa".into(),
                email: Some(bad.into()),
            };
            let err = given_when(given(), cmd).unwrap_err();
            assert_eq!((err,), (DomainError::InvalidEmail,), "{bad}");
        }
        let o = state_after(vec![
            create(vec![line("a", 1, 1)]),
            OrderCommand::Confirm {
                payment_method: "pm_card_visa".into(),
                email: Some("alice@example.com".into()),
            },
        ]);
        assert_eq!(o.payment, Some(PaymentStatus::Awaiting));
        assert_eq!(o.email.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn payments_move_a_confirmed_order_to_paid_and_a_cancelled_paid_one_to_refunded() {
        let placed = || vec![create(vec![line("a", 1, 1)]), confirm()];
        assert_eq!(
            state_after(placed().into_iter().chain([capture()]).collect()).status,
            OrderStatus::Paid
        );
        // A capture counts once.
        assert!(given_when(placed().into_iter().chain([capture()]).collect(), capture()).is_err());
        // A pending order has nothing to pay.
        assert!(given_when(vec![create(vec![line("a", 1, 1)])], capture()).is_err());
        let decline = || OrderCommand::DeclinePayment {
            code: "card_declined".into(),
            decline_code: None,
            message: "declined".into(),
        };
        let o = state_after(placed().into_iter().chain([decline()]).collect());
        assert_eq!(
            (o.status, o.payment),
            (OrderStatus::Confirmed, Some(PaymentStatus::Declined))
        );
        let cancel = OrderCommand::Cancel { reason: None };
        let refund = OrderCommand::RefundPayment {
            refund_id: "re_1".into(),
            amount_cents: 1,
            currency: Currency::USD,
        };
        // Only a cancelled order with a captured payment is refunded.
        assert!(
            given_when(
                placed().into_iter().chain([capture()]).collect(),
                refund.clone()
            )
            .is_err()
        );
        let o = state_after(
            placed()
                .into_iter()
                .chain([capture(), cancel.clone(), refund.clone()])
                .collect(),
        );
        assert_eq!(
            (o.status, o.payment),
            (OrderStatus::Cancelled, Some(PaymentStatus::Refunded))
        );
        // A late capture on a cancelled order is recorded, then refunded.
        let o = state_after(placed().into_iter().chain([cancel, capture()]).collect());
        assert_eq!(
            (o.status, o.payment),
            (OrderStatus::Cancelled, Some(PaymentStatus::Captured))
        );
    }

    #[test]
    fn confirm_reserves_cancel_releases_and_ship_ships_every_line() {
        let two = create(vec![line("a", 2, 1), line("b", 1, 1)]);
        let pending = state_of(vec![two.clone()]);
        assert_eq!(stock_commands(&pending, &confirm()).len(), 2);
        let cancel = OrderCommand::Cancel { reason: None };
        assert!(
            stock_commands(&pending, &cancel).is_empty(),
            "nothing reserved yet"
        );
        let confirmed = state_of(vec![two.clone(), confirm()]);
        // The order carries its reservations: each release names the line's quantity.
        let held = |c: &ProductCommand| match c {
            ProductCommand::Release { held_by_order, .. }
            | ProductCommand::Ship { held_by_order, .. } => held_by_order.map(i64::from),
            _ => None,
        };
        let released = stock_commands(&confirmed, &cancel);
        assert!(matches!(
            released.as_slice(),
            [
                ProductCommand::Release { .. },
                ProductCommand::Release { .. }
            ]
        ));
        assert_eq!(
            released.iter().map(held).collect::<Vec<_>>(),
            [Some(2), Some(1)]
        );
        // Confirmed by an older event: the products' own lists say what it holds.
        let OrderState::Placed(mut older) = confirmed.clone() else {
            panic!("placed")
        };
        older.stock_reserved = false;
        let older = OrderState::Placed(older);
        assert!(
            stock_commands(&older, &cancel)
                .iter()
                .all(|c| held(c).is_none())
        );
        let paid = state_of(vec![two, confirm(), capture()]);
        assert_eq!(stock_commands(&paid, &cancel).len(), 2);
        let ship = OrderCommand::Ship {
            carrier: "c".into(),
            tracking_number: "t".into(),
        };
        let shipped = stock_commands(&paid, &ship);
        assert!(matches!(
            shipped.as_slice(),
            [ProductCommand::Ship { .. }, ProductCommand::Ship { .. }]
        ));
        assert_eq!(
            shipped.iter().map(held).collect::<Vec<_>>(),
            [Some(2), Some(1)]
        );
    }

    #[test]
    fn orders_confirmed_before_payments_ship_from_confirmed() {
        let mut state = state_of(vec![create(vec![line("a", 1, 1)])]);
        state = state.apply(&OrderEvent::OrderConfirmed(OrderConfirmed::default()));
        let ship = OrderCommand::Ship {
            carrier: "c".into(),
            tracking_number: "t".into(),
        };
        assert!(decide(&state, ship).is_ok());
    }

    fn state_of(given: Vec<OrderCommand>) -> OrderState {
        let mut state = OrderState::New;
        for c in given {
            for e in decide(&state, c).unwrap() {
                state = state.apply(&e);
            }
        }
        state
    }
}
