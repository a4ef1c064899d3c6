//! S8: checkout contention. The real write-service runs in this process (as in S1); K hot
//! products each receive fewer units than the 1-unit orders placed for them, then N clients
//! confirm those orders as fast as they can. Every confirmation reserves its unit on the
//! product's stream in the commit that confirms the order, so the clients race for the same
//! few streams: the scenario measures what that costs (throughput, latency, lost races
//! retried) and checks that no unit is sold twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Ctx;
use crate::env::Scratch;
use crate::report::{Scenario, num};
use crate::s1_http::{self, Service, post_ok, put_ok};
use crate::stats;

/// Orders placed at once while setting up (not measured).
const PLACING: usize = 32;
const PRICE_CENTS: i64 = 1_999;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Scenario> {
    ctx.in_scratch("s8", async |scratch| measure(ctx, scratch).await)
        .await
}

/// What one run of confirmations did.
struct RunResult {
    confirmations_per_second: f64,
    /// Latency of every confirmation request, accepted or refused.
    latencies_ms: Vec<f64>,
    confirmed: u64,
    /// 409 `insufficient_stock`.
    refused: u64,
    /// 409 `concurrency_conflict`: still losing races after every retry.
    gave_up: u64,
    /// Anything else (5xx, transport errors).
    errors: u64,
    /// `write_command_retries_total` over the run, when the service exports it.
    retries: Option<f64>,
    /// Units confirmed beyond what was received, counted by the clients from the 200s.
    oversold_by_clients: i64,
    /// The same from the product streams (`GET /products/{id}`): reserved plus shipped
    /// beyond received.
    oversold_by_streams: i64,
    /// Units received but not sold although orders for them were refused or gave up.
    unsold: i64,
}

async fn measure(ctx: &Ctx, scratch: &Scratch) -> anyhow::Result<Scenario> {
    let sizes = &ctx.sizes;
    let orders = sizes.s8_orders;
    let mut s = Scenario::new(
        "S8",
        "Checkout contention",
        "The real write-service runs in this process on port 0 against a fresh database (as in \
         S1). For each K, K hot products are created (`PUT /products/{id}`) and each receives \
         half as many units as the 1-unit orders placed for it (orders spread evenly over the \
         K products, placed before the clock starts). Then N client tasks confirm those orders \
         (`POST /orders/{id}/confirm` with a payment method), each taking the next order until none is left. A \
         confirmation appends OrderConfirmed and StockReserved in one transaction at the \
         versions it read, so every client races for the same K product streams; a lost race \
         retries the whole decision. Confirmations/s counts 200s over the time from the first \
         request to the last reply. Oversold units are counted twice: by the clients (200s per \
         product beyond the units it received) and from each product's stream \
         (`GET /products/{id}`: reserved plus shipped beyond received).",
    );
    s.param("concurrent clients (N)", format!("{:?}", sizes.s8_clients));
    s.param("hot products (K)", format!("{:?}", sizes.s8_products));
    s.param("1-unit orders per run", orders);
    s.param("units received per product", "orders / K / 2");
    s.param("runs", sizes.runs);
    s.param("COMMAND_MAX_RETRIES", 10);

    let service = Service::start(scratch).await?;
    let client = s1_http::client()?;
    let measured = async {
        let mut all = Vec::new();
        for &clients in &sizes.s8_clients {
            for &k in &sizes.s8_products {
                let mut runs = Vec::new();
                for run in 0..sizes.runs {
                    let tag = format!("c{clients}-k{k}-r{run}");
                    runs.push(one_run(&client, &service.base, &tag, clients, k, orders).await?);
                }
                all.push((clients, k, runs));
            }
        }
        anyhow::Ok(all)
    }
    .await;
    service.stop().await;
    let all = measured?;

    for (clients, k, runs) in &all {
        let label = format!(
            "{clients} clients, {k} product{}",
            if *k == 1 { "" } else { "s" }
        );
        let rates: Vec<f64> = runs.iter().map(|r| r.confirmations_per_second).collect();
        s.runs(&format!("{label}: confirmations/s"), "/s", rates.clone());
        let m = &runs[stats::median_index(&rates)];
        let mut lat = m.latencies_ms.clone();
        let note = "every confirmation request, accepted or refused; from the median run";
        s.value(
            &format!("{label}: latency p50"),
            "ms",
            stats::percentile(&mut lat, 50.0),
        )
        .note(note);
        s.value(
            &format!("{label}: latency p99"),
            "ms",
            stats::percentile(&mut lat, 99.0),
        )
        .note(note);
        s.runs(
            &format!("{label}: 409 insufficient_stock"),
            "",
            runs.iter().map(|r| r.refused as f64).collect(),
        );
        s.runs(
            &format!("{label}: 409 concurrency_conflict (gave up)"),
            "",
            runs.iter().map(|r| r.gave_up as f64).collect(),
        );
        let requests = |r: &RunResult| (r.confirmed + r.refused + r.gave_up + r.errors) as f64;
        match runs
            .iter()
            .map(|r| r.retries.map(|n| n / requests(r).max(1.0)))
            .collect::<Option<Vec<f64>>>()
        {
            Some(per_command) => {
                s.runs(
                    &format!("{label}: retries per confirmation"),
                    "",
                    per_command,
                )
                .note("write_command_retries_total over the run / confirmation requests");
            }
            None => s.notes.push(format!(
                "{label}: the write-service's /metrics could not be read, so retries are not \
                 reported"
            )),
        }
        let errors: u64 = runs.iter().map(|r| r.errors).sum();
        if errors > 0 {
            s.notes.push(format!(
                "{label}: {errors} confirmation requests failed otherwise (5xx or transport)"
            ));
        }
        let unsold: i64 = runs.iter().map(|r| r.unsold).sum();
        if unsold > 0 {
            s.notes.push(format!(
                "{label}: {unsold} units were left unsold although orders for them were refused \
                 or gave up"
            ));
        }
        let oversold = runs
            .iter()
            .map(|r| r.oversold_by_clients.max(r.oversold_by_streams))
            .max()
            .unwrap_or(0);
        s.check(
            &format!("{label}: oversold units = 0"),
            oversold as f64,
            "units",
            oversold == 0,
            || {
                format!(
                    "{} units confirmed beyond stock by the clients' count, {} by the product \
                     streams (worst run)",
                    num(runs
                        .iter()
                        .map(|r| r.oversold_by_clients)
                        .max()
                        .unwrap_or(0) as f64),
                    num(runs
                        .iter()
                        .map(|r| r.oversold_by_streams)
                        .max()
                        .unwrap_or(0) as f64),
                )
            },
        );
    }
    Ok(s)
}

/// Sets up K products and their orders under `tag`, then confirms every order with
/// `clients` tasks.
async fn one_run(
    client: &reqwest::Client,
    base: &str,
    tag: &str,
    clients: usize,
    k: usize,
    orders: usize,
) -> anyhow::Result<RunResult> {
    let products: Vec<String> = (0..k).map(|p| format!("hot-{tag}-{p}")).collect();
    let per_product = orders.div_ceil(k);
    let stock = i64::try_from(per_product / 2).unwrap_or(i64::MAX).max(1);
    for p in &products {
        let details = json!({"name": format!("Hot product {p}"), "unitPriceCents": PRICE_CENTS});
        put_ok(client, &format!("{base}/products/{p}"), &details).await?;
        post_ok(
            client,
            &format!("{base}/products/{p}/stock"),
            &json!({"quantity": stock}),
        )
        .await?;
    }
    let placed = place_all(client, base, tag, &products, orders).await?;

    let retries_before = retries(client, base).await;
    let next = Arc::new(AtomicUsize::new(0));
    let placed = Arc::new(placed);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, base, next, placed) = (
            client.clone(),
            base.to_owned(),
            next.clone(),
            placed.clone(),
        );
        tasks.spawn(async move {
            let mut out = Outcomes::new(k);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((order, product, token)) = placed.get(i) else {
                    return out;
                };
                let t = Instant::now();
                let reply = s1_http::as_customer(
                    client.post(format!("{base}/orders/{order}/confirm")),
                    token,
                )
                .json(&s1_http::checkout())
                .send()
                .await;
                let outcome = match reply {
                    Ok(r) => {
                        let status = r.status();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        match (status.as_u16(), body["error"]["code"].as_str()) {
                            (200, _) => Outcome::Confirmed,
                            (409, Some("insufficient_stock")) => Outcome::Refused,
                            (409, Some("concurrency_conflict")) => Outcome::GaveUp,
                            _ => Outcome::Error,
                        }
                    }
                    Err(_) => Outcome::Error,
                };
                out.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                out.count(outcome, *product);
            }
        });
    }
    let mut total = Outcomes::new(k);
    while let Some(joined) = tasks.join_next().await {
        total.absorb(joined.context("a client task panicked")?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let retries_after = retries(client, base).await;

    let mut oversold_by_clients = 0;
    let mut oversold_by_streams = 0;
    let mut unsold = 0;
    for (p, id) in products.iter().enumerate() {
        oversold_by_clients += (total.confirmed_by_product[p] - stock).max(0);
        let reply = client
            .get(format!("{base}/products/{id}"))
            .send()
            .await
            .with_context(|| format!("GET /products/{id}"))?;
        anyhow::ensure!(
            reply.status().is_success(),
            "GET /products/{id}: {}",
            reply.status()
        );
        let v: Value = reply.json().await?;
        let field = |f: &str| {
            v[f].as_i64()
                .with_context(|| format!("{id}: no {f} in {v}"))
        };
        let (received, reserved, shipped) = (
            field("receivedUnits")?,
            field("reservedUnits")?,
            field("shippedUnits")?,
        );
        oversold_by_streams += (reserved + shipped - received).max(0);
        let not_confirmed =
            i64::try_from(per_product).unwrap_or(i64::MAX) - total.confirmed_by_product[p];
        if not_confirmed > 0 {
            unsold += (received - reserved - shipped).max(0);
        }
    }
    Ok(RunResult {
        confirmations_per_second: total.confirmed as f64 / seconds.max(1e-9),
        latencies_ms: total.latencies_ms,
        confirmed: total.confirmed,
        refused: total.refused,
        gave_up: total.gave_up,
        errors: total.errors,
        retries: retries_before.zip(retries_after).map(|(b, a)| a - b),
        oversold_by_clients,
        oversold_by_streams,
        unsold,
    })
}

#[derive(Clone, Copy)]
enum Outcome {
    Confirmed,
    Refused,
    GaveUp,
    Error,
}

struct Outcomes {
    latencies_ms: Vec<f64>,
    confirmed: u64,
    refused: u64,
    gave_up: u64,
    errors: u64,
    confirmed_by_product: Vec<i64>,
}

impl Outcomes {
    fn new(products: usize) -> Outcomes {
        Outcomes {
            latencies_ms: Vec::new(),
            confirmed: 0,
            refused: 0,
            gave_up: 0,
            errors: 0,
            confirmed_by_product: vec![0; products],
        }
    }

    fn count(&mut self, outcome: Outcome, product: usize) {
        match outcome {
            Outcome::Confirmed => {
                self.confirmed += 1;
                self.confirmed_by_product[product] += 1;
            }
            Outcome::Refused => self.refused += 1,
            Outcome::GaveUp => self.gave_up += 1,
            Outcome::Error => self.errors += 1,
        }
    }

    fn absorb(&mut self, other: Outcomes) {
        self.latencies_ms.extend(other.latencies_ms);
        self.confirmed += other.confirmed;
        self.refused += other.refused;
        self.gave_up += other.gave_up;
        self.errors += other.errors;
        for (mine, theirs) in self
            .confirmed_by_product
            .iter_mut()
            .zip(other.confirmed_by_product)
        {
            *mine += theirs;
        }
    }
}

/// Places `orders` 1-unit orders, order `i` for product `i % K`, each by its customer;
/// returns (order id, product index, the customer's token) in a shuffled order, so the products' orders interleave as shoppers' do.
async fn place_all(
    client: &reqwest::Client,
    base: &str,
    tag: &str,
    products: &[String],
    orders: usize,
) -> anyhow::Result<Vec<(String, usize, String)>> {
    let mut placed = Vec::with_capacity(orders);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..orders {
        if tasks.len() >= PLACING
            && let Some(joined) = tasks.join_next().await
        {
            placed.push(joined.context("a placing task panicked")??);
        }
        let p = i % products.len();
        let user = format!("s8-{tag}-{}", i % 500);
        let body = json!({
            "userId": user,
            "items": [{"productId": products[p], "quantity": 1}],
        });
        let token = s1_http::customer_token(&user);
        let (client, url) = (client.clone(), format!("{base}/orders"));
        tasks.spawn(async move {
            let v = s1_http::send_ok(
                s1_http::as_customer(client.post(&url), &token).json(&body),
                &format!("POST {url}"),
            )
            .await?;
            let id = v["orderId"]
                .as_str()
                .with_context(|| format!("no orderId in {v}"))?;
            anyhow::Ok((id.to_owned(), p, token))
        });
    }
    while let Some(joined) = tasks.join_next().await {
        placed.push(joined.context("a placing task panicked")??);
    }
    fastrand::Rng::with_seed(8).shuffle(&mut placed);
    Ok(placed)
}

/// `write_command_retries_total` as the write-service's `/metrics` shows it (summed over
/// its labels), or `None` when `/metrics` cannot be read.
async fn retries(client: &reqwest::Client, base: &str) -> Option<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("write_command_retries_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    // A counter never incremented may not be listed yet: zero so far.
    Some(values.iter().sum())
}
