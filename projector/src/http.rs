//! Health and metrics of `projector run`.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::engine::Engine;
use crate::runner::{State as RunState, StatusBoard};

#[derive(Clone)]
pub struct HttpState {
    pub engine: Engine,
    pub board: StatusBoard,
    pub metrics: PrometheusHandle,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route(
            "/health/live",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Ready when both stores answer and no projection is stopped on a poison event.
async fn ready(State(s): State<HttpState>) -> impl IntoResponse {
    let timeout = Duration::from_secs(2);
    let pg = tokio::time::timeout(
        timeout,
        sqlx::query("select 1").execute(s.engine.store.pool()),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    // In a task of its own: a MongoDB operation dropped half-way leaves its checkout queued
    // in the driver's pool (see the read-service's store module).
    let views = s.engine.views.clone();
    let mongo = tokio::time::timeout(timeout, tokio::spawn(async move { views.ping().await }))
        .await
        .is_ok_and(|r| r.is_ok_and(|r| r.is_ok()));
    let projections = s.board.lock().map(|b| b.clone()).unwrap_or_default();
    let stopped = projections.values().any(|p| p.state == RunState::Stopped);
    let status = if pg && mongo && !stopped {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
        "postgres": pg,
        "mongodb": mongo,
        "transactions": s.engine.views.uses_transactions(),
        "projections": projections,
    });
    (status, axum::Json(body))
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}
