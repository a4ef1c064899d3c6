pub mod ops;
pub mod orders;
pub mod products;
