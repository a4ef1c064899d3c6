//! Health and metrics of `projector run`: the shared ops routes (`service_kit::ops`) with
//! the projector's readiness check.

use std::sync::Arc;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use service_kit::ops::{Details, Ops, PING_TIMEOUT, Readiness};

use crate::engine::Engine;
use crate::runner::{State as RunState, StatusBoard};

#[derive(Clone)]
pub struct HttpState {
    pub engine: Engine,
    pub board: StatusBoard,
    pub metrics: PrometheusHandle,
}

pub fn router(state: HttpState) -> Router {
    let metrics = state.metrics.clone();
    service_kit::ops::router(Ops {
        ready: Arc::new(move || ready(state.clone())),
        metrics,
        openapi: None,
    })
}

/// Ready when both stores answer and no projection is stopped on a poison event.
async fn ready(s: HttpState) -> Readiness {
    let pg = tokio::time::timeout(
        PING_TIMEOUT,
        sqlx::query("select 1").execute(s.engine.store.pool()),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    // In a task of its own: a MongoDB operation dropped half-way leaves its checkout queued
    // in the driver's pool (see the read-service's store module).
    let views = s.engine.views.clone();
    let mongo = tokio::time::timeout(
        PING_TIMEOUT,
        tokio::spawn(async move { views.ping().await }),
    )
    .await
    .is_ok_and(|r| r.is_ok_and(|r| r.is_ok()));
    let projections = s.board.lock().map(|b| b.clone()).unwrap_or_default();
    let stopped = projections.values().any(|p| p.state == RunState::Stopped);
    let details = Details::from_iter([
        ("postgres".to_owned(), pg.into()),
        ("mongodb".to_owned(), mongo.into()),
        (
            "transactions".to_owned(),
            s.engine.views.uses_transactions().into(),
        ),
        (
            "projections".to_owned(),
            serde_json::to_value(projections).unwrap_or_default(),
        ),
    ]);
    if pg && mongo && !stopped {
        Ok(details)
    } else {
        Err(details)
    }
}
