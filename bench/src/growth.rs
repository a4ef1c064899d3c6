//! How cost grows (issue 16): the same work measured at a small and a large size in one run,
//! one table each. S11: commands with an empty store and with many events already stored;
//! S12: replaying aggregates of growing length, with and without snapshots; S13: rebuilding
//! logs of growing length. (Query latency as the views grow is S14, measured by S6, which
//! fills the views anyway.) The target everywhere: no figure worse by more than 20% at the
//! larger size.

use std::time::Instant;

use anyhow::ensure;
use domain::order::OrderState;
use event_store::{EventStore, OrderAggregate, Until};

use crate::Ctx;
use crate::env::Scratch;
use crate::projection::{self, Counted};
use crate::report::{Scenario, num};
use crate::s1_http::{RunResult, Service};
use crate::statements::Profiler;
use crate::workload::{Days, Mix, seed};
use crate::{s1_http, s7_replay, stats};

/// How much worse a figure may be at the larger size.
const WORSE_BY_AT_MOST: f64 = 0.2;

/// Records "large / small" for a figure where more is better (a rate) and checks it.
fn rate_growth(s: &mut Scenario, what: &str, small: f64, large: f64, why: impl FnOnce() -> String) {
    let ratio = large / small.max(1e-9);
    s.check(
        &format!(
            "{what}: at the larger size ≥ {}% of the smaller",
            num((1.0 - WORSE_BY_AT_MOST) * 100.0)
        ),
        ratio * 100.0,
        "%",
        ratio >= 1.0 - WORSE_BY_AT_MOST,
        why,
    );
}

/// Records "large / small" for a figure where less is better (a time) and checks it.
fn time_growth(s: &mut Scenario, what: &str, small: f64, large: f64, why: impl FnOnce() -> String) {
    let ratio = large / small.max(1e-9);
    s.check(
        &format!(
            "{what}: at the larger size ≤ {}x the smaller",
            num(1.0 + WORSE_BY_AT_MOST)
        ),
        ratio,
        "x",
        ratio <= 1.0 + WORSE_BY_AT_MOST,
        why,
    );
}

pub async fn commands(ctx: &Ctx) -> anyhow::Result<Scenario> {
    // Two stores, so that their runs can take turns.
    let empty = Scratch::create(&ctx.servers, "s11").await?;
    let full = match Scratch::create(&ctx.servers, "s11").await {
        Ok(full) => full,
        Err(e) => {
            let _ = empty.drop().await;
            return Err(e);
        }
    };
    let result = measure_commands(ctx, &empty, &full).await;
    let _ = empty.drop().await;
    let _ = full.drop().await;
    result
}

/// Adds `events` events to the store in one statement, as `streams` order streams of ten
/// events each: other customers' history, which a command never reads but whose indexes
/// every append grows.
async fn store_history(scratch: &Scratch, events: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let streams = i64::try_from(events.div_ceil(10))?;
    sqlx::query(
        "insert into streams (stream_id, stream_type, version)
         select 'order-history-' || g, 'order', 10 from generate_series(1, $1) g",
    )
    .bind(streams)
    .execute(&scratch.pool)
    .await?;
    // Ten events per stream, each about the size of an item being added to an order.
    sqlx::query(
        "insert into events
             (stream_id, stream_position, event_id, event_type, schema_version, data, metadata)
         select 'order-history-' || s, p, gen_random_uuid(), 'HistoryItemAdded', 1,
                jsonb_build_object('orderId', 'history-' || s, 'productId', 'p-' || (p * 7 % 200),
                                   'quantity', 1 + p % 3, 'unitPriceCents', 100 + p * 37),
                jsonb_build_object('requestId', gen_random_uuid())
         from generate_series(1, $1) s, generate_series(1, 10) p",
    )
    .bind(streams)
    .execute(&scratch.pool)
    .await?;
    // What autovacuum would do on its own sooner or later; done now so it does not land
    // inside a measured window.
    sqlx::query("vacuum analyze events, streams")
        .execute(&scratch.pool)
        .await?;
    Ok(t.elapsed().as_secs_f64())
}

async fn measure_commands(ctx: &Ctx, empty: &Scratch, full: &Scratch) -> anyhow::Result<Scenario> {
    let sizes = &ctx.sizes;
    let level = 16;
    let stored = sizes.s11_stored_events;
    let mut s = Scenario::new(
        "S11",
        "How cost grows: commands with an empty store and with a full one",
        &format!(
            "S1's service and clients ({level} clients, create then confirm, each customer with a \
             token of its own) against two stores: a fresh one, and one holding {} events of \
             other orders' history (order streams of ten events each, inserted with one \
             statement, then `VACUUM ANALYZE`), so that the indexes an append grows (`events` \
             primary key, event id, stream and position, tail order) are that much larger. Each \
             store has its own service and its own catalogue, opened the same way, and their \
             runs take turns: drift of the machine, and the reservations the runs leave on \
             the products, fall on both alike. PostgreSQL's statement profile of each store's \
             median run says where a command's database time went.",
            num(stored as f64)
        ),
    );
    s.param("concurrent clients", level);
    s.param("runs per store (taking turns)", sizes.runs);
    s.param(
        "measured window per run",
        format!("{} ms", sizes.s1_duration.as_millis()),
    );
    let seconds = store_history(full, stored).await?;
    let profiler = crate::statements::Profiler::start(&empty.pool).await.ok();
    let client = s1_http::client()?;
    let first = Service::start(empty).await?;
    let second = match Service::start(full).await {
        Ok(second) => second,
        Err(e) => {
            first.stop().await;
            return Err(e);
        }
    };
    let services = [first, second];
    let measured = async {
        let mut runs: [Vec<RunResult>; 2] = [Vec::new(), Vec::new()];
        for service in &services {
            service.open_shop(&client, s1_http::AMPLE_STOCK).await?;
        }
        for _ in 0..sizes.runs {
            for (service, out) in services.iter().zip(runs.iter_mut()) {
                out.push(
                    s1_http::drive(
                        &client,
                        &service.base,
                        level,
                        sizes.s1_warmup,
                        sizes.s1_duration,
                        profiler.as_ref(),
                    )
                    .await?,
                );
            }
        }
        anyhow::Ok(runs)
    }
    .await;
    for service in services {
        service.stop().await;
    }
    let [empty_runs, full_runs] = measured?;
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&full.pool)
        .await?;
    s.param(
        "storing the history (not a figure)",
        format!("{} events in {} s", num(stored as f64), num(seconds)),
    );
    s.param("events in the full store at the end", events);

    let mut medians = Vec::new();
    let mut profiles = Vec::new();
    for (label, runs) in [
        ("empty store", &empty_runs),
        ("with the history", &full_runs),
    ] {
        let rates: Vec<f64> = runs.iter().map(|r| r.commands_per_second).collect();
        let rate = s
            .runs(&format!("{label}: commands/s"), "/s", rates.clone())
            .median;
        let m = &runs[stats::median_index(&rates)];
        let mut lat = m.latencies_ms.clone();
        let p99 = stats::percentile(&mut lat, 99.0);
        s.value(&format!("{label}: latency p99"), "ms", p99)
            .note("from the median run");
        if let Some(profile) = &m.statements {
            let per = m.commands.max(1) as f64;
            let exec_ms = profile.top_level_totals().exec_ms / per;
            s.value(
                &format!("{label}: PostgreSQL execution per command"),
                "ms",
                exec_ms,
            )
            .note(format!(
                "pg_stat_statements over the median run's window: {}",
                profile.describe(per, "command", 4)
            ));
            profiles.push(exec_ms);
        }
        medians.push((rate, p99));
    }
    let postgres = match profiles[..] {
        [small, large] => format!(
            "; PostgreSQL executed {} ms per command with the history against {} ms without",
            num(large),
            num(small)
        ),
        _ => String::new(),
    };
    let ((rate_small, p99_small), (rate_large, p99_large)) = (medians[0], medians[1]);
    rate_growth(&mut s, "commands/s", rate_small, rate_large, || {
        format!(
            "{} commands/s with {} events stored against {} with an empty store{postgres}",
            num(rate_large),
            num(events as f64),
            num(rate_small)
        )
    });
    time_growth(&mut s, "latency p99", p99_small, p99_large, || {
        format!(
            "p99 {} ms against {} ms{postgres}",
            num(p99_large),
            num(p99_small)
        )
    });
    Ok(s)
}

pub async fn replays(ctx: &Ctx) -> anyhow::Result<Scenario> {
    ctx.in_scratch("s12", async |scratch| measure_replays(ctx, scratch).await)
        .await
}

async fn measure_replays(ctx: &Ctx, scratch: &Scratch) -> anyhow::Result<Scenario> {
    let lengths = &ctx.sizes.s12_lengths;
    let repeats = ctx.sizes.s7_repeats;
    let every = s7_replay::SNAPSHOT_EVERY;
    let mut s = Scenario::new(
        "S12",
        "How cost grows: replaying aggregates",
        &format!(
            "Order streams of each length (S7's history: created, grown to 20 lines, then items \
             added and removed in turn, confirmed last), written as commands would write them \
             with SNAPSHOT_EVERY={every}. Without snapshots: `EventStore::replay` (every event \
             from PostgreSQL, decoded and folded), per event. With snapshots: \
             `EventStore::load` (the latest snapshot and the events after it, in one \
             statement); every length here is a multiple of {every}, so that is the snapshot \
             alone, and its cost should not depend on the length at all. Each result is \
             checked against the in-memory fold."
        ),
    );
    s.param("lengths", format!("{lengths:?}"));
    s.param(
        "repeats per length (each after a warm-up, the lengths taking turns)",
        repeats,
    );
    let store = EventStore::new(scratch.pool.clone(), every);
    let mut streams = Vec::new();
    for &n in lengths {
        let events = s7_replay::history(n)?;
        let stream = format!("order-{}", uuid::Uuid::new_v4());
        s7_replay::append(
            &store,
            &stream,
            &events,
            0,
            OrderState::default(),
            every as usize,
        )
        .await?;
        let expected = s7_replay::fold(&events);
        let replayed = store.replay::<OrderAggregate>(&stream, Until::End).await?;
        ensure!(replayed.version == n as u64 && replayed.state == expected);
        let loaded = store.load::<OrderAggregate>(&stream).await?;
        ensure!(loaded.version == n as u64 && loaded.state == expected);
        streams.push((n, stream));
    }
    // Round robin over the lengths, so that the machine's drift over the scenario (other
    // work, autovacuum) falls on every length alike rather than on the last one.
    let mut replay_ms = vec![Vec::with_capacity(repeats); streams.len()];
    let mut load_ms = vec![Vec::with_capacity(repeats); streams.len()];
    for _ in 0..repeats {
        for (i, (_, stream)) in streams.iter().enumerate() {
            replay_ms[i].extend(
                s7_replay::time_ms(1, async || {
                    Ok(store.replay::<OrderAggregate>(stream, Until::End).await?)
                })
                .await?,
            );
            load_ms[i].extend(
                s7_replay::time_ms(1, async || Ok(store.load::<OrderAggregate>(stream).await?))
                    .await?,
            );
        }
    }
    let mut per_event = Vec::new();
    let mut with_snapshots = Vec::new();
    for (((n, _), replay_ms), load_ms) in streams.iter().zip(replay_ms).zip(load_ms) {
        let n = *n;
        let replay = s
            .runs(
                &format!("{n} events, no snapshots: replay"),
                "ms",
                replay_ms,
            )
            .median;
        let per = s
            .value(
                &format!("{n} events, no snapshots: per event"),
                "µs",
                replay * 1000.0 / n as f64,
            )
            .median;
        let load = s
            .runs(&format!("{n} events, with snapshots: load"), "ms", load_ms)
            .median;
        per_event.push((n, per));
        with_snapshots.push((n, load));
    }
    if let (Some(&(n0, small)), Some(&(n1, large))) = (per_event.first(), per_event.last()) {
        time_growth(
            &mut s,
            &format!("replay per event, {n1} vs {n0} events"),
            small,
            large,
            || {
                format!(
                    "{} µs per event at {n1} against {} µs at {n0}",
                    num(large),
                    num(small)
                )
            },
        );
    }
    if let (Some(&(n0, small)), Some(&(n1, large))) =
        (with_snapshots.first(), with_snapshots.last())
    {
        time_growth(
            &mut s,
            &format!("load with snapshots, {n1} vs {n0} events"),
            small,
            large,
            || {
                format!(
                    "{} ms at {n1} against {} ms at {n0}",
                    num(large),
                    num(small)
                )
            },
        );
    }
    Ok(s)
}

pub async fn rebuilds(ctx: &Ctx) -> anyhow::Result<Scenario> {
    let logs = ctx.sizes.s13_logs.clone();
    let mut s = Scenario::new(
        "S13",
        "How cost grows: rebuilding",
        "S4's realistic log generator writes a log of each length into a fresh store \
         (`recorded_at` spread over 90 days); the real projector then rebuilds S4's four views \
         from position zero into a fresh MongoDB database (`projector::rebuild::catch_up`, one \
         view after the other), through S4's counting proxy. Events/s is the log's events over \
         the whole rebuild's time.",
    );
    s.param("log lengths (events wanted)", format!("{logs:?}"));
    let counted = Counted::start(&ctx.servers).await?;
    let mut rates = Vec::new();
    for &n in &logs {
        let scratch = Scratch::create(&ctx.servers, "s13").await?;
        let result = async {
            let store = EventStore::new(scratch.pool.clone(), 100);
            let seeded = seed(
                &store,
                Mix::realistic(n, (n / 100).clamp(10, 1_000)),
                Days::Spread(90),
            )
            .await?;
            let database = format!("{}_r", scratch.name);
            let profiler = Profiler::start(&scratch.pool).await.ok();
            let before = Profiler::start_window(profiler.as_ref()).await?;
            let (run, db) = projection::rebuild_all(&store, &counted, &database).await?;
            let statements = Profiler::end_window(profiler.as_ref(), before).await?;
            let _ = db.drop().await;
            ensure!(
                run.events() == seeded.events as u64,
                "rebuild applied {} events of {}",
                run.events(),
                seeded.events
            );
            anyhow::Ok((seeded.events, run, statements))
        }
        .await;
        let _ = scratch.drop().await;
        let (events, run, statements) = result?;
        let seconds = run.seconds;
        let rate = events as f64 / seconds.max(1e-9);
        s.value(
            &format!("{events} events: rebuild, all four views"),
            "events/s",
            rate,
        )
        .mongo();
        s.value(&format!("{events} events: rebuild time"), "s", seconds)
            .mongo();
        let wire = RebuildWire::of(&run);
        s.value(
            &format!("{events} events: waiting for MongoDB's replies"),
            "%",
            wire.wait_share * 100.0,
        )
        .note(format!(
            "of the rebuild's time, at the counting proxy; {}",
            wire.describe()
        ))
        .mongo();
        if let Some(profile) = &statements {
            s.value(
                &format!("{events} events: PostgreSQL execution per 1,000 events"),
                "ms",
                profile.top_level_totals().exec_ms * 1000.0 / events.max(1) as f64,
            )
            .note(format!(
                "pg_stat_statements over the rebuild, per 1,000 events: {}",
                profile.describe(events as f64 / 1000.0, "1,000 events", 3)
            ));
        }
        let per_thousand = statements.map(|p| {
            let t = p.top_level_totals();
            let k = events.max(1) as f64 / 1000.0;
            (t.exec_ms / k, t.rows / k)
        });
        rates.push((events, rate, wire, per_thousand));
    }
    if let (Some((n0, small, w0, p0)), Some((n1, large, w1, p1))) = (rates.first(), rates.last()) {
        let postgres = match (p0, p1) {
            (Some((ms0, rows0)), Some((ms1, rows1))) => format!(
                ". PostgreSQL (the log and the orders' histories) per 1,000 events: {} ms \
                 returning {} rows at {n1}, against {} ms and {} rows at {n0}",
                num(*ms1),
                num(*rows1),
                num(*ms0),
                num(*rows0)
            ),
            _ => String::new(),
        };
        rate_growth(
            &mut s,
            &format!("rebuild events/s, {n1} vs {n0} events"),
            *small,
            *large,
            || {
                format!(
                    "{} events/s at {n1} against {} at {n0}. The wire says where the time went: \
                     MongoDB's replies were {}% of the rebuild at {n1} and {}% at {n0}; {}{postgres}",
                    num(*large),
                    num(*small),
                    num(w1.wait_share * 100.0),
                    num(w0.wait_share * 100.0),
                    w1.compare(w0)
                )
            },
        );
    }
    Ok(s)
}

/// A rebuild's MongoDB requests, from the counting proxy: each command's count and mean
/// reply time, and the share of the rebuild spent waiting for replies.
struct RebuildWire {
    wait_share: f64,
    events: u64,
    /// command name, requests, mean reply (ms)
    commands: Vec<(String, u64, f64)>,
}

impl RebuildWire {
    fn of(run: &projection::RebuildRun) -> RebuildWire {
        let mut summed = std::collections::BTreeMap::<String, (u64, f64)>::new();
        for view in &run.views {
            for (name, t) in &view.round_trips {
                let e = summed.entry(name.clone()).or_default();
                e.0 += t.requests;
                e.1 += t.wait_seconds;
            }
        }
        RebuildWire {
            wait_share: run.mongo_wait_seconds() / run.seconds.max(1e-9),
            events: run.events(),
            commands: summed
                .into_iter()
                .map(|(name, (n, wait))| (name, n, wait * 1000.0 / (n.max(1) as f64)))
                .collect(),
        }
    }

    fn describe(&self) -> String {
        self.commands
            .iter()
            .map(|(name, n, ms)| format!("`{name}` {n} requests, {} ms each", num(*ms)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Each command's requests per event and mean reply here against `smaller`.
    fn compare(&self, smaller: &RebuildWire) -> String {
        let per_event = |w: &RebuildWire, n: u64| n as f64 / (w.events.max(1) as f64);
        self.commands
            .iter()
            .map(|(name, n, ms)| {
                let (n0, ms0) = smaller
                    .commands
                    .iter()
                    .find(|(c, ..)| c == name)
                    .map_or((0, 0.0), |(_, n, ms)| (*n, *ms));
                format!(
                    "`{name}`: {} ms a reply against {} ms, {} requests per event against {}",
                    num(*ms),
                    num(ms0),
                    num(per_event(self, *n)),
                    num(per_event(smaller, n0))
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}
