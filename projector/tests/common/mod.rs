//! Test support: a projector on the test's own PostgreSQL database and its own MongoDB
//! database (MONGODB_URI names the server; `make test` starts one).
#![allow(dead_code)]

use domain::events::{DomainEvent, LineItem};
use domain::order::{self, OrderCommand};
use domain::product::{self, ProductCommand};
use domain::{Currency, OrderId, Position, Quantity, StockQuantity, UnitPriceCents};
use event_store::{EventStore, OrderAggregate, ProductAggregate};
use mongodb::bson::{Document, doc};
use projector::mongo::collection_name;
use projector::rebuild::catch_up;
use projector::settings::{OnPoison, Transactions};
use projector::views::View;
use projector::{Projector, Settings};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use test_support::servers::{database_url, mongodb_uri};

pub struct TestEnv {
    pub pool: PgPool,
    pub store: EventStore,
    pub settings: Settings,
    pub projector: Projector,
    pub mongo: mongodb::Database,
}

impl TestEnv {
    pub async fn new(pool: PgPool) -> Self {
        Self::with(pool, |_| {}).await
    }

    pub async fn with(pool: PgPool, tweak: impl FnOnce(&mut Settings)) -> Self {
        let pg_db = pool
            .connect_options()
            .get_database()
            .unwrap_or("postgres")
            .to_owned();
        let mut settings = Settings {
            database_url: database_url(&pg_db),
            mongodb_uri: mongodb_uri(),
            mongodb_database: format!("t{}", uuid::Uuid::new_v4().simple()),
            batch_size: 500,
            on_poison: OnPoison::Stop,
            addr: "127.0.0.1:0".parse().unwrap(),
            poll_interval_ms: 50,
            transactions: Transactions::Auto,
        };
        tweak(&mut settings);
        let projector = Projector::connect(&settings).await.unwrap();
        let mongo = projector.engine.views.database().clone();
        TestEnv {
            store: EventStore::new(pool.clone(), 100),
            pool,
            settings,
            projector,
            mongo,
        }
    }

    pub async fn cleanup(self) {
        let _ = self.mongo.drop().await;
    }

    /// Runs a command on an order; panics if the domain refuses it.
    pub async fn order(&self, id: OrderId, cmd: OrderCommand) -> Position {
        self.store
            .execute::<OrderAggregate, _, _>(
                event_store::Command::new(&id.stream_id(), |s: &order::OrderState| {
                    order::decide(s, cmd.clone())
                        .map(|es| es.into_iter().map(DomainEvent::Order).collect())
                })
                .metadata(json!({})),
            )
            .await
            .unwrap()
            .appended()
            .unwrap()
            .position
    }

    /// Runs a command on an order; false if the domain refuses it.
    pub async fn try_order(&self, id: OrderId, cmd: OrderCommand) -> bool {
        let executed = self
            .store
            .execute::<OrderAggregate, _, _>(
                event_store::Command::new(&id.stream_id(), |s: &order::OrderState| {
                    order::decide(s, cmd.clone())
                        .map(|es| es.into_iter().map(DomainEvent::Order).collect())
                })
                .metadata(json!({})),
            )
            .await;
        match executed {
            Ok(_) => true,
            Err(event_store::CommandError::Rejected(_)) => false,
            Err(e) => panic!("{e:?}"),
        }
    }

    pub async fn stock(&self, product: &str, quantity: i64) -> Position {
        let product_id: domain::ProductId = product.parse().unwrap();
        let cmd = ProductCommand::ReceiveStock {
            product_id: product_id.clone(),
            quantity: StockQuantity::try_from(quantity).unwrap(),
        };
        self.store
            .execute::<ProductAggregate, _, _>(
                event_store::Command::new(&product_id.stream_id(), |s: &product::ProductState| {
                    product::decide(s, cmd.clone())
                        .map(|es| es.into_iter().map(DomainEvent::Product).collect())
                })
                .metadata(json!({})),
            )
            .await
            .unwrap()
            .appended()
            .unwrap()
            .position
    }

    /// Applies everything committed into `generation` of view `V` from its checkpoint.
    pub async fn catch_up<V: View>(&self, generation: i64) -> Position {
        let head = self.store.head().await.unwrap().unwrap_or(Position::ZERO);
        self.catch_up_to::<V>(generation, head).await
    }

    /// Applies what is readable, and at least up to `until`.
    pub async fn catch_up_to<V: View>(&self, generation: i64, until: Position) -> Position {
        let views = &self.projector.engine.views;
        let from = views.checkpoint(V::NAME, generation).await.unwrap();
        let head = until;
        catch_up::<V>(
            &self.projector.engine,
            generation,
            from,
            head,
            self.projector.batch_size,
            &CancellationToken::new(),
            |_| {},
        )
        .await
        .unwrap()
    }

    pub async fn catch_up_all(&self) {
        let head = self.store.head().await.unwrap().unwrap_or(Position::ZERO);
        self.catch_up_all_to(head).await;
    }

    /// Every view: what is readable now, and at least up to `until`.
    pub async fn catch_up_all_to(&self, until: Position) {
        async fn one<V: View>(env: &TestEnv, until: Position) {
            let g = env
                .projector
                .engine
                .views
                .active_generation(V::NAME)
                .await
                .unwrap();
            env.catch_up_to::<V>(g, until).await;
        }
        for name in projector::views::ALL {
            projector::for_view!(name, one(self, until)).unwrap();
        }
    }

    /// Every document of a generation, in `_id` order.
    pub async fn docs(&self, view: &str, generation: i64) -> Vec<Document> {
        let mut cursor = self
            .mongo
            .collection::<Document>(&collection_name(view, generation))
            .find(doc! {})
            .await
            .unwrap();
        let mut out = vec![];
        while cursor.advance().await.unwrap() {
            out.push(Document::try_from(cursor.current()).unwrap());
        }
        out.sort_by(|a, b| {
            a.get_str("_id")
                .unwrap_or("")
                .cmp(b.get_str("_id").unwrap_or(""))
        });
        out
    }

    pub async fn doc(&self, view: &str, id: &str) -> Document {
        let g = self
            .projector
            .engine
            .views
            .active_generation(view)
            .await
            .unwrap();
        self.mongo
            .collection::<Document>(&collection_name(view, g))
            .find_one(doc! {"_id": id})
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no {view} document {id}"))
    }
}

pub fn line(product: &str, qty: i64, price: i64) -> LineItem {
    LineItem {
        product_id: product.parse().unwrap(),
        quantity: Quantity::try_from(qty).unwrap(),
        unit_price_cents: UnitPriceCents::try_from(price).unwrap(),
    }
}

pub fn create(id: OrderId, user: &str, items: Vec<LineItem>) -> OrderCommand {
    OrderCommand::Create {
        order_id: id,
        user_id: user.parse().unwrap(),
        currency: Currency::USD,
        items,
    }
}

/// Reads an integer field however the server stored it.
pub fn int(d: &Document, key: &str) -> i64 {
    projector::mongo::get_int(d, key).unwrap_or_else(|| panic!("{key} missing in {d}"))
}
