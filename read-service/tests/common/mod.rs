//! Test support: views filled by the real projector from real events on the test's own
//! PostgreSQL database, in a MongoDB database of their own (MONGODB_URI names the server),
//! and the read-service's router or server on top.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use domain::events::{DomainEvent, LineItem};
use domain::order::{self, OrderCommand};
use domain::product::{self, ProductCommand};
use domain::{Currency, OrderId, Position, Quantity, StockQuantity, UnitPriceCents};
use event_store::{EventStore, OrderAggregate, ProductAggregate};
use http_body_util::BodyExt;
use mongodb::bson::Document;
use projector::mongo::{ViewStore, collection_name};
use projector::rebuild::catch_up;
use projector::settings::{OnPoison, Transactions};
use projector::views::View;
use projector::{Projector, Settings as ProjectorSettings};
use read_service::{AppState, Settings, router};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use test_support::servers::{database_url, mongodb_uri};

pub fn fresh_database_name() -> String {
    format!("r{}", uuid::Uuid::new_v4().simple())
}

/// A MongoDB database of the test's own, with the projector's store on it.
pub struct Mongo {
    pub name: String,
    pub views: ViewStore,
}

impl Mongo {
    pub async fn new() -> Self {
        let name = fresh_database_name();
        let views = ViewStore::connect(&mongodb_uri(), &name, Transactions::Off)
            .await
            .unwrap();
        Self { name, views }
    }

    pub fn db(&self) -> &mongodb::Database {
        self.views.database()
    }

    pub fn settings(&self) -> Settings {
        Settings::new(mongodb_uri(), &self.name)
    }

    pub async fn app(&self) -> App {
        App::new(self.settings()).await
    }

    /// Writes a document straight into the active generation of `view`.
    pub async fn put(&self, view: &str, doc: Document) {
        let g = self.views.active_generation(view).await.unwrap();
        self.db()
            .collection::<Document>(&collection_name(view, g))
            .insert_one(doc)
            .await
            .unwrap();
    }

    pub async fn drop(&self) {
        let _ = self.db().drop().await;
    }
}

/// Events in PostgreSQL and a projector that applies them on demand.
pub struct Env {
    pub pool: PgPool,
    pub store: EventStore,
    pub projector: Projector,
    pub mongo: Mongo,
}

impl Env {
    pub async fn new(pool: PgPool) -> Self {
        let pg_db = pool
            .connect_options()
            .get_database()
            .unwrap_or("postgres")
            .to_owned();
        let mongo = Mongo::new().await;
        let settings = ProjectorSettings {
            database_url: database_url(&pg_db),
            mongodb_uri: mongodb_uri(),
            mongodb_database: mongo.name.clone(),
            batch_size: 500,
            on_poison: OnPoison::Stop,
            addr: "127.0.0.1:0".parse().unwrap(),
            poll_interval_ms: 50,
            transactions: Transactions::Off,
        };
        let projector = Projector::connect(&settings).await.unwrap();
        Env {
            store: EventStore::new(pool.clone(), 100),
            pool,
            projector,
            mongo,
        }
    }

    pub async fn app(&self) -> App {
        self.mongo.app().await
    }

    pub fn views(&self) -> &ViewStore {
        &self.projector.engine.views
    }

    pub async fn cleanup(self) {
        self.mongo.drop().await;
    }

    /// Runs a command on an order; panics if the domain refuses it. Returns its token.
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

    /// Creates an order for `user` and returns its id.
    pub async fn new_order(&self, user: &str, items: Vec<LineItem>) -> OrderId {
        let id = OrderId::new();
        self.order(id, create(id, user, items)).await;
        id
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

    pub async fn head(&self) -> Position {
        self.store.head().await.unwrap().unwrap_or(Position::ZERO)
    }

    /// Applies everything committed into `generation` of view `V`, from its checkpoint.
    pub async fn catch_up_generation<V: View>(&self, generation: i64) -> Position {
        let head = self.head().await;
        let from = self.views().checkpoint(V::NAME, generation).await.unwrap();
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

    /// Applies everything committed into the active generation of view `V`.
    pub async fn catch_up<V: View>(&self) -> Position {
        let g = self.views().active_generation(V::NAME).await.unwrap();
        self.catch_up_generation::<V>(g).await
    }

    pub async fn catch_up_all(&self) {
        async fn one<V: View>(env: &Env) -> Position {
            env.catch_up::<V>().await
        }
        for name in projector::views::ALL {
            projector::for_view!(name, one(self)).unwrap();
        }
    }

    /// The checkpoint of the active generation of a view.
    pub async fn checkpoint(&self, view: &str) -> Position {
        let g = self.views().active_generation(view).await.unwrap();
        self.views().checkpoint(view, g).await.unwrap()
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

/// The read-service's router, called in-process.
#[derive(Clone)]
pub struct App {
    pub router: Router,
    pub state: AppState,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn field(&self) -> &str {
        self.body["error"]["field"].as_str().unwrap_or("")
    }

    pub fn position(&self) -> Position {
        self.headers["x-projection-position"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Asserts 200 and returns the body.
    pub fn ok(self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{:?}", self.body);
        self.body
    }
}

impl App {
    pub async fn new(settings: Settings) -> Self {
        let state = AppState::connect(&settings).await.unwrap();
        Self {
            router: router(state.clone()),
            state,
        }
    }

    pub async fn get_with(&self, uri: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(Method::GET, uri, headers).await
    }

    pub async fn request(&self, method: Method, uri: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = self
            .router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.get_with(uri, &[]).await
    }

    /// A GET that waits for `token`.
    pub async fn get_at(&self, uri: &str, token: Position) -> Reply {
        self.get_with(uri, &[("x-consistency-token", &token.to_string())])
            .await
    }
}

/// Every page of a paged listing, following `nextCursor`; `items` names the array.
pub async fn all_pages(app: &App, first: &str, items: &str) -> Vec<Vec<Value>> {
    let mut pages = vec![];
    let mut uri = first.to_owned();
    for _ in 0..100 {
        let body = app.get(&uri).await.ok();
        pages.push(body[items].as_array().unwrap().clone());
        match body["nextCursor"].as_str() {
            Some(c) => {
                let sep = if first.contains('?') { '&' } else { '?' };
                uri = format!("{first}{sep}cursor={c}");
            }
            None => return pages,
        }
    }
    panic!("more than 100 pages from {first}");
}
