//! Order commands and the event-store reads of one order.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::events::{DomainEvent, LineItem};
use shared::order::{self, OrderCommand, OrderState};
use shared::store::{Loaded, OrderAggregate, Until};
use shared::{Currency, OrderId, ProductId, Quantity, UnitPriceCents, UserId};

use crate::AppState;
use crate::commands::{self, Command, CommandOutcome};
use crate::extract::{AppPath, CommandContext, JsonBody};
use shared::api_error::ApiError;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrder {
    order_id: Option<OrderId>,
    user_id: UserId,
    currency: Option<Currency>,
    items: Vec<Item>,
}

/// A line as a client sends it; unknown fields (typos) are refused.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Item {
    product_id: ProductId,
    quantity: Quantity,
    unit_price_cents: UnitPriceCents,
}

impl From<Item> for LineItem {
    fn from(i: Item) -> LineItem {
        LineItem {
            product_id: i.product_id,
            quantity: i.quantity,
            unit_price_cents: i.unit_price_cents,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ship {
    carrier: String,
    tracking_number: String,
}

async fn run(
    app: &AppState,
    order_id: OrderId,
    ctx: &CommandContext,
    body: &Value,
    success: StatusCode,
    command: OrderCommand,
) -> Result<CommandOutcome, ApiError> {
    commands::execute::<OrderAggregate, _>(
        app,
        Command {
            stream_id: order_id.stream_id(),
            id: ("orderId", order_id.to_string()),
            success,
            ctx,
            body,
            decide: |state: &OrderState| {
                Ok(order::decide(state, command.clone())?
                    .into_iter()
                    .map(DomainEvent::Order)
                    .collect())
            },
        },
    )
    .await
}

pub async fn create(
    State(app): State<AppState>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<CreateOrder>,
) -> Result<CommandOutcome, ApiError> {
    let order_id = value.order_id.unwrap_or_default();
    let command = OrderCommand::Create {
        order_id,
        user_id: value.user_id,
        currency: value.currency.unwrap_or_default(),
        items: value.items.into_iter().map(LineItem::from).collect(),
    };
    // Without a client-chosen id, a retry is safe only with an Idempotency-Key: the stored
    // body (with the generated id) is what the retry gets back.
    run(&app, order_id, &ctx, &raw, StatusCode::CREATED, command).await
}

pub async fn add_item(
    State(app): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<Item>,
) -> Result<CommandOutcome, ApiError> {
    run(
        &app,
        order_id,
        &ctx,
        &raw,
        StatusCode::OK,
        OrderCommand::AddItem(value.into()),
    )
    .await
}

pub async fn remove_item(
    State(app): State<AppState>,
    AppPath((order_id, product_id)): AppPath<(OrderId, String)>,
    ctx: CommandContext,
    JsonBody { raw, .. }: JsonBody<NoFields>,
) -> Result<CommandOutcome, ApiError> {
    let product_id: ProductId = product_id.parse().map_err(|e: shared::ids::InvalidValue| {
        ApiError::bad_request("invalid_path", e.to_string())
    })?;
    run(
        &app,
        order_id,
        &ctx,
        &raw,
        StatusCode::OK,
        OrderCommand::RemoveItem(product_id),
    )
    .await
}

pub async fn confirm(
    State(app): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    ctx: CommandContext,
    JsonBody { raw, .. }: JsonBody<NoFields>,
) -> Result<CommandOutcome, ApiError> {
    run(
        &app,
        order_id,
        &ctx,
        &raw,
        StatusCode::OK,
        OrderCommand::Confirm,
    )
    .await
}

pub async fn cancel(
    State(app): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<Cancel>,
) -> Result<CommandOutcome, ApiError> {
    let command = OrderCommand::Cancel {
        reason: value.reason,
    };
    run(&app, order_id, &ctx, &raw, StatusCode::OK, command).await
}

pub async fn ship(
    State(app): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<Ship>,
) -> Result<CommandOutcome, ApiError> {
    let command = OrderCommand::Ship {
        carrier: value.carrier,
        tracking_number: value.tracking_number,
    };
    run(&app, order_id, &ctx, &raw, StatusCode::OK, command).await
}

pub async fn deliver(
    State(app): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    ctx: CommandContext,
    JsonBody { raw, .. }: JsonBody<NoFields>,
) -> Result<CommandOutcome, ApiError> {
    run(
        &app,
        order_id,
        &ctx,
        &raw,
        StatusCode::OK,
        OrderCommand::Deliver,
    )
    .await
}

fn order_not_found() -> ApiError {
    ApiError::not_found("order_not_found", "order not found")
}

/// The audit trail: every event of the order as stored (upcast to the current schema).
pub async fn events(
    State(app): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
) -> Result<axum::Json<Value>, ApiError> {
    let events = app
        .store
        .read_stream(&order_id.stream_id(), 0, Until::End)
        .await?;
    if events.is_empty() {
        return Err(order_not_found());
    }
    let version = events.last().map_or(0, |e| e.stream_position);
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            json!({
                "position": e.position,
                "globalPosition": e.position.global_position,
                "version": e.stream_position,
                "eventId": e.event_id,
                "type": e.event_type,
                "schemaVersion": e.schema_version,
                "storedSchemaVersion": e.stored_schema_version,
                "data": e.data,
                "metadata": e.metadata,
                "recordedAt": e.recorded_at,
            })
        })
        .collect();
    Ok(axum::Json(
        json!({"orderId": order_id, "version": version, "events": events}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    at: Option<String>,
    version: Option<String>,
}

/// Current state, or the state as of `?at=<RFC3339>` or `?version=<n>`.
pub async fn state(
    State(app): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    Query(query): Query<StateQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let stream = order_id.stream_id();
    let parameter = |name: &str, message: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_parameter",
            message.to_owned(),
        )
        .with_field(name)
    };
    let loaded: Loaded<OrderState> = match (query.at, query.version) {
        (Some(_), Some(_)) => {
            return Err(parameter("at", "use either `at` or `version`, not both"));
        }
        (None, None) => app.store.load::<OrderAggregate>(&stream).await?,
        (Some(at), None) => {
            let at: DateTime<Utc> = DateTime::parse_from_rfc3339(&at)
                .map_err(|_| {
                    parameter(
                        "at",
                        "`at` must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z",
                    )
                })?
                .with_timezone(&Utc);
            app.store
                .replay::<OrderAggregate>(&stream, Until::Time(at))
                .await?
        }
        (None, Some(v)) => {
            let v: u64 = v
                .parse()
                .map_err(|_| parameter("version", "`version` must be a non-negative integer"))?;
            let loaded = app
                .store
                .replay::<OrderAggregate>(&stream, Until::Version(v))
                .await?;
            if loaded.version != v && loaded.version != 0 {
                return Err(ApiError::not_found(
                    "version_not_found",
                    format!("order has no version {v}; its latest is {}", loaded.version),
                ));
            }
            loaded
        }
    };
    let Some(order) = loaded.state.order() else {
        return Err(order_not_found());
    };
    let mut body =
        serde_json::to_value(order).map_err(|e| ApiError::internal("serialising order", &e))?;
    body["version"] = loaded.version.into();
    Ok(axum::Json(body))
}
