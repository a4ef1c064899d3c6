//! Test support: a projector on the test's own PostgreSQL database and its own MongoDB
//! database (MONGODB_URI names the server; `make test` starts one).
#![allow(dead_code)]

use domain::order::OrderCommand;
use domain::{OrderId, Position};
use event_store::EventStore;
use mongodb::bson::{Document, doc};
use projector::projections::{Projection, Thresholds, View};
use projector::settings::{OnPoison, Transactions};
use projector::{Projector, Settings};
use sqlx::PgPool;
use test_support::events::Events;

#[allow(unused_imports)]
pub use test_support::events::{create, line};
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
            database_url: database_url(&pg_db).into(),
            mongodb_uri: mongodb_uri().into(),
            mongodb_database: test_support::servers::fresh_database_name("t"),
            batch_size: 500,
            on_poison: OnPoison::Stop,
            addr: "127.0.0.1:0".parse().unwrap(),
            poll_interval_ms: 50,
            transactions: Transactions::Auto,
            thresholds: Thresholds::default(),
        };
        tweak(&mut settings);
        let projector = Projector::connect(&settings).await.unwrap();
        let mongo = projector.engine.views.database().clone();
        TestEnv {
            store: Events::new(pool.clone()).store,
            pool,
            settings,
            projector,
            mongo,
        }
    }

    pub async fn cleanup(self) {
        let _ = self.mongo.drop().await;
    }

    /// The log writer: orders alone (`order`, as before reservations existed) or with the
    /// stock they move (`confirm`, `try_cancel`, `try_ship`), and product commands.
    pub fn events(&self) -> Events {
        Events {
            store: self.store.clone(),
        }
    }

    /// Runs a command on an order; panics if the domain refuses it.
    pub async fn order(&self, id: OrderId, cmd: OrderCommand) -> Position {
        self.events().order(id, cmd).await
    }

    /// Runs a command on an order; false if the domain refuses it.
    pub async fn try_order(&self, id: OrderId, cmd: OrderCommand) -> bool {
        self.events().try_order(id, cmd).await.is_some()
    }

    pub async fn stock(&self, product: &str, quantity: i64) -> Position {
        self.events().stock(product, quantity).await
    }

    /// Applies everything committed into `generation` of view `V` from its checkpoint.
    pub async fn catch_up<V: Projection>(&self, generation: i64) -> Position {
        let head = self.events().head().await;
        self.catch_up_to::<V>(generation, head).await
    }

    /// Applies what is readable, and at least up to `until`.
    pub async fn catch_up_to<V: Projection>(&self, generation: i64, until: Position) -> Position {
        self.projector
            .catch_up(V::VIEW, generation, until)
            .await
            .unwrap()
    }

    pub async fn catch_up_all(&self) {
        let head = self.events().head().await;
        self.catch_up_all_to(head).await;
    }

    /// Every view: what is readable now, and at least up to `until`.
    pub async fn catch_up_all_to(&self, until: Position) {
        for &view in View::ALL {
            let g = self
                .projector
                .engine
                .views
                .active_generation(view)
                .await
                .unwrap();
            self.projector.catch_up(view, g, until).await.unwrap();
        }
    }

    /// Every view document of a generation (not its checkpoint), in `_id` order.
    pub async fn docs(&self, view: View, generation: i64) -> Vec<Document> {
        let mut cursor = self
            .mongo
            .collection::<Document>(&view.collection(generation))
            .find(read_model::without_checkpoint(doc! {}))
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

    pub async fn doc(&self, view: View, id: &str) -> Document {
        let g = self
            .projector
            .engine
            .views
            .active_generation(view)
            .await
            .unwrap();
        self.mongo
            .collection::<Document>(&view.collection(g))
            .find_one(doc! {"_id": id})
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no {view} document {id}"))
    }
}

/// Reads an integer field however the server stored it.
pub fn int(d: &Document, key: &str) -> i64 {
    projector::mongo::get_int(d, key).unwrap_or_else(|| panic!("{key} missing in {d}"))
}
