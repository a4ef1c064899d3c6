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

/// The process is up (says nothing about MongoDB).
#[utoipa::path(get, path = "/health/live", tag = "ops",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn live() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        mongodb: None,
    })
}

/// Ready when MongoDB answers a ping within two seconds.
#[utoipa::path(get, path = "/health/ready", tag = "ops",
    responses(
        (status = 200, description = "MongoDB answers", body = Health),
        (status = 503, description = "MongoDB is unreachable", body = Health),
    ))]
pub async fn ready(State(app): State<AppState>) -> (StatusCode, Json<Health>) {
    let unavailable = |why: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable".into(),
                mongodb: Some(why.into()),
            }),
        )
    };
    match tokio::time::timeout(Duration::from_secs(2), app.views.ping()).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(Health {
                status: "ready".into(),
                mongodb: None,
            }),
        ),
        Ok(Err(_)) => unavailable("unreachable"),
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
