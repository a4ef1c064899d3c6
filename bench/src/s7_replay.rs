//! S7: replaying one long order stream four ways: fold of decoded events in memory; decode
//! from JSON text plus fold; `EventStore::replay` from PostgreSQL; `EventStore::load`
//! (snapshot plus the events after it).

use std::hint::black_box;
use std::time::Instant;

use anyhow::{Context, ensure};
use domain::events::{DomainEvent, LineItem};
use domain::order::{self, OrderCommand, OrderState};
use domain::{Currency, OrderId, ProductId, Quantity, UnitPriceCents};
use event_store::{Aggregate, EventStore, NewEvent, OrderAggregate, Snapshot, StreamAppend, Until};
use serde_json::{Value, json};

use crate::Ctx;
use crate::env::Scratch;
use crate::report::{Scenario, num};

pub(crate) const SNAPSHOT_EVERY: u64 = 100;
/// Lines the order holds while items are added and removed.
const STEADY_LINES: usize = 20;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Scenario> {
    ctx.in_scratch("s7", async |scratch| measure(ctx, scratch).await)
        .await
}

fn line(p: usize) -> LineItem {
    let product: ProductId = format!("p-{p}").parse().expect("a valid product id");
    LineItem {
        product_id: product,
        quantity: Quantity::try_from(1 + (p % 3) as i64).expect("in range"),
        unit_price_cents: UnitPriceCents::try_from(100 + (p * 37 % 5000) as i64).expect("in range"),
    }
}

/// A valid order history of `n` events: created with one line, grown to `STEADY_LINES`
/// lines, then alternately adding and removing one more product, confirmed at the end.
pub(crate) fn history(n: usize) -> anyhow::Result<Vec<DomainEvent>> {
    let mut state = OrderState::default();
    let mut events = Vec::with_capacity(n);
    let mut cycle = 0usize;
    let mut extra: Option<usize> = None;
    while events.len() < n {
        let i = events.len();
        let cmd = if i == 0 {
            OrderCommand::Create {
                order_id: OrderId::new(),
                user_id: "replay-user".parse().expect("a valid user id"),
                currency: Currency::USD,
                items: vec![line(0)],
            }
        } else if i + 1 == n {
            OrderCommand::Confirm {
                payment_method: "pm_card_visa".to_owned(),
                email: None,
            }
        } else if i < STEADY_LINES {
            OrderCommand::AddItem(line(i))
        } else if let Some(p) = extra.take() {
            OrderCommand::RemoveItem(line(p).product_id)
        } else {
            let p = STEADY_LINES + cycle % 50;
            cycle += 1;
            extra = Some(p);
            OrderCommand::AddItem(line(p))
        };
        for e in order::decide(&state, cmd).context("the replay history must be valid")? {
            state = state.apply(&e);
            events.push(DomainEvent::Order(e));
        }
    }
    Ok(events)
}

pub(crate) fn fold(events: &[DomainEvent]) -> OrderState {
    events
        .iter()
        .fold(OrderState::default(), OrderAggregate::apply)
}

/// Appends `events` after `version` in chunks of `SNAPSHOT_EVERY`, with the snapshot a
/// command would write when its append crosses a multiple of `SNAPSHOT_EVERY`.
pub(crate) async fn append(
    store: &EventStore,
    stream_id: &str,
    events: &[DomainEvent],
    mut version: u64,
    mut state: OrderState,
    chunk: usize,
) -> anyhow::Result<(u64, OrderState)> {
    for part in events.chunks(chunk) {
        let new_version = version + part.len() as u64;
        for e in part {
            state = OrderAggregate::apply(state, e);
        }
        let snapshot = store
            .snapshot_due(version, new_version)
            .then(|| serde_json::to_value(&state))
            .transpose()?
            .map(|state| Snapshot {
                state_schema: OrderAggregate::STATE_SCHEMA_VERSION,
                state,
            });
        let append = StreamAppend {
            stream_id: stream_id.to_owned(),
            stream_type: OrderAggregate::STREAM_TYPE,
            expected_version: version,
            events: part
                .iter()
                .map(|e| NewEvent {
                    event_id: uuid::Uuid::new_v4(),
                    event: e.encode(),
                    metadata: json!({}),
                })
                .collect(),
            snapshot,
        };
        store.append(std::slice::from_ref(&append), None).await?;
        version = new_version;
    }
    Ok((version, state))
}

/// The peer's load of one aggregate of `n` events (its order created, then notes added:
/// events of about the size of ours), `repeats` times after a warm-up, in a database of its own.
async fn peer_replay(ctx: &Ctx, n: usize, repeats: usize) -> anyhow::Result<Vec<f64>> {
    let scratch = Scratch::create_empty(&ctx.servers, "s7peer").await?;
    let timed = async {
        let pool = peer_cqrs_es::prepare(&scratch.url).await?;
        let id = peer_cqrs_es::seed_long_aggregate(&pool, n).await?;
        let loaded = peer_cqrs_es::replay(&pool, &id).await?;
        ensure!(loaded == n as u64, "the peer loaded {loaded} events of {n}");
        let ms = time_ms(repeats, async || peer_cqrs_es::replay(&pool, &id).await).await;
        pool.close().await;
        ms
    }
    .await;
    let _ = scratch.drop().await;
    timed
}

/// Milliseconds of each of `repeats` calls of `f`, after one untimed warm-up call.
pub(crate) async fn time_ms<T>(
    repeats: usize,
    mut f: impl AsyncFnMut() -> anyhow::Result<T>,
) -> anyhow::Result<Vec<f64>> {
    black_box(f().await?);
    let mut out = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        black_box(f().await?);
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

async fn measure(ctx: &Ctx, scratch: &Scratch) -> anyhow::Result<Scenario> {
    let n = ctx.sizes.s7_stream_events;
    let repeats = ctx.sizes.s7_repeats;
    let tail = (SNAPSHOT_EVERY - 1) as usize;
    let mut s = Scenario::new(
        "S7",
        &format!("Replaying a {}-event stream", num(n as f64)),
        &format!(
            "One order stream of {n} events (created with one line, grown to {STEADY_LINES} lines, then \
             alternately adding and removing a product, confirmed last), replayed four ways: (a) \
             fold of already decoded events in memory; (b) decode from JSON text (parse, upcast, \
             `DomainEvent::decode`) plus fold; (c) `EventStore::replay` from PostgreSQL (query, \
             row decode, fold); (d) `EventStore::load` with SNAPSHOT_EVERY={SNAPSHOT_EVERY}: the \
             snapshot plus the events after it. (d) is measured on a copy of the stream with \
             {tail} more events, so the tail is the longest SNAPSHOT_EVERY allows, and also on \
             the stream itself, whose last snapshot is at its last event. Every result is checked \
             against the in-memory fold."
        ),
    );
    s.param("stream length", n);
    s.param("SNAPSHOT_EVERY", SNAPSHOT_EVERY);
    s.param("repeats per way (after one warm-up)", repeats);

    let events = history(n + tail)?;
    let (main, longer) = (&events[..n], &events[..]);
    let store = EventStore::new(scratch.pool.clone(), SNAPSHOT_EVERY);
    let stream_a = format!("order-{}", uuid::Uuid::new_v4());
    let stream_b = format!("order-{}", uuid::Uuid::new_v4());
    let chunk = SNAPSHOT_EVERY as usize;
    append(&store, &stream_a, main, 0, OrderState::default(), chunk).await?;
    let (v, state) = append(&store, &stream_b, main, 0, OrderState::default(), chunk).await?;
    // The tail: one command (one event) at a time, none crossing a multiple.
    append(&store, &stream_b, &longer[n..], v, state, 1).await?;

    let expected_a = fold(main);
    let expected_b = fold(longer);
    let texts: Vec<(&'static str, i32, String)> = main
        .iter()
        .map(|e| {
            let enc = e.encode();
            (enc.event_type, enc.schema_version, enc.data.to_string())
        })
        .collect();

    let fold_ms = time_ms(repeats, async || Ok(fold(main))).await?;
    ensure!(fold(main) == expected_a);
    let decode = || -> anyhow::Result<OrderState> {
        let mut state = OrderState::default();
        for (t, v, text) in &texts {
            let data: Value = serde_json::from_str(text)?;
            state = OrderAggregate::apply(state, &DomainEvent::decode(t, *v, data)?);
        }
        Ok(state)
    };
    ensure!(
        decode()? == expected_a,
        "decode + fold differs from the fold"
    );
    let decode_ms = time_ms(repeats, async || decode()).await?;

    let replayed = store
        .replay::<OrderAggregate>(&stream_a, Until::End)
        .await?;
    ensure!(replayed.version == n as u64 && replayed.state == expected_a);
    let replay_ms = time_ms(repeats, async || {
        Ok(store
            .replay::<OrderAggregate>(&stream_a, Until::End)
            .await?)
    })
    .await?;

    let loaded = store.load::<OrderAggregate>(&stream_b).await?;
    ensure!(loaded.version == (n + tail) as u64 && loaded.state == expected_b);
    let load_tail_ms = time_ms(repeats, async || {
        Ok(store.load::<OrderAggregate>(&stream_b).await?)
    })
    .await?;
    let loaded = store.load::<OrderAggregate>(&stream_a).await?;
    ensure!(loaded.version == n as u64 && loaded.state == expected_a);
    let load_zero_ms = time_ms(repeats, async || {
        Ok(store.load::<OrderAggregate>(&stream_a).await?)
    })
    .await?;

    let fold_m = s.runs("(a) in-memory fold", "ms", fold_ms).median;
    let decode_m = s.runs("(b) decode + fold", "ms", decode_ms).median;
    let replay_m = s
        .runs("(c) full replay from PostgreSQL", "ms", replay_ms)
        .note("the seed claims 500 ms")
        .median;
    let tail_m = s
        .runs(
            &format!("(d) snapshot + {tail}-event tail from PostgreSQL"),
            "ms",
            load_tail_ms,
        )
        .note("the seed claims 50 ms with snapshots")
        .median;
    let zero_m = s
        .runs(
            "(d') snapshot at the last event, no tail",
            "ms",
            load_zero_ms,
        )
        .median;

    let theirs_m = peer_replay(ctx, n, repeats).await?;
    let theirs_m = s
        .runs(
            &format!("(e) cqrs-es + postgres-es: loading a {}-event aggregate", num(n as f64)),
            "ms",
            theirs_m,
        )
        .note("`PersistedEventStore::load_aggregate`, the framework's load before each command (it takes no snapshots unless told to)")
        .median;
    s.value(
        "(c) / (e): full replay, ours / cqrs-es",
        "x",
        replay_m / theirs_m.max(1e-9),
    )
    .note("medians of the same run");

    s.check("(a) fold < 1 ms", fold_m, "ms", fold_m < 1.0, || {
        format!(
            "folding {} decoded events in memory took {} ms ({} ns per event)",
            num(n as f64),
            num(fold_m),
            num(fold_m * 1e6 / n as f64)
        )
    });
    s.check(
        "(b) decode + fold < 10 ms",
        decode_m,
        "ms",
        decode_m < 10.0,
        || {
            format!(
                "of which the fold alone is {} ms; the rest is JSON parsing and decoding",
                num(fold_m)
            )
        },
    );
    s.check(
        "(c) from PostgreSQL < 50 ms",
        replay_m,
        "ms",
        replay_m < 50.0,
        || {
            format!(
                "(b), the same parsing, decoding and fold without PostgreSQL, takes {} ms; the other {} ms go to the query, the transfer and sqlx's row handling",
                num(decode_m),
                num(replay_m - decode_m)
            )
        },
    );
    s.check(
        &format!("(d) snapshot + tail (≤ {tail} events) < 5 ms"),
        tail_m,
        "ms",
        tail_m < 5.0,
        || format!("with no tail the load takes {} ms", num(zero_m)),
    );
    s.notes.push(format!(
        "Beside the seed's claims: full replay {} ms here vs 500 ms claimed; with snapshots {} ms here vs 50 ms claimed.",
        num(replay_m),
        num(tail_m)
    ));
    Ok(s)
}
