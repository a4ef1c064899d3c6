//! S10: the live dashboard (issue 15). The real write-service and projector in this process
//! (as S3), and the real read-service in a runtime of its own whose threads are named
//! `read-service`, so its CPU time can be told apart from the load generator's
//! (`/proc/self/task/*/stat`). It measures:
//!
//! 1. The read-service's CPU with many idle `/dashboard/stream` clients: connected, each
//!    with its first snapshot, while nothing is written.
//! 2. With fewer clients and orders placed at a fixed rate: the read-service's CPU, and the
//!    event-to-browser latency, from the write's 200 reply (just after its commit) to the
//!    first frame whose id (the log position it reflects) covers the write, at every client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use domain::Position;
use test_support::sse::SseStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::report::{Scenario, num};
use crate::s1_http::{self, Service};
use crate::{Ctx, Mode, stats};

/// The name of the read-service's runtime threads (at most 15 bytes: Linux's `comm`).
const THREAD: &str = "read-service";
/// Orders per second while the active clients watch.
const RATE: f64 = 20.0;

struct Sizes {
    idle_clients: usize,
    active_clients: usize,
    window: Duration,
}

fn sizes(mode: Mode) -> Sizes {
    match mode {
        Mode::Tiny => Sizes {
            idle_clients: 20,
            active_clients: 5,
            window: Duration::from_secs(1),
        },
        Mode::Quick | Mode::Full => Sizes {
            idle_clients: 1_000,
            active_clients: 100,
            window: Duration::from_secs(10),
        },
    }
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Scenario> {
    ctx.in_scratch("s10", async |scratch| {
        let sizes = sizes(ctx.mode);
        let mut s = Scenario::new(
            "S10",
            "Live dashboard",
            "The write-service and the projector run in this process as in S3; the read-service \
             runs in a tokio runtime of its own (2 worker threads named read-service), so its \
             CPU is the sum of those threads' utime and stime. Clients read \
             /dashboard/stream with a staff token over their own HTTP/1.1 connections.",
        );
        s.param("idle clients", sizes.idle_clients as u64);
        s.param("active clients", sizes.active_clients as u64);
        s.param(
            "orders placed while active",
            format!("{} /s, open loop", num(RATE)),
        );
        s.param("measured window", format!("{} s", sizes.window.as_secs()));

        let write = Service::start(scratch).await?;
        let client = s1_http::client()?;
        let shop = write.open_shop(&client, s1_http::AMPLE_STOCK).await;
        let projector_cancel = CancellationToken::new();
        let projector = projector::Application::build(crate::projection::live_settings(
            scratch,
            &ctx.servers.mongodb_uri,
        ))
        .await;
        let read = ReadService::start(ctx, scratch).await;
        let result = match (shop, projector, read) {
            (Ok(()), Ok(projector), Ok(read)) => {
                let running = tokio::spawn(projector.run_until(projector_cancel.clone()));
                let measured = measure(&mut s, &sizes, &write, &read).await;
                projector_cancel.cancel();
                let _ = running.await;
                read.stop();
                measured
            }
            (shop, projector, read) => {
                if let Ok(read) = read {
                    read.stop();
                }
                shop.and(projector.map(|_| ()))
                    .context("starting S10's services")
            }
        };
        write.stop().await;
        result.map(|()| s)
    })
    .await
}

/// The read-service on a runtime of its own.
struct ReadService {
    url: String,
    cancel: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl ReadService {
    async fn start(ctx: &Ctx, scratch: &crate::env::Scratch) -> anyhow::Result<ReadService> {
        let settings = read_service::Settings {
            auth: test_support::auth::settings(),
            ..read_service::Settings::new(ctx.servers.mongodb_uri.clone(), scratch.mongo.name())
        };
        let cancel = CancellationToken::new();
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        let stop = cancel.clone();
        let thread = std::thread::Builder::new()
            .name(THREAD.to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(THREAD)
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = port_tx.send(Err(anyhow::anyhow!(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match read_service::Application::build(settings).await {
                        Ok(app) => {
                            let _ = port_tx.send(Ok(app.port()));
                            let _ = app.run_until(stop.cancelled_owned()).await;
                        }
                        Err(e) => {
                            let _ = port_tx.send(Err(e));
                        }
                    }
                });
            })?;
        let port = port_rx
            .await
            .context("the read-service's thread ended before it bound")??;
        Ok(ReadService {
            url: format!("http://127.0.0.1:{port}"),
            cancel,
            thread,
        })
    }

    fn stop(self) {
        self.cancel.cancel();
        let _ = self.thread.join();
    }
}

/// CPU seconds the read-service's threads have used so far.
fn read_service_cpu() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ticks: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| {
            let (head, after) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            if !comm.starts_with(THREAD) {
                return None;
            }
            // utime and stime are fields 14 and 15, after the parenthesised command name.
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum();
    // CLK_TCK is 100 on Linux for every architecture this runs on.
    ticks as f64 / 100.0
}

/// The log position a frame id reflects (`<position>` or `<position>.<counter>`).
fn frame_position(id: &str) -> Option<Position> {
    id.split('.').next()?.parse().ok()
}

/// One client: connects, then records when each frame arrives and what it reflects.
struct Watcher {
    frames: Arc<Mutex<Vec<(Instant, Position)>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn watch(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    stop: CancellationToken,
) -> anyhow::Result<Watcher> {
    let mut stream = SseStream::connect_with(http, url, Some(token), None).await?;
    let first = stream
        .next_event(Duration::from_secs(30))
        .await?
        .context("the stream ended before its snapshot")?;
    anyhow::ensure!(
        first.event.as_deref() == Some("snapshot"),
        "the first frame is {:?}, not a snapshot",
        first.event
    );
    let frames = Arc::new(Mutex::new(Vec::new()));
    let seen = frames.clone();
    let task = tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = stream.next_event(Duration::from_secs(60)) => next,
            };
            let Ok(Some(frame)) = next else { return };
            let at = Instant::now();
            if let Some(p) = frame.id.as_deref().and_then(frame_position)
                && let Ok(mut f) = seen.lock()
            {
                f.push((at, p));
            }
        }
    });
    Ok(Watcher { frames, task })
}

async fn connect_all(
    n: usize,
    http: &reqwest::Client,
    url: &str,
    token: &str,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<Watcher>> {
    // One after the other: a thousand simultaneous handshakes would measure the accept
    // queue, not the stream.
    let mut watchers = Vec::with_capacity(n);
    for _ in 0..n {
        watchers.push(watch(http, url, token, stop.clone()).await?);
    }
    Ok(watchers)
}

async fn measure(
    s: &mut Scenario,
    sizes: &Sizes,
    write: &Service,
    read: &ReadService,
) -> anyhow::Result<()> {
    let url = format!("{}/dashboard/stream", read.url);
    let token = test_support::auth::staff();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;

    // 1. Idle clients.
    let stop_idle = CancellationToken::new();
    let idle = connect_all(sizes.idle_clients, &http, &url, &token, &stop_idle).await?;
    let cpu = read_service_cpu();
    let t = Instant::now();
    tokio::time::sleep(sizes.window).await;
    let idle_cores = (read_service_cpu() - cpu) / t.elapsed().as_secs_f64();
    stop_idle.cancel();
    for w in idle {
        let _ = w.task.await;
    }
    s.value(
        &format!("read-service CPU, {} idle clients", sizes.idle_clients),
        "% of a core",
        idle_cores * 100.0,
    )
    .note("nothing written: keep-alives only");

    // 2. Active clients while orders are placed.
    let stop_active = CancellationToken::new();
    let active = connect_all(sizes.active_clients, &http, &url, &token, &stop_active).await?;
    let orders = s1_http::client()?;
    let mut rng = fastrand::Rng::with_seed(10);
    let mut replies: Vec<(Instant, Position)> = Vec::new();
    let cpu = read_service_cpu();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / RATE));
    let mut writes = tokio::task::JoinSet::new();
    while started.elapsed() < sizes.window {
        ticker.tick().await;
        let user = format!("u{}", rng.u32(0..1_000));
        let body = s1_http::order_body(&mut rng, &user);
        let request = s1_http::as_customer(
            orders.post(format!("{}/orders", write.base)).json(&body),
            &s1_http::customer_token(&user),
        );
        writes.spawn(async move {
            let answer = s1_http::send_ok(request, "placing an order").await?;
            let replied = Instant::now();
            let position: Position = answer["position"]
                .as_str()
                .and_then(|p| p.parse().ok())
                .context("no position in the answer")?;
            Ok::<_, anyhow::Error>((replied, position))
        });
    }
    while let Some(done) = writes.join_next().await {
        replies.push(done??);
    }
    let active_cores = (read_service_cpu() - cpu) / started.elapsed().as_secs_f64();
    // Every client must see the last write before the latencies are read.
    let last = replies
        .iter()
        .map(|r| r.1)
        .max()
        .context("no order placed")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = active.iter().all(|w| {
            w.frames
                .lock()
                .is_ok_and(|f| f.last().is_some_and(|(_, p)| *p >= last))
        });
        if all {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "a client did not see the last order within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_active.cancel();
    let mut latencies = Vec::new();
    let mut frames = 0usize;
    for w in active {
        let _ = w.task.await;
        let seen = w.frames.lock().map(|f| f.clone()).unwrap_or_default();
        frames += seen.iter().filter(|(at, _)| *at >= started).count();
        for (replied, position) in &replies {
            if let Some((at, _)) = seen.iter().find(|(_, p)| p >= position) {
                latencies.push(at.saturating_duration_since(*replied).as_secs_f64() * 1000.0);
            }
        }
    }
    let window = started.elapsed().as_secs_f64();
    s.value(
        &format!(
            "read-service CPU, {} clients, {} orders/s",
            sizes.active_clients,
            num(RATE)
        ),
        "% of a core",
        active_cores * 100.0,
    );
    s.value(
        "frames per client per second",
        "/s",
        frames as f64 / sizes.active_clients as f64 / window,
    )
    .note(
        "from the first order until every client saw the last; the hub polls at most every 250 ms",
    );
    s.value(
        "event to browser, p50",
        "ms",
        stats::percentile(&mut latencies, 50.0),
    )
    .note("from the write's 200 to the first frame covering it, every client");
    s.value(
        "event to browser, p99",
        "ms",
        stats::percentile(&mut latencies, 99.0),
    );
    s.value(
        "event to browser, max",
        "ms",
        stats::percentile(&mut latencies, 100.0),
    );
    s.param("latency samples", latencies.len() as u64);
    Ok(())
}
