//! The write-service's decisions over several streams: an order's commands with the catalog
//! (lines priced from their products) and the stock (`domain::order::stock_commands`:
//! confirming reserves every line, cancelling a confirmed or paid order releases, shipping
//! ships), each appended with the order's
//! own event in one transaction by the event store's command path.

use axum::http::StatusCode;
use domain::events::{DomainEvent, LineItem};
use domain::order::{self, DomainError, OrderCommand};
use domain::product::{self, ProductCommand, ProductError, ProductState};
use domain::{Currency, OrderId, ProductId, Quantity, UnitPriceCents};
use event_store::{CommandError, Decide, Decision, OrderAggregate, ProductAggregate};
use serde_json::json;

use service_kit::api_error::ApiError;

/// A line as a client asks for it: the price, if given, is the one the client was shown.
#[derive(Debug, Clone)]
pub struct RequestedLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
    pub unit_price_cents: Option<UnitPriceCents>,
}

/// What an order command asks for, before the catalog prices its lines.
#[derive(Debug, Clone)]
pub enum OrderRequest {
    Create {
        user_id: domain::UserId,
        currency: Currency,
        items: Vec<RequestedLine>,
    },
    AddItem(RequestedLine),
    /// Any other command: its lines are already on the order.
    Other(OrderCommand),
}

/// One order command, with what it does to the catalog's products.
pub struct OrderDecision {
    pub order_id: OrderId,
    pub request: OrderRequest,
    /// The customer the order must belong to (`Caller::only_own`); `None` for staff.
    pub only_for: Option<domain::UserId>,
}

type Refusal = CommandError<ApiError>;

fn refuse(e: impl Into<ApiError>) -> Refusal {
    CommandError::Rejected(e.into())
}

impl Decide<ApiError> for OrderDecision {
    async fn decide(&mut self, decision: &mut Decision<'_>) -> Result<(), Refusal> {
        let order_stream = self.order_id.stream_id();
        // The products a create or an added line names are read with the order, in one
        // round trip; the others' products are known only from the order.
        let named = match &self.request {
            OrderRequest::Create { items, .. } => items.as_slice(),
            OrderRequest::AddItem(line) => std::slice::from_ref(line),
            OrderRequest::Other(_) => &[],
        };
        decision
            .prefetch(
                std::iter::once(order_stream.clone())
                    .chain(named.iter().map(|l| l.product_id.stream_id())),
            )
            .await?;
        // The order first: it is the command's own stream (`If-Match`, the answer's version).
        let state = decision.load::<OrderAggregate>(&order_stream).await?;
        // Another customer's order is refused exactly as a missing one, so ids cannot be
        // probed, and here, after loading and before deciding, so nothing is appended. A
        // create on a taken id stays 409 `order_exists`: the caller chose the id.
        if let (Some(order), Some(customer)) = (state.order(), &self.only_for)
            && order.user_id != *customer
            && !matches!(self.request, OrderRequest::Create { .. })
        {
            return Err(refuse(DomainError::OrderNotFound));
        }
        let command = match &self.request {
            OrderRequest::Create {
                user_id,
                currency,
                items,
            } => {
                if state.order().is_some() {
                    return Err(refuse(DomainError::OrderAlreadyExists));
                }
                let items = price_lines(decision, *currency, None, items, true).await?;
                OrderCommand::Create {
                    order_id: self.order_id,
                    user_id: user_id.clone(),
                    currency: *currency,
                    items,
                }
            }
            OrderRequest::AddItem(line) => {
                let Some(order) = state.order() else {
                    return Err(refuse(DomainError::OrderNotFound));
                };
                let lines = std::slice::from_ref(line);
                let mut items =
                    price_lines(decision, order.currency, Some(&order.items), lines, false).await?;
                OrderCommand::AddItem(items.remove(0))
            }
            OrderRequest::Other(command) => command.clone(),
        };
        let events = order::decide(&state, command.clone()).map_err(refuse)?;
        decision
            .append::<OrderAggregate>(&order_stream, events.into_iter().map(DomainEvent::Order))?;
        let stock = order::stock_commands(&state, &command);
        decision
            .prefetch(stock.iter().map(|c| c.product_id().stream_id()))
            .await?;
        match command {
            OrderCommand::Confirm { .. } => reserve(decision, stock).await,
            _ => apply_each(decision, stock).await,
        }
    }
}

/// The catalog's price for each requested line (a product already on the order keeps the
/// line's price: adding units adds them at it). Refuses, naming the line, a product without
/// a price or priced in another currency (422), and any line whose client price differs
/// from the current one (409 `price_changed`, with every such line in `details`).
async fn price_lines(
    decision: &mut Decision<'_>,
    currency: Currency,
    on_order: Option<&[LineItem]>,
    requested: &[RequestedLine],
    indexed: bool,
) -> Result<Vec<LineItem>, Refusal> {
    let field = |i: usize, name: &str| {
        if indexed {
            format!("items[{i}].{name}")
        } else {
            name.to_owned()
        }
    };
    let mut priced = Vec::with_capacity(requested.len());
    let mut changed = Vec::new();
    for (i, line) in requested.iter().enumerate() {
        let existing = on_order
            .into_iter()
            .flatten()
            .find(|l| l.product_id == line.product_id)
            .map(|l| l.unit_price_cents);
        let price = match existing {
            Some(price) => price,
            None => {
                let product = decision
                    .load::<ProductAggregate>(&line.product_id.stream_id())
                    .await?;
                let id = &line.product_id;
                let Some(price) = product.price else {
                    return Err(refuse(ApiError::invalid(
                        &field(i, "productId"),
                        format!("product `{id}` has no price in the catalog; it cannot be ordered"),
                    )));
                };
                if price.currency != currency {
                    return Err(refuse(ApiError::invalid(
                        &field(i, "productId"),
                        format!(
                            "product `{id}` is priced in {}, the order is in {}",
                            price.currency.as_str(),
                            currency.as_str()
                        ),
                    )));
                }
                price.unit_price_cents
            }
        };
        if line.unit_price_cents.is_some_and(|shown| shown != price) {
            changed.push((i, line.product_id.clone(), price));
        }
        priced.push(LineItem {
            product_id: line.product_id.clone(),
            quantity: line.quantity,
            unit_price_cents: price,
        });
    }
    if let Some((i, product_id, price)) = changed.first() {
        let message = format!(
            "the price of product `{product_id}` is now {} cents per unit{}",
            price.get(),
            match changed.len() {
                1 => String::new(),
                n => format!(" ({n} lines have new prices, see `details`)"),
            }
        );
        let details = changed
            .iter()
            .map(|(_, p, price)| json!({"productId": p, "unitPriceCents": price.get()}))
            .collect();
        return Err(refuse(
            ApiError::new(StatusCode::CONFLICT, "price_changed", message)
                .with_field(field(*i, "unitPriceCents"))
                .with_details(details),
        ));
    }
    Ok(priced)
}

/// Reserves every line of the order on its product, or refuses with every short line.
async fn reserve(
    decision: &mut Decision<'_>,
    reservations: Vec<ProductCommand>,
) -> Result<(), Refusal> {
    let mut short = Vec::new();
    for command in reservations {
        let product_id = command.product_id().clone();
        let stream = product_id.stream_id();
        let product: ProductState = decision.load::<ProductAggregate>(&stream).await?;
        match product::decide(&product, command) {
            Ok(events) => {
                decision.append::<ProductAggregate>(
                    &stream,
                    events.into_iter().map(DomainEvent::Product),
                )?;
            }
            Err(ProductError::InsufficientStock { asked, available }) => {
                short.push((product_id, asked, available));
            }
            Err(e) => return Err(refuse(product_error(e))),
        }
    }
    if short.is_empty() {
        return Ok(());
    }
    let described: Vec<String> = short
        .iter()
        .map(|(p, asked, available)| format!("`{p}` (asked {asked}, available {available})"))
        .collect();
    let details = short
        .iter()
        .map(|(p, asked, available)| {
            json!({"productId": p, "askedUnits": asked, "availableUnits": available})
        })
        .collect();
    // Refused as a whole: nothing staged is appended.
    Err(refuse(
        ApiError::new(
            StatusCode::CONFLICT,
            "insufficient_stock",
            format!("not enough stock for {}", described.join(", ")),
        )
        .with_details(details),
    ))
}

/// Applies each product command (release, ship) to its product's stream.
async fn apply_each(
    decision: &mut Decision<'_>,
    commands: Vec<ProductCommand>,
) -> Result<(), Refusal> {
    for command in commands {
        let stream = command.product_id().stream_id();
        let product: ProductState = decision.load::<ProductAggregate>(&stream).await?;
        let events = product::decide(&product, command).map_err(|e| refuse(product_error(e)))?;
        decision
            .append::<ProductAggregate>(&stream, events.into_iter().map(DomainEvent::Product))?;
    }
    Ok(())
}

/// A product refusal as the API answers it.
pub fn product_error(e: ProductError) -> ApiError {
    let message = e.to_string();
    match e {
        ProductError::BelowCommitted { .. } => {
            ApiError::new(StatusCode::CONFLICT, "below_committed", message).with_field("quantity")
        }
        ProductError::InsufficientStock { .. } => {
            ApiError::new(StatusCode::CONFLICT, "insufficient_stock", message)
        }
        ProductError::AlreadyReserved { .. } => {
            ApiError::new(StatusCode::CONFLICT, "already_reserved", message)
        }
        ProductError::StockOverflow | ProductError::ZeroAdjustment => {
            ApiError::invalid("quantity", message)
        }
        ProductError::InvalidText { field } | ProductError::ControlCharacter { field } => {
            ApiError::invalid(field, message)
        }
    }
}
