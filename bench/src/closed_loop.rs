//! A closed-loop run: N client loops, each sending its next request when the last one
//! answered, a warm-up, then a measured window over which the CPUs are sampled. S1's HTTP
//! clients and the floor's database clients are both driven by it.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::machine::{CpuSample, CpuUse};
use crate::statements::{Profile, Profiler};

/// What completed inside the measured window.
pub struct RunResult {
    /// Successes completed inside the window.
    pub commands: u64,
    pub commands_per_second: f64,
    pub latencies_ms: Vec<f64>,
    pub errors: u64,
    pub cpu: CpuUse,
    /// What PostgreSQL ran over the window, statement by statement, when profiled.
    pub statements: Option<Profile>,
}

/// When one run starts, and its measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub from: Instant,
    pub to: Instant,
}

impl Window {
    /// Whether a request that finished at `done` counts.
    pub fn counts(&self, done: Instant) -> bool {
        done >= self.from && done <= self.to
    }

    /// Whether a client should send another request.
    pub fn open(&self) -> bool {
        Instant::now() < self.to
    }
}

/// One client's tally over the window: successes, failures, and each success's latency.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u64,
    pub errors: u64,
    pub latencies_ms: Vec<f64>,
}

impl Tally {
    /// Counts one request that started at `t` and ended now, if it ended in the window.
    pub fn record(&mut self, window: &Window, t: Instant, ok: bool) {
        let done = Instant::now();
        if !window.counts(done) {
            return;
        }
        if ok {
            self.ok += 1;
            self.latencies_ms.push((done - t).as_secs_f64() * 1000.0);
        } else {
            self.errors += 1;
        }
    }
}

/// Runs `level` clients (`client(i, window)`, each looping until the window closes) through
/// a warm-up and a measured window of `duration`; with a `profiler`, what PostgreSQL ran
/// over the window too.
pub async fn run<F, Fut>(
    level: usize,
    warmup: Duration,
    duration: Duration,
    profiler: Option<&Profiler>,
    client: F,
) -> anyhow::Result<RunResult>
where
    F: Fn(usize, Window) -> Fut,
    Fut: Future<Output = anyhow::Result<Tally>> + Send + 'static,
{
    let start = Instant::now() + Duration::from_millis(20);
    let window = Window {
        start,
        from: start + warmup,
        to: start + warmup + duration,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..level {
        tasks.spawn(client(i, window));
    }
    tokio::time::sleep_until(window.from).await;
    let statements_start = Profiler::start_window(profiler).await?;
    let cpu_start = CpuSample::now();
    tokio::time::sleep_until(window.to).await;
    let cpu = CpuSample::now().since(&cpu_start);
    let statements = Profiler::end_window(profiler, statements_start).await?;
    let mut total = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        let t = joined.context("a client task panicked")??;
        total.ok += t.ok;
        total.errors += t.errors;
        total.latencies_ms.extend(t.latencies_ms);
    }
    Ok(RunResult {
        commands: total.ok,
        commands_per_second: total.ok as f64 / duration.as_secs_f64(),
        latencies_ms: total.latencies_ms,
        errors: total.errors,
        cpu,
        statements,
    })
}
