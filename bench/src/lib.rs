//! The benchmark harness of issue 6.
//!
//! `run` measures each scenario against the servers named by `DATABASE_URL` and
//! `MONGODB_URI`, each in its own fresh PostgreSQL and MongoDB databases (dropped after),
//! and returns a `Report` that `Report::write` renders as Markdown and JSON. The `bench`
//! binary is a thin command line around it; `tests/tiny.rs` runs it in tiny mode.

pub mod closed_loop;
pub mod env;
pub mod floor;
pub mod growth;
pub mod machine;
pub mod naive;
pub mod peer;
pub mod projection;
pub mod queries;
pub mod report;
pub mod s10_dashboard;
pub mod s14_query_growth;
pub mod s1_http;
pub mod s2_append;
pub mod s3_lag;
pub mod s4_rebuild;
pub mod s5_hot_keys;
pub mod s6_queries;
pub mod s7_replay;
pub mod s8_checkout;
pub mod s9_fulfilment;
pub mod statements;
pub mod stats;
pub mod wire;
pub mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::env::{Scratch, Servers};
use crate::machine::Machine;
use crate::report::{Report, Scenario, Status};

/// How big a suite to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Seconds: the same code paths with tiny sizes, so the harness cannot rot.
    Tiny,
    /// A few minutes on two cores: `make bench`.
    Quick,
    /// The large suite: `make bench FULL=1`.
    Full,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tiny => "tiny",
            Mode::Quick => "quick",
            Mode::Full => "full",
        }
    }

    pub fn sizes(self) -> Sizes {
        match self {
            Mode::Tiny => Sizes {
                runs: 1,
                s1_levels: vec![1, 16, 64],
                s1_warmup: Duration::from_millis(200),
                s1_duration: Duration::from_millis(500),
                s2_single_events: 50,
                s2_batched_events: 500,
                s3_duration: Duration::from_secs(2),
                s4_events: 2_000,
                s4_window: 50,
                s4_runs: 1,
                s4_naive_events: 300,
                s5_events: 1_000,
                s6_orders: 1_000,
                s6_rates: vec![20],
                s6_duration: Duration::from_millis(500),
                s7_stream_events: 10_000,
                s7_repeats: 3,
                s11_stored_events: 20_000,
                s12_lengths: vec![100, 1_000, 10_000],
                s13_logs: vec![500, 2_000],
                s8_clients: vec![64],
                s8_products: vec![1, 10],
                s8_orders: 200,
                s9_rate: 10,
                s9_warmup: Duration::from_millis(300),
                s9_duration: Duration::from_millis(1_500),
                s9_backlog: 50,
            },
            Mode::Quick => Sizes {
                runs: 3,
                s1_levels: vec![1, 16, 64],
                s1_warmup: Duration::from_millis(500),
                s1_duration: Duration::from_secs(3),
                s2_single_events: 2_000,
                s2_batched_events: 50_000,
                s3_duration: Duration::from_secs(10),
                s4_events: 100_000,
                s4_window: 1_000,
                // One 100k-event rebuild takes minutes on nx-27017; its round trips are
                // the same every run.
                s4_runs: 1,
                s4_naive_events: 2_000,
                s5_events: 10_000,
                s6_orders: 100_000,
                s6_rates: vec![20, 100],
                s6_duration: Duration::from_secs(3),
                s7_stream_events: 10_000,
                s7_repeats: 100,
                s11_stored_events: 1_000_000,
                s12_lengths: vec![100, 1_000, 10_000],
                s13_logs: vec![10_000, 100_000],
                s8_clients: vec![64],
                s8_products: vec![1, 10],
                s8_orders: 2_000,
                s9_rate: 20,
                s9_warmup: Duration::from_secs(2),
                s9_duration: Duration::from_secs(20),
                s9_backlog: 2_000,
            },
            Mode::Full => Sizes {
                runs: 5,
                s1_levels: vec![1, 16, 64],
                s1_warmup: Duration::from_secs(2),
                s1_duration: Duration::from_secs(10),
                s2_single_events: 10_000,
                s2_batched_events: 500_000,
                s3_duration: Duration::from_secs(30),
                s4_events: 1_000_000,
                s4_window: 5_000,
                s4_runs: 3,
                s4_naive_events: 20_000,
                s5_events: 100_000,
                s6_orders: 100_000,
                s6_rates: vec![20, 100, 200],
                s6_duration: Duration::from_secs(10),
                s7_stream_events: 10_000,
                s7_repeats: 200,
                s11_stored_events: 1_000_000,
                s12_lengths: vec![100, 1_000, 10_000],
                s13_logs: vec![10_000, 100_000],
                s8_clients: vec![64, 200],
                s8_products: vec![1, 10],
                s8_orders: 10_000,
                s9_rate: 20,
                s9_warmup: Duration::from_secs(5),
                s9_duration: Duration::from_secs(60),
                s9_backlog: 10_000,
            },
        }
    }
}

/// Every size a mode sets; all of them are printed in the report.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Repetitions of each measurement; figures are the median with min and max.
    pub runs: usize,
    pub s1_levels: Vec<usize>,
    pub s1_warmup: Duration,
    pub s1_duration: Duration,
    pub s2_single_events: usize,
    pub s2_batched_events: usize,
    /// Measured window of the live-lag run (after a warm-up of `s1_warmup`).
    pub s3_duration: Duration,
    pub s4_events: usize,
    /// Orders in flight at once while the log is generated: how interleaved it is.
    pub s4_window: usize,
    /// Rebuilds of the whole log (the naive projector runs `runs` times on its part).
    pub s4_runs: usize,
    pub s4_naive_events: usize,
    pub s5_events: usize,
    /// Orders in the views while the read-service is queried.
    pub s6_orders: usize,
    /// Fixed request rates (requests/s) each endpoint is driven at.
    pub s6_rates: Vec<u32>,
    /// Measured window per endpoint and rate.
    pub s6_duration: Duration,
    pub s7_stream_events: usize,
    pub s7_repeats: usize,
    /// Events of other orders' history stored before S11's second measurement.
    pub s11_stored_events: usize,
    /// Stream lengths S12 replays.
    pub s12_lengths: Vec<usize>,
    /// Log lengths S13 rebuilds.
    pub s13_logs: Vec<usize>,
    /// Clients confirming at once (N) and hot products (K) of the checkout scenario.
    pub s8_clients: Vec<usize>,
    pub s8_products: Vec<usize>,
    /// 1-unit orders confirmed per run; the products receive half as many units.
    pub s8_orders: usize,
    /// Checkouts per second offered while confirm-to-paid latency is measured.
    pub s9_rate: u32,
    pub s9_warmup: Duration,
    pub s9_duration: Duration,
    /// Confirmed orders committed while the fulfilment process is stopped, then drained.
    pub s9_backlog: usize,
}

pub struct Config {
    pub mode: Mode,
    pub out_dir: PathBuf,
    /// The command line that produced the report, as printed in it.
    pub command: String,
    pub servers: Servers,
    /// Scenario ids to run (`S1`...); all when empty.
    pub only: Vec<String>,
}

/// What every scenario gets.
pub struct Ctx {
    pub mode: Mode,
    pub sizes: Sizes,
    pub servers: Servers,
    pub machine: Machine,
    /// S1's best median commands/s in this run, for S3's load.
    pub s1_peak: std::sync::Mutex<Option<f64>>,
    /// S14, as S6 measured it.
    pub s14: std::sync::Mutex<Option<Scenario>>,
}

impl Ctx {
    pub fn s1_peak(&self) -> Option<f64> {
        self.s1_peak.lock().ok().and_then(|p| *p)
    }

    pub fn set_s1_peak(&self, peak: f64) {
        if let Ok(mut p) = self.s1_peak.lock() {
            *p = Some(peak);
        }
    }

    /// Runs `f` on a fresh pair of databases for scenario `id`, dropping them after.
    pub async fn in_scratch(
        &self,
        id: &str,
        f: impl AsyncFnOnce(&Scratch) -> anyhow::Result<Scenario>,
    ) -> anyhow::Result<Scenario> {
        let scratch = Scratch::create(&self.servers, id).await?;
        let result = f(&scratch).await;
        let dropped = scratch.drop().await;
        let mut s = result?;
        if let Err(e) = dropped {
            s.notes
                .push(format!("dropping the scratch databases failed: {e}"));
        }
        Ok(s)
    }
}

pub const SCENARIOS: [(&str, &str); 14] = [
    ("S1", "Commands over HTTP"),
    ("S2", "Raw append"),
    ("S3", "Live projection lag"),
    ("S4", "Rebuild from scratch, coalesced vs naive"),
    ("S5", "Hot keys"),
    ("S6", "Queries"),
    ("S7", "Replaying a 10,000-event stream"),
    ("S8", "Checkout contention"),
    ("S9", "Fulfilment"),
    ("S10", "Live dashboard"),
    ("S11", "How cost grows: commands"),
    ("S12", "How cost grows: replays"),
    ("S13", "How cost grows: rebuilds"),
    ("S14", "How cost grows: queries"),
];

/// Runs the suite and returns the report (not yet written).
pub async fn run(config: &Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let machine = machine::collect(&config.servers).await;
    let ctx = Ctx {
        mode: config.mode,
        sizes: config.mode.sizes(),
        servers: config.servers.clone(),
        machine: machine.clone(),
        s1_peak: std::sync::Mutex::new(None),
        s14: std::sync::Mutex::new(None),
    };
    let mut scenarios = Vec::new();
    // S6 runs last: it folds a million events into views in this process's memory, and after
    // it S7's in-memory fold measured 1.3-1.5 ms against 0.84-0.95 ms alone (heap it left).
    // S14 is what S6 measured at two sizes, so it comes after it.
    let mut order = SCENARIOS;
    order.sort_by_key(|(id, _)| match *id {
        "S6" => 1,
        "S14" => 2,
        _ => 0,
    });
    for (id, title) in order {
        let wanted =
            config.only.is_empty() || config.only.iter().any(|o| o.eq_ignore_ascii_case(id));
        if !wanted {
            let mut s = Scenario::new(id, title, "");
            s.status = Status::NotRun;
            scenarios.push(s);
            continue;
        }
        eprintln!("bench: {id} {title} ...");
        let t = Instant::now();
        let result = match id {
            "S1" => s1_http::run(&ctx).await,
            "S2" => s2_append::run(&ctx).await,
            "S3" => s3_lag::run(&ctx).await,
            "S4" => s4_rebuild::run(&ctx).await,
            "S5" => s5_hot_keys::run(&ctx).await,
            "S6" => s6_queries::run(&ctx).await,
            "S7" => s7_replay::run(&ctx).await,
            "S8" => s8_checkout::run(&ctx).await,
            "S9" => s9_fulfilment::run(&ctx).await,
            "S10" => s10_dashboard::run(&ctx).await,
            "S11" => growth::commands(&ctx).await,
            "S12" => growth::replays(&ctx).await,
            "S13" => growth::rebuilds(&ctx).await,
            // Measured by S6, which fills the views anyway.
            _ => s6_queries::growth(&ctx),
        };
        let mut s = result.unwrap_or_else(|e| {
            let mut s = Scenario::new(id, title, "");
            s.status = Status::Failed;
            s.error = Some(format!("{e:#}"));
            s
        });
        s.wall_seconds = t.elapsed().as_secs_f64();
        eprintln!(
            "bench: {id} {} in {:.1} s",
            match s.status {
                Status::Failed => "FAILED",
                _ => "done",
            },
            s.wall_seconds
        );
        scenarios.push(s);
    }
    scenarios.sort_by_key(|s| SCENARIOS.iter().position(|(id, _)| *id == s.id));
    Ok(Report {
        command: config.command.clone(),
        mode: config.mode.name().to_owned(),
        started_at,
        wall_seconds: started.elapsed().as_secs_f64(),
        machine,
        scenarios,
    })
}
