//! The catalog (a product's name and price) and its stock, on the product's own stream.

use axum::extract::State;
use axum::http::StatusCode;
use domain::events::DomainEvent;
use domain::ids::FreeText;
use domain::product::{self, Price, ProductCommand, ProductState};
use domain::{Currency, ProductId, StockDelta, StockQuantity, UnitPriceCents};
use event_store::ProductAggregate;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::commands::{self, Command, CommandOutcome, OneStream};
use crate::decisions::product_error;
use crate::extract::{AppPath, CommandContext, JsonBody};
use crate::model::{
    CommandFailures, ErrorBody, ProductAccepted, ProductSnapshot, StoreUnavailable, present,
};
use service_kit::api_error::ApiError;

/// A delivery of stock.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveStock {
    /// Units received.
    #[schema(value_type = i64, minimum = 1, maximum = 1000000)]
    quantity: StockQuantity,
}

/// A stock count or write-off.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustStock {
    /// Units added (positive) or removed (negative); not 0.
    #[schema(value_type = i64, minimum = -1000000, maximum = 1000000)]
    quantity: StockDelta,
    /// Why, e.g. `stock count`; not blank, at most 200 characters, no control characters
    /// but tab and line breaks.
    #[schema(
        min_length = 1,
        max_length = 200,
        nullable = false,
        pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$"
    )]
    #[schema(value_type = Option<String>)]
    #[serde(default, deserialize_with = "present")]
    reason: Option<FreeText>,
}

/// A product's catalog details.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetDetails {
    /// Not blank, at most 200 characters, no control characters but tab and line breaks.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$"
    )]
    #[schema(value_type = String)]
    name: FreeText,
    /// Price of one unit in minor units of `currency`: what order lines added from now on
    /// take.
    #[schema(value_type = i64, minimum = 0, maximum = 100000000)]
    unit_price_cents: UnitPriceCents,
    /// ISO 4217 code, e.g. `EUR`; `USD` when absent. Orders in another currency cannot
    /// take the product.
    #[schema(value_type = Option<String>, pattern = "^[A-Z]{3}$", nullable = false)]
    #[serde(default, deserialize_with = "present")]
    currency: Option<Currency>,
}

fn product_id(raw: &str) -> Result<ProductId, ApiError> {
    raw.parse().map_err(|e: domain::ids::InvalidValue| {
        ApiError::bad_request("invalid_path", e.to_string())
    })
}

/// Runs one command on the product's stream; `refused` turns the domain's refusal into
/// the answer.
async fn run(
    app: &AppState,
    product_id: ProductId,
    ctx: CommandContext,
    body: serde_json::Value,
    command: ProductCommand,
    refused: fn(product::ProductError) -> ApiError,
) -> Result<CommandOutcome, ApiError> {
    let stream_id = product_id.stream_id();
    let decide =
        OneStream::<ProductAggregate, _>::new(stream_id.clone(), move |state: &ProductState| {
            product::decide(state, command.clone())
                .map(|events| events.into_iter().map(DomainEvent::Product).collect())
                .map_err(refused)
        });
    commands::execute(
        app,
        Command {
            stream_id,
            success: StatusCode::OK,
            ctx,
            body,
            decide,
            accepted: move |version, position| ProductAccepted {
                product_id: product_id.clone(),
                version,
                position,
            },
        },
    )
    .await
}

const PRODUCT_ID: &str = "1 to 64 characters of A-Z, a-z, 0-9, `_`, `.`, `:`, `-`";

/// Sets a product's name and price in the catalog (`ProductDetailsSet` on
/// `product-<productId>`); the same details again write nothing and answer the current
/// version.
#[utoipa::path(
    put,
    path = "/products/{product_id}",
    tag = "products",
    params(
        ("product_id" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.:-]{1,64}$", description = PRODUCT_ID),
        CommandContext,
    ),
    request_body = SetDetails,
    responses(
        (status = 200, description = "Set (or already so), or replayed with `Idempotent-Replayed: true`", body = ProductAccepted,
            headers(
                ("ETag" = String, description = "The product stream's version in quotes, e.g. `\"1\"`"),
                ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`"),
            )),
        (status = 400, description = "Malformed JSON (`malformed_json`), product id (`invalid_path`) or header (`invalid_header`)", body = ErrorBody),
        (status = 409, description = "The product's stream kept changing under the command (`concurrency_conflict`)", body = ErrorBody),
        CommandFailures,
        (status = 422, description = "A field is missing, unknown or breaks a rule (`validation_failed`, named in `field`), or the `Idempotency-Key` was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        StoreUnavailable,
    )
)]
pub async fn set_details(
    State(app): State<AppState>,
    AppPath(raw_id): AppPath<String>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<SetDetails>,
) -> Result<CommandOutcome, ApiError> {
    let product_id = product_id(&raw_id)?;
    let command = ProductCommand::SetDetails {
        product_id: product_id.clone(),
        name: value.name.into_inner(),
        price: Price {
            currency: value.currency.unwrap_or_default(),
            unit_price_cents: value.unit_price_cents,
        },
    };
    run(&app, product_id, ctx, raw, command, product_error).await
}

/// A product's catalog details and stock, rebuilt from its stream.
#[utoipa::path(
    get,
    path = "/products/{product_id}",
    tag = "products",
    params(
        ("product_id" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.:-]{1,64}$", description = PRODUCT_ID),
    ),
    responses(
        (status = 200, description = "The product", body = ProductSnapshot),
        (status = 400, description = "Malformed product id (`invalid_path`)", body = ErrorBody),
        (status = 404, description = "No event was ever recorded for the product (`product_not_found`)", body = ErrorBody),
        StoreUnavailable,
    )
)]
pub async fn get(
    State(app): State<AppState>,
    AppPath(raw_id): AppPath<String>,
) -> Result<axum::Json<ProductSnapshot>, ApiError> {
    let product_id = product_id(&raw_id)?;
    let loaded = app
        .store
        .load::<ProductAggregate>(&product_id.stream_id())
        .await?;
    if loaded.version == 0 {
        return Err(ApiError::not_found(
            "product_not_found",
            format!("product `{product_id}` has no events"),
        ));
    }
    Ok(axum::Json(ProductSnapshot::new(
        product_id,
        &loaded.state,
        loaded.version,
    )))
}

/// Records stock received for a product (`StockReceived` on `product-<productId>`).
#[utoipa::path(
    post,
    path = "/products/{product_id}/stock",
    tag = "products",
    params(
        ("product_id" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.:-]{1,64}$", description = PRODUCT_ID),
        CommandContext,
    ),
    request_body = ReceiveStock,
    responses(
        (status = 200, description = "Recorded, or replayed with `Idempotent-Replayed: true`", body = ProductAccepted,
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
    AppPath(raw_id): AppPath<String>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<ReceiveStock>,
) -> Result<CommandOutcome, ApiError> {
    let product_id = product_id(&raw_id)?;
    let command = ProductCommand::ReceiveStock {
        product_id: product_id.clone(),
        quantity: value.quantity,
    };
    run(&app, product_id, ctx, raw, command, |e| {
        ApiError::invalid("quantity", e.to_string())
    })
    .await
}

/// Records a stock count or write-off (`StockAdjusted` on `product-<productId>`): units
/// added or removed outside a delivery, never below what is reserved and shipped.
#[utoipa::path(
    post,
    path = "/products/{product_id}/stock/adjustments",
    tag = "products",
    params(
        ("product_id" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.:-]{1,64}$", description = PRODUCT_ID),
        CommandContext,
    ),
    request_body = AdjustStock,
    responses(
        (status = 200, description = "Recorded, or replayed with `Idempotent-Replayed: true`", body = ProductAccepted,
            headers(
                ("ETag" = String, description = "The product stream's new version in quotes, e.g. `\"2\"`"),
                ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`"),
            )),
        (status = 400, description = "Malformed JSON (`malformed_json`), product id (`invalid_path`) or header (`invalid_header`)", body = ErrorBody),
        (status = 409, description = "It would leave fewer units than are reserved plus shipped (`below_committed`), or the product's stream kept changing under the command (`concurrency_conflict`)", body = ErrorBody),
        CommandFailures,
        (status = 422, description = "`quantity` is missing, 0 or out of range, the stock would overflow, `reason` is blank or too long, or the body has other fields (`validation_failed`, named in `field`), or the `Idempotency-Key` was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        StoreUnavailable,
    )
)]
pub async fn adjust_stock(
    State(app): State<AppState>,
    AppPath(raw_id): AppPath<String>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<AdjustStock>,
) -> Result<CommandOutcome, ApiError> {
    let product_id = product_id(&raw_id)?;
    let command = ProductCommand::AdjustStock {
        product_id: product_id.clone(),
        delta: value.quantity,
        reason: value.reason.map(FreeText::into_inner),
    };
    run(&app, product_id, ctx, raw, command, product_error).await
}
