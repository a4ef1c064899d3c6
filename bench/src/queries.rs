//! Queries against views filled in memory: the loaded fixture, the endpoints a client
//! calls with ids that exist, and the open-loop driver. S6 and S14 both drive the real
//! read-service with these.
//!
//! The views are filled with the projector's own view code (`Projection::keys`/`Projection::apply`) folded
//! in memory over a generated log, then bulk-inserted: the real engine through nx-27017 would
//! take most of an hour for 100k orders.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use domain::Position;
use domain::events::DomainEvent;
use event_store::RecordedEvent;
use mongodb::bson::{self, Document};
use projector::context::{Enriched, OrderFacts};
use projector::mongo::ViewStore;
use projector::projections::daily_sales::DailySalesProjection;
use projector::projections::inventory::InventoryProjection;
use projector::projections::orders::OrdersProjection;
use projector::projections::users::UsersProjection;
use projector::projections::{Projection, Thresholds};
use projector::settings::Transactions;
use read_model::ViewDocument;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Ctx;
use crate::env::Scratch;
use crate::workload::{Generator, Mix};

/// `recorded_at` spans this many days ending now, so daily and per-user queries look real.
pub(crate) const DAYS: i64 = 90;
/// Orders per user on average (100k orders: 10k users).
pub(crate) const ORDERS_PER_USER: usize = 10;
/// Orders in flight while the log is generated, at most (as S4).
pub(crate) const WINDOW: usize = 1_000;
/// Documents per `insert_many`: one round trip each.
pub(crate) const INSERT_CHUNK: usize = 1_000;
/// The projector writes generation 1 on first start; this database is fresh.
pub(crate) const GENERATION: i64 = 1;
/// Days covered by the `/sales/daily` range queried.
pub(crate) const RANGE_DAYS: u64 = 30;
/// Requests one at a time before the fixed-rate runs, at least.
pub(crate) const WARMUP_REQUESTS: usize = 3;
/// A lone request slower than this is not repeated: the warm-up stops there.
pub(crate) const ALONE_TIMEOUT: Duration = Duration::from_secs(120);
/// Requests the client has open at once, at most. Later ones wait in the client and their
/// wait counts in their latency (it runs from the scheduled time); the cap bounds the work
/// an overloaded server still has queued when a run is cut off.
pub(crate) const MAX_IN_FLIGHT: usize = 32;

/// What the load put into the views, for picking ids that exist and checking replies.
pub(crate) struct Fixture {
    pub(crate) orders: Vec<String>,
    pub(crate) users: Vec<String>,
    /// Products on at least one order (a product search finds something).
    pub(crate) ordered_products: Vec<String>,
    /// Products with an `inventory_view` document.
    pub(crate) stocked_products: Vec<String>,
    pub(crate) statuses: Vec<String>,
    pub(crate) days: Vec<NaiveDate>,
}

pub(crate) struct Loaded {
    pub(crate) fixture: Fixture,
    pub(crate) events: u64,
    pub(crate) transactions: usize,
    pub(crate) users_generated: usize,
    pub(crate) products_generated: usize,
    pub(crate) documents: Vec<(&'static str, usize)>,
    pub(crate) fold_seconds: f64,
    pub(crate) insert_seconds: f64,
    pub(crate) index_seconds: f64,
}

/// The view documents of one view, with the position of the last event applied to each.
pub(crate) type Docs<V> = HashMap<String, (<V as Projection>::Doc, Position)>;

pub(crate) fn fold<V: Projection>(docs: &mut Docs<V>, e: &Enriched) {
    for key in V::keys(e) {
        let slot = docs
            .entry(key.clone())
            .or_insert_with(|| (V::Doc::default(), Position::ZERO));
        V::apply(&mut slot.0, &key, e, &Thresholds::default());
        slot.1 = e.event.position;
    }
}

/// Inserts one view's documents as the engine writes them (the document, `_id`,
/// `appliedPosition`) into generation 1; returns how many.
pub(crate) async fn insert_view<V: Projection>(
    store: &ViewStore,
    docs: Docs<V>,
) -> anyhow::Result<usize> {
    let coll = store
        .database()
        .collection::<Document>(&V::VIEW.collection(GENERATION));
    let total = docs.len();
    let mut batch = Vec::with_capacity(INSERT_CHUNK.min(total));
    for (id, (doc, applied)) in docs {
        let mut d = bson::to_document(&doc).with_context(|| format!("a {} document", V::VIEW))?;
        d.insert("_id", id);
        d.insert("appliedPosition", applied.to_string());
        batch.push(d);
        if batch.len() == INSERT_CHUNK {
            coll.insert_many(std::mem::take(&mut batch))
                .ordered(false)
                .await?;
        }
    }
    if !batch.is_empty() {
        coll.insert_many(batch).ordered(false).await?;
    }
    Ok(total)
}

/// Indexes, pointer and checkpoint: what the projector leaves once it has caught up.
pub(crate) async fn finish_view<V: Projection>(
    store: &ViewStore,
    checkpoint: Position,
) -> anyhow::Result<()> {
    store
        .ensure_indexes(
            &V::VIEW.collection(GENERATION),
            <V::Doc as ViewDocument>::indexes(),
        )
        .await?;
    // Creates `{active: 1, latest: 1}` as the projector's first start does.
    store.active_generation(V::VIEW).await?;
    store
        .save_checkpoint(V::VIEW, GENERATION, checkpoint, None)
        .await?;
    Ok(())
}

pub(crate) async fn load(ctx: &Ctx, scratch: &Scratch, orders: usize) -> anyhow::Result<Loaded> {
    let t = std::time::Instant::now();
    let mut mix = Mix::realistic(usize::MAX, (orders / 10).clamp(10, WINDOW));
    mix.users = (orders / ORDERS_PER_USER).max(1);
    mix.products = 500.min(orders).max(2);
    let (users_generated, products_generated) = (mix.users, mix.products);
    let mut generator = Generator::new(mix);

    let now = Utc::now();
    let start = now - chrono::Duration::days(DAYS);
    let span_ms = (now - start).num_milliseconds() as f64;
    let target = orders as i64;

    let mut facts: HashMap<String, OrderFacts> = HashMap::with_capacity(orders);
    let mut order_docs: Docs<OrdersProjection> = HashMap::with_capacity(orders);
    let mut user_docs: Docs<UsersProjection> = HashMap::new();
    let mut day_docs: Docs<DailySalesProjection> = HashMap::new();
    let mut product_docs: Docs<InventoryProjection> = HashMap::new();
    let (mut global, mut tx_id, mut last) = (0i64, 0u64, Position::ZERO);
    while generator.expected.orders_placed < target {
        // Orders are created at an even pace through the log, so the share already created
        // spreads the log over the days; a transaction's events share its commit time, as
        // `recorded_at` does in PostgreSQL.
        let progress = generator.expected.orders_placed as f64 / target as f64;
        let at = start + chrono::Duration::milliseconds((span_ms * progress) as i64);
        let Some(tx) = generator.next_tx() else { break };
        tx_id += 1;
        for append in tx {
            for (k, new) in append.events.into_iter().enumerate() {
                global += 1;
                let encoded = new.event;
                let event = DomainEvent::decode(
                    encoded.event_type,
                    encoded.schema_version,
                    encoded.data.clone(),
                )?;
                let recorded = RecordedEvent {
                    position: Position {
                        tx_id,
                        global_position: global,
                    },
                    stream_id: append.stream_id.clone(),
                    stream_position: append.expected_version + k as u64 + 1,
                    event_id: new.event_id,
                    event_type: encoded.event_type.to_owned(),
                    stored_schema_version: encoded.schema_version,
                    schema_version: encoded.schema_version,
                    data: encoded.data,
                    metadata: new.metadata,
                    recorded_at: at,
                    event,
                };
                last = recorded.position;
                let enriched = if matches!(recorded.event, DomainEvent::Order(_)) {
                    let before = facts.get(&recorded.stream_id).cloned();
                    let after = OrderFacts::apply(before.clone(), &recorded)
                        .context("a generated event does not apply to its order")?;
                    facts.insert(recorded.stream_id.clone(), after.clone());
                    Enriched {
                        event: recorded,
                        before,
                        after: Some(after),
                        watermark: None,
                    }
                } else {
                    Enriched {
                        event: recorded,
                        before: None,
                        after: None,
                        watermark: None,
                    }
                };
                fold::<OrdersProjection>(&mut order_docs, &enriched);
                fold::<UsersProjection>(&mut user_docs, &enriched);
                fold::<DailySalesProjection>(&mut day_docs, &enriched);
                fold::<InventoryProjection>(&mut product_docs, &enriched);
            }
        }
    }
    drop(facts);

    let mut ordered_products = BTreeSet::new();
    let mut statuses = BTreeSet::new();
    for (doc, _) in order_docs.values() {
        statuses.insert(doc.status.as_str().to_owned());
        ordered_products.extend(doc.items.iter().map(|i| i.product_id.clone()));
    }
    let mut days: Vec<NaiveDate> = day_docs
        .keys()
        .filter_map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .collect();
    days.sort_unstable();
    let sorted = |mut keys: Vec<String>| {
        keys.sort_unstable();
        keys
    };
    let fixture = Fixture {
        orders: sorted(order_docs.keys().cloned().collect()),
        users: sorted(user_docs.keys().cloned().collect()),
        ordered_products: ordered_products.into_iter().collect(),
        stocked_products: sorted(product_docs.keys().cloned().collect()),
        statuses: statuses.into_iter().collect(),
        days,
    };
    let fold_seconds = t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    let store = ViewStore::connect(
        &ctx.servers.mongodb_uri,
        scratch.mongo.name(),
        Transactions::Off,
    )
    .await?;
    let documents = vec![
        (
            OrdersProjection::VIEW.name(),
            insert_view::<OrdersProjection>(&store, order_docs).await?,
        ),
        (
            UsersProjection::VIEW.name(),
            insert_view::<UsersProjection>(&store, user_docs).await?,
        ),
        (
            DailySalesProjection::VIEW.name(),
            insert_view::<DailySalesProjection>(&store, day_docs).await?,
        ),
        (
            InventoryProjection::VIEW.name(),
            insert_view::<InventoryProjection>(&store, product_docs).await?,
        ),
    ];
    let insert_seconds = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    finish_view::<OrdersProjection>(&store, last).await?;
    finish_view::<UsersProjection>(&store, last).await?;
    finish_view::<DailySalesProjection>(&store, last).await?;
    finish_view::<InventoryProjection>(&store, last).await?;
    let index_seconds = t.elapsed().as_secs_f64();
    Ok(Loaded {
        fixture,
        events: u64::try_from(global).unwrap_or(0),
        transactions: generator.transactions,
        users_generated,
        products_generated,
        documents,
        fold_seconds,
        insert_seconds,
        index_seconds,
    })
}

/// One endpoint as a client calls it: a URL path built from ids that exist, and what a
/// correct reply holds.
pub(crate) struct Endpoint {
    pub(crate) name: &'static str,
    pub(crate) path: fn(&Fixture, &mut fastrand::Rng) -> String,
    pub(crate) ok: fn(&Fixture, &Value) -> bool,
}

pub(crate) fn pick<'a>(rng: &mut fastrand::Rng, from: &'a [String]) -> &'a str {
    from.get(rng.usize(0..from.len().max(1)))
        .map_or("", String::as_str)
}

pub(crate) fn pick_day(rng: &mut fastrand::Rng, days: &[NaiveDate], room: u64) -> NaiveDate {
    let usable = days
        .len()
        .saturating_sub(usize::try_from(room).unwrap_or(0))
        .max(1);
    days.get(rng.usize(0..usable))
        .or(days.first())
        .copied()
        .unwrap_or_default()
}

pub(crate) fn non_empty(v: &Value, field: &str) -> bool {
    v[field].as_array().is_some_and(|a| !a.is_empty())
}

pub(crate) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            name: "GET /orders/{orderId}",
            path: |f, rng| format!("/orders/{}", pick(rng, &f.orders)),
            ok: |_, v| v["orderId"].is_string(),
        },
        Endpoint {
            name: "GET /users/{userId}/orders",
            path: |f, rng| format!("/users/{}/orders", pick(rng, &f.users)),
            ok: |_, v| non_empty(v, "orders"),
        },
        Endpoint {
            name: "GET /orders?status={status}",
            path: |f, rng| format!("/orders?status={}", pick(rng, &f.statuses)),
            ok: |_, v| non_empty(v, "orders"),
        },
        Endpoint {
            name: "GET /orders?productId={productId}",
            path: |f, rng| format!("/orders?productId={}", pick(rng, &f.ordered_products)),
            ok: |_, v| non_empty(v, "orders"),
        },
        Endpoint {
            name: "GET /sales/daily?from&to (30 days)",
            path: |f, rng| {
                let from = pick_day(rng, &f.days, RANGE_DAYS - 1);
                let to = from
                    .checked_add_days(chrono::Days::new(RANGE_DAYS - 1))
                    .unwrap_or(from);
                format!("/sales/daily?from={from}&to={to}")
            },
            ok: |_, v| v["days"].as_array().map(Vec::len) == Some(RANGE_DAYS as usize),
        },
        Endpoint {
            name: "GET /sales/daily/{date}",
            path: |f, rng| format!("/sales/daily/{}", pick_day(rng, &f.days, 0)),
            // Every day picked has a `daily_sales` document.
            ok: |_, v| v["date"].is_string() && v["ordersPlaced"].is_i64(),
        },
        Endpoint {
            name: "GET /inventory (lowest stock first)",
            path: |_, _| "/inventory".to_owned(),
            ok: |_, v| non_empty(v, "products"),
        },
        Endpoint {
            name: "GET /inventory/{productId}",
            path: |f, rng| format!("/inventory/{}", pick(rng, &f.stocked_products)),
            ok: |_, v| v["productId"].is_string(),
        },
        Endpoint {
            name: "GET /dashboard/summary",
            path: |_, _| "/dashboard/summary".to_owned(),
            // Every order is in exactly one status.
            ok: |f, v| {
                let counted: Option<u64> = v["ordersByStatus"]
                    .as_object()
                    .map(|m| m.values().filter_map(Value::as_u64).sum());
                counted == Some(f.orders.len() as u64)
            },
        },
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    /// A reply other than 2xx, with its status code.
    Status(u16),
    /// 2xx without the data that must be there.
    Body,
    /// No reply (connection error or client timeout).
    Transport,
}

pub(crate) async fn call(
    client: &reqwest::Client,
    url: &str,
    fixture: &Fixture,
    ok: fn(&Fixture, &Value) -> bool,
) -> Outcome {
    let reply = match client.get(url).send().await {
        Ok(r) => r,
        Err(_) => return Outcome::Transport,
    };
    if !reply.status().is_success() {
        return Outcome::Status(reply.status().as_u16());
    }
    match reply.json::<Value>().await {
        Ok(v) if ok(fixture, &v) => Outcome::Ok,
        Ok(_) => Outcome::Body,
        Err(_) => Outcome::Transport,
    }
}

/// Requests one at a time until `warmup` has passed and a few were made; returns their
/// latencies in ms (the first, cold one left out when there are more).
pub(crate) async fn alone(
    client: &reqwest::Client,
    base: &str,
    fixture: &Fixture,
    ep: &Endpoint,
    warmup: Duration,
    rng: &mut fastrand::Rng,
) -> (Vec<f64>, Vec<Outcome>) {
    let started = Instant::now();
    let (mut latencies, mut outcomes) = (Vec::new(), Vec::new());
    while outcomes.len() < WARMUP_REQUESTS || started.elapsed() < warmup {
        let url = format!("{base}{}", (ep.path)(fixture, rng));
        let t = Instant::now();
        let outcome =
            match tokio::time::timeout(ALONE_TIMEOUT, call(client, &url, fixture, ep.ok)).await {
                Ok(o) => o,
                Err(_) => Outcome::Transport,
            };
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        outcomes.push(outcome);
        // One lone request slower than the whole warm-up is measurement enough.
        if t.elapsed() >= warmup || outcome == Outcome::Transport {
            break;
        }
    }
    if latencies.len() > 1 {
        latencies.remove(0);
    }
    (latencies, outcomes)
}

pub(crate) struct RateRun {
    pub(crate) sent: usize,
    pub(crate) outcomes: HashMap<String, usize>,
    /// From the scheduled send time to the reply; for requests unanswered at the cutoff,
    /// to the cutoff (a lower bound).
    pub(crate) latencies_ms: Vec<f64>,
    pub(crate) unfinished: usize,
    /// Replies per second over the window, or from its start to the last reply if later.
    pub(crate) served_per_second: f64,
}

pub(crate) fn outcome_name(o: Outcome) -> String {
    match o {
        Outcome::Ok => "ok".to_owned(),
        Outcome::Status(code) => format!("HTTP {code}"),
        Outcome::Body => "2xx without the expected data".to_owned(),
        Outcome::Transport => "no reply".to_owned(),
    }
}

/// Requests sent in a run of `duration` at `rate`.
pub(crate) fn requests(rate: u32, duration: Duration) -> usize {
    (f64::from(rate) * duration.as_secs_f64()).round().max(1.0) as usize
}

/// Open loop: request `i` is sent at `start + i / rate` whatever happened to earlier ones, and
/// its latency counts from that scheduled time, so a slow server cannot slow the client down
/// and hide its queue (no coordinated omission). Requests unanswered `grace` after the window
/// are abandoned.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn at_rate(
    client: &reqwest::Client,
    base: &str,
    fixture: &std::sync::Arc<Fixture>,
    ep: &Endpoint,
    rate: u32,
    duration: Duration,
    grace: Duration,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<RateRun> {
    let n = requests(rate, duration);
    let start = Instant::now() + Duration::from_millis(20);
    let cutoff = start + duration + grace;
    let scheduled: Vec<Instant> = (0..n)
        .map(|i| start + Duration::from_secs_f64(i as f64 / f64::from(rate)))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    for (i, &at) in scheduled.iter().enumerate() {
        let url = format!("{base}{}", (ep.path)(fixture, rng));
        let (client, fixture, ok) = (client.clone(), fixture.clone(), ep.ok);
        let slots = slots.clone();
        tasks.spawn(async move {
            tokio::time::sleep_until(at).await;
            let _slot = slots.acquire_owned().await;
            let outcome = call(&client, &url, &fixture, ok).await;
            (i, outcome, Instant::now())
        });
    }
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let mut latencies_ms = Vec::with_capacity(n);
    let mut answered = vec![false; n];
    let mut last_done = start;
    while let Ok(Some(joined)) = tokio::time::timeout_at(cutoff, tasks.join_next()).await {
        let (i, outcome, done) = joined.context("a request task panicked")?;
        *outcomes.entry(outcome_name(outcome)).or_insert(0) += 1;
        latencies_ms.push((done - scheduled[i]).as_secs_f64() * 1000.0);
        answered[i] = true;
        last_done = last_done.max(done);
    }
    tasks.abort_all();
    let mut unfinished = 0;
    for (i, at) in scheduled.iter().enumerate() {
        if !answered[i] {
            unfinished += 1;
            latencies_ms.push((cutoff - *at).as_secs_f64() * 1000.0);
        }
    }
    let replied = n - unfinished;
    // Over the window, or until the last reply when the server fell behind.
    let span = (last_done - start)
        .as_secs_f64()
        .max(duration.as_secs_f64());
    Ok(RateRun {
        sent: n,
        outcomes,
        latencies_ms,
        unfinished,
        served_per_second: replied as f64 / span,
    })
}

/// Waits until MongoDB has worked off what abandoned requests left queued on it: a ping
/// answers only once the server is free again.
pub(crate) async fn settle(db: &mongodb::Database) {
    let _ = tokio::time::timeout(ALONE_TIMEOUT, async {
        // Each attempt fails after the client's server selection timeout while the server
        // is too busy even to accept a connection.
        while db.run_command(bson::doc! {"ping": 1}).await.is_err() {}
    })
    .await;
}

/// The real read-service over one database's views, on a free loopback port.
pub(crate) struct ReadService {
    pub(crate) base: String,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ReadService {
    /// Serves `database` through MongoDB at `mongodb_uri` (a counting proxy's, where the
    /// caller counts round trips).
    pub(crate) async fn start(mongodb_uri: &str, database: &str) -> anyhow::Result<ReadService> {
        let settings = read_service::Settings {
            auth: test_support::auth::settings(),
            ..read_service::Settings::new(mongodb_uri.to_owned(), database)
        };
        let app = read_service::Application::build(settings).await?;
        let base = format!("http://127.0.0.1:{}", app.port());
        let cancel = CancellationToken::new();
        let server = tokio::spawn(app.run_until(cancel.clone().cancelled_owned()));
        Ok(ReadService {
            base,
            cancel,
            server,
        })
    }

    pub(crate) async fn stop(self) {
        self.cancel.cancel();
        let _ = self.server.await;
    }
}

/// Staff: the only caller who may ask every endpoint, at rates far below its limit.
pub(crate) fn staff_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            test_support::auth::bearer(&test_support::auth::staff()).parse()?,
        )]))
        .pool_max_idle_per_host(1024)
        .timeout(ALONE_TIMEOUT)
        .build()?)
}
