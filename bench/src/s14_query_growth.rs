//! S14 (how cost grows): each query's p99 over views of a tenth of S6's orders and over S6's
//! own views, side by side.
//!
//! Both databases are loaded first and each is served by a read-service of its own, so each
//! endpoint's runs can take turns between the sizes: the machine's drift, and nx-27017's
//! state from the runs before, fall on both alike. Each service reaches MongoDB through a
//! counting proxy, which says per run how many MongoDB requests a query made and how long the
//! server took to answer each: whether the larger size does more work or waits longer for the
//! same work.

use std::sync::Arc;
use std::time::Duration;

use crate::Ctx;
use crate::env::Scratch;
use crate::projection::Counted;
use crate::queries::{
    Endpoint, Fixture, Outcome, RateRun, ReadService, alone, at_rate, endpoints, load, requests,
    settle, staff_client,
};
use crate::report::{Scenario, num};
use crate::stats;
use crate::wire::{total, wait_seconds, work_between};

/// Runs per size and endpoint; the sizes take turns.
const RUNS: usize = 3;
/// A larger size is within target up to this many times the smaller one's p99.
const WORSE_BY_AT_MOST: f64 = 1.2;

/// One size: its views, its read-service and that service's MongoDB traffic.
struct Side<'a> {
    scratch: &'a Scratch,
    fixture: &'a Arc<Fixture>,
    counted: Counted,
    service: ReadService,
}

/// One run of one endpoint at one size.
struct SizeRun {
    p99_ms: f64,
    sent: usize,
    /// Replies per second; below the rate, the server fell behind and the p99 is a queue.
    served_per_second: f64,
    ok: usize,
    unfinished: usize,
    /// MongoDB requests (connection set-up and monitoring left out) per HTTP request.
    requests_per_query: f64,
    /// Mean time from a MongoDB request to the end of its reply.
    reply_ms: f64,
    /// The 99th percentile of those times: the server's own tail.
    reply_p99_ms: f64,
}

struct EndpointGrowth {
    name: &'static str,
    /// Per side (small, large); empty where a lone request is already too slow for the rate.
    runs: [Vec<SizeRun>; 2],
}

/// The rate the sizes are compared at: S6's lowest.
fn growth_rate(sizes: &crate::Sizes) -> u32 {
    sizes.s6_rates.iter().copied().min().unwrap_or(20)
}

/// Loads the smaller views into a database of their own, beside `large` (S6's), and compares.
pub(crate) async fn measure(
    ctx: &Ctx,
    large: (&Scratch, &Arc<Fixture>),
    warmup: Duration,
    grace: Duration,
) -> anyhow::Result<Scenario> {
    let scratch = Scratch::create(&ctx.servers, "s14").await?;
    let result = async {
        let loaded = load(ctx, &scratch, ctx.sizes.s6_orders / 10).await?;
        let small = Arc::new(loaded.fixture);
        compare(ctx, [(&scratch, &small), large], warmup, grace).await
    }
    .await;
    let _ = scratch.drop().await;
    result
}

async fn compare(
    ctx: &Ctx,
    sizes: [(&Scratch, &Arc<Fixture>); 2],
    warmup: Duration,
    grace: Duration,
) -> anyhow::Result<Scenario> {
    let mut sides = Vec::with_capacity(2);
    for (scratch, fixture) in sizes {
        let counted = Counted::start(&ctx.servers).await?;
        let service = match ReadService::start(&counted.uri, scratch.mongo.name()).await {
            Ok(s) => s,
            Err(e) => {
                for side in sides {
                    stop(side).await;
                }
                return Err(e);
            }
        };
        sides.push(Side {
            scratch,
            fixture,
            counted,
            service,
        });
    }
    let measured = drive(ctx, &sides, warmup, grace).await;
    let orders = [sides[0].fixture.orders.len(), sides[1].fixture.orders.len()];
    for side in sides {
        stop(side).await;
    }
    report(ctx, orders, &measured?)
}

/// Leaves the server idle for the next measurement, then stops the side's service.
async fn stop(side: Side<'_>) {
    settle(&side.scratch.mongo).await;
    side.service.stop().await;
}

async fn drive(
    ctx: &Ctx,
    sides: &[Side<'_>],
    warmup: Duration,
    grace: Duration,
) -> anyhow::Result<Vec<EndpointGrowth>> {
    let rate = growth_rate(&ctx.sizes);
    let duration = ctx.sizes.s6_duration;
    let client = staff_client()?;
    let mut rng = fastrand::Rng::with_seed(14);
    let mut results = Vec::new();
    for ep in endpoints() {
        let mut drivable = [false; 2];
        for (i, side) in sides.iter().enumerate() {
            let (ms, outcomes) = alone(
                &client,
                &side.service.base,
                side.fixture,
                &ep,
                warmup,
                &mut rng,
            )
            .await;
            if outcomes.iter().any(|o| *o != Outcome::Ok) {
                settle(&side.scratch.mongo).await;
            }
            // As S6: a run whose requests need more server time, at the lone request's cost,
            // than the window plus the grace could only measure a growing queue.
            let work = requests(rate, duration) as f64 * stats::median(&ms) / 1000.0;
            drivable[i] =
                !outcomes.contains(&Outcome::Transport) && work <= (duration + grace).as_secs_f64();
        }
        let mut runs: [Vec<SizeRun>; 2] = Default::default();
        for round in 0..RUNS {
            // small, large; large, small; ...: neither size always goes first.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                if !drivable[i] {
                    continue;
                }
                runs[i].push(
                    run_once(&client, &sides[i], &ep, rate, duration, grace, &mut rng).await?,
                );
            }
        }
        eprintln!(
            "bench: S14 {}: p99 {} / {} ms",
            ep.name,
            median_of(&runs[0], |r| r.p99_ms).map_or("-".into(), num),
            median_of(&runs[1], |r| r.p99_ms).map_or("-".into(), num),
        );
        results.push(EndpointGrowth {
            name: ep.name,
            runs,
        });
    }
    Ok(results)
}

#[allow(clippy::too_many_arguments)]
async fn run_once(
    client: &reqwest::Client,
    side: &Side<'_>,
    ep: &Endpoint,
    rate: u32,
    duration: Duration,
    grace: Duration,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<SizeRun> {
    let before = side.counted.proxy.counts();
    let mark = side.counted.proxy.replies_seen();
    let run: RateRun = at_rate(
        client,
        &side.service.base,
        side.fixture,
        ep,
        rate,
        duration,
        grace,
        rng,
    )
    .await?;
    if run.unfinished > 0 {
        settle(&side.scratch.mongo).await;
    }
    let work = work_between(&before, &side.counted.proxy.counts());
    let mongo_requests = total(&work);
    let mut replies_ms: Vec<f64> = (side.counted.proxy.reply_seconds_since(mark).iter())
        .map(|s| s * 1000.0)
        .collect();
    let mut latencies = run.latencies_ms.clone();
    Ok(SizeRun {
        p99_ms: stats::percentile(&mut latencies, 99.0),
        sent: run.sent,
        served_per_second: run.served_per_second,
        ok: run.outcomes.get("ok").copied().unwrap_or(0),
        unfinished: run.unfinished,
        requests_per_query: mongo_requests as f64 / run.sent.max(1) as f64,
        reply_ms: 1000.0 * wait_seconds(&work) / mongo_requests.max(1) as f64,
        reply_p99_ms: stats::percentile(&mut replies_ms, 99.0),
    })
}

fn median_of(runs: &[SizeRun], f: impl Fn(&SizeRun) -> f64) -> Option<f64> {
    (!runs.is_empty()).then(|| stats::median(&runs.iter().map(f).collect::<Vec<_>>()))
}

/// `a–b ms`: the runs' p99s, lowest to highest.
fn range_of(runs: &[SizeRun]) -> String {
    let p99s: Vec<f64> = runs.iter().map(|r| r.p99_ms).collect();
    format!("{}–{} ms", num(stats::min(&p99s)), num(stats::max(&p99s)))
}

fn report(ctx: &Ctx, orders: [usize; 2], results: &[EndpointGrowth]) -> anyhow::Result<Scenario> {
    let rate = growth_rate(&ctx.sizes);
    let [small, large] = orders;
    let mut s = Scenario::new(
        "S14",
        "How cost grows: queries",
        &format!(
            "S6's method (views filled with the projector's own view code, the real \
             read-service, open-loop requests at a fixed rate) over views of {small} orders and \
             of {large} (S6's own database), both loaded first, each served by a read-service \
             of its own. Each endpoint is driven at {rate} requests/s, {RUNS} runs per size, \
             the sizes taking turns (small then large, then large then small, ...), so the \
             machine's drift falls on both alike; a figure is the median of its runs' p99s. \
             Each service reaches MongoDB through a counting proxy, which gives per run the \
             MongoDB requests per query and the server's mean time to answer one: whether the \
             larger size does more work or waits longer for the same work. An endpoint whose \
             lone request is already too slow for the rate (as in S6) is not driven at that \
             size."
        ),
    );
    s.param("orders in the views", format!("{small} and {large}"));
    s.param("rate", format!("{rate} requests/s"));
    s.param("runs per size", RUNS);
    s.param(
        "measured window per run",
        format!("{} ms", ctx.sizes.s6_duration.as_millis()),
    );
    let (mut sent, mut failed) = (0usize, 0usize);
    for r in results {
        for runs in &r.runs {
            sent += runs.iter().map(|x| x.sent).sum::<usize>();
            failed += runs.iter().map(|x| x.sent - x.ok).sum::<usize>();
        }
        for (runs, n) in r.runs.iter().zip(orders) {
            if runs.is_empty() {
                continue;
            }
            let unfinished: usize = runs.iter().map(|x| x.unfinished).sum();
            let mut note = format!(
                "MongoDB per query: {} requests; nx-27017's replies: mean {} ms, p99 {} ms \
                 (medians of the runs)",
                median_of(runs, |x| x.requests_per_query).map_or("-".into(), num),
                median_of(runs, |x| x.reply_ms).map_or("-".into(), num),
                median_of(runs, |x| x.reply_p99_ms).map_or("-".into(), num),
            );
            if unfinished > 0 {
                note.push_str(&format!(
                    "; {unfinished} requests unanswered after the grace, counted at their age"
                ));
            }
            s.runs(
                &format!("{}: p99 at {n} orders", r.name),
                "ms",
                runs.iter().map(|x| x.p99_ms).collect(),
            )
            .note(note)
            .mongo();
        }
        let [a, b] = [0, 1].map(|i| median_of(&r.runs[i], |x| x.p99_ms));
        match (a, b) {
            (Some(a), Some(b)) => {
                let ratio = b / a.max(1e-9);
                let [req_a, req_b] =
                    [0, 1].map(|i| median_of(&r.runs[i], |x| x.requests_per_query));
                let [reply_a, reply_b] = [0, 1].map(|i| median_of(&r.runs[i], |x| x.reply_ms));
                let [tail_a, tail_b] = [0, 1].map(|i| median_of(&r.runs[i], |x| x.reply_p99_ms));
                s.check(
                    &format!(
                        "{}: p99 at {large} orders ≤ {}x at {small}",
                        r.name,
                        num(WORSE_BY_AT_MOST)
                    ),
                    ratio,
                    "x",
                    ratio <= WORSE_BY_AT_MOST,
                    || {
                        format!(
                            "p99 {} ms against {} ms (runs {} against {}; served {} and {} \
                             replies/s of {rate} offered); per query, MongoDB requests {} against \
                             {}; nx-27017's replies: mean {} ms against {} ms, p99 {} ms against \
                             {} ms",
                            num(b),
                            num(a),
                            range_of(&r.runs[1]),
                            range_of(&r.runs[0]),
                            median_of(&r.runs[1], |x| x.served_per_second).map_or("-".into(), num),
                            median_of(&r.runs[0], |x| x.served_per_second).map_or("-".into(), num),
                            req_b.map_or("-".into(), num),
                            req_a.map_or("-".into(), num),
                            reply_b.map_or("-".into(), num),
                            reply_a.map_or("-".into(), num),
                            tail_b.map_or("-".into(), num),
                            tail_a.map_or("-".into(), num),
                        )
                    },
                )
                .mongo();
            }
            (Some(a), None) => s.notes.push(format!(
                "{}: {} ms at {small} orders; at {large} a lone request is too slow to drive \
                 it at {rate}/s (see S6), so there is no ratio",
                r.name,
                num(a)
            )),
            _ => {}
        }
    }
    s.notes.push(format!(
        "{failed} of {sent} requests failed (non-2xx, no reply, or a 2xx without the data that \
         must be there)."
    ));
    if sent == 0 || failed * 2 > sent {
        anyhow::bail!("S14: {failed} of {sent} requests failed");
    }
    Ok(s)
}
