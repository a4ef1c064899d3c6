//! S1: commands over HTTP. The real write-service runs in this process on port 0 with its
//! own database; N clients each loop "place an order, confirm it" for a fixed time. The
//! catalogue is set and stocked first, with so many units that no confirmation is refused:
//! S1 measures command throughput, not refusals (S8 measures those).

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use service_kit::auth::AuthSettings;

use crate::Ctx;
pub use crate::closed_loop::RunResult;
use crate::closed_loop::{self, Tally};
use crate::env::Scratch;
use crate::report::Scenario;
use crate::statements::Profiler;
use crate::stats;

/// The write-service's defaults, spelled out so the report can name them.
const POOL: u32 = 10;
const SNAPSHOT_EVERY: u64 = 20;
const PRODUCTS: u64 = 200;
/// Units each product receives before S1 (and S3) order it: far more than a run confirms.
pub const AMPLE_STOCK: i64 = 1_000_000;

/// The body of `POST /orders/{id}/confirm`: the checkout names a payment method (Stripe's
/// test card that succeeds; no payment is taken here, only the confirmation is measured).
pub fn checkout() -> Value {
    json!({"paymentMethod": "pm_card_visa"})
}

/// The write-service running in this process on port 0 against a scratch database.
pub struct Service {
    pub base: String,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    pool: sqlx::PgPool,
}

impl Service {
    /// The write-service checking tokens signed with the tests' secret, which the bench's
    /// clients hold.
    pub async fn start(scratch: &Scratch) -> anyhow::Result<Service> {
        Self::start_with(scratch, test_support::auth::settings()).await
    }

    pub async fn start_with(scratch: &Scratch, auth: AuthSettings) -> anyhow::Result<Service> {
        let settings = write_service::Settings {
            database_url: scratch.url.clone().into(),
            addr: "127.0.0.1:0".parse()?,
            snapshot_every: SNAPSHOT_EVERY,
            database_max_connections: POOL,
            command_max_retries: 10,
            auth,
        };
        let pool = settings.pool()?;
        let app = write_service::Application::with_pool(&settings, pool.clone()).await?;
        let base = format!("http://127.0.0.1:{}", app.port());
        let cancel = CancellationToken::new();
        let server = tokio::spawn(app.run_until(cancel.clone().cancelled_owned()));
        Ok(Service {
            base,
            cancel,
            server,
            pool,
        })
    }

    /// Sets the name and price of every product `order_body` names and receives `units` of
    /// each, as a shop does before it sells.
    pub async fn open_shop(&self, client: &reqwest::Client, units: i64) -> anyhow::Result<()> {
        for p in 0..PRODUCTS {
            let details = json!({"name": format!("Product {p}"), "unitPriceCents": price(p)});
            put_ok(client, &format!("{}/products/p-{p}", self.base), &details).await?;
            post_ok(
                client,
                &format!("{}/products/p-{p}/stock", self.base),
                &json!({"quantity": units}),
            )
            .await?;
        }
        Ok(())
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.server.await;
        self.pool.close().await;
    }
}

/// The load generator's HTTP client: keep-alive, enough idle connections for 64 clients.
/// It sends a staff token (the shop's set-up, the staff-only reads) unless a request names
/// its own caller with [`as_customer`].
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            test_support::auth::bearer(&test_support::auth::staff()).parse()?,
        )]))
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// `request` sent by the customer whose token is `token` (from [`customer_token`]), as
/// shoppers do: each has a token of their own, and so a rate limit of their own.
pub fn as_customer(request: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
    request.bearer_auth(token)
}

/// The token of the customer `user`.
pub fn customer_token(user: &str) -> String {
    test_support::auth::customer(user)
}

/// A two-line order for `user`; the write-service prices it from the catalogue.
pub fn order_body(rng: &mut fastrand::Rng, user: &str) -> Value {
    let (p1, p2) = (rng.u64(0..PRODUCTS), rng.u64(0..PRODUCTS));
    let p2 = if p2 == p1 { (p1 + 1) % PRODUCTS } else { p2 };
    json!({
        "userId": user,
        "items": [
            {"productId": format!("p-{p1}"), "quantity": rng.i64(1..4)},
            {"productId": format!("p-{p2}"), "quantity": rng.i64(1..4)},
        ],
    })
}

/// A set-up request that must succeed; its reply body.
pub async fn send_ok(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
    let reply = request.send().await.with_context(|| what.to_owned())?;
    let status = reply.status();
    let body = reply.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{what}: {status} {body}");
    Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
}

pub async fn put_ok(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    send_ok(client.put(url).json(body), &format!("PUT {url}")).await
}

pub async fn post_ok(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    send_ok(client.post(url).json(body), &format!("POST {url}")).await
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Scenario> {
    ctx.in_scratch("s1", async |scratch| measure(ctx, scratch).await)
        .await
}

async fn measure(ctx: &Ctx, scratch: &Scratch) -> anyhow::Result<Scenario> {
    let sizes = &ctx.sizes;
    let mut s = Scenario::new(
        "S1",
        "Commands over HTTP",
        "The real write-service (`write_service::Application::with_pool`) runs in this process \
         on port 0 against a fresh database; its 200 products get a price (`PUT /products/{id}`) \
         and ample stock first, so no confirmation is refused. N client tasks (reqwest, \
         keep-alive) each loop `POST /orders` (2 lines, priced by the catalogue) then \
         `POST /orders/{id}/confirm` with `{\"paymentMethod\": \"pm_card_visa\"}` (which \
         reserves both lines in the same commit; no payment is taken) for a \
         fixed time after a warm-up. Each simulated customer sends a token of its own (HS256, \
         checked by the service). Each request is one command; commands/s counts 2xx replies completed in the \
         window. Latency percentiles come from the run with the median throughput. \
         Access control's cost: at the top level, runs alternate between this service and \
         the same one with `AUTH_DISABLED=true` on the same database.",
    );
    s.param("concurrent clients", format!("{:?}", sizes.s1_levels));
    s.param("runs per level", sizes.runs);
    s.param(
        "warm-up per run",
        format!("{} ms", sizes.s1_warmup.as_millis()),
    );
    s.param(
        "measured window per run",
        format!("{} ms", sizes.s1_duration.as_millis()),
    );
    s.param("DATABASE_MAX_CONNECTIONS (service pool)", POOL);
    s.param("SNAPSHOT_EVERY", SNAPSHOT_EVERY);
    s.param(
        "where",
        "load generator and write-service in one process; PostgreSQL on the same machine",
    );

    s.param(
        "products (each stocked first)",
        format!("{PRODUCTS} × {AMPLE_STOCK} units"),
    );

    s.param(
        "floor (same PostgreSQL, same run, no service)",
        crate::floor::describe(),
    );
    s.param(
        "floor connections",
        "one per client, held for the run (pgbench -c N)",
    );
    s.param("peer", crate::peer::describe());

    // PostgreSQL's own account of each measured window, statement by statement.
    let profiler = crate::statements::Profiler::start(&scratch.pool).await;
    s.param(
        "PostgreSQL statement profile",
        match &profiler {
            Ok(_) => "pg_stat_statements (statements nested in functions included), sampled at \
                      the start and the end of each measured window"
                .to_owned(),
            Err(why) => why.clone(),
        },
    );
    let profiler = profiler.ok();
    let service = Service::start(scratch).await?;
    // The same service checking no token (`AUTH_DISABLED=true`) on the same database: what
    // access control costs a command, measured in runs alternating with the first's.
    let open = Service::start_with(
        scratch,
        AuthSettings {
            disabled: true,
            ..test_support::auth::settings()
        },
    )
    .await?;
    let client = client()?;
    let top = sizes.s1_levels.iter().copied().max().unwrap_or(1);
    // The same connection settings as the write-service's (`command_options`).
    let floor_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(top).unwrap_or(u32::MAX))
        .connect_with(event_store::connect::command_options(
            &scratch.url,
            "floor",
        )?)
        .await?;
    let peer = crate::peer::Running::start(ctx, PRODUCTS, price).await?;
    let measured = async {
        service.open_shop(&client, AMPLE_STOCK).await?;
        let mut checked_and_open = (Vec::new(), Vec::new());
        for _ in 0..sizes.runs {
            for (base, runs) in [
                (&service.base, &mut checked_and_open.0),
                (&open.base, &mut checked_and_open.1),
            ] {
                runs.push(
                    drive(&client, base, top, sizes.s1_warmup, sizes.s1_duration, None).await?,
                );
            }
        }
        let mut by_level = Vec::new();
        for &level in &sizes.s1_levels {
            let mut three = Three::default();
            // Ours, the floor and the peer take turns, so that drift of the machine hits all.
            for _ in 0..sizes.runs {
                let (warmup, window) = (sizes.s1_warmup, sizes.s1_duration);
                let profiler = profiler.as_ref();
                three
                    .ours
                    .push(drive(&client, &service.base, level, warmup, window, profiler).await?);
                three.floor.push(
                    crate::floor::drive(&floor_pool, PRODUCTS, level, warmup, window, profiler)
                        .await?,
                );
                three
                    .peer
                    .push(drive(&client, peer.base(), level, warmup, window, profiler).await?);
            }
            by_level.push((level, three));
        }
        anyhow::Ok((by_level, checked_and_open))
    }
    .await;
    service.stop().await;
    open.stop().await;
    floor_pool.close().await;
    peer.stop().await;
    let (by_level, (checked, unchecked)) = measured?;
    access_control_cost(&mut s, top, &checked, &unchecked);

    let mut peak: Option<f64> = None;
    for (level, three) in &by_level {
        let ours = figures(
            &mut s,
            &format!("{level} clients"),
            "commands/s",
            &three.ours,
        );
        let floor = figures(
            &mut s,
            &format!("{level} clients, floor"),
            "transactions/s",
            &three.floor,
        );
        let theirs = figures(
            &mut s,
            &format!("{level} clients, cqrs-es"),
            "commands/s",
            &three.peer,
        );
        peak = Some(peak.map_or(ours.rate, |p: f64| p.max(ours.rate)));
        let note = "medians of the same run";
        s.value(
            &format!("{level} clients: commands/s / floor's transactions/s"),
            "x",
            ours.rate / floor.rate.max(1e-9),
        )
        .note(note);
        s.value(
            &format!("{level} clients: CPU per command / floor's per transaction"),
            "x",
            ours.cpu_ms / floor.cpu_ms.max(1e-9),
        )
        .note(note);
        s.value(
            &format!("{level} clients: commands/s, ours / cqrs-es"),
            "x",
            ours.rate / theirs.rate.max(1e-9),
        )
        .note(note);
        s.value(
            &format!("{level} clients: p99, ours / cqrs-es"),
            "x",
            ours.p99 / theirs.p99.max(1e-9),
        )
        .note(note);
        s.value(
            &format!("{level} clients: CPU per command, ours / cqrs-es"),
            "x",
            ours.cpu_ms / theirs.cpu_ms.max(1e-9),
        )
        .note(note);
        targets(&mut s, *level, &ours, &floor, &theirs);
    }
    if let Some(peak) = peak {
        ctx.set_s1_peak(peak);
    }
    Ok(s)
}

/// The runs of one level: our service, the floor and the peer.
#[derive(Default)]
struct Three {
    ours: Vec<RunResult>,
    floor: Vec<RunResult>,
    peer: Vec<RunResult>,
}

/// The medians a level's comparisons use.
struct Level {
    rate: f64,
    p99: f64,
    cpu_ms: f64,
    busy: f64,
    pg_ms: f64,
    /// PostgreSQL's statements per command and their execution time per command (ms).
    pg_statements: Option<(f64, f64)>,
}

/// Reports one contender's runs at one level; its medians.
fn figures(s: &mut Scenario, label: &str, unit: &str, runs: &[RunResult]) -> Level {
    let rates: Vec<f64> = runs.iter().map(|r| r.commands_per_second).collect();
    let errors: u64 = runs.iter().map(|r| r.errors).sum();
    let f = s.runs(&format!("{label}: {unit}"), "/s", rates.clone());
    if errors > 0 {
        f.note(format!("{errors} failed requests or errors, not counted"));
    }
    let rate = f.median;
    let m = &runs[stats::median_index(&rates)];
    let mut lat = m.latencies_ms.clone();
    let note = "from the median run";
    s.value(
        &format!("{label}: latency p50"),
        "ms",
        stats::percentile(&mut lat, 50.0),
    )
    .note(note);
    let p99 = stats::percentile(&mut lat, 99.0);
    s.value(&format!("{label}: latency p99"), "ms", p99)
        .note(note);
    s.value(&format!("{label}: latency max"), "ms", stats::max(&lat))
        .note(note);
    let busy: Vec<f64> = runs.iter().map(|r| r.cpu.machine_busy_cores).collect();
    s.runs(&format!("{label}: machine CPUs busy"), "CPUs", busy)
        .note(format!(
            "of {}; /proc/stat over the measured window",
            runs[0].cpu.machine_cpus
        ));
    // "commands/s" counts commands; one of them is a "command".
    let one = unit.trim_end_matches("/s").trim_end_matches('s');
    let cpu_ms = cpu_ms_per_command(m);
    let here_ms = m.cpu.process_cores * 1000.0 / m.commands_per_second.max(1e-9);
    let pg_ms = m.cpu.postgres_cores * 1000.0 / m.commands_per_second.max(1e-9);
    s.value(&format!("{label}: CPU time per {one}"), "ms", cpu_ms)
        .note(format!(
            "this process (load generator included) {} ms + PostgreSQL {} ms, from the median run",
            crate::report::num(here_ms),
            crate::report::num(pg_ms)
        ));
    let per = m.commands as f64;
    let pg_statements = m.statements.as_ref().map(|profile| {
        s.value(
            &format!("{label}: PostgreSQL execution per {one}"),
            "ms",
            profile.top_level_totals().exec_ms / per.max(1.0),
        )
        .note(format!(
            "pg_stat_statements over the median run's window: {}",
            profile.describe(per, one, 6)
        ));
        let totals = profile.top_level_totals();
        (totals.calls / per.max(1.0), totals.exec_ms / per.max(1.0))
    });
    Level {
        rate,
        p99,
        cpu_ms,
        busy: m.cpu.machine_busy_cores,
        pg_ms,
        pg_statements,
    }
}

/// Issue 16's targets at the levels it names: 16 clients against the floor, 1 and 16
/// against the peer.
fn targets(s: &mut Scenario, level: usize, ours: &Level, floor: &Level, theirs: &Level) {
    use crate::report::num;
    let split = |l: &Level| {
        let statements = l
            .pg_statements
            .map(|(calls, exec_ms)| {
                format!(
                    ", {} statements executing {} ms in PostgreSQL",
                    num(calls),
                    num(exec_ms)
                )
            })
            .unwrap_or_default();
        format!(
            "{} ms of CPU ({} ms of it PostgreSQL{statements}), {} CPUs busy",
            num(l.cpu_ms),
            num(l.pg_ms),
            num(l.busy)
        )
    };
    if level == 16 {
        let ratio = ours.rate / floor.rate.max(1e-9);
        s.check(
            "16 clients: commands/s ≥ 60% of the floor's transactions/s",
            ratio * 100.0,
            "%",
            ratio >= 0.6,
            || {
                format!(
                    "a command took {} against the floor's {} per transaction: the CPUs are \
                     the limit, and a command's service work (HTTP, token, JSON, deciding) \
                     is what the floor does not do",
                    split(ours),
                    split(floor)
                )
            },
        );
        let cpu = ours.cpu_ms / floor.cpu_ms.max(1e-9);
        s.check(
            "16 clients: CPU per command ≤ 2x the floor's per transaction",
            cpu,
            "x",
            cpu <= 2.0,
            || format!("a command: {}; the floor: {}", split(ours), split(floor)),
        );
    }
    if level == 1 || level == 16 {
        let ratio = ours.rate / theirs.rate.max(1e-9);
        s.check(
            &format!("{level} clients: commands/s ahead of cqrs-es + postgres-es"),
            ratio,
            "x",
            ratio > 1.0,
            || format!("ours: {}; cqrs-es: {}", split(ours), split(theirs)),
        );
        let p99 = ours.p99 / theirs.p99.max(1e-9);
        s.check(
            &format!("{level} clients: p99 below cqrs-es + postgres-es"),
            p99,
            "x",
            p99 < 1.0,
            || {
                format!(
                    "p99 {} ms against {} ms; ours: {}; cqrs-es: {}",
                    num(ours.p99),
                    num(theirs.p99),
                    split(ours),
                    split(theirs)
                )
            },
        );
    }
}

/// Commands/s and CPU per command with every token checked (and the rate limit and ownership
/// applied) against the same service serving everyone without a token.
fn access_control_cost(s: &mut Scenario, level: usize, checked: &[RunResult], open: &[RunResult]) {
    let rate = |runs: &[RunResult]| {
        stats::median(
            &runs
                .iter()
                .map(|r| r.commands_per_second)
                .collect::<Vec<_>>(),
        )
    };
    let cpu = |runs: &[RunResult]| {
        stats::median(&runs.iter().map(cpu_ms_per_command).collect::<Vec<_>>())
    };
    let errors: u64 = checked.iter().chain(open).map(|r| r.errors).sum();
    let note = "runs alternating with the service that checks no token, on the same database";
    let f = s.value(
        &format!("access control: {level} clients, commands/s with tokens / without"),
        "x",
        rate(checked) / rate(open).max(1e-9),
    );
    f.note(if errors > 0 {
        format!("{note}; {errors} non-2xx replies or errors, not counted")
    } else {
        note.to_owned()
    });
    s.value(
        &format!("access control: {level} clients, CPU per command with tokens"),
        "ms",
        cpu(checked),
    )
    .note(note);
    s.value(
        &format!("access control: {level} clients, CPU per command without"),
        "ms",
        cpu(open),
    )
    .note(note);
}

/// CPU milliseconds (this process plus PostgreSQL) per completed command.
fn cpu_ms_per_command(r: &RunResult) -> f64 {
    (r.cpu.process_cores + r.cpu.postgres_cores) * 1000.0 / r.commands_per_second.max(1e-9)
}

fn price(product: u64) -> i64 {
    100 + (product * 37 % 5_000) as i64
}

/// One run at `level` clients: warm-up, then a measured window. Returns what completed
/// inside the window.
pub async fn drive(
    client: &reqwest::Client,
    base: &str,
    level: usize,
    warmup: Duration,
    duration: Duration,
    profiler: Option<&Profiler>,
) -> anyhow::Result<RunResult> {
    closed_loop::run(level, warmup, duration, profiler, |task, window| {
        let client = client.clone();
        let base = base.to_owned();
        async move {
            let mut rng = fastrand::Rng::with_seed(task as u64);
            // Minted before the clock starts: signing is the shoppers' cost, not the service's.
            let tokens: Vec<String> = (0..50)
                .map(|u| customer_token(&format!("u-{task}-{u}")))
                .collect();
            let mut tally = Tally::default();
            tokio::time::sleep_until(window.start).await;
            let mut i = 0u64;
            while window.open() {
                i += 1;
                let body = order_body(&mut rng, &format!("u-{task}-{}", i % 50));
                let token = &tokens[(i % 50) as usize];
                let t = Instant::now();
                let placed = as_customer(client.post(format!("{base}/orders")), token)
                    .json(&body)
                    .send()
                    .await;
                let order_id = match placed {
                    Ok(r) if r.status().is_success() => r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["orderId"].as_str().map(str::to_owned)),
                    _ => None,
                };
                tally.record(&window, t, order_id.is_some());
                let Some(order_id) = order_id else {
                    continue;
                };
                let t = Instant::now();
                let confirmed = as_customer(
                    client.post(format!("{base}/orders/{order_id}/confirm")),
                    token,
                )
                .json(&checkout())
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
                tally.record(&window, t, confirmed);
            }
            Ok(tally)
        }
    })
    .await
}
