//! Events written the way the write-service writes them, for tests that need a log: the
//! domain decides, the event store appends.

use domain::events::{DomainEvent, LineItem};
use domain::order::{self, OrderCommand};
use domain::product::{self, ProductCommand};
use domain::{Currency, OrderId, Position, ProductId, Quantity, StockQuantity, UnitPriceCents};
use event_store::{Command, CommandError, EventStore, OrderAggregate, ProductAggregate};
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
        let stream_id = id.stream_id();
        let command = Command::new(&stream_id, |s: &order::OrderState| {
            order::decide(s, cmd.clone()).map(|es| es.into_iter().map(DomainEvent::Order).collect())
        });
        match self.store.execute::<OrderAggregate, _, _>(command).await {
            Ok(executed) => Some(executed.appended().expect("no idempotency key").position),
            Err(CommandError::Rejected(_)) => None,
            Err(e) => panic!("the event store: {e:?}"),
        }
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
        let stream_id = product_id.stream_id();
        let command = Command::new(&stream_id, |s: &product::ProductState| {
            product::decide(s, cmd.clone())
                .map(|es| es.into_iter().map(DomainEvent::Product).collect())
        });
        self.store
            .execute::<ProductAggregate, _, _>(command)
            .await
            .expect("the domain accepts the command")
            .appended()
            .expect("no idempotency key")
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
