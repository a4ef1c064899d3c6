//! The product aggregate: a product's own stream records the stock it receives.

use serde::{Deserialize, Serialize};

use crate::events::{ProductEvent, StockReceived};
use crate::ids::{ProductId, StockQuantity};

pub const STATE_SCHEMA_VERSION: i32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductState {
    pub received_units: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductCommand {
    ReceiveStock {
        product_id: ProductId,
        quantity: StockQuantity,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("stock of this product would overflow")]
    StockOverflow,
}

pub fn decide(
    state: &ProductState,
    command: ProductCommand,
) -> Result<Vec<ProductEvent>, ProductError> {
    match command {
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
    }
}

impl ProductState {
    pub fn apply(mut self, event: &ProductEvent) -> ProductState {
        match event {
            ProductEvent::StockReceived(e) => {
                self.received_units = self.received_units.saturating_add(i64::from(e.quantity));
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiving_stock_accumulates() {
        let cmd = || ProductCommand::ReceiveStock {
            product_id: "sku".parse().unwrap(),
            quantity: StockQuantity::try_from(40).unwrap(),
        };
        let mut state = ProductState::default();
        for _ in 0..3 {
            for e in decide(&state, cmd()).unwrap() {
                state = state.apply(&e);
            }
        }
        assert_eq!(state.received_units, 120);
    }

    #[test]
    fn overflow_is_refused() {
        let state = ProductState {
            received_units: i64::MAX,
        };
        let cmd = ProductCommand::ReceiveStock {
            product_id: "sku".parse().unwrap(),
            quantity: StockQuantity::try_from(1).unwrap(),
        };
        assert_eq!(decide(&state, cmd), Err(ProductError::StockOverflow));
    }
}
