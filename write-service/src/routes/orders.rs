//! Order commands and the event-store reads of one order.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use domain::events::{DomainEvent, OrderEvent};
use domain::ids::FreeText;
use domain::order::{OrderCommand, OrderState, valid_email, valid_payment_method};
use domain::{Currency, OrderId, ProductId, UserId};
use event_store::{Loaded, OrderAggregate, Until};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::commands::{self, Command, CommandOutcome};
use crate::decisions::{OrderDecision, OrderRequest};
use crate::extract::{AppPath, AppQuery, CommandContext, JsonBody};
use crate::model::{
    AuditEvent, AuditTrail, CommandFailures, ErrorBody, Item, OrderAccepted, OrderApplied,
    OrderSnapshot, StoreUnavailable, present,
};
use service_kit::api_error::ApiError;
use service_kit::auth::{Caller, forbidden};

/// A new order. Each line takes its product's catalog price; lines of the same product
/// merge into one.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrder {
    /// The order's id, a UUID; generated when absent. Naming it makes a retried create
    /// safe without an `Idempotency-Key` (the retry is 409 `order_exists`).
    #[schema(value_type = Option<String>, format = "uuid", nullable = false)]
    #[serde(default, deserialize_with = "present")]
    order_id: Option<OrderId>,
    /// The customer the order is for: 1 to 64 characters of A-Z, a-z, 0-9, `_`, `.`, `:`,
    /// `-`. Omitted, the order is the caller's own (the token's `sub`). A customer may name
    /// only themself (anyone else is 403 `forbidden`); staff name any customer.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.:-]{1,64}$", nullable = false)]
    #[serde(default, deserialize_with = "present")]
    user_id: Option<UserId>,
    /// ISO 4217 code, e.g. `EUR`; `USD` when absent.
    #[schema(value_type = Option<String>, pattern = "^[A-Z]{3}$", nullable = false)]
    #[serde(default, deserialize_with = "present")]
    currency: Option<Currency>,
    /// 1 to 100 lines after merging.
    #[schema(min_items = 1)]
    items: Vec<Item>,
}

/// The body of a command that takes none: absent, or `{}`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// The checkout: how the customer pays, and where their emails go.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Confirm {
    /// The payment provider's payment method id: `pm_` and 1 to 100 letters, digits or `_`,
    /// e.g. `pm_card_visa` (Stripe's test methods: `pm_card_visa` succeeds,
    /// `pm_card_chargeDeclined` and `pm_card_chargeDeclinedInsufficientFunds` are declined).
    #[schema(value_type = String, min_length = 4, max_length = 103, pattern = "^pm_[A-Za-z0-9_]{1,100}$", example = "pm_card_visa")]
    payment_method: PaymentMethod,
    /// Where the order's emails go; when absent, `{userId}@` the fulfilment process's
    /// `CUSTOMER_EMAIL_DOMAIN`. One `@` with text before it and a domain after it that has a
    /// dot and neither starts nor ends with one; at most 254 characters; no whitespace or
    /// control characters.
    #[schema(
        value_type = Option<String>,
        min_length = 5,
        max_length = 254,
        nullable = false,
        pattern = "^[^@\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]+@[^@.\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^@\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*\\.[^@\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]*[^@.\\u0000-\\u0020\\u007F-\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]$",
        example = "alice@example.com"
    )]
    #[serde(default, deserialize_with = "present")]
    email: Option<Email>,
}

/// A payment method id, checked as the body is read (the domain's rule), so that a bad one
/// is 422 naming `paymentMethod` before the order is loaded, as the other fields' rules are.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct PaymentMethod(String);

impl TryFrom<String> for PaymentMethod {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if valid_payment_method(&s) {
            Ok(Self(s))
        } else {
            Err("must be a payment method id such as `pm_card_visa` (`pm_` and 1 to 100 letters, digits or `_`)".into())
        }
    }
}

/// An email address by the domain's loose rule, checked as the body is read.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct Email(String);

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if valid_email(&s) {
            Ok(Self(s))
        } else {
            Err("must be an email address (one `@`, a dot in the domain, at most 254 characters, no whitespace or control characters)".into())
        }
    }
}

/// The body is optional: no body means no reason.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// Why; not blank, at most 200 characters, no control characters but tab and line
    /// breaks.
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

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ship {
    /// Not blank, at most 200 characters, no control characters but tab and line breaks.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$"
    )]
    #[schema(value_type = String)]
    carrier: FreeText,
    /// Not blank, at most 200 characters, no control characters but tab and line breaks.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$"
    )]
    #[schema(value_type = String)]
    tracking_number: FreeText,
}

async fn run(
    app: &AppState,
    order_id: OrderId,
    ctx: CommandContext,
    body: Value,
    success: StatusCode,
    request: OrderRequest,
) -> Result<CommandOutcome, ApiError> {
    let only_for = ctx.caller.only_own().cloned();
    commands::execute(
        app,
        Command {
            stream_id: order_id.stream_id(),
            success,
            ctx,
            body,
            decide: OrderDecision {
                order_id,
                request,
                only_for,
            },
            accepted: move |version, position| OrderAccepted {
                order_id,
                version,
                position,
            },
        },
    )
    .await
}

/// Places an order (`OrderCreated`), pending confirmation; each line takes its product's
/// catalog price. A customer places orders for themself (`userId` omitted or their own);
/// staff may name any customer. An `Idempotency-Key` is the caller's own: another caller's
/// equal key is a different key.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    params(CommandContext),
    request_body = CreateOrder,
    responses(
        (status = 201, description = "Created, or replayed with `Idempotent-Replayed: true`", body = OrderAccepted,
            headers(
                ("Location" = String, description = "The order's path, `/orders/{orderId}`"),
                ("ETag" = String, description = "The order's version in quotes, `\"1\"`"),
                ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`"),
            )),
        (status = 400, description = "Malformed JSON (`malformed_json`) or header (`invalid_header`)", body = ErrorBody),
        (status = 403, description = "A customer named another customer in `userId` (`forbidden`; nothing is read or written)", body = ErrorBody),
        (status = 409, description = "The order id is taken (`order_exists`); a line's `unitPriceCents` is not its product's current catalog price (`price_changed`, the first such line in `field`, e.g. `items[1].unitPriceCents`, and `details: [{productId, unitPriceCents}]` with the current price of every such line; nothing written); or the order kept changing under the command (`concurrency_conflict`)", body = ErrorBody),
        CommandFailures,
        (status = 422, description = "A field is missing, unknown or breaks a rule (`validation_failed`, named in `field`), including a product with no catalog price or priced in another currency than the order (`field`: `items[i].productId`), or the `Idempotency-Key` was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        StoreUnavailable,
    )
)]
pub async fn create(
    State(app): State<AppState>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<CreateOrder>,
) -> Result<CommandOutcome, ApiError> {
    // Decided before anything is loaded or written.
    let user_id = match value.user_id {
        Some(user) if ctx.caller.may_act_for(&user) => user,
        Some(_) => {
            return Err(forbidden(
                "a customer places orders only for themself: omit `userId` or name your own",
            ));
        }
        // The same rule for everyone: no name means the caller's own order.
        None => ctx.caller.sub.clone(),
    };
    let order_id = value.order_id.unwrap_or_default();
    let command = OrderRequest::Create {
        user_id,
        currency: value.currency.unwrap_or_default(),
        items: value.items.into_iter().map(Into::into).collect(),
    };
    // Without a client-chosen id, a retry is safe only with an Idempotency-Key: the stored
    // body (with the generated id) is what the retry gets back.
    run(&app, order_id, ctx, raw, StatusCode::CREATED, command).await
}

/// Adds a line to a pending order at its product's catalog price, or units to the line of
/// the same product at the line's price.
#[utoipa::path(
    post,
    path = "/orders/{order_id}/items",
    tag = "orders",
    params(("order_id" = String, Path, format = "uuid", description = "The order's id, a UUID"), CommandContext),
    request_body = Item,
    responses(
        OrderApplied,
        (status = 400, description = "Malformed JSON (`malformed_json`), order id (`invalid_path`) or header (`invalid_header`)", body = ErrorBody),
        (status = 404, description = "No such order, or another customer's: a customer gets the same answer for both (`order_not_found`)", body = ErrorBody),
        (status = 409, description = "The order is not pending (`invalid_state`); `unitPriceCents` is not the price the line takes (the catalog's, or the line's for a product already on the order: `price_changed`, `field` `unitPriceCents`, `details: [{productId, unitPriceCents}]`; nothing written); or the order kept changing under the command (`concurrency_conflict`)", body = ErrorBody),
        CommandFailures,
        (status = 422, description = "A field is missing, unknown or breaks a rule (`validation_failed`, named in `field`), including a product with no catalog price or priced in another currency than the order (`field`: `productId`), or the `Idempotency-Key` was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        StoreUnavailable,
    )
)]
pub async fn add_item(
    State(app): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<Item>,
) -> Result<CommandOutcome, ApiError> {
    run(
        &app,
        order_id,
        ctx,
        raw,
        StatusCode::OK,
        OrderRequest::AddItem(value.into()),
    )
    .await
}

/// Removes a product's line from a pending order.
#[utoipa::path(
    delete,
    path = "/orders/{order_id}/items/{product_id}",
    tag = "orders",
    params(("order_id" = String, Path, format = "uuid", description = "The order's id, a UUID"), ("product_id" = String, Path, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.:-]{1,64}$", description = "The product whose line to remove"), CommandContext),
    request_body(content = ref("#/components/schemas/NoFields"), description = "None, or `{}`"),
    responses(
        OrderApplied,
        (status = 400, description = "Malformed JSON (`malformed_json`), order or product id (`invalid_path`) or header (`invalid_header`)", body = ErrorBody),
        (status = 404, description = "No such order, or another customer's, answered alike (`order_not_found`), or the product is not on it (`item_not_found`)", body = ErrorBody),
        (status = 409, description = "The order is not pending (`invalid_state`), the line is its last (`last_item`: cancel instead), or the order kept changing under the command (`concurrency_conflict`)", body = ErrorBody),
        CommandFailures,
        (status = 422, description = "The body has fields (`validation_failed`), or the `Idempotency-Key` was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        StoreUnavailable,
    )
)]
pub async fn remove_item(
    State(app): State<AppState>,
    AppPath((order_id, product_id)): AppPath<(OrderId, String)>,
    ctx: CommandContext,
    JsonBody { raw, .. }: JsonBody<NoFields>,
) -> Result<CommandOutcome, ApiError> {
    let product_id: ProductId = product_id.parse().map_err(|e: domain::ids::InvalidValue| {
        ApiError::bad_request("invalid_path", e.to_string())
    })?;
    run(
        &app,
        order_id,
        ctx,
        raw,
        StatusCode::OK,
        OrderRequest::Other(OrderCommand::RemoveItem(product_id)),
    )
    .await
}

/// Checks out a pending order: `OrderConfirmed` with the payment method, and one
/// `StockReserved` per line on its product's stream, in one transaction, or nothing. The
/// fulfilment process then charges the payment method: the order becomes `paid`, or is
/// cancelled with its stock released if the payment is declined or times out.
#[utoipa::path(
    post,
    path = "/orders/{order_id}/confirm",
    tag = "orders",
    params(("order_id" = String, Path, format = "uuid", description = "The order's id, a UUID"), CommandContext),
    request_body(content = Confirm, description = "The payment method (required) and the customer's email (optional)"),
    responses(
        OrderApplied,
        (status = 400, description = "Malformed JSON (`malformed_json`), order id (`invalid_path`) or header (`invalid_header`)", body = ErrorBody),
        (status = 404, description = "No such order, or another customer's: a customer gets the same answer for both (`order_not_found`)", body = ErrorBody),
        (status = 409, description = "The order is not pending (`invalid_state`); a line's product has fewer units available than the line asks (`insufficient_stock`, with `details: [{productId, askedUnits, availableUnits}]` for every short line; nothing written); or the order or a product kept changing under the command (`concurrency_conflict`)", body = ErrorBody),
        CommandFailures,
        (status = 422, description = "`paymentMethod` is missing or not a payment method id, `email` is `null` or not an email address, or the body has other fields (`validation_failed`, named in `field`; checked before the order is looked up, nothing written), or the `Idempotency-Key` was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        StoreUnavailable,
    )
)]
pub async fn confirm(
    State(app): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<Confirm>,
) -> Result<CommandOutcome, ApiError> {
    let command = OrderCommand::Confirm {
        payment_method: value.payment_method.0,
        email: value.email.map(|e| e.0),
    };
    run(
        &app,
        order_id,
        ctx,
        raw,
        StatusCode::OK,
        OrderRequest::Other(command),
    )
    .await
}

/// Cancels a pending, confirmed or paid order; a confirmed or paid order's reservations are
/// released (`StockReleased` on each product) in the same transaction, and the fulfilment
/// process refunds a paid one.
#[utoipa::path(
    post,
    path = "/orders/{order_id}/cancel",
    tag = "orders",
    params(("order_id" = String, Path, format = "uuid", description = "The order's id, a UUID"), CommandContext),
    request_body(content = ref("#/components/schemas/Cancel"), description = "Optional: no body means no reason"),
    responses(
        OrderApplied,
        (status = 400, description = "Malformed JSON (`malformed_json`), order id (`invalid_path`) or header (`invalid_header`)", body = ErrorBody),
        (status = 404, description = "No such order, or another customer's: a customer gets the same answer for both (`order_not_found`)", body = ErrorBody),
        (status = 409, description = "The order is not pending, confirmed or paid (`invalid_state`), or the order kept changing under the command (`concurrency_conflict`)", body = ErrorBody),
        CommandFailures,
        (status = 422, description = "`reason` is blank, too long or not a string, or the body has other fields (`validation_failed`, named in `field`), or the `Idempotency-Key` was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        StoreUnavailable,
    )
)]
pub async fn cancel(
    State(app): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<Cancel>,
) -> Result<CommandOutcome, ApiError> {
    let command = OrderRequest::Other(OrderCommand::Cancel {
        reason: value.reason.map(FreeText::into_inner),
    });
    run(&app, order_id, ctx, raw, StatusCode::OK, command).await
}

/// Ships a paid order (or one confirmed before payments existed); its reserved units
/// become shipped (`StockShipped` on each product) in the same transaction.
#[utoipa::path(
    post,
    path = "/orders/{order_id}/ship",
    tag = "orders",
    params(("order_id" = String, Path, format = "uuid", description = "The order's id, a UUID"), CommandContext),
    request_body = Ship,
    responses(
        OrderApplied,
        (status = 400, description = "Malformed JSON (`malformed_json`), order id (`invalid_path`) or header (`invalid_header`)", body = ErrorBody),
        (status = 404, description = "No such order (`order_not_found`)", body = ErrorBody),
        (status = 409, description = "The order is not paid (`invalid_state`; only an order confirmed before payments existed ships unpaid, from `confirmed`), or the order kept changing under the command (`concurrency_conflict`)", body = ErrorBody),
        CommandFailures,
        (status = 422, description = "A field is missing, unknown, blank or too long (`validation_failed`, named in `field`), or the `Idempotency-Key` was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        StoreUnavailable,
    )
)]
pub async fn ship(
    State(app): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    ctx: CommandContext,
    JsonBody { value, raw }: JsonBody<Ship>,
) -> Result<CommandOutcome, ApiError> {
    let command = OrderRequest::Other(OrderCommand::Ship {
        carrier: value.carrier.into_inner(),
        tracking_number: value.tracking_number.into_inner(),
    });
    run(&app, order_id, ctx, raw, StatusCode::OK, command).await
}

/// Marks a shipped order delivered.
#[utoipa::path(
    post,
    path = "/orders/{order_id}/deliver",
    tag = "orders",
    params(("order_id" = String, Path, format = "uuid", description = "The order's id, a UUID"), CommandContext),
    request_body(content = ref("#/components/schemas/NoFields"), description = "None, or `{}`"),
    responses(
        OrderApplied,
        (status = 400, description = "Malformed JSON (`malformed_json`), order id (`invalid_path`) or header (`invalid_header`)", body = ErrorBody),
        (status = 404, description = "No such order (`order_not_found`)", body = ErrorBody),
        (status = 409, description = "The order is not shipped (`invalid_state`), or the order kept changing under the command (`concurrency_conflict`)", body = ErrorBody),
        CommandFailures,
        (status = 422, description = "The body has fields (`validation_failed`), or the `Idempotency-Key` was used for another request (`idempotency_key_reused`)", body = ErrorBody),
        StoreUnavailable,
    )
)]
pub async fn deliver(
    State(app): State<AppState>,
    AppPath(order_id): AppPath<OrderId>,
    ctx: CommandContext,
    JsonBody { raw, .. }: JsonBody<NoFields>,
) -> Result<CommandOutcome, ApiError> {
    run(
        &app,
        order_id,
        ctx,
        raw,
        StatusCode::OK,
        OrderRequest::Other(OrderCommand::Deliver),
    )
    .await
}

fn order_not_found() -> ApiError {
    ApiError::not_found("order_not_found", "order not found")
}

/// The audit trail: every event of the order as stored (upcast to the current schema).
#[utoipa::path(
    get,
    path = "/orders/{order_id}/events",
    tag = "orders",
    params(("order_id" = String, Path, format = "uuid", description = "The order's id, a UUID")),
    responses(
        (status = 200, description = "The order's events, oldest first", body = AuditTrail),
        (status = 400, description = "Malformed order id (`invalid_path`)", body = ErrorBody),
        (status = 404, description = "No such order, or another customer's: a customer gets the same answer for both (`order_not_found`)", body = ErrorBody),
        StoreUnavailable,
    )
)]
pub async fn events(
    State(app): State<AppState>,
    caller: Caller,
    AppPath(order_id): AppPath<OrderId>,
) -> Result<axum::Json<AuditTrail>, ApiError> {
    let events = app
        .store
        .read_stream(&order_id.stream_id(), 0, Until::End)
        .await?;
    // Another customer's order reads as a missing one (and a stream whose owner cannot be
    // told is nobody's but staff's).
    let owner = events.first().and_then(|e| match &e.event {
        DomainEvent::Order(OrderEvent::OrderCreated(created)) => Some(&created.user_id),
        _ => None,
    });
    let visible = caller.staff || owner.is_some_and(|o| caller.may_act_for(o));
    if events.is_empty() || !visible {
        return Err(order_not_found());
    }
    let version = events.last().map_or(0, |e| e.stream_position);
    Ok(axum::Json(AuditTrail {
        order_id,
        version,
        events: events.into_iter().map(AuditEvent::from).collect(),
    }))
}

/// At most one of the two; neither means the current state.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StateQuery {
    /// The state as of this time (RFC 3339, e.g. `2026-01-31T12:00:00Z`).
    #[param(value_type = Option<String>, format = DateTime)]
    at: Option<String>,
    /// The state at this version of the order stream.
    #[param(value_type = Option<u64>, minimum = 0)]
    version: Option<String>,
}

/// Current state, or the state as of `?at=<RFC3339>` or `?version=<n>`, rebuilt from events.
#[utoipa::path(
    get,
    path = "/orders/{order_id}/state",
    tag = "orders",
    params(("order_id" = String, Path, format = "uuid", description = "The order's id, a UUID"), StateQuery),
    responses(
        (status = 200, description = "The order's state", body = OrderSnapshot),
        (status = 400, description = "Malformed order id (`invalid_path`)", body = ErrorBody),
        (status = 404, description = "No such order, another customer's (answered alike, whatever `at` or `version` asks), or none yet at `at`/`version` (`order_not_found`), or no such version (`version_not_found`)", body = ErrorBody),
        (status = 422, description = "An unknown, malformed or conflicting query parameter (`invalid_parameter`, named in `field` where one is at fault)", body = ErrorBody),
        StoreUnavailable,
    )
)]
pub async fn state(
    State(app): State<AppState>,
    caller: Caller,
    AppPath(order_id): AppPath<OrderId>,
    // The API's error body for a bad parameter, not axum's plain-text 400.
    AppQuery(query): AppQuery<StateQuery>,
) -> Result<axum::Json<OrderSnapshot>, ApiError> {
    let stream = order_id.stream_id();
    // Another customer's order answers as a missing one, whatever was asked of it.
    let hidden = |state: &OrderState| {
        state
            .order()
            .is_some_and(|o| !caller.may_act_for(&o.user_id))
    };
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
            // Past the end of another customer's order: as missing, not `version_not_found`.
            if loaded.version != v && loaded.version != 0 && !hidden(&loaded.state) {
                return Err(ApiError::not_found(
                    "version_not_found",
                    format!("order has no version {v}; its latest is {}", loaded.version),
                ));
            }
            loaded
        }
    };
    let Some(order) = loaded.state.order().filter(|_| !hidden(&loaded.state)) else {
        return Err(order_not_found());
    };
    Ok(axum::Json(OrderSnapshot::new(order, loaded.version)))
}
