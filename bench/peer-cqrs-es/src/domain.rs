//! The order aggregate as cqrs-es wants it: commands in, events out through the
//! `EventSink`, state rebuilt by `apply`, external lookups through `Services`
//! (user guide, "Custom error and service" and "Aggregate" pages).

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use sqlx08::PgPool;

/// The most lines an order may have (after merging lines of the same product).
pub const MAX_LINES: usize = 50;
/// The most units of one product on an order.
pub const MAX_QUANTITY: i64 = 1000;

/// One requested line: the client names a product and a quantity, never a price.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LineRequest {
    pub product_id: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OrderCommand {
    CreateOrder {
        order_id: String,
        user_id: String,
        currency: String,
        items: Vec<LineRequest>,
    },
    ConfirmOrder {
        payment_method: String,
    },
}

/// A line as recorded: priced from the catalog at the time of the create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PricedLine {
    pub product_id: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    OrderCreated {
        order_id: String,
        user_id: String,
        currency: String,
        lines: Vec<PricedLine>,
        total_cents: i64,
    },
    OrderConfirmed {
        payment_method: String,
    },
    /// No command produces it: `seed_long_aggregate` writes it straight through the event
    /// store for the replay comparison. It is the size of the write-service's `ItemAdded`
    /// (a product, a quantity, a price) and folds into the order's lines as that does, so
    /// the comparison weighs the same work per event on both sides.
    ItemNoted {
        product_id: String,
        quantity: u32,
        unit_price_cents: i64,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderCreated { .. } => "OrderCreated",
            Self::OrderConfirmed { .. } => "OrderConfirmed",
            Self::ItemNoted { .. } => "ItemNoted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

/// A refused command, or the catalog lookup failing: cqrs-es passes only the aggregate's
/// own error type out of `handle`, so a database error met by a service travels as a
/// variant of it (`Catalog`), which the HTTP layer turns into a 503.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order already exists")]
    OrderExists,
    #[error("order not found")]
    OrderNotFound,
    #[error("cannot confirm a {0} order")]
    InvalidState(&'static str),
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("catalog unavailable: {0}")]
    Catalog(String),
}

impl OrderError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// The aggregate's services (user guide: "External services"): the catalog the prices come
/// from.
pub struct OrderServices {
    pool: PgPool,
}

impl OrderServices {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The catalog prices of `product_ids`, in ONE query; products it has no price for are
    /// absent from the map.
    pub async fn prices(&self, product_ids: &[String]) -> Result<HashMap<String, i64>, OrderError> {
        let rows: Vec<(String, i64)> = sqlx08::query_as(
            "select product_id, unit_price_cents from peer_products where product_id = any($1)",
        )
        .bind(product_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| OrderError::Catalog(e.to_string()))?;
        Ok(rows.into_iter().collect())
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[default]
    New,
    Pending,
    Confirmed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Order {
    pub status: Status,
    pub total_cents: i64,
    /// Quantities by product, folded from `ItemNoted`.
    pub lines: std::collections::BTreeMap<String, u32>,
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = OrderServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            OrderCommand::CreateOrder {
                order_id,
                user_id,
                currency,
                items,
            } => {
                if self.status != Status::New {
                    return Err(OrderError::OrderExists);
                }
                let event = price_order(order_id, user_id, currency, items, services).await?;
                sink.write(event, self).await;
            }
            OrderCommand::ConfirmOrder { payment_method } => {
                match self.status {
                    Status::New => return Err(OrderError::OrderNotFound),
                    Status::Pending => {}
                    other => return Err(OrderError::InvalidState(other.as_str())),
                }
                if !valid_payment_method(&payment_method) {
                    return Err(OrderError::invalid(
                        "paymentMethod",
                        "paymentMethod must be a payment method id such as `pm_card_visa`",
                    ));
                }
                sink.write(OrderEvent::OrderConfirmed { payment_method }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrderEvent::OrderCreated { total_cents, .. } => {
                self.status = Status::Pending;
                self.total_cents = total_cents;
            }
            OrderEvent::OrderConfirmed { .. } => self.status = Status::Confirmed,
            OrderEvent::ItemNoted {
                product_id,
                quantity,
                unit_price_cents,
            } => {
                *self.lines.entry(product_id).or_default() += quantity;
                self.total_cents += i64::from(quantity) * unit_price_cents;
            }
        }
    }
}

/// Checks the lines (merging repeats of a product, as ours does) and prices them from the
/// catalog with one query.
async fn price_order(
    order_id: String,
    user_id: String,
    currency: String,
    items: Vec<LineRequest>,
    services: &OrderServices,
) -> Result<OrderEvent, OrderError> {
    if user_id.is_empty() || user_id.len() > 64 {
        return Err(OrderError::invalid(
            "userId",
            "userId must be 1 to 64 characters",
        ));
    }
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(OrderError::invalid(
            "currency",
            "currency must be an ISO 4217 code such as `USD`",
        ));
    }
    let mut merged: Vec<(String, i64)> = Vec::with_capacity(items.len());
    for item in items {
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(OrderError::invalid(
                "quantity",
                format!("quantity must be 1 to {MAX_QUANTITY}"),
            ));
        }
        match merged.iter_mut().find(|(id, _)| *id == item.product_id) {
            Some((_, quantity)) => *quantity += item.quantity,
            None => merged.push((item.product_id, item.quantity)),
        }
    }
    if merged.is_empty() {
        return Err(OrderError::invalid(
            "items",
            "an order needs at least one item",
        ));
    }
    if merged.len() > MAX_LINES {
        return Err(OrderError::invalid(
            "items",
            format!("an order has at most {MAX_LINES} lines"),
        ));
    }
    if let Some((id, _)) = merged.iter().find(|(_, q)| *q > MAX_QUANTITY) {
        return Err(OrderError::invalid(
            "quantity",
            format!("quantity of product `{id}` would exceed {MAX_QUANTITY}"),
        ));
    }
    let ids: Vec<String> = merged.iter().map(|(id, _)| id.clone()).collect();
    let prices = services.prices(&ids).await?;
    let mut lines = Vec::with_capacity(merged.len());
    let mut total_cents: i64 = 0;
    for (product_id, quantity) in merged {
        let Some(&unit_price_cents) = prices.get(&product_id) else {
            return Err(OrderError::invalid(
                "productId",
                format!("product `{product_id}` has no catalog price"),
            ));
        };
        total_cents = unit_price_cents
            .checked_mul(quantity)
            .and_then(|line| total_cents.checked_add(line))
            .ok_or_else(|| OrderError::invalid("items", "order total overflows"))?;
        lines.push(PricedLine {
            product_id,
            quantity,
            unit_price_cents,
        });
    }
    Ok(OrderEvent::OrderCreated {
        order_id,
        user_id,
        currency,
        lines,
        total_cents,
    })
}

/// `pm_` and 1 to 100 letters, digits or `_`, as ours accepts.
fn valid_payment_method(pm: &str) -> bool {
    pm.strip_prefix("pm_").is_some_and(|rest| {
        (1..=100).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}
