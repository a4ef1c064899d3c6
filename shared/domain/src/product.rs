//! The product aggregate: a catalog item (name and price) and the stock it can promise.
//!
//! Its stream records deliveries, counts and write-offs, and each order's reservation from
//! the commit that confirms the order to the one that ships or cancels it. `decide` refuses a
//! reservation beyond what is available, so what a product promises never exceeds what it
//! holds: available = received - reserved - shipped, never negative.

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
    /// The open reservations, by order: what cancelling releases and shipping ships.
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
    /// Gives an order's reservation back; nothing to do if it holds none (an order confirmed
    /// before reservations existed).
    Release {
        product_id: ProductId,
        order_id: OrderId,
        reason: ReleaseReason,
    },
    /// The order's reserved units leave; nothing to do if it holds none.
    Ship {
        product_id: ProductId,
        order_id: OrderId,
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
            })])
        }
        ProductCommand::Release {
            product_id,
            order_id,
            reason,
        } => Ok(state
            .reservations
            .get(&order_id)
            .map(|&quantity| {
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
        } => Ok(state
            .reservations
            .get(&order_id)
            .map(|&quantity| {
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
                self.reservations.insert(e.order_id, e.quantity);
            }
            ProductEvent::StockReleased(e) => {
                if self.reservations.remove(&e.order_id).is_some() {
                    self.reserved_units = self.reserved_units.saturating_sub(i64::from(e.quantity));
                }
            }
            ProductEvent::StockShipped(e) => {
                if self.reservations.remove(&e.order_id).is_some() {
                    self.reserved_units = self.reserved_units.saturating_sub(i64::from(e.quantity));
                    self.shipped_units = self.shipped_units.saturating_add(i64::from(e.quantity));
                }
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
        assert_eq!(
            decide(&state, reserve(a, 1)),
            Err(ProductError::AlreadyReserved { held: 5 })
        );
        // A product nobody received stock for promises nothing.
        assert!(decide(&ProductState::default(), reserve(c, 1)).is_err());
    }

    #[test]
    fn releasing_and_shipping_move_exactly_what_the_order_holds() {
        let (a, b) = (OrderId::new(), OrderId::new());
        let state = run(ProductState::default(), receive(10)).unwrap();
        let state = run(state, reserve(a, 4)).unwrap();
        let state = run(state, reserve(b, 3)).unwrap();
        let release = |order| ProductCommand::Release {
            product_id: sku(),
            order_id: order,
            reason: ReleaseReason::OrderCancelled,
        };
        let ship = |order| ProductCommand::Ship {
            product_id: sku(),
            order_id: order,
        };
        let state = run(state, release(a)).unwrap();
        assert_eq!((state.reserved_units, state.available_units()), (3, 7));
        // Nothing left to release or ship for `a`: no events.
        assert_eq!(decide(&state, release(a)), Ok(vec![]));
        assert_eq!(decide(&state, ship(a)), Ok(vec![]));
        let state = run(state, ship(b)).unwrap();
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
