//! The order backend's domain and the event store both services share.
//!
//! `ids`, `events`, `order` and `product` are pure: no I/O, tested with given/when/then.
//! `store` (feature `store`) is the PostgreSQL event store client.

#[cfg(feature = "service")]
pub mod api_error;
pub mod events;
pub mod ids;
pub mod order;
pub mod position;
pub mod product;
#[cfg(feature = "service")]
pub mod serve;
#[cfg(feature = "service")]
pub mod shutdown;
#[cfg(feature = "store")]
pub mod store;
#[cfg(feature = "service")]
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use ids::{Currency, OrderId, ProductId, Quantity, StockQuantity, UnitPriceCents, UserId};
pub use position::Position;
