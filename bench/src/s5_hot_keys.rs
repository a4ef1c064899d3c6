//! S5: hot keys. The same realistic log twice: once with every line of every order on one
//! product and every event on one day (the `daily_sales` and `inventory_view` documents
//! are then hit by every batch), once spread over 500 products and 90 days. The real
//! engine rebuilds all four views from each; throughput ratio and exact counters.

use crate::Ctx;
use crate::env::Scratch;
use crate::projection::{self, BATCH, Counted};
use crate::report::{Scenario, num};
use crate::workload::{Days, Mix, seed};
use event_store::EventStore;

const DAYS: u32 = 90;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Scenario> {
    ctx.in_scratch("s5hot", async |hot| {
        ctx.in_scratch("s5spread", async |spread| measure(ctx, hot, spread).await)
            .await
    })
    .await
}

async fn measure(ctx: &Ctx, hot_db: &Scratch, spread_db: &Scratch) -> anyhow::Result<Scenario> {
    let sizes = &ctx.sizes;
    let window = (sizes.s5_events / 50).clamp(20, sizes.s4_window);
    let spread_mix = Mix::realistic(sizes.s5_events, window);
    let mut hot_mix = spread_mix.clone();
    hot_mix.products = 1;
    let mut s = Scenario::new(
        "S5",
        "Hot keys",
        "Two logs generated as in S4 from the same seed: hot, where every order line is of one \
         product and every event falls on one day (so every batch writes the same `daily_sales` \
         and `inventory_view` documents); spread, over 500 products and 90 days. The real \
         engine rebuilds all four views from each (as in S4, each run into a fresh MongoDB \
         database), alternating hot and spread; after every run the counters are compared with \
         those computed from the commands.",
    );
    let hot_store = EventStore::new(hot_db.pool.clone(), 100);
    let spread_store = EventStore::new(spread_db.pool.clone(), 100);
    let hot = seed(&hot_store, hot_mix.clone(), Days::One).await?;
    let spread = seed(&spread_store, spread_mix.clone(), Days::Spread(DAYS)).await?;
    s.param(
        "events per log",
        format!("hot {}, spread {}", hot.events, spread.events),
    );
    s.param(
        "orders per log",
        format!(
            "hot {}, spread {}",
            hot.expected.orders_placed, spread.expected.orders_placed
        ),
    );
    s.param("users", spread_mix.users);
    s.param("products", format!("hot 1, spread {}", spread_mix.products));
    s.param("days", format!("hot 1, spread {DAYS}"));
    s.param("orders in flight while generating", window);
    s.param("batch size (PROJECTOR_BATCH_SIZE)", BATCH);
    s.param("runs", sizes.runs);

    let counted = Counted::start(&ctx.servers).await?;
    let (mut hot_rates, mut spread_rates, mut hot_trips, mut spread_trips) =
        (vec![], vec![], vec![], vec![]);
    let (mut hot_waits, mut spread_waits) = (vec![], vec![]);
    let mut wrong = Vec::new();
    for r in 0..sizes.runs {
        for (label, store, seeded, rates, trips, waits, scratch) in [
            (
                "hot",
                &hot_store,
                &hot,
                &mut hot_rates,
                &mut hot_trips,
                &mut hot_waits,
                hot_db,
            ),
            (
                "spread",
                &spread_store,
                &spread,
                &mut spread_rates,
                &mut spread_trips,
                &mut spread_waits,
                spread_db,
            ),
        ] {
            let name = format!("{}_{r}", scratch.name);
            let (run, db) = projection::rebuild_all(store, &counted, &name).await?;
            let check = projection::verify(&db, &seeded.expected).await;
            db.drop().await?;
            for w in check? {
                wrong.push(format!("{label} run {}: {w}", r + 1));
            }
            anyhow::ensure!(run.events() == seeded.events as u64);
            rates.push(run.events() as f64 / run.seconds);
            waits.push(100.0 * run.mongo_wait_seconds() / run.seconds);
            trips.push(run.round_trips() as f64 * 1000.0 / run.events().max(1) as f64);
        }
    }
    let hot_m = s
        .runs("hot: rebuild, all four views", "events/s", hot_rates)
        .mongo()
        .median;
    let spread_m = s
        .runs("spread: rebuild, all four views", "events/s", spread_rates)
        .mongo()
        .median;
    s.value("throughput ratio hot / spread", "x", hot_m / spread_m)
        .mongo()
        .note("of the medians");
    s.runs(
        "hot: share of rebuild time waiting for MongoDB replies",
        "%",
        hot_waits,
    );
    s.runs(
        "spread: share of rebuild time waiting for MongoDB replies",
        "%",
        spread_waits,
    );
    s.runs("hot: MongoDB round trips per 1000 events", "", hot_trips)
        .note("counted on the wire");
    s.runs(
        "spread: MongoDB round trips per 1000 events",
        "",
        spread_trips,
    )
    .note("counted on the wire");
    if wrong.is_empty() {
        s.notes.push(format!(
            "Counters exact after every run, hot and spread ({} runs each): daily_sales, \
             users_orders_view, orders_view and inventory_view totals equal those computed from \
             the commands.",
            sizes.runs
        ));
    } else {
        s.notes
            .push(format!("Counters NOT exact: {}", wrong.join("; ")));
    }
    s.notes.push(format!(
        "Ratio {}: above 1 means the hot log rebuilds faster.",
        num(hot_m / spread_m)
    ));
    Ok(s)
}
