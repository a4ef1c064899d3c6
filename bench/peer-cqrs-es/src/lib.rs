//! The Rust ecosystem's CQRS framework (cqrs-es 0.5 with postgres-es 0.5) doing our
//! write-service's two commands, create and confirm, set up as its documentation shows, so
//! the bench can put the two side by side. See README.md for what follows which doc and
//! what it leaves out.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use cqrs_es::EventStore;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use postgres_es::PostgresEventRepository;
use sqlx08::postgres::PgPoolOptions;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use sqlx08::PgPool;

pub mod domain;
mod http;

use domain::{Order, OrderEvent, OrderServices, PricedLine};

/// postgres-es's own `db/init.sql` (its events and snapshots tables, verbatim but for
/// `if not exists`; its sample view table, user and row are left out) plus our catalog.
const SCHEMA: &str = include_str!("../db/init.sql");

/// Connects with a pool of 10 (ours and postgres-es's `default_postgress_pool` both use 10)
/// and creates the tables if they are missing.
pub async fn prepare(database_url: &str) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect(database_url)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx08::raw_sql(SCHEMA)
        .execute(&pool)
        .await
        .context("creating postgres-es's tables and peer_products")?;
    Ok(pool)
}

/// Sets the catalog prices (cents), one statement however many.
pub async fn seed_products(pool: &PgPool, prices: &[(String, i64)]) -> anyhow::Result<()> {
    let (ids, cents): (Vec<String>, Vec<i64>) = prices.iter().cloned().unzip();
    sqlx08::query(
        "insert into peer_products (product_id, unit_price_cents)
         select * from unnest($1::text[], $2::bigint[])
         on conflict (product_id) do update set unit_price_cents = excluded.unit_price_cents",
    )
    .bind(ids)
    .bind(cents)
    .execute(pool)
    .await
    .context("seeding peer_products")?;
    Ok(())
}

/// The peer's HTTP server, running in the caller's runtime.
pub struct Peer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Peer {
    /// Builds the framework with `postgres_es::postgres_cqrs(pool, queries, services)`, the
    /// documented default (pure event store: no snapshots, every command reads the whole
    /// stream), and serves the two routes on an ephemeral loopback port.
    pub async fn start(pool: PgPool) -> anyhow::Result<Peer> {
        let services = OrderServices::new(pool.clone());
        let queries: Vec<Box<dyn cqrs_es::Query<Order>>> = vec![Box::new(http::VersionProbe)];
        let cqrs = Arc::new(postgres_es::postgres_cqrs(pool, queries, services));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the peer's port")?;
        let base = format!("http://{}", listener.local_addr()?);
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, http::router(cqrs))
                .with_graceful_shutdown(async {
                    // A dropped sender means the same as a sent stop.
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Peer {
            base,
            shutdown,
            server,
        })
    }

    /// Stops accepting, lets requests in flight finish, and waits for the server to end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.server.await;
    }
}

/// The event store exactly as `postgres_cqrs` builds it inside the framework.
fn event_store(pool: &PgPool) -> PersistedEventStore<PostgresEventRepository, Order> {
    PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()))
}

/// Events per `commit` while seeding: each commit is one transaction of one INSERT per event
/// (postgres-es's `persist`), so batching saves the transactions, not the statements.
const SEED_BATCH: usize = 1000;

/// Appends `events` events (an `OrderCreated`, then `ItemNoted`s over 50 products) to one fresh aggregate
/// through the framework's event store, and returns its id: the set-up of the replay
/// comparison.
pub async fn seed_long_aggregate(pool: &PgPool, events: usize) -> anyhow::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let store = event_store(pool);
    let mut stream = (0..events).map(|i| {
        if i == 0 {
            OrderEvent::OrderCreated {
                order_id: id.clone(),
                user_id: "u-seed".to_string(),
                currency: "USD".to_string(),
                lines: vec![PricedLine {
                    product_id: "p-seed".to_string(),
                    quantity: 1,
                    unit_price_cents: 100,
                }],
                total_cents: 100,
            }
        } else {
            OrderEvent::ItemNoted {
                product_id: format!("p-{}", i % 50),
                quantity: 1 + (i % 3) as u32,
                unit_price_cents: 100 + (i * 37 % 5000) as i64,
            }
        }
    });
    let mut written = 0;
    while written < events {
        let batch: Vec<OrderEvent> = stream.by_ref().take(SEED_BATCH).collect();
        let count = batch.len();
        // The context `load_aggregate` would return at this point; only the sequence matters
        // to a pure event store's commit, so the aggregate's state is left at its default.
        let context = EventStoreAggregateContext {
            aggregate_id: id.clone(),
            aggregate: Order::default(),
            current_sequence: written,
            current_snapshot: None,
        };
        store
            .commit(batch, context, HashMap::new())
            .await
            .with_context(|| format!("committing events {}..{}", written + 1, written + count))?;
        written += count;
    }
    Ok(id)
}

/// Loads the aggregate as the framework does before every command
/// (`PersistedEventStore::load_aggregate`: one SELECT of the whole stream, each event
/// deserialised and applied) and returns the version loaded.
pub async fn replay(pool: &PgPool, id: &str) -> anyhow::Result<u64> {
    let context = event_store(pool)
        .load_aggregate(id)
        .await
        .with_context(|| format!("loading aggregate {id}"))?;
    Ok(context.current_sequence as u64)
}
