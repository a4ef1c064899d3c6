//! The product aggregate: a catalog item (name and price) and the stock it can promise.
//!
//! Its stream records deliveries, counts and write-offs, and each order's reservation from
//! the commit that confirms the order to the one that ships or cancels it. `decide` refuses a
//! reservation beyond what is available, so what a product promises never exceeds what it
//! holds: available = received - reserved - shipped, never negative.
//!
//! Which order holds how many units is the order's to know: a confirmation made today
//! reserves its lines and says so (`OrderConfirmed::stock_reserved`), and its release or
//! shipment names the line's quantity. The product keeps only its counters, so its state
//! (read by every command that prices or reserves it) does not grow with the open orders.
//! Reservations written before that (`StockReserved::held_by_order` false) are listed in
//! the product, as they were, and their releases and shipments take the listed quantity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::events::{
    ProductDetailsSet, ProductEvent, ReleaseReason, StockAdjusted, StockReceived, StockReleased,
    StockReserved, StockShipped,
};
use crate::ids::{
    Currency, OrderId, ProductId, Quantity, StockDelta, StockQuantity, TextProblem, UnitPriceCents,
    text_problem,
};
use crate::refusal::ErrorKind;

/// Bumped whenever `ProductState`'s serialised shape changes; snapshots of another version
/// are ignored and the state is rebuilt from events. 2: catalog details and reservations.
pub const STATE_SCHEMA_VERSION: i32 = 2;

/// What one unit costs, in minor units of `currency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    pub currency: Currency,
    pub unit_price_cents: UnitPriceCents,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductState {
    /// `None` until staff set the product's details: it cannot be ordered before.
    pub name: Option<String>,
    pub price: Option<Price>,
    /// Deliveries plus adjustments.
    pub received_units: i64,
    /// Units held for confirmed orders not yet shipped or cancelled.
    pub reserved_units: i64,
    pub shipped_units: i64,
    /// The open reservations the product itself lists, by order: those written before
    /// orders carried their own (see the module's documentation).
    pub reservations: BTreeMap<OrderId, Quantity>,
}

impl ProductState {
    /// Units the product can still promise.
    pub fn available_units(&self) -> i64 {
        self.received_units
            .saturating_sub(self.reserved_units)
            .saturating_sub(self.shipped_units)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductCommand {
    SetDetails {
        product_id: ProductId,
        name: String,
        price: Price,
    },
    ReceiveStock {
        product_id: ProductId,
        quantity: StockQuantity,
    },
    AdjustStock {
        product_id: ProductId,
        delta: StockDelta,
        reason: Option<String>,
    },
    /// Holds `quantity` units for a confirmed order.
    Reserve {
        product_id: ProductId,
        order_id: OrderId,
        quantity: Quantity,
    },
    /// Gives an order's reservation back: the units the product lists for it, else
    /// `held_by_order` (what an order carrying its reservations holds on this line); nothing
    /// to do if neither (an order confirmed before reservations existed).
    Release {
        product_id: ProductId,
        order_id: OrderId,
        reason: ReleaseReason,
        held_by_order: Option<Quantity>,
    },
    /// The order's reserved units leave, found as for `Release`.
    Ship {
        product_id: ProductId,
        order_id: OrderId,
        held_by_order: Option<Quantity>,
    },
}

impl ProductCommand {
    /// The product the command is about.
    pub fn product_id(&self) -> &ProductId {
        match self {
            ProductCommand::SetDetails { product_id, .. }
            | ProductCommand::ReceiveStock { product_id, .. }
            | ProductCommand::AdjustStock { product_id, .. }
            | ProductCommand::Reserve { product_id, .. }
            | ProductCommand::Release { product_id, .. }
            | ProductCommand::Ship { product_id, .. } => product_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("stock of this product would overflow")]
    StockOverflow,
    #[error("an adjustment must add or remove at least one unit")]
    ZeroAdjustment,
    #[error(
        "removing {removed} units would leave less than the {committed} units reserved or \
         shipped"
    )]
    BelowCommitted { removed: i64, committed: i64 },
    #[error("{asked} units asked, {available} available")]
    InsufficientStock { asked: i64, available: i64 },
    #[error("the order already holds {held} units of this product")]
    AlreadyReserved { held: i64 },
    #[error("`{field}` must be at most 200 characters and not blank")]
    InvalidText { field: &'static str },
    #[error("`{field}` must not contain control characters other than tab and line breaks")]
    ControlCharacter { field: &'static str },
}

impl ProductError {
    pub fn kind(&self) -> ErrorKind {
        use ProductError::*;
        match self {
            BelowCommitted { .. } | InsufficientStock { .. } | AlreadyReserved { .. } => {
                ErrorKind::Conflict
            }
            StockOverflow | ZeroAdjustment | InvalidText { .. } | ControlCharacter { .. } => {
                ErrorKind::Invalid
            }
        }
    }
}

fn check_text(field: &'static str, s: &str) -> Result<(), ProductError> {
    match text_problem(s) {
        None => Ok(()),
        Some(TextProblem::BlankOrTooLong) => Err(ProductError::InvalidText { field }),
        Some(TextProblem::ControlCharacter) => Err(ProductError::ControlCharacter { field }),
    }
}

pub fn decide(
    state: &ProductState,
    command: ProductCommand,
) -> Result<Vec<ProductEvent>, ProductError> {
    match command {
        ProductCommand::SetDetails {
            product_id,
            name,
            price,
        } => {
            check_text("name", &name)?;
            if state.name.as_deref() == Some(name.as_str()) && state.price == Some(price) {
                return Ok(vec![]);
            }
            Ok(vec![ProductEvent::ProductDetailsSet(ProductDetailsSet {
                product_id,
                name,
                currency: price.currency,
                unit_price_cents: price.unit_price_cents,
            })])
        }
        ProductCommand::ReceiveStock {
            product_id,
            quantity,
        } => {
            state
                .received_units
                .checked_add(i64::from(quantity))
                .ok_or(ProductError::StockOverflow)?;
            Ok(vec![ProductEvent::StockReceived(StockReceived {
                product_id,
                quantity,
            })])
        }
        ProductCommand::AdjustStock {
            product_id,
            delta,
            reason,
        } => {
            if let Some(r) = &reason {
                check_text("reason", r)?;
            }
            let d = delta.get();
            if d == 0 {
                return Err(ProductError::ZeroAdjustment);
            }
            let received = state
                .received_units
                .checked_add(d)
                .ok_or(ProductError::StockOverflow)?;
            let committed = state.reserved_units.saturating_add(state.shipped_units);
            if received < committed {
                return Err(ProductError::BelowCommitted {
                    removed: -d,
                    committed,
                });
            }
            Ok(vec![ProductEvent::StockAdjusted(StockAdjusted {
                product_id,
                delta,
                reason,
            })])
        }
        ProductCommand::Reserve {
            product_id,
            order_id,
            quantity,
        } => {
            if let Some(held) = state.reservations.get(&order_id) {
                return Err(ProductError::AlreadyReserved {
                    held: i64::from(*held),
                });
            }
            let asked = i64::from(quantity);
            let available = state.available_units();
            if asked > available {
                return Err(ProductError::InsufficientStock {
                    asked,
                    available: available.max(0),
                });
            }
            Ok(vec![ProductEvent::StockReserved(StockReserved {
                product_id,
                order_id,
                quantity,
                held_by_order: true,
            })])
        }
        ProductCommand::Release {
            product_id,
            order_id,
            reason,
            held_by_order,
        } => Ok(state
            .held(&order_id, held_by_order)
            .map(|quantity| {
                ProductEvent::StockReleased(StockReleased {
                    product_id,
                    order_id,
                    quantity,
                    reason,
                })
            })
            .into_iter()
            .collect()),
        ProductCommand::Ship {
            product_id,
            order_id,
            held_by_order,
        } => Ok(state
            .held(&order_id, held_by_order)
            .map(|quantity| {
                ProductEvent::StockShipped(StockShipped {
                    product_id,
                    order_id,
                    quantity,
                })
            })
            .into_iter()
            .collect()),
    }
}

impl ProductState {
    /// What `order_id` holds of this product: the units listed for it, else what the order
    /// says it holds.
    fn held(&self, order_id: &OrderId, held_by_order: Option<Quantity>) -> Option<Quantity> {
        self.reservations.get(order_id).copied().or(held_by_order)
    }

    pub fn apply(mut self, event: &ProductEvent) -> ProductState {
        match event {
            ProductEvent::ProductDetailsSet(e) => {
                self.name = Some(e.name.clone());
                self.price = Some(Price {
                    currency: e.currency,
                    unit_price_cents: e.unit_price_cents,
                });
            }
            ProductEvent::StockReceived(e) => {
                self.received_units = self.received_units.saturating_add(i64::from(e.quantity));
            }
            ProductEvent::StockAdjusted(e) => {
                self.received_units = self.received_units.saturating_add(e.delta.get());
            }
            ProductEvent::StockReserved(e) => {
                self.reserved_units = self.reserved_units.saturating_add(i64::from(e.quantity));
                if !e.held_by_order {
                    self.reservations.insert(e.order_id, e.quantity);
                }
            }
            // `decide` writes a release or shipment only for units the order holds, once: the
            // order's own transition (confirmed or paid, to cancelled or shipped) commits with
            // it, and that transition happens once.
            ProductEvent::StockReleased(e) => {
                self.reservations.remove(&e.order_id);
                self.reserved_units = self.reserved_units.saturating_sub(i64::from(e.quantity));
            }
            ProductEvent::StockShipped(e) => {
                self.reservations.remove(&e.order_id);
                self.reserved_units = self.reserved_units.saturating_sub(i64::from(e.quantity));
                self.shipped_units = self.shipped_units.saturating_add(i64::from(e.quantity));
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku() -> ProductId {
        "sku".parse().unwrap()
    }

    fn run(state: ProductState, cmd: ProductCommand) -> Result<ProductState, ProductError> {
        Ok(decide(&state, cmd)?.iter().fold(state, |s, e| s.apply(e)))
    }

    fn receive(n: i64) -> ProductCommand {
        ProductCommand::ReceiveStock {
            product_id: sku(),
            quantity: StockQuantity::try_from(n).unwrap(),
        }
    }

    fn reserve(order: OrderId, n: i64) -> ProductCommand {
        ProductCommand::Reserve {
            product_id: sku(),
            order_id: order,
            quantity: Quantity::try_from(n).unwrap(),
        }
    }

    fn adjust(d: i64) -> ProductCommand {
        ProductCommand::AdjustStock {
            product_id: sku(),
            delta: StockDelta::try_from(d).unwrap(),
            reason: Some("stock count".into()),
        }
    }

    #[test]
    fn receiving_stock_accumulates() {
        let mut state = ProductState::default();
        for _ in 0..3 {
            state = run(state, receive(40)).unwrap();
        }
        assert_eq!(state.received_units, 120);
        assert_eq!(state.available_units(), 120);
    }

    #[test]
    fn overflow_is_refused() {
        let state = ProductState {
            received_units: i64::MAX,
            ..ProductState::default()
        };
        assert_eq!(decide(&state, receive(1)), Err(ProductError::StockOverflow));
    }

    #[test]
    fn reservations_never_exceed_what_is_available() {
        let (a, b, c) = (OrderId::new(), OrderId::new(), OrderId::new());
        let state = run(ProductState::default(), receive(7)).unwrap();
        let state = run(state, reserve(a, 5)).unwrap();
        assert_eq!(state.available_units(), 2);
        assert_eq!(
            decide(&state, reserve(b, 3)),
            Err(ProductError::InsufficientStock {
                asked: 3,
                available: 2
            })
        );
        let state = run(state, reserve(b, 2)).unwrap();
        assert_eq!(state.available_units(), 0);
        assert!(decide(&state, reserve(c, 1)).is_err());
        // A product nobody received stock for promises nothing.
        assert!(decide(&ProductState::default(), reserve(c, 1)).is_err());
    }

    /// A reservation written before orders carried their own, as the log holds it.
    fn listed(order: OrderId, n: i64) -> ProductEvent {
        ProductEvent::StockReserved(StockReserved {
            product_id: sku(),
            order_id: order,
            quantity: Quantity::try_from(n).unwrap(),
            held_by_order: false,
        })
    }

    fn release(order: OrderId, held: Option<i64>) -> ProductCommand {
        ProductCommand::Release {
            product_id: sku(),
            order_id: order,
            reason: ReleaseReason::OrderCancelled,
            held_by_order: held.map(|n| Quantity::try_from(n).unwrap()),
        }
    }

    fn ship(order: OrderId, held: Option<i64>) -> ProductCommand {
        ProductCommand::Ship {
            product_id: sku(),
            order_id: order,
            held_by_order: held.map(|n| Quantity::try_from(n).unwrap()),
        }
    }

    #[test]
    fn releasing_and_shipping_move_exactly_what_the_order_holds() {
        let (a, b) = (OrderId::new(), OrderId::new());
        let state = run(ProductState::default(), receive(10)).unwrap();
        let state = run(state, reserve(a, 4)).unwrap();
        let state = run(state, reserve(b, 3)).unwrap();
        // The orders carry these reservations: the product lists none of them.
        assert!(state.reservations.is_empty());
        let state = run(state, release(a, Some(4))).unwrap();
        assert_eq!((state.reserved_units, state.available_units()), (3, 7));
        // An order that holds nothing here (confirmed before reservations existed): no events.
        let none = OrderId::new();
        assert_eq!(decide(&state, release(none, None)), Ok(vec![]));
        assert_eq!(decide(&state, ship(none, None)), Ok(vec![]));
        let state = run(state, ship(b, Some(3))).unwrap();
        assert_eq!(
            (
                state.received_units,
                state.reserved_units,
                state.shipped_units,
                state.available_units()
            ),
            (10, 0, 3, 7)
        );
    }

    #[test]
    fn reservations_the_product_lists_are_released_and_shipped_as_listed() {
        let (a, b) = (OrderId::new(), OrderId::new());
        let state = run(ProductState::default(), receive(10)).unwrap();
        let state = state.apply(&listed(a, 4)).apply(&listed(b, 3));
        assert_eq!((state.reserved_units, state.reservations.len()), (7, 2));
        assert_eq!(
            decide(&state, reserve(a, 1)),
            Err(ProductError::AlreadyReserved { held: 4 })
        );
        // The list wins over what the command says (an order confirmed between reservations
        // and orders carrying them says nothing).
        let state = run(state, release(a, None)).unwrap();
        assert_eq!((state.reserved_units, state.available_units()), (3, 7));
        assert_eq!(decide(&state, release(a, None)), Ok(vec![]));
        let state = run(state, ship(b, Some(3))).unwrap();
        assert_eq!(
            (
                state.reserved_units,
                state.shipped_units,
                state.reservations.len()
            ),
            (0, 3, 0)
        );
    }

    #[test]
    fn adjustments_never_go_below_what_is_committed() {
        let a = OrderId::new();
        let state = run(ProductState::default(), receive(10)).unwrap();
        let state = run(state, reserve(a, 6)).unwrap();
        assert_eq!(
            decide(&state, adjust(-5)),
            Err(ProductError::BelowCommitted {
                removed: 5,
                committed: 6
            })
        );
        let state = run(state, adjust(-4)).unwrap();
        assert_eq!(state.available_units(), 0);
        let state = run(state, adjust(2)).unwrap();
        assert_eq!(state.available_units(), 2);
        assert_eq!(decide(&state, adjust(0)), Err(ProductError::ZeroAdjustment));
    }

    #[test]
    fn details_set_the_price_and_an_unchanged_put_writes_nothing() {
        let set = |name: &str, cents: i64| ProductCommand::SetDetails {
            product_id: sku(),
            name: name.into(),
            price: Price {
                currency: Currency::USD,
                unit_price_cents: UnitPriceCents::try_from(cents).unwrap(),
            },
        };
        let state = run(ProductState::default(), set("Mouse", 2499)).unwrap();
        assert_eq!(state.price.map(|p| p.unit_price_cents.get()), Some(2499));
        assert_eq!(decide(&state, set("Mouse", 2499)), Ok(vec![]));
        assert_eq!(decide(&state, set("Mouse", 1999)).unwrap().len(), 1);
        assert_eq!(
            decide(&state, set("  ", 1)),
            Err(ProductError::InvalidText { field: "name" })
        );
    }
}
