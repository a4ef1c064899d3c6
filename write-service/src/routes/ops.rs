//! Liveness, readiness, Prometheus metrics and the OpenAPI document.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use crate::AppState;
use crate::model::Health;
use crate::openapi::ApiDoc;

/// The process is up (says nothing about PostgreSQL).
#[utoipa::path(get, path = "/health/live", tag = "ops",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn live() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        postgres: None,
    })
}

/// Ready when PostgreSQL answers within two seconds.
#[utoipa::path(get, path = "/health/ready", tag = "ops",
    responses(
        (status = 200, description = "PostgreSQL answers", body = Health),
        (status = 503, description = "PostgreSQL is unreachable", body = Health),
    ))]
pub async fn ready(State(app): State<AppState>) -> (StatusCode, Json<Health>) {
    let unavailable = |why: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable".into(),
                postgres: Some(why.into()),
            }),
        )
    };
    let ping = sqlx::query("select 1").execute(app.store.pool());
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => (
            StatusCode::OK,
            Json(Health {
                status: "ready".into(),
                postgres: None,
            }),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            unavailable("unreachable")
        }
        Err(_) => unavailable("timeout"),
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
