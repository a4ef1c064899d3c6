//! Stock arriving for a product, recorded on the product's own stream.

use axum::extract::State;
use axum::http::StatusCode;
use domain::events::DomainEvent;
use domain::product::{self, ProductCommand, ProductState};
use domain::{ProductId, StockQuantity};
use event_store::ProductAggregate;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::commands::{self, Command, CommandOutcome};
use crate::extract::{AppPath, CommandContext, JsonBody};
use crate::model::{CommandFailures, ErrorBody, StockAccepted, StoreUnavailable};
use service_kit::api_error::ApiError;

/// A delivery of stock.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveStock {
    /// Units received.
    #[schema(value_type = i64, minimum = 1, maximum = 1000000)]
    quantity: StockQuantity,
}

/// Records stock received for a product (`StockReceived` on `product-<productId>`).
#[utoipa::path(
    post,
    path = "/products/{product_id}/stock",
    tag = "products",
    params(
        ("product_id" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.:-]{1,64}$", description = "1 to 64 characters of A-Z, a-z, 0-9, `_`, `.`, `:`, `-`"),
        CommandContext,
    ),
    request_body = ReceiveStock,
    responses(
        (status = 200, description = "Recorded, or replayed with `Idempotent-Replayed: true`", body = StockAccepted,
            headers(
                ("ETag" = String, description = "The product stream's new version in quotes, e.g. `\"1\"`"),
                ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`"),
            )),
        (status = 400, description = "Malformed JSON (`malformed_json`), product id (`invalid_path`) or header (`invalid_header`)", body = ErrorBody),
        (status = 409, description = "The product's stream kept changing under the command (`concurrency_conflict`)", body = ErrorBody),
        CommandFailures,
        (status = 422, description = "`quantity` is missing or out of range, the stock would overflow, or the body has other fields (`validation_failed`, named in `field`), or the `Idempotency-Key` was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        StoreUnavailable,
    )
)]
pub async fn receive_stock(
    State(app): State<AppState>,
    AppPath(product_id): AppPath<String>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<ReceiveStock>,
) -> Result<CommandOutcome, ApiError> {
    let product_id: ProductId = product_id.parse().map_err(|e: domain::ids::InvalidValue| {
        ApiError::bad_request("invalid_path", e.to_string())
    })?;
    let command = ProductCommand::ReceiveStock {
        product_id: product_id.clone(),
        quantity: value.quantity,
    };
    let stream_id = product_id.stream_id();
    commands::execute::<ProductAggregate, _, _, _>(
        &app,
        Command {
            stream_id,
            success: StatusCode::OK,
            ctx,
            body: raw,
            decide: move |state: &ProductState| {
                product::decide(state, command.clone())
                    .map(|events| events.into_iter().map(DomainEvent::Product).collect())
                    .map_err(|e| ApiError::invalid("quantity", e.to_string()))
            },
            accepted: move |version, position| StockAccepted {
                product_id: product_id.clone(),
                version,
                position,
            },
        },
    )
    .await
}
