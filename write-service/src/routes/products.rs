//! Stock arriving for a product, recorded on the product's own stream.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use shared::events::DomainEvent;
use shared::product::{self, ProductCommand, ProductState};
use shared::store::ProductAggregate;
use shared::{ProductId, StockQuantity};

use crate::AppState;
use crate::commands::{self, Command, CommandOutcome};
use crate::extract::{AppPath, CommandContext, JsonBody};
use shared::api_error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveStock {
    quantity: StockQuantity,
}

pub async fn receive_stock(
    State(app): State<AppState>,
    AppPath(product_id): AppPath<String>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<ReceiveStock>,
) -> Result<CommandOutcome, ApiError> {
    let product_id: ProductId = product_id.parse().map_err(|e: shared::ids::InvalidValue| {
        ApiError::bad_request("invalid_path", e.to_string())
    })?;
    let command = ProductCommand::ReceiveStock {
        product_id: product_id.clone(),
        quantity: value.quantity,
    };
    commands::execute::<ProductAggregate, _>(
        &app,
        Command {
            stream_id: product_id.stream_id(),
            id: ("productId", product_id.to_string()),
            success: StatusCode::OK,
            ctx: &ctx,
            body: &raw,
            decide: |state: &ProductState| {
                product::decide(state, command.clone())
                    .map(|events| events.into_iter().map(DomainEvent::Product).collect())
                    .map_err(|e| ApiError::invalid("quantity", e.to_string()))
            },
        },
    )
    .await
}
