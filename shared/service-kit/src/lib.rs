//! What the HTTP services share: the API error body, the request id, tracing and metrics
//! layers, the ops routes (health, metrics, OpenAPI document), serving with JSON error bodies,
//! and graceful shutdown.

pub mod api_error;
#[cfg(feature = "auth")]
pub mod auth;
pub mod ops;
pub mod serve;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
