//! The order backend's pure domain: ids and money, the order and product aggregates
//! (`decide` and `apply`), their events and upcasting, and the log position. No I/O: no
//! database, HTTP or async runtime, so every rule is tested given/when/then.

pub mod events;
pub mod ids;
pub mod order;
pub mod position;
pub mod product;
pub mod refusal;

pub use ids::{
    Currency, OrderId, ProductId, Quantity, StockDelta, StockQuantity, UnitPriceCents, UserId,
};
pub use position::Position;
