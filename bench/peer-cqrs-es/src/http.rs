//! The two routes of our write-service, over `CqrsFramework::execute` as the cqrs-es demo's
//! command handler does, with our request and response JSON.

use std::cell::Cell;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use cqrs_es::{AggregateError, EventEnvelope, Query};
use postgres_es::PostgresCqrs;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::domain::{LineRequest, Order, OrderCommand, OrderError};

tokio::task_local! {
    /// The sequence of the last event the current request committed. `execute` returns `()`,
    /// but it awaits its queries inside the request's own task, so a task-local is where
    /// `VersionProbe` can leave the version for the handler without any shared map.
    static COMMITTED: Cell<usize>;
}

/// A cqrs-es `Query` (the framework's documented hook for committed events) that only
/// notes the last committed sequence: in memory, no I/O. It exists because our API answers
/// with `version` and the framework's `execute` does not tell it.
pub struct VersionProbe;

#[async_trait]
impl Query<Order> for VersionProbe {
    async fn dispatch(&self, _aggregate_id: &str, events: &[EventEnvelope<Order>]) {
        if let Some(last) = events.last() {
            // Outside a request's scope (no such caller today) there is nobody to tell.
            let _ = COMMITTED.try_with(|c| c.set(last.sequence));
        }
    }
}

pub fn router(cqrs: Arc<PostgresCqrs<Order>>) -> Router {
    Router::new()
        .route("/orders", post(create))
        .route("/orders/{id}/confirm", post(confirm))
        .with_state(cqrs)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    user_id: String,
    items: Vec<ItemBody>,
    currency: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ItemBody {
    product_id: String,
    quantity: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfirmBody {
    payment_method: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    order_id: String,
    version: usize,
}

async fn create(
    State(cqrs): State<Arc<PostgresCqrs<Order>>>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) => return bad_body(&rejection),
    };
    let order_id = uuid::Uuid::new_v4().to_string();
    let command = OrderCommand::CreateOrder {
        order_id: order_id.clone(),
        user_id: body.user_id,
        currency: body.currency.unwrap_or_else(|| "USD".to_string()),
        items: body
            .items
            .into_iter()
            .map(|i| LineRequest {
                product_id: i.product_id,
                quantity: i.quantity,
            })
            .collect(),
    };
    run(&cqrs, order_id, command, StatusCode::CREATED).await
}

async fn confirm(
    State(cqrs): State<Arc<PostgresCqrs<Order>>>,
    Path(order_id): Path<String>,
    body: Result<Json<ConfirmBody>, JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) => return bad_body(&rejection),
    };
    let command = OrderCommand::ConfirmOrder {
        payment_method: body.payment_method,
    };
    run(&cqrs, order_id, command, StatusCode::OK).await
}

/// Executes the command as the framework does (load every event, `handle`, commit, dispatch
/// to the queries) and answers with the version the probe saw committed.
async fn run(
    cqrs: &PostgresCqrs<Order>,
    order_id: String,
    command: OrderCommand,
    success: StatusCode,
) -> Response {
    let (result, version) = COMMITTED
        .scope(Cell::new(0), async {
            let result = cqrs.execute(&order_id, command).await;
            (result, COMMITTED.try_with(Cell::get).unwrap_or(0))
        })
        .await;
    match result {
        Ok(()) => (success, Json(Accepted { order_id, version })).into_response(),
        Err(err) => refusal(err),
    }
}

fn refusal(err: AggregateError<OrderError>) -> Response {
    let (status, code) = match &err {
        AggregateError::UserError(e) => match e {
            OrderError::OrderExists => (StatusCode::CONFLICT, "order_exists"),
            OrderError::OrderNotFound => (StatusCode::NOT_FOUND, "order_not_found"),
            OrderError::InvalidState(_) => (StatusCode::CONFLICT, "invalid_state"),
            OrderError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            OrderError::Catalog(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        },
        // Another command committed the same sequence first (the primary key said 23505).
        AggregateError::AggregateConflict => (StatusCode::CONFLICT, "conflict"),
        AggregateError::DatabaseConnectionError(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        }
        AggregateError::DeserializationError(_) | AggregateError::UnexpectedError(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    };
    error(status, code, &err.to_string())
}

fn bad_body(rejection: &JsonRejection) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        &rejection.body_text(),
    )
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}
