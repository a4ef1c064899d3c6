//! Events written the way the write-service writes them, for tests that need a log: the
//! domain decides, the event store appends.
//!
//! `order` writes an order's events alone, as orders were written before reservations
//! existed (an "old log"); `confirm`, `cancel` and `ship` also move the stock of every
//! product on the order, in the same commit, as the write-service does now. `pay`, `refund`
//! and `decline` record the payment provider's answers as the fulfilment process does;
//! `confirm_legacy` writes a confirmation as it was stored before payments (and
//! reservations) existed.

use domain::events::{DomainEvent, EncodedEvent, LineItem};
use domain::order::{self, OrderCommand};
use domain::product::{self, Price, ProductCommand};
use domain::{
    Currency, OrderId, Position, ProductId, Quantity, StockDelta, StockQuantity, UnitPriceCents,
};
use event_store::{
    Aggregate, Command, CommandError, EventStore, NewEvent, OrderAggregate, ProductAggregate,
    StoreError, StreamAppend,
};
use sqlx::PgPool;
use uuid::Uuid;

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

    /// Runs a command on a product; `None` if the domain refuses it. Returns its token (the
    /// log's head when the command changes nothing).
    pub async fn try_product(&self, cmd: ProductCommand) -> Option<Position> {
        let product_id = match &cmd {
            ProductCommand::SetDetails { product_id, .. }
            | ProductCommand::ReceiveStock { product_id, .. }
            | ProductCommand::AdjustStock { product_id, .. }
            | ProductCommand::Reserve { product_id, .. }
            | ProductCommand::Release { product_id, .. }
            | ProductCommand::Ship { product_id, .. } => product_id.clone(),
        };
        let stream_id = product_id.stream_id();
        // The store cannot append zero events (e.g. details set again unchanged): answer
        // with the head then, a token at least as late as the stream's last event.
        let loaded = self.store.load::<ProductAggregate>(&stream_id).await;
        if product::decide(&loaded.expect("the event store").state, cmd.clone())
            .ok()?
            .is_empty()
        {
            return Some(self.head().await);
        }
        let command = Command::new(&stream_id, |s: &product::ProductState| {
            product::decide(s, cmd.clone())
                .map(|es| es.into_iter().map(DomainEvent::Product).collect())
        });
        match self.store.execute::<ProductAggregate, _, _>(command).await {
            Ok(executed) => Some(executed.appended().expect("no idempotency key").position),
            Err(CommandError::Rejected(_)) => None,
            Err(e) => panic!("the event store: {e:?}"),
        }
    }

    /// Receives `quantity` units of `product`. Returns its token.
    pub async fn stock(&self, product: &str, quantity: i64) -> Position {
        self.try_product(ProductCommand::ReceiveStock {
            product_id: product_id(product),
            quantity: StockQuantity::try_from(quantity).expect("a valid quantity"),
        })
        .await
        .expect("the domain accepts the command")
    }

    /// Adds (positive) or removes (negative) units outside a delivery; `None` if that would
    /// leave less than what is reserved and shipped.
    pub async fn try_adjust(&self, product: &str, delta: i64) -> Option<Position> {
        self.try_product(ProductCommand::AdjustStock {
            product_id: product_id(product),
            delta: StockDelta::try_from(delta).expect("a valid delta"),
            reason: Some("stock count".into()),
        })
        .await
    }

    /// Names and prices `product` (in USD). Returns its token.
    pub async fn details(&self, product: &str, name: &str, unit_price_cents: i64) -> Position {
        self.try_product(ProductCommand::SetDetails {
            product_id: product_id(product),
            name: name.into(),
            price: Price {
                currency: Currency::USD,
                unit_price_cents: UnitPriceCents::try_from(unit_price_cents)
                    .expect("a valid price"),
            },
        })
        .await
        .expect("the domain accepts the command")
    }

    /// Confirms an order and reserves its lines, in one commit; `None` if the order cannot
    /// be confirmed or a line lacks stock (then nothing is written). Returns its token.
    pub async fn try_confirm(&self, id: OrderId) -> Option<Position> {
        let cmd = OrderCommand::Confirm {
            payment_method: "pm_card_visa".into(),
            email: None,
        };
        self.order_with_stock(id, cmd).await
    }

    /// Records a captured payment of the order's total, as the fulfilment process does
    /// (the order becomes `paid`, and may ship); `None` if the domain refuses. Returns its
    /// token.
    pub async fn try_pay(&self, id: OrderId) -> Option<Position> {
        let (total, currency) = self.total_of(id).await?;
        let cmd = OrderCommand::CapturePayment {
            payment_intent_id: format!("pi_test_{}", id.0.simple()),
            amount_cents: total,
            currency,
        };
        self.try_order(id, cmd).await
    }

    /// [`try_pay`](Self::try_pay) that must succeed.
    pub async fn pay(&self, id: OrderId) -> Position {
        self.try_pay(id)
            .await
            .expect("the order awaits its payment")
    }

    /// Records a refund of the order's total on a cancelled order whose payment was
    /// captured, as the fulfilment process does (payment `refunded`); `None` if the domain
    /// refuses. Returns its token.
    pub async fn try_refund(&self, id: OrderId) -> Option<Position> {
        let (total, currency) = self.total_of(id).await?;
        let cmd = OrderCommand::RefundPayment {
            refund_id: format!("re_test_{}", id.0.simple()),
            amount_cents: total,
            currency,
        };
        self.try_order(id, cmd).await
    }

    /// [`try_refund`](Self::try_refund) that must succeed.
    pub async fn refund(&self, id: OrderId) -> Position {
        self.try_refund(id)
            .await
            .expect("the order is cancelled with its payment captured")
    }

    /// Records a declined charge (`card_declined`, `insufficient_funds`), as the fulfilment
    /// process does; the order stays confirmed until it is cancelled. `None` if the domain
    /// refuses. Returns its token.
    pub async fn try_decline(&self, id: OrderId) -> Option<Position> {
        let cmd = OrderCommand::DeclinePayment {
            code: "card_declined".into(),
            decline_code: Some("insufficient_funds".into()),
            message: "Your card has insufficient funds.".into(),
        };
        self.try_order(id, cmd).await
    }

    /// [`try_decline`](Self::try_decline) that must succeed.
    pub async fn decline(&self, id: OrderId) -> Position {
        self.try_decline(id)
            .await
            .expect("the order awaits its payment")
    }

    /// The order's total and currency; `None` if there is no such order.
    async fn total_of(&self, id: OrderId) -> Option<(i64, Currency)> {
        let loaded = self.store.load::<OrderAggregate>(&id.stream_id()).await;
        let state = loaded.expect("the event store").state;
        state.order().map(|o| (o.total_cents, o.currency))
    }

    /// Confirms an order as it was stored before payments and reservations existed:
    /// `OrderConfirmed` schema version 1, no data, no product event. Such an order is never
    /// charged and ships from `confirmed`. `None` unless the order is pending. Returns its
    /// token.
    pub async fn try_confirm_legacy(&self, id: OrderId) -> Option<Position> {
        let stream = id.stream_id();
        for _ in 0..100 {
            let loaded = self.store.load::<OrderAggregate>(&stream).await;
            let loaded = loaded.expect("the event store");
            if loaded.state.order().map(|o| o.status) != Some(order::OrderStatus::Pending) {
                return None;
            }
            let append = StreamAppend {
                stream_id: stream.clone(),
                stream_type: OrderAggregate::STREAM_TYPE,
                expected_version: loaded.version,
                events: vec![NewEvent {
                    event_id: Uuid::new_v4(),
                    event: EncodedEvent {
                        event_type: "OrderConfirmed",
                        schema_version: 1,
                        data: serde_json::json!({}),
                    },
                    metadata: serde_json::json!({}),
                }],
                snapshot: None,
            };
            match self.store.append(&[append], None).await {
                Ok(outcome) => return Some(outcome.position),
                Err(StoreError::WrongExpectedVersion { .. }) => continue,
                Err(e) => panic!("the event store: {e:?}"),
            }
        }
        panic!("order {id}: 100 lost races in a row")
    }

    /// Confirms a pending order as it was stored after reservations existed and before
    /// orders carried their own: `OrderConfirmed` schema version 2 (with a payment method)
    /// and, in the same commit, `StockReserved` schema version 1 on each line's product,
    /// which the product lists. No stock check: the caller stocks the products. Returns its
    /// token.
    pub async fn confirm_listing_reservations(&self, id: OrderId) -> Position {
        let event = |event_type, schema_version, data| NewEvent {
            event_id: Uuid::new_v4(),
            event: EncodedEvent {
                event_type,
                schema_version,
                data,
            },
            metadata: serde_json::json!({}),
        };
        let stream = id.stream_id();
        let loaded = self.store.load::<OrderAggregate>(&stream).await;
        let loaded = loaded.expect("the event store");
        let order = loaded.state.order().expect("the order exists").clone();
        let mut appends = vec![StreamAppend {
            stream_id: stream,
            stream_type: OrderAggregate::STREAM_TYPE,
            expected_version: loaded.version,
            events: vec![event(
                "OrderConfirmed",
                2,
                serde_json::json!({"paymentMethod": "pm_card_visa", "email": null}),
            )],
            snapshot: None,
        }];
        for line in &order.items {
            let product = line.product_id.stream_id();
            let loaded = self.store.load::<ProductAggregate>(&product).await;
            appends.push(StreamAppend {
                stream_id: product,
                stream_type: ProductAggregate::STREAM_TYPE,
                expected_version: loaded.expect("the event store").version,
                events: vec![event(
                    "StockReserved",
                    1,
                    serde_json::json!({
                        "productId": line.product_id,
                        "orderId": id,
                        "quantity": line.quantity,
                    }),
                )],
                snapshot: None,
            });
        }
        self.store
            .append(&appends, None)
            .await
            .expect("the event store")
            .position
    }

    /// [`try_confirm_legacy`](Self::try_confirm_legacy) that must succeed.
    pub async fn confirm_legacy(&self, id: OrderId) -> Position {
        self.try_confirm_legacy(id)
            .await
            .expect("the order is pending")
    }

    /// [`try_confirm`](Self::try_confirm) that must succeed.
    pub async fn confirm(&self, id: OrderId) -> Position {
        self.try_confirm(id)
            .await
            .expect("the order is confirmed and its stock reserved")
    }

    /// Cancels an order and releases what it reserved, in one commit; `None` if the domain
    /// refuses. Returns its token.
    pub async fn try_cancel(&self, id: OrderId, reason: Option<&str>) -> Option<Position> {
        let cmd = OrderCommand::Cancel {
            reason: reason.map(str::to_owned),
        };
        self.order_with_stock(id, cmd).await
    }

    /// Ships an order and its reserved units, in one commit; `None` if the domain refuses.
    /// Returns its token.
    pub async fn try_ship(&self, id: OrderId, carrier: &str, tracking: &str) -> Option<Position> {
        let cmd = OrderCommand::Ship {
            carrier: carrier.into(),
            tracking_number: tracking.into(),
        };
        self.order_with_stock(id, cmd).await
    }

    /// An order command with the product commands it implies, decided on the streams as
    /// loaded and appended at those versions in one transaction; a lost race decides again.
    async fn order_with_stock(&self, id: OrderId, cmd: OrderCommand) -> Option<Position> {
        let order_stream = id.stream_id();
        for _ in 0..100 {
            let loaded = self.store.load::<OrderAggregate>(&order_stream).await;
            let loaded = loaded.expect("the event store");
            let order_events = order::decide(&loaded.state, cmd.clone()).ok()?;
            let mut appends = vec![stream_append::<OrderAggregate>(
                order_stream.clone(),
                loaded.version,
                order_events.into_iter().map(DomainEvent::Order),
            )];
            for product_cmd in order::stock_commands(&loaded.state, &cmd) {
                let stream = product_cmd.product_id().stream_id();
                let product = self.store.load::<ProductAggregate>(&stream).await;
                let product = product.expect("the event store");
                let events = product::decide(&product.state, product_cmd).ok()?;
                if !events.is_empty() {
                    appends.push(stream_append::<ProductAggregate>(
                        stream,
                        product.version,
                        events.into_iter().map(DomainEvent::Product),
                    ));
                }
            }
            match self.store.append(&appends, None).await {
                Ok(outcome) => return Some(outcome.position),
                Err(StoreError::WrongExpectedVersion { .. }) => continue,
                Err(e) => panic!("the event store: {e:?}"),
            }
        }
        panic!("order {id}: 100 lost races in a row")
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

fn product_id(product: &str) -> ProductId {
    product.parse().expect("a valid product id")
}

fn stream_append<A: Aggregate>(
    stream_id: String,
    version: u64,
    events: impl Iterator<Item = DomainEvent>,
) -> StreamAppend {
    StreamAppend {
        stream_id,
        stream_type: A::STREAM_TYPE,
        expected_version: version,
        events: events
            .map(|e| NewEvent {
                event_id: Uuid::new_v4(),
                event: e.encode(),
                metadata: serde_json::json!({}),
            })
            .collect(),
        snapshot: None,
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
