//! S9: fulfilment (issue 13). A whole shop on this machine: the real write-service in this
//! process (as in S1), the payment sandbox on a loopback port, an SMTP server keeping every
//! message as a file (aiosmtpd, as the fulfilment tests run it) and the real fulfilment
//! process (`fulfilment::Application`, as the `fulfilment` binary runs it) in this process,
//! all on one fresh database. It measures two things:
//!
//! 1. Confirm-to-paid latency: checkouts arrive open-loop at a fixed rate; each one's latency
//!    is from the moment its client receives the confirmation's 200 to the commit of the
//!    order's `PaymentCaptured` (PostgreSQL's commit timestamp; both are this machine's wall
//!    clock).
//! 2. Throughput: with the process stopped, a backlog of confirmed orders is committed; then
//!    the process starts and is timed until every one of them is paid, and until all its
//!    outside work (charges and emails) is done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_support::mail::MailCatcher;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Ctx;
use crate::env::Scratch;
use crate::machine::CpuSample;
use crate::report::{Scenario, num};
use crate::s1_http::{self, AMPLE_STOCK, Service};
use crate::stats;

/// The sandbox takes any `sk_test_` key.
const API_KEY: &str = "sk_test_bench";
/// Stripe's test card that succeeds.
const PAYMENT_METHOD: &str = "pm_card_visa";
/// The fulfilment binary's defaults, spelled out so the report can name them.
const POLL_INTERVAL_MS: u64 = 500;
const PAYMENT_TIMEOUT: Duration = Duration::from_secs(600);
const PAYMENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Clients committing the backlog while the process is stopped (not measured).
const BACKLOG_CLIENTS: usize = 16;
/// How often the throughput run looks at the database (cheap indexed reads).
const POLL: Duration = Duration::from_millis(50);
/// How long the process may take to finish what the latency run left, or a backlog, before
/// the scenario fails.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn run(ctx: &Ctx) -> anyhow::Result<Scenario> {
    ctx.in_scratch("s9", async |scratch| measure(ctx, scratch).await)
        .await
}

/// The payment sandbox on a loopback port, and the SMTP server.
struct Outside {
    sandbox_url: String,
    sandbox: tokio::task::JoinHandle<std::io::Result<()>>,
    mail: MailCatcher,
}

impl Outside {
    async fn start() -> anyhow::Result<Outside> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the payment sandbox")?;
        let sandbox_url = format!("http://{}", listener.local_addr()?);
        let sandbox = tokio::spawn(payment_sandbox::serve(listener));
        // MailCatcher panics (it is made for tests) when aiosmtpd cannot be installed or
        // started: in a task of its own, that is an error of this scenario.
        let mail = match tokio::spawn(MailCatcher::start()).await {
            Ok(mail) => mail,
            Err(e) => {
                sandbox.abort();
                anyhow::bail!(
                    "the SMTP server (aiosmtpd in .local/venv, see scripts/mail.sh) did not \
                     start: {e}"
                );
            }
        };
        Ok(Outside {
            sandbox_url,
            sandbox,
            mail,
        })
    }

    /// Messages the SMTP server has stored.
    fn emails(&self) -> usize {
        ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.mail.maildir().join(sub)).ok())
            .map(|entries| entries.flatten().count())
            .sum()
    }

    fn stop(self) {
        self.sandbox.abort();
        drop(self.mail);
    }
}

/// The fulfilment process running in this process, as `fulfilment run` runs it.
struct Process {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    port: u16,
}

impl Process {
    async fn start(scratch: &Scratch, outside: &Outside) -> anyhow::Result<Process> {
        let settings = fulfilment::Settings {
            database_url: scratch.url.clone().into(),
            addr: "127.0.0.1:0".parse()?,
            payment_provider_url: outside.sandbox_url.clone(),
            payment_api_key: Some(API_KEY.to_owned().into()),
            payment_timeout: PAYMENT_TIMEOUT,
            payment_request_timeout: PAYMENT_REQUEST_TIMEOUT,
            smtp_url: outside.mail.smtp_url().into(),
            mail_from: "Order Backend <orders@example.com>".to_owned(),
            customer_email_domain: "example.com".to_owned(),
            poll_interval_ms: POLL_INTERVAL_MS,
            max_retry_delay: MAX_RETRY_DELAY,
        };
        let app = fulfilment::Application::build(settings).await?;
        let port = app.port();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(app.run_until(cancel.clone()));
        Ok(Process { cancel, task, port })
    }

    /// Whether it holds the lease, from its `/health/ready`.
    async fn leading(&self, client: &reqwest::Client) -> bool {
        let url = format!("http://127.0.0.1:{}/health/ready", self.port);
        match client.get(url).timeout(Duration::from_secs(5)).send().await {
            Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["leader"] == true),
            Err(_) => false,
        }
    }

    async fn wait_leading(&self, client: &reqwest::Client) -> anyhow::Result<()> {
        let start = Instant::now();
        while !self.leading(client).await {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(30),
                "the fulfilment process did not take its lease within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.cancel.cancel();
        (&mut self.task)
            .await
            .context("the fulfilment process panicked")?
            .context("the fulfilment process failed")
    }
}

/// A scenario that fails half-way still stops the process (it would otherwise follow a
/// dropped database for the rest of the run).
impl Drop for Process {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// One checkout of the latency run.
struct Checkout {
    stream_id: String,
    /// When its client received the confirmation's 200 (wall clock).
    confirmed_at: DateTime<Utc>,
    /// Started in the measured window (not in the warm-up).
    measured: bool,
}

struct Paced {
    checkouts: Vec<Checkout>,
    /// Checkouts whose create or confirm failed.
    errors: u64,
    /// Checkouts started in the measured window, per second.
    offered_per_second: f64,
    machine_busy_cores: f64,
    machine_cpus: usize,
}

/// When a transaction committed: its commit timestamp, or `recorded_at` (the transaction's
/// start) where the server does not keep commit timestamps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clock {
    Commit,
    Start,
}

/// The two events of an order this scenario times, when they committed.
#[derive(Default, Clone, Copy)]
struct Times {
    confirmed: Option<DateTime<Utc>>,
    captured: Option<DateTime<Utc>>,
    /// `PaymentCaptured` events of the order: 1, or the process appended one twice.
    captures: u32,
    /// When the process's step for its confirmation started (`fulfilment_orders.started_at`,
    /// the transaction's `now()`).
    step: Option<DateTime<Utc>>,
}

struct Drain {
    orders: usize,
    /// Log events after the process's checkpoint when it started.
    backlog_events: i64,
    /// From the start of the process to the commit of the last `PaymentCaptured`.
    paid_seconds: f64,
    /// From the start to the checkpoint passing the last backlog event (observed by polling).
    tail_seconds: f64,
    /// From the start to no outside work waiting (observed by polling).
    outbox_seconds: f64,
    /// Outside work done in the run (charges, emails).
    work_done: i64,
    cpu: crate::machine::CpuUse,
    /// How long committing the backlog took (not measured, for the report).
    commit_seconds: f64,
    times: HashMap<String, Times>,
}

async fn measure(ctx: &Ctx, scratch: &Scratch) -> anyhow::Result<Scenario> {
    let sizes = &ctx.sizes;
    let mut s = Scenario::new(
        "S9",
        "Fulfilment",
        "A whole shop on this machine, on one fresh database: the real write-service in this \
         process (as in S1, 200 products priced and stocked first), the payment sandbox \
         (`payment_sandbox`, Stripe's PaymentIntents subset, in memory) on a loopback port in \
         normal mode, an SMTP server keeping each message as a file (aiosmtpd from the \
         project's virtualenv, as the fulfilment tests run it) and the real fulfilment process \
         (`fulfilment::Application`, what `fulfilment run` runs, with its defaults: one \
         instance, LISTEN/NOTIFY wake-ups) in this process. Every checkout is `POST /orders` \
         (2 lines) then `POST /orders/{id}/confirm` with `pm_card_visa` and an email address, \
         over HTTP; for each the process commits a step (the charge and an email queued), \
         charges the sandbox, commits `PaymentCaptured`, then emails 'order received' and \
         'payment received'. (1) Latency: checkouts start open-loop at a fixed rate (a slow \
         one does not delay the next); an order's latency runs from its client receiving the \
         confirmation's 200 (wall clock, taken in this process) to the commit of its \
         `PaymentCaptured` (PostgreSQL's commit timestamp: the same machine's clock, so no \
         polling is involved); checkouts started in the warm-up are left out. (2) \
         Throughput: the process is stopped with nothing left to do, a backlog of checkouts is \
         committed, then the process starts (building it, taking its lease, reading from its \
         checkpoint) and is timed until the last backlog order's `PaymentCaptured` commits, \
         until its checkpoint passes the backlog, and until no outside work waits (all \
         charges and both emails of every order done; the last two observed by polling every \
         50 ms). Issue 13 sets no latency or throughput target, so none is checked; the check \
         is of correctness: every order paid once.",
    );
    s.param(
        "checkout rate (latency run)",
        format!("{}/s", sizes.s9_rate),
    );
    s.param("warm-up", format!("{} ms", sizes.s9_warmup.as_millis()));
    s.param(
        "measured window",
        format!("{} ms", sizes.s9_duration.as_millis()),
    );
    s.param(
        "backlog (throughput run)",
        format!("{} orders", sizes.s9_backlog),
    );
    s.param("payment method", PAYMENT_METHOD);
    s.param("FULFILMENT_POLL_INTERVAL_MS", POLL_INTERVAL_MS);
    s.param(
        "PAYMENT_TIMEOUT / PAYMENT_REQUEST_TIMEOUT / FULFILMENT_MAX_RETRY_DELAY",
        "10m / 10s / 30s (the defaults)",
    );
    s.param(
        "where",
        "load generator, write-service, fulfilment process and payment sandbox in one process; \
         aiosmtpd (Python) and PostgreSQL on the same machine, all over loopback",
    );

    let outside = Outside::start().await?;
    let service = match Service::start(scratch).await {
        Ok(service) => service,
        Err(e) => {
            outside.stop();
            return Err(e);
        }
    };
    let client = s1_http::client()?;
    let measured = async {
        service.open_shop(&client, AMPLE_STOCK).await?;
        let clock = clock(&scratch.pool).await?;
        let process = Process::start(scratch, &outside).await?;
        process.wait_leading(&client).await?;
        let paced = paced(
            &client,
            &service.base,
            sizes.s9_rate,
            sizes.s9_warmup,
            sizes.s9_duration,
        )
        .await?;
        let streams: Vec<String> = paced
            .checkouts
            .iter()
            .map(|c| c.stream_id.clone())
            .collect();
        settle(&scratch.pool, &streams).await?;
        let latency_times = times(&scratch.pool, &streams, clock).await?;
        process.stop().await?;
        let drain = drain(
            &client,
            &service.base,
            scratch,
            &outside,
            sizes.s9_backlog,
            clock,
        )
        .await?;
        let ledger = ledger(&client, &outside.sandbox_url).await?;
        anyhow::Ok((clock, paced, latency_times, drain, ledger))
    }
    .await;
    service.stop().await;
    let emails = outside.emails();
    outside.stop();
    let (clock, paced, latency_times, drain, ledger) = measured?;

    let clock_name = match clock {
        Clock::Commit => "pg_xact_commit_timestamp (track_commit_timestamp = on)",
        Clock::Start => {
            "recorded_at, the transaction's start (track_commit_timestamp is off on this \
             server): earlier than the commit by the step's duration"
        }
    };
    s.param("PaymentCaptured committed at", clock_name);

    // (1) Latency.
    let mut from_reply = Vec::new();
    let mut from_commit = Vec::new();
    let (mut to_step, mut from_step) = (Vec::new(), Vec::new());
    for c in paced.checkouts.iter().filter(|c| c.measured) {
        let t = latency_times.get(&c.stream_id).copied().unwrap_or_default();
        if let Some(captured) = t.captured {
            from_reply.push(ms(captured - c.confirmed_at));
            if let Some(confirmed) = t.confirmed {
                from_commit.push(ms(captured - confirmed));
            }
            if let (Some(confirmed), Some(step)) = (t.confirmed, t.step) {
                to_step.push(ms(step - confirmed));
                from_step.push(ms(captured - step));
            }
        }
    }
    s.value(
        "latency run: checkouts offered",
        "/s",
        paced.offered_per_second,
    )
    .note("started in the measured window, per second");
    s.value("latency run: orders measured", "", from_reply.len() as f64)
        .note("started in the measured window and confirmed (200)");
    let note = "client receives the confirmation's 200 → PaymentCaptured committed";
    for (name, p) in [("p50", 50.0), ("p99", 99.0)] {
        s.value(
            &format!("confirm-to-paid latency {name}"),
            "ms",
            stats::percentile(&mut from_reply, p),
        )
        .note(note);
    }
    s.value("confirm-to-paid latency max", "ms", stats::max(&from_reply))
        .note(note);
    let note = "OrderConfirmed committed → PaymentCaptured committed (both in PostgreSQL)";
    for (name, p) in [("p50", 50.0), ("p99", 99.0)] {
        s.value(
            &format!("commit-to-paid latency {name}"),
            "ms",
            stats::percentile(&mut from_commit, p),
        )
        .note(note);
    }
    let note = "of which: OrderConfirmed committed → the process's step for it started (the \
                tail; fulfilment_orders.started_at)";
    for (name, p) in [("p50", 50.0), ("p99", 99.0)] {
        s.value(
            &format!("commit-to-step latency {name}"),
            "ms",
            stats::percentile(&mut to_step, p),
        )
        .note(note);
    }
    let note = "of which: the step started → PaymentCaptured committed (the step, the outbox \
                queue shared with emails, the charge, its record)";
    for (name, p) in [("p50", 50.0), ("p99", 99.0)] {
        s.value(
            &format!("step-to-paid latency {name}"),
            "ms",
            stats::percentile(&mut from_step, p),
        )
        .note(note);
    }
    s.value(
        "latency run: machine CPUs busy",
        "CPUs",
        paced.machine_busy_cores,
    )
    .note(format!(
        "of {}; /proc/stat over the measured window",
        paced.machine_cpus
    ));
    if paced.errors > 0 {
        s.notes.push(format!(
            "latency run: {} checkouts failed (create or confirm not 2xx) and are not counted",
            paced.errors
        ));
    }

    // (2) Throughput.
    let secs = drain.paid_seconds.max(1e-9);
    s.value("throughput run: backlog", "orders", drain.orders as f64)
        .note(format!(
            "committed in {} s with the process stopped",
            num(drain.commit_seconds)
        ));
    s.value(
        "throughput run: log events after the checkpoint",
        "events",
        drain.backlog_events as f64,
    )
    .note("the backlog's events (orders, confirmations, stock reservations) the tail reads");
    s.value("throughput run: time to all paid", "s", drain.paid_seconds)
        .note("process start → last backlog order's PaymentCaptured committed");
    s.value("orders paid/s", "/s", drain.orders as f64 / secs)
        .note("backlog / time to all paid; one PaymentCaptured appended per order");
    s.value(
        "log events followed/s",
        "events/s",
        drain.backlog_events as f64 / drain.tail_seconds.max(1e-9),
    )
    .note(format!(
        "events after the checkpoint / {} s until the checkpoint passed them (polled every \
         50 ms)",
        num(drain.tail_seconds)
    ));
    s.value(
        "outside work done/s",
        "/s",
        drain.work_done as f64 / drain.outbox_seconds.max(1e-9),
    )
    .note(format!(
        "{} charges and emails / {} s until none waited (polled every 50 ms)",
        num(drain.work_done as f64),
        num(drain.outbox_seconds)
    ));
    s.value(
        "throughput run: machine CPUs busy",
        "CPUs",
        drain.cpu.machine_busy_cores,
    )
    .note(format!(
        "of {}; /proc/stat from the start to all paid",
        drain.cpu.machine_cpus
    ));
    s.value(
        "throughput run: CPUs used by this process",
        "CPUs",
        drain.cpu.process_cores,
    )
    .note("fulfilment process and payment sandbox (the write-service is idle)");
    s.value(
        "throughput run: CPUs used by PostgreSQL",
        "CPUs",
        drain.cpu.postgres_cores,
    )
    .note("all postgres processes, from /proc/<pid>/stat");

    // Correctness: every order of both runs paid once, charged once.
    let mut all_times = latency_times;
    all_times.extend(drain.times);
    let orders = all_times.len();
    let unpaid = all_times.values().filter(|t| t.captures == 0).count();
    let twice = all_times.values().filter(|t| t.captures > 1).count();
    let mut charges_per_order: HashMap<&str, usize> = HashMap::new();
    for c in ledger["charges"].as_array().into_iter().flatten() {
        if c["status"] == "succeeded" {
            *charges_per_order
                .entry(c["orderId"].as_str().unwrap_or_default())
                .or_default() += 1;
        }
    }
    let charged_twice = charges_per_order.values().filter(|&&n| n > 1).count();
    let charged = charges_per_order.len();
    let wrong = unpaid + twice + charged_twice + orders.saturating_sub(charged);
    s.check(
        "every order paid once: orders not paid, paid twice or not charged exactly once = 0",
        wrong as f64,
        "orders",
        wrong == 0,
        || {
            format!(
                "of {orders} orders: {unpaid} without PaymentCaptured, {twice} with more than \
                 one, {charged} charged in the sandbox's ledger, {charged_twice} charged more \
                 than once"
            )
        },
    );
    s.notes.push(format!(
        "Emails: {emails} messages in the SMTP server's Maildir for {orders} paid orders \
         (2 expected each: order received, payment received)."
    ));
    s.notes.push(
        "What the figures include: one fulfilment instance; the payment sandbox answers from \
         memory over loopback (a real provider's charge takes hundreds of milliseconds over \
         the internet, which would add to the latency and, with 16 pieces of work in flight, \
         bound the throughput); SMTP goes to a local aiosmtpd writing files; every part \
         shares this machine's CPUs with PostgreSQL and the load generator."
            .to_owned(),
    );
    Ok(s)
}

fn ms(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds()
        .map_or(f64::NAN, |us| us as f64 / 1000.0)
}

/// Whether the server keeps commit timestamps.
async fn clock(pool: &PgPool) -> anyhow::Result<Clock> {
    let on: String = sqlx::query_scalar("show track_commit_timestamp")
        .fetch_one(pool)
        .await?;
    Ok(if on == "on" {
        Clock::Commit
    } else {
        Clock::Start
    })
}

fn confirm_body(user: &str) -> Value {
    json!({"paymentMethod": PAYMENT_METHOD, "email": format!("{user}@shop.example")})
}

/// One checkout: create, then confirm. The order's stream id and when the 200 arrived.
async fn checkout(
    client: &reqwest::Client,
    base: &str,
    rng: &mut fastrand::Rng,
    user: &str,
) -> Option<(String, DateTime<Utc>)> {
    let body = s1_http::order_body(rng, user);
    let token = s1_http::customer_token(user);
    let reply = s1_http::as_customer(client.post(format!("{base}/orders")), &token)
        .json(&body)
        .send()
        .await
        .ok()?;
    if !reply.status().is_success() {
        return None;
    }
    let v: Value = reply.json().await.ok()?;
    let id = v["orderId"].as_str()?.to_owned();
    let reply = s1_http::as_customer(client.post(format!("{base}/orders/{id}/confirm")), &token)
        .json(&confirm_body(user))
        .send()
        .await
        .ok()?;
    let at = Utc::now();
    reply
        .status()
        .is_success()
        .then(|| (format!("order-{id}"), at))
}

/// Checkouts started open-loop at `rate` per second for the warm-up plus the window.
async fn paced(
    client: &reqwest::Client,
    base: &str,
    rate: u32,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Paced> {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let start = Instant::now() + Duration::from_millis(20);
    let window_start = start + warmup;
    let window_end = window_start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    let mut offered = 0u64;
    let mut cpu_start = None;
    for i in 0u64.. {
        let at = start + interval.mul_f64(i as f64);
        if at >= window_end {
            break;
        }
        tokio::time::sleep_until(at).await;
        let measured = at >= window_start;
        if measured {
            offered += 1;
            cpu_start.get_or_insert_with(CpuSample::now);
        }
        let (client, base) = (client.clone(), base.to_owned());
        tasks.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(9_000 + i);
            let user = format!("s9-u{}", i % 500);
            checkout(&client, &base, &mut rng, &user)
                .await
                .map(|(stream_id, confirmed_at)| Checkout {
                    stream_id,
                    confirmed_at,
                    measured,
                })
        });
    }
    tokio::time::sleep_until(window_end).await;
    let cpu = cpu_start.unwrap_or_else(CpuSample::now);
    let cpu = CpuSample::now().since(&cpu);
    let mut checkouts = Vec::new();
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a checkout task panicked")? {
            Some(c) => checkouts.push(c),
            None => errors += 1,
        }
    }
    Ok(Paced {
        checkouts,
        errors,
        offered_per_second: offered as f64 / duration.as_secs_f64(),
        machine_busy_cores: cpu.machine_busy_cores,
        machine_cpus: cpu.machine_cpus,
    })
}

/// `PaymentCaptured` events in `streams`.
async fn captured(pool: &PgPool, streams: &[String]) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from events \
         where stream_id = any($1) and event_type = 'PaymentCaptured'",
    )
    .bind(streams)
    .fetch_one(pool)
    .await?)
}

/// Outside work (charges, refunds, emails) not yet done.
async fn work_waiting(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select count(*) from fulfilment_outbox where status = 'pending'")
            .fetch_one(pool)
            .await?,
    )
}

/// Waits until every order of `streams` is paid and no outside work waits, so the process
/// can be stopped with nothing left over.
async fn settle(pool: &PgPool, streams: &[String]) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let paid = captured(pool, streams).await?;
        let waiting = work_waiting(pool).await?;
        if paid >= streams.len() as i64 && waiting == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < SETTLE_TIMEOUT,
            "after {SETTLE_TIMEOUT:?}, {paid} of {} orders paid and {waiting} pieces of outside \
             work waiting",
            streams.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// When each order's `OrderConfirmed` and `PaymentCaptured` committed.
async fn times(
    pool: &PgPool,
    streams: &[String],
    clock: Clock,
) -> anyhow::Result<HashMap<String, Times>> {
    // xid8 → xid: the low 32 bits, as pg_xact_commit_timestamp takes an xid.
    let at = match clock {
        Clock::Commit => {
            "pg_xact_commit_timestamp(((tx_id::text)::bigint % 4294967296)::text::xid)"
        }
        Clock::Start => "recorded_at",
    };
    let rows: Vec<(String, String, Option<DateTime<Utc>>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select stream_id, event_type, {at} from events \
             where stream_id = any($1) and event_type in ('OrderConfirmed', 'PaymentCaptured') \
             order by global_position"
        )))
        .bind(streams)
        .fetch_all(pool)
        .await?;
    let mut out: HashMap<String, Times> = streams
        .iter()
        .map(|s| (s.clone(), Times::default()))
        .collect();
    let steps: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("select 'order-' || order_id::text, started_at from fulfilment_orders")
            .fetch_all(pool)
            .await?;
    for (stream, at) in steps {
        if let Some(t) = out.get_mut(&stream) {
            t.step = Some(at);
        }
    }
    for (stream, event_type, at) in rows {
        let t = out.entry(stream).or_default();
        if event_type == "PaymentCaptured" {
            t.captures += 1;
            t.captured = t.captured.or(at);
        } else {
            t.confirmed = t.confirmed.or(at);
        }
    }
    Ok(out)
}

/// Commits `orders` checkouts with the process stopped, then starts it and times it until
/// all are paid and all outside work is done.
async fn drain(
    client: &reqwest::Client,
    base: &str,
    scratch: &Scratch,
    outside: &Outside,
    orders: usize,
    clock: Clock,
) -> anyhow::Result<Drain> {
    let pool = &scratch.pool;
    let commit_started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..BACKLOG_CLIENTS {
        let (client, base, next) = (client.clone(), base.to_owned(), next.clone());
        tasks.spawn(async move {
            let mut streams = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= orders {
                    return anyhow::Ok(streams);
                }
                let mut rng = fastrand::Rng::with_seed(90_000 + i as u64);
                let user = format!("s9-b{}", i % 500);
                let (stream, _) = checkout(&client, &base, &mut rng, &user)
                    .await
                    .with_context(|| format!("backlog checkout {i} failed"))?;
                streams.push(stream);
            }
        });
    }
    let mut streams = Vec::with_capacity(orders);
    while let Some(joined) = tasks.join_next().await {
        streams.extend(joined.context("a backlog task panicked")??);
    }
    let commit_seconds = commit_started.elapsed().as_secs_f64();

    // Where the process stopped, and how much log lies after it.
    let (checkpoint,): (i64,) = sqlx::query_as(
        "select global_position from process_checkpoints where process = 'fulfilment'",
    )
    .fetch_one(pool)
    .await
    .context("the fulfilment checkpoint")?;
    let (backlog_events, last): (i64, Option<i64>) = sqlx::query_as(
        "select count(*), max(global_position) from events where global_position > $1",
    )
    .bind(checkpoint)
    .fetch_one(pool)
    .await?;
    let last = last.unwrap_or(checkpoint);
    let work_before: i64 =
        sqlx::query_scalar("select count(*) from fulfilment_outbox where status <> 'pending'")
            .fetch_one(pool)
            .await?;

    let cpu_start = CpuSample::now();
    let started = Instant::now();
    let started_wall = Utc::now();
    let process = Process::start(scratch, outside).await?;
    let watched = async {
        let (mut paid_seen, mut tail_at, mut outbox_at, mut cpu) = (None, None, None, None);
        loop {
            let now = started.elapsed();
            if paid_seen.is_none() {
                let paid: i64 = sqlx::query_scalar(
                    "select count(*) from events \
                     where global_position > $1 and event_type = 'PaymentCaptured'",
                )
                .bind(last)
                .fetch_one(pool)
                .await?;
                if paid >= orders as i64 {
                    paid_seen = Some(now);
                    cpu = Some(CpuSample::now().since(&cpu_start));
                }
            }
            if tail_at.is_none() {
                let at: Option<i64> = sqlx::query_scalar(
                    "select global_position from process_checkpoints \
                     where process = 'fulfilment'",
                )
                .fetch_optional(pool)
                .await?;
                if at.is_some_and(|at| at >= last) {
                    tail_at = Some(now);
                }
            }
            if paid_seen.is_some() && tail_at.is_some() && work_waiting(pool).await? == 0 {
                outbox_at = Some(now);
            }
            if let (Some(paid), Some(tail), Some(outbox), Some(cpu)) =
                (paid_seen, tail_at, outbox_at, cpu)
            {
                return anyhow::Ok((paid, tail, outbox, cpu));
            }
            anyhow::ensure!(
                now < SETTLE_TIMEOUT,
                "the backlog of {orders} orders was not done after {SETTLE_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
    .await;
    let stopped = process.stop().await;
    let (paid_seen, tail, outbox, cpu) = watched?;
    stopped?;

    let times = times(pool, &streams, clock).await?;
    let last_capture = times.values().filter_map(|t| t.captured).max();
    let paid_seconds = match last_capture {
        Some(at) => ms(at - started_wall) / 1000.0,
        None => paid_seen.as_secs_f64(),
    };
    let work_after: i64 =
        sqlx::query_scalar("select count(*) from fulfilment_outbox where status <> 'pending'")
            .fetch_one(pool)
            .await?;
    Ok(Drain {
        orders,
        backlog_events,
        paid_seconds,
        tail_seconds: tail.as_secs_f64(),
        outbox_seconds: outbox.as_secs_f64(),
        work_done: work_after - work_before,
        cpu,
        commit_seconds,
        times,
    })
}

/// The sandbox's ledger: `charges` and `refunds`.
async fn ledger(client: &reqwest::Client, sandbox: &str) -> anyhow::Result<Value> {
    let reply = client
        .get(format!("{sandbox}/sandbox/ledger"))
        .send()
        .await
        .context("GET /sandbox/ledger")?;
    anyhow::ensure!(
        reply.status().is_success(),
        "GET /sandbox/ledger: {}",
        reply.status()
    );
    Ok(reply.json().await?)
}
