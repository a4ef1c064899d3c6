//! What the HTTP services share: the API error body, the request id, tracing and metrics
//! layers, serving with JSON error bodies, and graceful shutdown.

pub mod api_error;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
