//! Events written the way the write-service writes them, for tests that need a log: the
//! domain decides, the event store appends.

use domain::events::{DomainEvent, LineItem};
use domain::order::{self, OrderCommand};
use domain::product::{self, ProductCommand};
use domain::{Currency, OrderId, Position, ProductId, Quantity, StockQuantity, UnitPriceCents};
use event_store::{EventStore, OrderAggregate, ProductAggregate};
use serde_json::json;
use sqlx::PgPool;

/// An event store on a test's database, with commands that panic on a store error.
#[derive(Clone)]
pub struct Events {
    pub store: EventStore,
}

impl Events {
    pub fn new(pool: PgPool) -> Self {
        Self {
            store: EventStore::new(pool, 100),
        }
    }

    /// Runs a command on an order; `None` if the domain refuses it. Returns its token.
    pub async fn try_order(&self, id: OrderId, cmd: OrderCommand) -> Option<Position> {
        self.store
            .decide_and_append::<OrderAggregate, _>(&id.stream_id(), json!({}), |s| {
                order::decide(s, cmd.clone())
                    .map(|es| es.into_iter().map(DomainEvent::Order).collect())
            })
            .await
            .expect("the event store")
            .ok()
            .map(|o| o.position)
    }

    /// Runs a command on an order; panics if the domain refuses it. Returns its token.
    pub async fn order(&self, id: OrderId, cmd: OrderCommand) -> Position {
        self.try_order(id, cmd)
            .await
            .expect("the domain accepts the command")
    }

    /// Creates an order for `user` and returns its id.
    pub async fn new_order(&self, user: &str, items: Vec<LineItem>) -> OrderId {
        let id = OrderId::new();
        self.order(id, create(id, user, items)).await;
        id
    }

    /// Receives `quantity` units of `product`. Returns its token.
    pub async fn stock(&self, product: &str, quantity: i64) -> Position {
        let product_id: ProductId = product.parse().expect("a valid product id");
        let cmd = ProductCommand::ReceiveStock {
            product_id: product_id.clone(),
            quantity: StockQuantity::try_from(quantity).expect("a valid quantity"),
        };
        self.store
            .decide_and_append::<ProductAggregate, _>(&product_id.stream_id(), json!({}), |s| {
                product::decide(s, cmd.clone())
                    .map(|es| es.into_iter().map(DomainEvent::Product).collect())
            })
            .await
            .expect("the event store")
            .expect("the domain accepts the command")
            .position
    }

    /// The position of the last event committed, or zero.
    pub async fn head(&self) -> Position {
        self.store
            .head()
            .await
            .expect("the event store")
            .unwrap_or(Position::ZERO)
    }
}

pub fn line(product: &str, qty: i64, price: i64) -> LineItem {
    LineItem {
        product_id: product.parse().expect("a valid product id"),
        quantity: Quantity::try_from(qty).expect("a valid quantity"),
        unit_price_cents: UnitPriceCents::try_from(price).expect("a valid price"),
    }
}

pub fn create(id: OrderId, user: &str, items: Vec<LineItem>) -> OrderCommand {
    OrderCommand::Create {
        order_id: id,
        user_id: user.parse().expect("a valid user id"),
        currency: Currency::USD,
        items,
    }
}
