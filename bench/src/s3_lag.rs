//! S3: live projection lag. The real write-service and the real projector (`projector run`,
//! every view) run in this process against one fresh pair of databases; commands arrive
//! open-loop at half of S1's peak rate, and each command's position is matched with the
//! moment the projector reports every view past it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use domain::Position;
use read_model::View;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Ctx;
use crate::env::Scratch;
use crate::machine::CpuSample;
use crate::projection::Counted;
use crate::report::{Scenario, num};
use crate::s1_http;
use crate::stats;
use crate::wire::{Counts, total, wait_seconds, work_between};

/// How often the projector's status board is sampled: the resolution of every lag figure.
const SAMPLE_EVERY: Duration = Duration::from_millis(1);
const TARGET_P99_MS: f64 = 250.0;

/// A command the write-service accepted: when it was sent, when its reply arrived, and the
/// log position of its last event.
struct Accepted {
    sent: Instant,
    replied: Instant,
    position: Position,
}

/// The projector's checkpoints as sampled: when, and each view's checkpoint then.
struct Sample {
    at: Instant,
    checkpoints: Vec<Position>,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Scenario> {
    ctx.in_scratch("s3", async |scratch| measure(ctx, scratch).await)
        .await
}

async fn measure(ctx: &Ctx, scratch: &Scratch) -> anyhow::Result<Scenario> {
    let sizes = &ctx.sizes;
    let mut s = Scenario::new(
        "S3",
        "Live projection lag",
        "The real write-service and the real projector (`projector::Application`, all six \
         views, LISTEN/NOTIFY wake-ups, default batch size and poll interval) run in this \
         process on one fresh PostgreSQL database and one fresh MongoDB database. Orders \
         arrive open-loop at a fixed rate (each `POST /orders` then `POST /orders/{id}/confirm`, \
         as in S1) so that commands/s is half of S1's peak; a slow reply does not delay the \
         next order. Every accepted command's reply carries the log position of its last \
         event. A task samples the projector's status board every millisecond; it is updated \
         right after a batch's MongoDB writes and checkpoint are acknowledged. A command's lag \
         is the time from its transaction's commit (PostgreSQL's commit timestamp, on the same \
         clock) to the first sample where the view's checkpoint is at or past its position; \
         the lag to every view is the largest of the six.",
    );
    let peak = match ctx.s1_peak() {
        Some(p) => {
            s.param(
                "S1 peak (from S1 in this run)",
                format!("{} commands/s", num(p)),
            );
            p
        }
        None => {
            let p = own_peak(ctx, scratch).await?;
            s.param(
                "S1 peak (S1 not run: measured here, 64 clients, one window)",
                format!("{} commands/s", num(p)),
            );
            p
        }
    };
    let rate = peak / 2.0;
    anyhow::ensure!(
        rate >= 1.0,
        "S1's peak ({peak} commands/s) is too low to halve"
    );
    s.param("offered load", format!("{} commands/s", num(rate)));
    s.param(
        "warm-up",
        format!("{} ms", sizes.s1_warmup.as_millis().max(1_000)),
    );
    s.param(
        "measured window",
        format!("{} ms", sizes.s3_duration.as_millis()),
    );
    s.param("status board sampled every", "1 ms");
    s.param("PROJECTOR_BATCH_SIZE", crate::projection::BATCH);
    s.param(
        "where",
        "load generator, write-service and projector in one process; PostgreSQL and MongoDB on \
         the same machine",
    );

    let write = s1_http::Service::start(scratch).await?;
    if let Err(e) = write
        .open_shop(&s1_http::client()?, s1_http::AMPLE_STOCK)
        .await
    {
        write.stop().await;
        return Err(e);
    }
    // The projector talks to MongoDB through the counting proxy, so the report can say how
    // much of the lag is spent waiting on the server.
    let counted = Counted::start(&ctx.servers).await?;
    let projector_cancel = CancellationToken::new();
    let settings = crate::projection::live_settings(scratch, &counted.uri);
    let app = projector::Application::build(settings).await?;
    let board = app.status_board();
    let projector = tokio::spawn(app.run_until(projector_cancel.clone()));

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampling = CancellationToken::new();
    let sampler = {
        let samples = samples.clone();
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut last: Vec<Position> = Vec::new();
            while !sampling.is_cancelled() {
                tick.tick().await;
                let now = Instant::now();
                let checkpoints: Vec<Position> = match board.lock() {
                    Ok(b) => View::ALL
                        .iter()
                        .map(|v| b.get(v.name()).map_or(Position::ZERO, |p| p.checkpoint))
                        .collect(),
                    Err(_) => continue,
                };
                if checkpoints != last {
                    last.clone_from(&checkpoints);
                    if let Ok(mut s) = samples.lock() {
                        s.push(Sample {
                            at: now,
                            checkpoints,
                        });
                    }
                }
            }
        })
    };

    let warmup = sizes.s1_warmup.max(Duration::from_secs(1));
    let driven = drive(&write.base, rate, warmup, sizes.s3_duration, &counted).await;
    // Wait for the projector to apply everything the load wrote, then stop sampling.
    let caught_up = match &driven {
        Ok(d) => d.accepted.iter().map(|a| a.position).max(),
        Err(_) => None,
    };
    let drain_started = Instant::now();
    let drained = match caught_up {
        Some(last) => wait_for(&samples, last, Duration::from_secs(60)).await,
        None => true,
    };
    let drain = drain_started.elapsed();
    sampling.cancel();
    let _ = sampler.await;
    projector_cancel.cancel();
    let projector_result = projector.await;
    write.stop().await;
    let driven = driven?;
    if let Ok(Err(e)) = projector_result {
        s.notes
            .push(format!("the projector stopped with an error: {e:#}"));
    }
    anyhow::ensure!(
        drained,
        "the projector did not apply the load's last event within 60 s of the load ending"
    );
    let samples = std::mem::take(&mut *samples.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);

    let measured: Vec<&Accepted> = driven
        .accepted
        .iter()
        .filter(|a| a.replied >= driven.window_start && a.replied <= driven.window_end)
        .collect();
    anyhow::ensure!(
        !measured.is_empty(),
        "no command was accepted in the measured window"
    );
    let achieved = measured.len() as f64 / sizes.s3_duration.as_secs_f64();
    s.value("commands/s accepted in the window", "/s", achieved)
        .note(format!("offered {}", num(rate)));
    if achieved < 0.9 * rate {
        let mut latency: Vec<f64> = measured.iter().map(|a| ms(a.replied - a.sent)).collect();
        s.notes.push(format!(
            "The write side did not keep up with the offered {} commands/s while the projector \
             and MongoDB shared the CPUs: it accepted {}/s and commands waited {} ms (median, \
             send to reply), so S1's peak, measured without them, overstates what the whole \
             system sustains. The lag figures are from commit, so they are not inflated by that \
             queue.",
            num(rate),
            num(achieved),
            num(stats::percentile(&mut latency, 50.0)),
        ));
    }
    if driven.errors > 0 {
        s.notes.push(format!(
            "{} commands failed or were refused during the run and are not counted",
            driven.errors
        ));
    }
    let busy = driven.cpu.machine_busy_cores;
    s.value("machine CPUs busy", "CPUs", busy).note(format!(
        "of {}; /proc/stat over the measured window",
        driven.cpu.machine_cpus
    ));

    // Commit instants: exact from PostgreSQL's commit timestamps when the server records
    // them (scripts/pg.sh turns them on), else bracketed by the client's send and reply.
    let commits = commit_times(&scratch.pool, &driven, &measured).await?;
    let exact = commits.is_some();
    s.param(
        "commit time from",
        if exact {
            "pg_xact_commit_timestamp (track_commit_timestamp = on)"
        } else {
            "the client's receipt of the reply (track_commit_timestamp is off on this server); \
             the commit happened before it, so the lag is understated by the reply's delivery"
        },
    );
    let views = View::ALL;
    let mut to_all = Vec::with_capacity(measured.len());
    let mut from_send = Vec::with_capacity(measured.len());
    let mut command_ms = Vec::with_capacity(measured.len());
    let mut per_view: Vec<Vec<f64>> = vec![Vec::with_capacity(measured.len()); views.len()];
    let mut early = 0usize;
    for (k, a) in measured.iter().enumerate() {
        let committed = commits.as_ref().map_or(a.replied, |c| c[k]);
        let mut latest = committed;
        for (i, lags) in per_view.iter_mut().enumerate() {
            let seen = first_at_or_past(&samples, i, a.position)
                .context("a measured command's position never reached a view")?;
            if seen < committed {
                early += 1;
            }
            lags.push(ms(seen.saturating_duration_since(committed)));
            latest = latest.max(seen);
        }
        to_all.push(ms(latest - committed));
        from_send.push(ms(latest.saturating_duration_since(a.sent)));
        command_ms.push(ms(a.replied - a.sent));
    }
    let p99 = stats::percentile(&mut to_all, 99.0);
    let p50 = stats::percentile(&mut to_all, 50.0);
    s.value("commit to every view: p50", "ms", p50).mongo();
    s.value("commit to every view: p99", "ms", p99).mongo();
    s.value("commit to every view: max", "ms", stats::max(&to_all))
        .mongo();
    for (view, lags) in views.iter().zip(per_view.iter_mut()) {
        let p99 = stats::percentile(lags, 99.0);
        s.value(
            &format!("commit to {view}: p50"),
            "ms",
            stats::percentile(lags, 50.0),
        )
        .note(format!("p99 {} ms", num(p99)))
        .mongo();
    }
    s.value(
        "command latency (send to reply): p50",
        "ms",
        stats::percentile(&mut command_ms, 50.0),
    )
    .note(format!(
        "p99 {} ms",
        num(stats::percentile(&mut command_ms, 99.0))
    ));
    s.value(
        "send to every view: p99",
        "ms",
        stats::percentile(&mut from_send, 99.0),
    )
    .note("what a client that writes then reads waits in all")
    .mongo();
    let requests = total(&driven.mongo);
    let waited = wait_seconds(&driven.mongo);
    let window = sizes.s3_duration.as_secs_f64();
    let mean_reply_ms = if requests > 0 {
        waited * 1000.0 / requests as f64
    } else {
        0.0
    };
    s.value(
        "projector: MongoDB requests/s",
        "/s",
        requests as f64 / window,
    )
    .note(format!(
        "counted on the wire in the window: {}",
        crate::wire::text(&driven.mongo)
    ))
    .mongo();
    s.value("projector: mean MongoDB reply time", "ms", mean_reply_ms)
        .note("request sent to reply received")
        .mongo();
    s.value(
        "projector: requests in flight on MongoDB, on average",
        "",
        waited / window,
    )
    .note("reply times summed over the window, divided by its length")
    .mongo();
    if early > 0 {
        s.notes.push(format!(
            "{early} view updates were sampled before the commit time (clock resolution; counted as 0 ms)"
        ));
    }
    s.value(
        "time to apply the backlog after the load stopped",
        "ms",
        ms(drain),
    )
    .mongo();
    s.check(
        &format!("p99 commit-to-view < {TARGET_P99_MS} ms"),
        p99,
        "ms",
        p99 < TARGET_P99_MS,
        || {
            format!(
                "at {} commands/s offered, p99 to every view was {} ms with {} of {} CPUs \
                 busy; the projector's six views sent MongoDB {} requests/s, each answered in \
                 {} ms on average, {} in flight at any time (one batch is a find and an \
                 update carrying the checkpoint, per view)",
                num(rate),
                num(p99),
                num(busy),
                driven.cpu.machine_cpus,
                num(requests as f64 / window),
                num(mean_reply_ms),
                num(waited / window),
            )
        },
    )
    .mongo();
    Ok(s)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Each measured command's commit instant, from PostgreSQL's commit timestamps, or `None`
/// when the server does not record them.
async fn commit_times(
    pool: &sqlx::PgPool,
    driven: &Driven,
    measured: &[&Accepted],
) -> anyhow::Result<Option<Vec<Instant>>> {
    let on: String = sqlx::query_scalar("show track_commit_timestamp")
        .fetch_one(pool)
        .await?;
    if on != "on" {
        return Ok(None);
    }
    let txs: Vec<i64> = measured
        .iter()
        .map(|a| i64::try_from(a.position.tx_id))
        .collect::<Result<_, _>>()?;
    // xid8 → xid: the low 32 bits, as pg_xact_commit_timestamp takes an xid.
    let rows: Vec<(i64, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "select t, pg_xact_commit_timestamp((t % 4294967296)::text::xid) \
         from unnest($1::bigint[]) as t",
    )
    .bind(&txs)
    .fetch_all(pool)
    .await?;
    let at: std::collections::HashMap<i64, chrono::DateTime<chrono::Utc>> = rows
        .into_iter()
        .filter_map(|(t, ts)| ts.map(|ts| (t, ts)))
        .collect();
    let mut out = Vec::with_capacity(measured.len());
    for (a, t) in measured.iter().zip(&txs) {
        let ts = at
            .get(t)
            .with_context(|| format!("no commit timestamp for transaction {t}"))?;
        // Wall clock to this process's monotonic clock through the anchor taken at start.
        let offset = *ts - driven.anchor_wall;
        let micros = offset.num_microseconds().context("offset out of range")?;
        let instant = if micros >= 0 {
            driven.anchor + Duration::from_micros(micros.unsigned_abs())
        } else {
            driven.anchor - Duration::from_micros(micros.unsigned_abs())
        };
        // A commit cannot follow its own reply; clock steps would show up here.
        out.push(instant.min(a.replied));
    }
    Ok(Some(out))
}

/// The first sample at which view `i` had applied `position`.
fn first_at_or_past(samples: &[Sample], i: usize, position: Position) -> Option<Instant> {
    // Checkpoints only grow, so the samples are sorted by each view's checkpoint.
    let k = samples.partition_point(|s| s.checkpoints[i] < position);
    samples.get(k).map(|s| s.at)
}

async fn wait_for(samples: &Mutex<Vec<Sample>>, position: Position, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        let done = samples.lock().is_ok_and(|s| {
            s.last()
                .is_some_and(|l| l.checkpoints.iter().all(|c| *c >= position))
        });
        if done {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// S1's peak when S1 is not part of this run: one window at 64 clients.
async fn own_peak(ctx: &Ctx, scratch: &Scratch) -> anyhow::Result<f64> {
    let write = s1_http::Service::start(scratch).await?;
    let client = s1_http::client()?;
    if let Err(e) = write.open_shop(&client, s1_http::AMPLE_STOCK).await {
        write.stop().await;
        return Err(e);
    }
    let run = s1_http::drive(
        &client,
        &write.base,
        64,
        ctx.sizes.s1_warmup,
        ctx.sizes.s1_duration,
        None,
    )
    .await;
    write.stop().await;
    Ok(run?.commands_per_second)
}

struct Driven {
    /// The same moment on the monotonic and the wall clock.
    anchor: Instant,
    anchor_wall: chrono::DateTime<chrono::Utc>,
    accepted: Vec<Accepted>,
    errors: u64,
    window_start: Instant,
    window_end: Instant,
    cpu: crate::machine::CpuUse,
    /// The projector's MongoDB requests during the measured window.
    mongo: Counts,
}

/// Starts one order every `2 / rate` seconds (two commands each) until the window ends.
async fn drive(
    base: &str,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    counted: &Counted,
) -> anyhow::Result<Driven> {
    let client = s1_http::client()?;
    let (anchor, anchor_wall) = (Instant::now(), chrono::Utc::now());
    let start = Instant::now() + Duration::from_millis(20);
    let window_start = start + warmup;
    let window_end = window_start + duration;
    let every = Duration::from_secs_f64(2.0 / rate);
    let tokens: Vec<String> = (0..500)
        .map(|u| s1_http::customer_token(&format!("u-{u}")))
        .collect();
    let mut orders = tokio::task::JoinSet::new();
    let mut cpu_start = None;
    let mut rng = fastrand::Rng::with_seed(3);
    for i in 0u64.. {
        let at = start + every.mul_f64(i as f64);
        if at >= window_end {
            break;
        }
        tokio::time::sleep_until(at).await;
        if cpu_start.is_none() && at >= window_start {
            cpu_start = Some((CpuSample::now(), counted.proxy.counts()));
        }
        let client = client.clone();
        let base = base.to_owned();
        let user = format!("u-{}", i % 500);
        let body = s1_http::order_body(&mut rng, &user);
        let token = tokens[(i % 500) as usize].clone();
        orders.spawn(async move { one_order(&client, &base, &token, body).await });
    }
    let (cpu_start, mongo_start) =
        cpu_start.unwrap_or_else(|| (CpuSample::now(), counted.proxy.counts()));
    let cpu = CpuSample::now().since(&cpu_start);
    let mongo = work_between(&mongo_start, &counted.proxy.counts());
    let mut accepted = Vec::new();
    let mut errors = 0;
    while let Some(joined) = orders.join_next().await {
        let (ok, failed) = joined.context("an order task panicked")?;
        accepted.extend(ok);
        errors += failed;
    }
    Ok(Driven {
        anchor,
        anchor_wall,
        accepted,
        errors,
        window_start,
        window_end,
        cpu,
        mongo,
    })
}

async fn one_order(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: Value,
) -> (Vec<Accepted>, u64) {
    let mut accepted = Vec::new();
    let Some((placed, order_id)) =
        command(client, token, &format!("{base}/orders"), Some(&body)).await
    else {
        return (accepted, 1);
    };
    accepted.push(placed);
    // The checkout names a payment method (no fulfilment process runs here: the order
    // stays confirmed, awaiting its payment).
    let checkout = json!({"paymentMethod": "pm_card_visa"});
    let Some((confirmed, _)) = command(
        client,
        token,
        &format!("{base}/orders/{order_id}/confirm"),
        Some(&checkout),
    )
    .await
    else {
        return (accepted, 1);
    };
    accepted.push(confirmed);
    (accepted, 0)
}

/// One command; its acceptance and the order id, or `None` when it was not accepted.
async fn command(
    client: &reqwest::Client,
    token: &str,
    url: &str,
    body: Option<&Value>,
) -> Option<(Accepted, String)> {
    let sent = Instant::now();
    let request = s1_http::as_customer(client.post(url), token);
    let request = match body {
        Some(b) => request.json(b),
        None => request.json(&json!({})),
    };
    let reply = request.send().await.ok()?;
    if !reply.status().is_success() {
        return None;
    }
    let v: Value = reply.json().await.ok()?;
    let replied = Instant::now();
    let position = v["position"].as_str()?.parse().ok()?;
    let order_id = v["orderId"].as_str()?.to_owned();
    Some((
        Accepted {
            sent,
            replied,
            position,
        },
        order_id,
    ))
}
