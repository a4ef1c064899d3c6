//! S6: queries against views holding many orders, each read-service endpoint at fixed rates.
//!
//! The views are filled with the projector's own view code (`Projection::keys`/`Projection::apply`) folded
//! in memory over a generated log, then bulk-inserted: the real engine through nx-27017 would
//! take most of an hour for 100k orders. The real read-service then runs in this process and
//! each endpoint is driven open-loop at fixed request rates.

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
use crate::report::{Scenario, num};
use crate::stats;
use crate::workload::{Generator, Mix};

/// `recorded_at` spans this many days ending now, so daily and per-user queries look real.
const DAYS: i64 = 90;
/// Orders per user on average (100k orders: 10k users).
const ORDERS_PER_USER: usize = 10;
/// Orders in flight while the log is generated, at most (as S4).
const WINDOW: usize = 1_000;
/// Documents per `insert_many`: one round trip each.
const INSERT_CHUNK: usize = 1_000;
/// The projector writes generation 1 on first start; this database is fresh.
const GENERATION: i64 = 1;
/// Days covered by the `/sales/daily` range queried.
const RANGE_DAYS: u64 = 30;
/// Requests one at a time before the fixed-rate runs, at least.
const WARMUP_REQUESTS: usize = 3;
/// A lone request slower than this is not repeated: the warm-up stops there.
const ALONE_TIMEOUT: Duration = Duration::from_secs(120);
/// Requests the client has open at once, at most. Later ones wait in the client and their
/// wait counts in their latency (it runs from the scheduled time); the cap bounds the work
/// an overloaded server still has queued when a run is cut off.
const MAX_IN_FLIGHT: usize = 32;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Scenario> {
    ctx.in_scratch("s6", async |scratch| measure(ctx, scratch).await)
        .await
}

/// What the load put into the views, for picking ids that exist and checking replies.
struct Fixture {
    orders: Vec<String>,
    users: Vec<String>,
    /// Products on at least one order (a product search finds something).
    ordered_products: Vec<String>,
    /// Products with an `inventory_view` document.
    stocked_products: Vec<String>,
    statuses: Vec<String>,
    days: Vec<NaiveDate>,
}

struct Loaded {
    fixture: Fixture,
    events: u64,
    transactions: usize,
    users_generated: usize,
    products_generated: usize,
    documents: Vec<(&'static str, usize)>,
    fold_seconds: f64,
    insert_seconds: f64,
    index_seconds: f64,
}

/// The view documents of one view, with the position of the last event applied to each.
type Docs<V> = HashMap<String, (<V as Projection>::Doc, Position)>;

fn fold<V: Projection>(docs: &mut Docs<V>, e: &Enriched) {
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
async fn insert_view<V: Projection>(store: &ViewStore, docs: Docs<V>) -> anyhow::Result<usize> {
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
async fn finish_view<V: Projection>(store: &ViewStore, checkpoint: Position) -> anyhow::Result<()> {
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

async fn load(ctx: &Ctx, scratch: &Scratch, orders: usize) -> anyhow::Result<Loaded> {
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
struct Endpoint {
    name: &'static str,
    path: fn(&Fixture, &mut fastrand::Rng) -> String,
    ok: fn(&Fixture, &Value) -> bool,
}

fn pick<'a>(rng: &mut fastrand::Rng, from: &'a [String]) -> &'a str {
    from.get(rng.usize(0..from.len().max(1)))
        .map_or("", String::as_str)
}

fn pick_day(rng: &mut fastrand::Rng, days: &[NaiveDate], room: u64) -> NaiveDate {
    let usable = days
        .len()
        .saturating_sub(usize::try_from(room).unwrap_or(0))
        .max(1);
    days.get(rng.usize(0..usable))
        .or(days.first())
        .copied()
        .unwrap_or_default()
}

fn non_empty(v: &Value, field: &str) -> bool {
    v[field].as_array().is_some_and(|a| !a.is_empty())
}

fn endpoints() -> Vec<Endpoint> {
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
enum Outcome {
    Ok,
    /// A reply other than 2xx, with its status code.
    Status(u16),
    /// 2xx without the data that must be there.
    Body,
    /// No reply (connection error or client timeout).
    Transport,
}

async fn call(
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
async fn alone(
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

struct RateRun {
    sent: usize,
    outcomes: HashMap<String, usize>,
    /// From the scheduled send time to the reply; for requests unanswered at the cutoff,
    /// to the cutoff (a lower bound).
    latencies_ms: Vec<f64>,
    unfinished: usize,
    /// Replies per second over the window, or from its start to the last reply if later.
    served_per_second: f64,
}

fn outcome_name(o: Outcome) -> String {
    match o {
        Outcome::Ok => "ok".to_owned(),
        Outcome::Status(code) => format!("HTTP {code}"),
        Outcome::Body => "2xx without the expected data".to_owned(),
        Outcome::Transport => "no reply".to_owned(),
    }
}

/// Requests sent in a run of `duration` at `rate`.
fn requests(rate: u32, duration: Duration) -> usize {
    (f64::from(rate) * duration.as_secs_f64()).round().max(1.0) as usize
}

/// Open loop: request `i` is sent at `start + i / rate` whatever happened to earlier ones, and
/// its latency counts from that scheduled time, so a slow server cannot slow the client down
/// and hide its queue (no coordinated omission). Requests unanswered `grace` after the window
/// are abandoned.
#[allow(clippy::too_many_arguments)]
async fn at_rate(
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
async fn settle(db: &mongodb::Database) {
    let _ = tokio::time::timeout(ALONE_TIMEOUT, async {
        // Each attempt fails after the client's server selection timeout while the server
        // is too busy even to accept a connection.
        while db.run_command(bson::doc! {"ping": 1}).await.is_err() {}
    })
    .await;
}

async fn measure(ctx: &Ctx, scratch: &Scratch) -> anyhow::Result<Scenario> {
    let sizes = &ctx.sizes;
    let duration = sizes.s6_duration;
    let warmup = duration / 6;
    let grace = duration;
    let mut s = Scenario::new(
        "S6",
        "Queries",
        &format!(
            "The views are filled with the projector's own view code: a realistic log (the S4 \
         generator, through the domain's `decide`, `recorded_at` spread over the last 90 days) is \
         decoded and enriched with each order's facts in memory, folded with each view's \
         `Projection::keys` and `Projection::apply`, and the documents are bulk-inserted as the engine writes \
         them (with `appliedPosition`) into generation 1, followed by the projector's indexes, \
         pointers and checkpoints, so the read-service sees caught-up views (the real engine \
         through nx-27017 would take most of an hour for this log). The real read-service \
         (`read_service::Application`) then runs in this process on port 0. Each endpoint gets \
         a few requests one at a time (warm-up; their median is the `alone` figure), then is \
         driven open-loop at each fixed rate: request i is sent at start + i/rate whatever \
         earlier ones did, and its latency counts from that scheduled time (no coordinated \
         omission). Ids are random (seeded) among those loaded; a reply counts as correct when \
         it is 2xx and holds the data that must be there. Requests still unanswered one window \
         after the window ends are abandoned and counted at that age (a lower bound); at most \
         {MAX_IN_FLIGHT} requests are open at once (later ones wait in the client, and that wait is in \
         their latency). A rate at which the requests would need more server time (at the lone \
         request's cost) than the window plus that grace is not driven: it could only measure a \
         growing queue."
        ),
    );
    s.param("orders wanted in the views", sizes.s6_orders);
    s.param("fixed rates (requests/s)", format!("{:?}", sizes.s6_rates));
    s.param(
        "measured window per endpoint and rate",
        format!("{} ms", duration.as_millis()),
    );
    s.param(
        "warm-up per endpoint",
        format!(
            "at least {WARMUP_REQUESTS} requests one at a time and {} ms",
            warmup.as_millis()
        ),
    );
    s.param(
        "where",
        "load generator and read-service in one process; MongoDB (the server below) on the \
         same machine",
    );

    // S14 first: the same endpoints at the same rate over views a tenth the size.
    let small = measure_small(ctx, warmup, grace).await?;
    let loaded = load(ctx, scratch, sizes.s6_orders).await?;
    eprintln!(
        "bench: S6 loaded: fold {:.1} s, insert {:.1} s, indexes {:.1} s",
        loaded.fold_seconds, loaded.insert_seconds, loaded.index_seconds
    );
    let fixture = std::sync::Arc::new(loaded.fixture);
    s.param("orders in the views", fixture.orders.len());
    s.param(
        "users with orders / users drawn from",
        format!("{} / {}", fixture.users.len(), loaded.users_generated),
    );
    s.param(
        "products with stock or sales / products drawn from",
        format!(
            "{} / {}",
            fixture.stocked_products.len(),
            loaded.products_generated
        ),
    );
    s.param(
        "events folded (transactions)",
        format!("{} ({})", loaded.events, loaded.transactions),
    );
    s.param(
        "documents per view (generation 1)",
        loaded
            .documents
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let documents: usize = loaded.documents.iter().map(|(_, n)| n).sum();
    s.param(
        "loading (not a figure)",
        format!(
            "generate, enrich and fold {} s; insert {} documents in chunks of {INSERT_CHUNK} {} s \
             ({} documents/s); indexes, pointers and checkpoints {} s",
            num(loaded.fold_seconds),
            documents,
            num(loaded.insert_seconds),
            num(documents as f64 / loaded.insert_seconds.max(1e-9)),
            num(loaded.index_seconds),
        ),
    );

    let results = serve_and_drive(ctx, scratch, &fixture, sizes, warmup, grace).await?;
    if let Some(small) = small {
        let s14 = growth_report(ctx, small, (fixture.orders.len(), &results));
        if let Ok(mut slot) = ctx.s14.lock() {
            *slot = Some(s14);
        }
    }
    report(&mut s, &results, sizes, duration, grace)?;
    Ok(s)
}

/// Runs the real read-service over the scratch database's views and drives every endpoint.
async fn serve_and_drive(
    ctx: &Ctx,
    scratch: &Scratch,
    fixture: &std::sync::Arc<Fixture>,
    sizes: &crate::Sizes,
    warmup: Duration,
    grace: Duration,
) -> anyhow::Result<Vec<EndpointResult>> {
    let settings = read_service::Settings {
        auth: test_support::auth::settings(),
        ..read_service::Settings::new(ctx.servers.mongodb_uri.clone(), scratch.mongo.name())
    };
    let app = read_service::Application::build(settings).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let cancel = CancellationToken::new();
    let server = tokio::spawn(app.run_until(cancel.clone().cancelled_owned()));
    // Staff: the only caller who may ask every endpoint, at rates far below its limit.
    let client = reqwest::Client::builder()
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            test_support::auth::bearer(&test_support::auth::staff()).parse()?,
        )]))
        .pool_max_idle_per_host(1024)
        .timeout(ALONE_TIMEOUT)
        .build()?;

    let measured = drive_all(
        &client,
        &base,
        fixture,
        sizes,
        warmup,
        grace,
        &scratch.mongo,
    )
    .await;
    // Leave the server idle for the scratch database's drop and the next scenario.
    settle(&scratch.mongo).await;
    cancel.cancel();
    let _ = server.await;
    measured
}

/// The rate S14 compares the two sizes at: S6's lowest.
fn growth_rate(sizes: &crate::Sizes) -> u32 {
    sizes.s6_rates.iter().copied().min().unwrap_or(20)
}

/// S14's smaller size: views filled with a tenth of S6's orders, driven at one rate.
async fn measure_small(
    ctx: &Ctx,
    warmup: Duration,
    grace: Duration,
) -> anyhow::Result<Option<(usize, Vec<EndpointResult>)>> {
    let orders = ctx.sizes.s6_orders / 10;
    let sizes = crate::Sizes {
        s6_rates: vec![growth_rate(&ctx.sizes)],
        ..ctx.sizes.clone()
    };
    let scratch = Scratch::create(&ctx.servers, "s14").await?;
    let result = async {
        let loaded = load(ctx, &scratch, orders).await?;
        let fixture = std::sync::Arc::new(loaded.fixture);
        let results = serve_and_drive(ctx, &scratch, &fixture, &sizes, warmup, grace).await?;
        anyhow::Ok((fixture.orders.len(), results))
    }
    .await;
    let _ = scratch.drop().await;
    result.map(Some)
}

/// S14: each endpoint's p99 at S6's lowest rate over both sizes of views.
fn growth_report(
    ctx: &Ctx,
    (small_orders, small): (usize, Vec<EndpointResult>),
    (large_orders, large): (usize, &[EndpointResult]),
) -> Scenario {
    let rate = growth_rate(&ctx.sizes);
    let mut s = Scenario::new(
        "S14",
        "How cost grows: queries",
        &format!(
            "S6's method (views filled with the projector's own view code, the real \
             read-service, open-loop requests at a fixed rate) over views of {small_orders} \
             orders and of {large_orders} (S6's own run), each endpoint at {rate} requests/s: \
             p99 at each size. An endpoint S6 does not drive at that rate (a lone request \
             already too slow for it) has no figure."
        ),
    );
    s.param(
        "orders in the views",
        format!("{small_orders} and {large_orders}"),
    );
    s.param("rate", format!("{rate} requests/s"));
    let p99 = |r: &EndpointResult| {
        r.runs
            .iter()
            .find(|(at, _)| *at == rate)
            .and_then(|(_, run)| run.as_ref())
            .map(|run| {
                let mut lat = run.latencies_ms.clone();
                stats::percentile(&mut lat, 99.0)
            })
    };
    for l in large {
        let Some(sm) = small.iter().find(|r| r.name == l.name) else {
            continue;
        };
        let (a, b) = (p99(sm), p99(l));
        if let Some(a) = a {
            s.value(
                &format!("{}: p99 at {small_orders} orders", l.name),
                "ms",
                a,
            )
            .mongo();
        }
        if let Some(b) = b {
            s.value(
                &format!("{}: p99 at {large_orders} orders", l.name),
                "ms",
                b,
            )
            .mongo();
        }
        match (a, b) {
            (Some(a), Some(b)) => {
                let ratio = b / a.max(1e-9);
                s.check(
                    &format!(
                        "{}: p99 at {large_orders} orders ≤ 1.2x at {small_orders}",
                        l.name
                    ),
                    ratio,
                    "x",
                    ratio <= 1.2,
                    || format!("p99 {} ms against {} ms", num(b), num(a)),
                )
                .mongo();
            }
            (Some(a), None) => s.notes.push(format!(
                "{}: {} ms at {small_orders} orders; at {large_orders} a lone request is too \
                 slow to drive it at {rate}/s (see S6), so there is no ratio",
                l.name,
                num(a)
            )),
            _ => {}
        }
    }
    s
}

/// S14, as S6 measured it.
pub fn growth(ctx: &Ctx) -> anyhow::Result<Scenario> {
    ctx.s14
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .ok_or_else(|| anyhow::anyhow!("S14 is measured by S6: run S6 as well"))
}

struct EndpointResult {
    name: &'static str,
    alone_ms: Vec<f64>,
    alone_outcomes: Vec<Outcome>,
    /// `None` where the endpoint was not driven at that rate.
    runs: Vec<(u32, Option<RateRun>)>,
}

async fn drive_all(
    client: &reqwest::Client,
    base: &str,
    fixture: &std::sync::Arc<Fixture>,
    sizes: &crate::Sizes,
    warmup: Duration,
    grace: Duration,
    db: &mongodb::Database,
) -> anyhow::Result<Vec<EndpointResult>> {
    let mut rng = fastrand::Rng::with_seed(6);
    let mut results = Vec::new();
    for ep in endpoints() {
        let t = Instant::now();
        let (alone_ms, alone_outcomes) = alone(client, base, fixture, &ep, warmup, &mut rng).await;
        if alone_outcomes.iter().any(|o| *o != Outcome::Ok) {
            settle(db).await;
        }
        let alone_s = stats::median(&alone_ms) / 1000.0;
        let failed_alone = alone_outcomes.contains(&Outcome::Transport);
        let mut runs = Vec::new();
        for &rate in &sizes.s6_rates {
            // Work the run would give MongoDB at the lone request's cost: when it cannot be
            // done by the cutoff, the run would only measure a queue and leave it behind.
            let work = requests(rate, sizes.s6_duration) as f64 * alone_s;
            if failed_alone || work > (sizes.s6_duration + grace).as_secs_f64() {
                runs.push((rate, None));
                continue;
            }
            let run = at_rate(
                client,
                base,
                fixture,
                &ep,
                rate,
                sizes.s6_duration,
                grace,
                &mut rng,
            )
            .await?;
            if run.unfinished > 0 {
                settle(db).await;
            }
            runs.push((rate, Some(run)));
        }
        eprintln!(
            "bench: S6 {} in {:.1} s (alone {:.0} ms)",
            ep.name,
            t.elapsed().as_secs_f64(),
            alone_s * 1000.0
        );
        results.push(EndpointResult {
            name: ep.name,
            alone_ms,
            alone_outcomes,
            runs,
        });
    }
    Ok(results)
}

fn report(
    s: &mut Scenario,
    results: &[EndpointResult],
    sizes: &crate::Sizes,
    duration: Duration,
    grace: Duration,
) -> anyhow::Result<()> {
    let (mut total, mut failed) = (0usize, 0usize);
    let mut saturated = Vec::new();
    let mut not_driven = Vec::new();
    for r in results {
        let alone_failed = r
            .alone_outcomes
            .iter()
            .filter(|o| **o != Outcome::Ok)
            .count();
        total += r.alone_outcomes.len();
        failed += alone_failed;
        let mut note = format!("median of {} requests one at a time", r.alone_ms.len());
        if alone_failed > 0 {
            let failures: Vec<String> = r
                .alone_outcomes
                .iter()
                .filter(|o| **o != Outcome::Ok)
                .map(|o| outcome_name(*o))
                .collect();
            note.push_str(&format!(
                "; {alone_failed} failed ({}), their time included",
                failures.join(", ")
            ));
        }
        s.value(
            &format!("{}: alone", r.name),
            "ms",
            stats::median(&r.alone_ms),
        )
        .note(note)
        .mongo();
        for (rate, run) in &r.runs {
            let Some(run) = run else {
                let n = requests(*rate, duration);
                not_driven.push(format!(
                    "{} at {rate}/s: {n} requests at {} ms each alone need {} s of server \
                     time, more than the {} s from the first send to the cutoff",
                    r.name,
                    num(stats::median(&r.alone_ms)),
                    num(n as f64 * stats::median(&r.alone_ms) / 1000.0),
                    num((duration + grace).as_secs_f64())
                ));
                continue;
            };
            let ok = run.outcomes.get("ok").copied().unwrap_or(0);
            total += run.sent;
            failed += run.sent - ok;
            let mut lat = run.latencies_ms.clone();
            let p50 = stats::percentile(&mut lat, 50.0);
            let p99 = stats::percentile(&mut lat, 99.0);
            let max = stats::max(&lat);
            let mut detail = format!(
                "{} sent, {} replies/s served (offered {rate}/s), max {} ms",
                run.sent,
                num(run.served_per_second),
                num(max)
            );
            let mut bad: Vec<String> = run
                .outcomes
                .iter()
                .filter(|(k, _)| k.as_str() != "ok")
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            bad.sort();
            if run.unfinished > 0 {
                bad.push(format!(
                    "{} unanswered {} ms after the window, counted at their age then (p99 and \
                     max are lower bounds)",
                    run.unfinished,
                    grace.as_millis()
                ));
            }
            if !bad.is_empty() {
                detail.push_str(&format!("; {}", bad.join(", ")));
            }
            s.value(&format!("{} at {rate}/s: p50", r.name), "ms", p50)
                .mongo();
            s.value(&format!("{} at {rate}/s: p99", r.name), "ms", p99)
                .note(detail)
                .mongo();
            // Served more than 5% below offered, or a queue left at the cutoff: the server
            // could not keep up with this rate.
            if run.unfinished > 0 || run.served_per_second < 0.95 * f64::from(*rate) {
                saturated.push(format!(
                    "{} at {rate}/s (served {}/s, p99 {} ms vs {} ms alone)",
                    r.name,
                    num(run.served_per_second),
                    num(p99),
                    num(stats::median(&r.alone_ms))
                ));
            }
        }
    }
    s.notes.push(
        "The MongoDB server here is nx-27017 (a Python MongoDB-compatible server over SQLite \
         doing a few hundred to ~1000 operations/s), not MongoDB: every latency above is bounded \
         by it and says little about MongoDB; compare endpoints with each other on this server."
            .to_owned(),
    );
    if saturated.is_empty() {
        s.notes.push(format!(
            "Every endpoint driven kept up with every rate (served within 5% of offered, none \
             left unanswered): rates {:?}/s.",
            sizes.s6_rates
        ));
    } else {
        s.notes.push(format!(
            "Saturated (served more than 5% below the offered rate, or requests left \
             unanswered), so their latency is mostly queueing: {}.",
            saturated.join("; ")
        ));
    }
    if !not_driven.is_empty() {
        s.notes.push(format!(
            "Not driven at fixed rates: {}.",
            not_driven.join("; ")
        ));
    }
    s.notes.push(format!(
        "{failed} of {total} requests failed (non-2xx, no reply, or a 2xx without the data that \
         must be there)."
    ));
    if total == 0 || failed * 2 > total {
        anyhow::bail!("{failed} of {total} requests failed");
    }
    Ok(())
}
