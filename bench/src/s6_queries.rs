//! S6: queries against views holding many orders, each read-service endpoint at fixed rates.
//!
//! The views are filled with the projector's own view code (`Projection::keys`/`Projection::apply`) folded
//! in memory over a generated log, then bulk-inserted: the real engine through nx-27017 would
//! take most of an hour for 100k orders. The real read-service then runs in this process and
//! each endpoint is driven open-loop at fixed request rates.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::Ctx;
use crate::env::Scratch;
use crate::queries::{
    Fixture, INSERT_CHUNK, MAX_IN_FLIGHT, Outcome, RateRun, ReadService, WARMUP_REQUESTS, alone,
    at_rate, endpoints, load, outcome_name, requests, settle, staff_client,
};
use crate::report::{Scenario, num};
use crate::s14_query_growth;
use crate::stats;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Scenario> {
    ctx.in_scratch("s6", async |scratch| measure(ctx, scratch).await)
        .await
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

    let loaded = load(ctx, scratch, sizes.s6_orders).await?;
    eprintln!(
        "bench: S6 loaded: fold {:.1} s, insert {:.1} s, indexes {:.1} s",
        loaded.fold_seconds, loaded.insert_seconds, loaded.index_seconds
    );
    let fixture = Arc::new(loaded.fixture);
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

    // S14 before S6's own runs: it needs these views beside a tenth of them.
    let s14 = s14_query_growth::measure(ctx, (scratch, &fixture), warmup, grace).await?;
    if let Ok(mut slot) = ctx.s14.lock() {
        *slot = Some(s14);
    }
    let results = serve_and_drive(ctx, scratch, &fixture, sizes, warmup, grace).await?;
    report(&mut s, &results, sizes, duration, grace)?;
    Ok(s)
}

/// Runs the real read-service over the scratch database's views and drives every endpoint.
async fn serve_and_drive(
    ctx: &Ctx,
    scratch: &Scratch,
    fixture: &Arc<Fixture>,
    sizes: &crate::Sizes,
    warmup: Duration,
    grace: Duration,
) -> anyhow::Result<Vec<EndpointResult>> {
    let service = ReadService::start(&ctx.servers.mongodb_uri, scratch.mongo.name()).await?;
    let client = staff_client()?;
    let measured = drive_all(
        &client,
        &service.base,
        fixture,
        sizes,
        warmup,
        grace,
        &scratch.mongo,
    )
    .await;
    // Leave the server idle for the scratch database's drop and the next scenario.
    settle(&scratch.mongo).await;
    service.stop().await;
    measured
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
    fixture: &Arc<Fixture>,
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
