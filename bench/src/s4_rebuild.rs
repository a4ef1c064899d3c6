//! S4: rebuilding all four views from scratch with the real engine (coalesced batches)
//! versus the naive one-`updateOne`-per-event projector, on the same servers.

use std::collections::BTreeMap;

use crate::Ctx;
use crate::env::Scratch;
use crate::naive;
use crate::projection::{self, BATCH, Counted};
use crate::report::{Scenario, num};
use crate::wire;
use crate::workload::{Days, Mix, seed};
use event_store::EventStore;

const DAYS: u32 = 90;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Scenario> {
    ctx.in_scratch("s4", async |scratch| measure(ctx, scratch).await)
        .await
}

fn per_thousand(count: u64, events: u64) -> f64 {
    count as f64 * 1000.0 / events.max(1) as f64
}

async fn measure(ctx: &Ctx, scratch: &Scratch) -> anyhow::Result<Scenario> {
    let sizes = &ctx.sizes;
    let n = sizes.s4_events;
    let mix = Mix::realistic(n, sizes.s4_window);
    let mut s = Scenario::new(
        "S4",
        "Rebuild from scratch, coalesced vs naive",
        "A realistic log is generated through the domain's `decide` (per order: created with 1-3 \
         lines, 4-7 items added, often one removed; then 60% confirmed, paid, shipped and \
         delivered, 5% confirmed, paid, cancelled and refunded, 5% confirmed, declined and \
         cancelled, 5% confirmed then cancelled before payment, 10% cancelled while pending, 5% \
         confirmed and paid only, 5% only confirmed, 5% left pending (the payment events as the \
         fulfilment process records them); about one stock delivery per ten orders; each product priced and stocked in \
         the transaction of the first order that names it, each confirmation reserving its \
         lines, each cancellation of a confirmed order releasing them and each shipment \
         shipping them on the product streams in the same transaction, as the write-service \
         does), many orders in flight at once, one event of each of up to 100 orders per \
         transaction (`EventStore::append`, multi-stream). \
         `recorded_at` is then spread evenly over 90 days in log order. The real projector \
         rebuilds all four views from position zero with `projector::rebuild::catch_up`, one view \
         after the other as `projector rebuild` does, each run into a fresh MongoDB database. \
         The naive projector (bench/src/naive.rs) sends one `updateOne` per event per view \
         document the event touches (the same documents, the same order context from \
         PostgreSQL), and one checkpoint write per view per 500 events. MongoDB round trips are \
         counted on the wire by a proxy between the driver and the server (requests other than \
         connection handshakes and monitoring). The naive projector is timed on the first events \
         of the log only (it is slow); its round trips per 1000 events are counted exactly over \
         the whole log from its write plan, and the plan is checked against the wire on the \
         timed part.",
    );

    let store = EventStore::new(scratch.pool.clone(), 100);
    let seeded = seed(&store, mix.clone(), Days::Spread(DAYS)).await?;
    let events = seeded.events as u64;
    s.param("events in the log", seeded.events);
    s.param("orders", seeded.expected.orders_placed);
    s.param("users", mix.users);
    s.param("products", mix.products);
    s.param("orders in flight while generating", mix.window);
    s.param("orders per transaction", mix.streams_per_tx);
    s.param("days spanned by recorded_at", DAYS);
    s.param(
        "event mix",
        seeded
            .expected
            .event_types
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    s.param("batch size (PROJECTOR_BATCH_SIZE)", BATCH);
    s.param("coalesced rebuild runs", sizes.s4_runs);
    s.param(
        "naive projector: events timed per run",
        sizes.s4_naive_events.min(seeded.events),
    );
    s.param("naive runs", sizes.runs);
    s.param(
        "seeding (not a figure)",
        format!(
            "{} events in {} transactions in {} s",
            seeded.events,
            seeded.transactions,
            num(seeded.seconds)
        ),
    );

    let counted = Counted::start(&ctx.servers).await?;

    // Coalesced: the real engine.
    let mut rates = Vec::new();
    let mut per_view_rates: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut per_view_trips: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut trips = Vec::new();
    let mut breakdown = String::new();
    let mut exact = Vec::new();
    let mut transactions = false;
    let mut waits = Vec::new();
    for r in 0..sizes.s4_runs {
        let name = format!("{}_c{r}", scratch.name);
        let result = projection::rebuild_all(&store, &counted, &name).await;
        let (run, db) = match result {
            Ok(x) => x,
            Err(e) => {
                let _ = counted_drop(&ctx.servers, &name).await;
                return Err(e);
            }
        };
        anyhow::ensure!(
            run.events() == events,
            "rebuild applied {} events of {events}",
            run.events()
        );
        if r == 0 {
            exact = projection::verify(&db, &seeded.expected).await?;
            breakdown = run
                .views
                .iter()
                .map(|v| format!("{}: {}", v.name, wire::text(&v.round_trips)))
                .collect::<Vec<_>>()
                .join("; ");
        }
        transactions = run.transactions;
        db.drop().await?;
        rates.push(events as f64 / run.seconds);
        waits.push(100.0 * run.mongo_wait_seconds() / run.seconds);
        trips.push(per_thousand(run.round_trips(), events));
        for v in &run.views {
            per_view_rates
                .entry(v.name)
                .or_default()
                .push(v.events as f64 / v.seconds);
            per_view_trips
                .entry(v.name)
                .or_default()
                .push(per_thousand(wire::total(&v.round_trips), events));
        }
    }
    s.param(
        "MongoDB transactions",
        if transactions {
            "on (replica set)"
        } else {
            "off (standalone server: per-document guards)"
        },
    );

    // Naive: timed on the first events, counted exactly over the whole log.
    let t = std::time::Instant::now();
    let count = naive::dry_count(&store).await?;
    s.param(
        "naive write plan over the whole log (not a figure)",
        format!(
            "counted in {} s, PostgreSQL reads only",
            num(t.elapsed().as_secs_f64())
        ),
    );
    anyhow::ensure!(
        count.events == events,
        "naive count saw {} events",
        count.events
    );
    let limit = sizes.s4_naive_events.min(seeded.events);
    let mut naive_rates = Vec::new();
    let mut naive_waits = Vec::new();
    let mut plan_matches_wire = true;
    let mut wire_note = String::new();
    for r in 0..sizes.runs {
        let name = format!("{}_n{r}", scratch.name);
        let client = mongodb::Client::with_uri_str(&counted.uri).await?;
        let db = client.database(&name);
        let before = counted.proxy.counts();
        let result = naive::run(&store, &db, limit).await;
        let on_wire = wire::work_between(&before, &counted.proxy.counts());
        let _ = db.drop().await;
        let run = result?;
        naive_rates.push(run.planned.events as f64 / run.seconds);
        naive_waits.push(100.0 * wire::wait_seconds(&on_wire) / run.seconds);
        let planned = run.planned.total();
        let updates = wire::requests(&on_wire, "update");
        if updates != planned || wire::total(&on_wire) != planned {
            plan_matches_wire = false;
        }
        if r == 0 {
            wire_note = format!(
                "on the timed {} events the plan said {planned} writes and the wire saw {}",
                run.planned.events,
                wire::text(&on_wire)
            );
        }
    }

    let f = s.runs("coalesced rebuild, all four views", "events/s", rates);
    f.mongo();
    let coalesced_rate = f.median;
    s.runs(
        "coalesced rebuild: share of its time waiting for MongoDB replies",
        "%",
        waits,
    )
    .note(
        "request sent to reply received, summed on the wire; the rest is PostgreSQL and the engine",
    );
    for (view, r) in per_view_rates {
        s.runs(&format!("coalesced rebuild, {view} alone"), "events/s", r)
            .mongo();
    }
    let coalesced_trips = s
        .runs(
            "coalesced: MongoDB round trips per 1000 events, all views",
            "",
            trips,
        )
        .note(format!("counted on the wire; run 1: {breakdown}"))
        .median;
    for (view, t) in per_view_trips {
        s.runs(
            &format!("coalesced: round trips per 1000 events, {view}"),
            "",
            t,
        );
    }
    let f = s.runs(
        &format!("naive projector, all four views (first {limit} events)"),
        "events/s",
        naive_rates,
    );
    f.mongo();
    let naive_rate = f.median;
    s.runs(
        "naive projector: share of its time waiting for MongoDB replies",
        "%",
        naive_waits,
    );
    let naive_trips = per_thousand(count.total(), count.events);
    s.value(
        "naive: MongoDB round trips per 1000 events, all views",
        "",
        naive_trips,
    )
    .note(format!(
        "exact, from its write plan over all {} events: {}, checkpoints {}; {wire_note}",
        count.events,
        count
            .per_view
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        count.checkpoints
    ));
    s.value(
        "naive: estimated time for the whole log",
        "s",
        events as f64 / naive_rate,
    )
    .mongo()
    .note("events in the log / the naive events/s above (an extrapolation, not a measurement)");
    let trip_ratio = naive_trips / coalesced_trips;
    s.value("round trips: naive / coalesced", "x", trip_ratio);
    s.value(
        "events/s: coalesced / naive",
        "x",
        coalesced_rate / naive_rate,
    )
    .mongo();
    s.check(
        "coalesced ≥ 10x fewer MongoDB round trips than naive",
        trip_ratio,
        "x",
        trip_ratio >= 10.0,
        || {
            format!(
                "{} round trips per 1000 events coalesced vs {} naive",
                num(coalesced_trips),
                num(naive_trips)
            )
        },
    );
    if !plan_matches_wire {
        s.notes.push(format!(
            "The naive projector's wire count differs from its plan ({wire_note}): its round \
             trips per 1000 events come from the plan."
        ));
    }
    if exact.is_empty() {
        s.notes.push(
            "Counters exact after the first coalesced rebuild: daily_sales, users_orders_view, \
             orders_view and inventory_view totals equal those computed from the commands."
                .to_owned(),
        );
    } else {
        s.notes.push(format!(
            "Counters NOT exact after the first coalesced rebuild: {}",
            exact.join("; ")
        ));
    }
    Ok(s)
}

/// Drops a MongoDB database by name (after a failed run).
async fn counted_drop(servers: &crate::env::Servers, name: &str) -> anyhow::Result<()> {
    servers.mongo_client().await?.database(name).drop().await?;
    Ok(())
}
