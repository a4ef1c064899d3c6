//! Rebuilding the four views with the real projector engine, counting MongoDB round trips on
//! the wire, and checking the views' counters against the generator's.

use std::time::Instant;

use anyhow::Context;
use domain::Position;
use event_store::EventStore;
use mongodb::bson::{Document, doc};
use projector::engine::Engine;
use projector::mongo::{ViewStore, get_int};
use projector::projections::{Projection, Thresholds};
use projector::rebuild::catch_up;
use projector::settings::{OnPoison, Transactions};
use read_model::{View, ViewDocument};
use tokio_util::sync::CancellationToken;

use crate::env::Servers;
use crate::wire::{
    CountingProxy, Counts, proxied_uri, total, wait_seconds as wire_wait, work_between,
};
use crate::workload::Expected;

/// `projector run`'s settings as the live scenarios (S3, S10) run it on `scratch`: the
/// binary's defaults, MongoDB at `mongodb_uri`, health on a free port.
pub fn live_settings(scratch: &crate::env::Scratch, mongodb_uri: &str) -> projector::Settings {
    projector::Settings {
        database_url: scratch.url.clone().into(),
        mongodb_uri: mongodb_uri.to_owned().into(),
        mongodb_database: scratch.mongo.name().to_owned(),
        batch_size: BATCH,
        on_poison: OnPoison::Stop,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        poll_interval_ms: 1_000,
        transactions: Transactions::Auto,
        thresholds: Thresholds::default(),
    }
}

/// The views S4 and S5 rebuild, the naive projector's too; the event-time views
/// (`sales_by_minute`, `alerts`) are measured live in S3 and S10.
pub const FOUR_VIEWS: [View; 4] = [View::Orders, View::Users, View::DailySales, View::Inventory];

/// The projector's default `PROJECTOR_BATCH_SIZE`.
pub const BATCH: i64 = 500;
/// `rebuild` fills a new generation; here each run has its own database, so generation 1.
pub const GENERATION: i64 = 1;

/// MongoDB behind a counting proxy.
pub struct Counted {
    pub proxy: CountingProxy,
    pub uri: String,
}

impl Counted {
    pub async fn start(servers: &Servers) -> anyhow::Result<Counted> {
        // The port is known only once the proxy listens; the target only from the URI.
        let (_, target) = proxied_uri(&servers.mongodb_uri, 0)?;
        let proxy = CountingProxy::start(target).await?;
        let (uri, _) = proxied_uri(&servers.mongodb_uri, proxy.port)?;
        Ok(Counted { proxy, uri })
    }
}

#[derive(Debug, Clone)]
pub struct ViewRun {
    pub name: &'static str,
    pub events: u64,
    pub seconds: f64,
    pub round_trips: Counts,
}

#[derive(Debug, Clone)]
pub struct RebuildRun {
    pub views: Vec<ViewRun>,
    pub seconds: f64,
    pub transactions: bool,
}

impl RebuildRun {
    pub fn round_trips(&self) -> u64 {
        self.views.iter().map(|v| total(&v.round_trips)).sum()
    }

    /// Time spent waiting for MongoDB's replies, summed over the views.
    pub fn mongo_wait_seconds(&self) -> f64 {
        self.views.iter().map(|v| wire_wait(&v.round_trips)).sum()
    }

    pub fn events(&self) -> u64 {
        self.views.first().map_or(0, |v| v.events)
    }
}

async fn one<V: Projection>(
    engine: &Engine,
    head: Position,
    counted: &Counted,
) -> anyhow::Result<ViewRun> {
    let collection = V::VIEW.collection(GENERATION);
    // As `projector rebuild` does before it starts; not timed, not counted.
    engine
        .views
        .ensure_indexes(&collection, <V::Doc as ViewDocument>::indexes())
        .await?;
    let before = counted.proxy.counts();
    let t = Instant::now();
    let mut events = 0u64;
    catch_up::<V>(
        engine,
        GENERATION,
        Position::ZERO,
        head,
        BATCH,
        &CancellationToken::new(),
        |n| events += n as u64,
    )
    .await
    .with_context(|| format!("rebuilding {}", V::VIEW))?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(ViewRun {
        name: V::VIEW.name(),
        events,
        seconds,
        round_trips: work_between(&before, &counted.proxy.counts()),
    })
}

/// Rebuilds every view from position zero into MongoDB database `database`, one view after
/// the other as `projector rebuild` does, with `projector::rebuild::catch_up`: the four
/// views the naive projector also writes ([`FOUR_VIEWS`]), so the two compare like for like.
pub async fn rebuild_all(
    store: &EventStore,
    counted: &Counted,
    database: &str,
) -> anyhow::Result<(RebuildRun, mongodb::Database)> {
    let views = ViewStore::connect(&counted.uri, database, Transactions::Auto).await?;
    let engine = Engine {
        store: store.clone(),
        views,
        on_poison: OnPoison::Stop,
        rules: Thresholds::default(),
        facts: Default::default(),
    };
    let head = store.head().await?.unwrap_or(Position::ZERO);
    let t = Instant::now();
    let mut runs = Vec::new();
    for view in FOUR_VIEWS {
        let run = projector::for_view!(view, one(&engine, head, counted))?;
        runs.push(run);
    }
    Ok((
        RebuildRun {
            views: runs,
            seconds: t.elapsed().as_secs_f64(),
            transactions: engine.views.uses_transactions(),
        },
        engine.views.database().clone(),
    ))
}

async fn all_docs(db: &mongodb::Database, view: View) -> anyhow::Result<Vec<Document>> {
    let mut cursor = db
        .collection::<Document>(&view.collection(GENERATION))
        // The generation's checkpoint shares the collection.
        .find(read_model::without_checkpoint(doc! {}))
        .await?;
    let mut out = Vec::new();
    while cursor.advance().await? {
        out.push(Document::try_from(cursor.current())?);
    }
    Ok(out)
}

fn sum(docs: &[Document], key: &str) -> i64 {
    docs.iter().map(|d| get_int(d, key).unwrap_or(0)).sum()
}

/// Differences between the views and the counters the generator computed from the
/// commands; empty when every counter is exact.
pub async fn verify(db: &mongodb::Database, expected: &Expected) -> anyhow::Result<Vec<String>> {
    let mut wrong = Vec::new();
    let mut expect = |what: &str, got: i64, want: i64| {
        if got != want {
            wrong.push(format!("{what}: view {got}, expected {want}"));
        }
    };
    let days = all_docs(db, View::DailySales).await?;
    expect(
        "daily ordersPlaced",
        sum(&days, "ordersPlaced"),
        expected.orders_placed,
    );
    expect(
        "daily ordersConfirmed",
        sum(&days, "ordersConfirmed"),
        expected.orders_confirmed,
    );
    expect(
        "daily ordersCancelled",
        sum(&days, "ordersCancelled"),
        expected.orders_cancelled,
    );
    expect(
        "daily ordersPaid",
        sum(&days, "ordersPaid"),
        expected.orders_paid,
    );
    expect(
        "daily ordersRefunded",
        sum(&days, "ordersRefunded"),
        expected.orders_refunded,
    );
    expect(
        "daily paymentsDeclined",
        sum(&days, "paymentsDeclined"),
        expected.payments_declined,
    );
    expect(
        "daily revenueCents",
        sum(&days, "revenueCents"),
        expected.revenue_cents,
    );
    expect(
        "daily refundedCents",
        sum(&days, "refundedCents"),
        expected.refunded_cents,
    );
    expect(
        "daily unitsSold",
        sum(&days, "unitsSold"),
        expected.units_sold,
    );

    expect(
        "daily netRevenueCents",
        sum(&days, "netRevenueCents"),
        expected.revenue_cents - expected.refunded_cents,
    );

    let users = all_docs(db, View::Users).await?;
    expect(
        "users orderCount",
        sum(&users, "orderCount"),
        expected.orders_placed,
    );
    expect(
        "users totalSpentCents",
        sum(&users, "totalSpentCents"),
        expected.revenue_cents - expected.refunded_cents,
    );

    let orders = db
        .collection::<Document>(&View::Orders.collection(GENERATION))
        .count_documents(read_model::without_checkpoint(doc! {}))
        .await?;
    expect(
        "orders_view documents",
        i64::try_from(orders).unwrap_or(i64::MAX),
        expected.orders_placed,
    );

    let products = all_docs(db, View::Inventory).await?;
    let mut seen = 0usize;
    for d in &products {
        let id = d.get_str("_id").unwrap_or_default();
        let want = expected.products.get(id).copied().unwrap_or_default();
        seen += usize::from(expected.products.contains_key(id));
        for (field, want) in [
            ("receivedUnits", want.received),
            ("reservedUnits", want.reserved),
            ("shippedUnits", want.shipped),
            ("availableUnits", want.available()),
        ] {
            expect(
                &format!("inventory {id} {field}"),
                get_int(d, field).unwrap_or(0),
                want,
            );
        }
    }
    expect(
        "inventory products",
        i64::try_from(seen).unwrap_or(0),
        i64::try_from(expected.products.len()).unwrap_or(0),
    );
    Ok(wrong)
}
