//! Facts about the machine and servers a report was measured on, and CPU use during a run.

use std::time::Instant;

use mongodb::bson::Bson;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::env::{self, Servers};

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may run on.
    pub cores: usize,
    pub cpu_model: Option<String>,
    pub memory_total_mib: Option<u64>,
    pub kernel: Option<String>,
    /// `release` or `debug`: a debug build's numbers are not comparable.
    pub build: &'static str,
    pub git_commit: Option<String>,
    pub postgres_version: Option<String>,
    /// Settings that change what an append costs.
    pub postgres_settings: Vec<(String, String)>,
    pub mongodb_version: Option<String>,
    /// `buildInfo.process` when the server names itself (nx-27017 says `nx_27017`).
    pub mongodb_process: Option<String>,
    /// Whether the MongoDB server is the local nx-27017 stand-in.
    pub mongodb_is_nx: bool,
    /// Whether the server reports a replica set (the projector then uses transactions).
    pub mongodb_replica_set: bool,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub async fn collect(servers: &Servers) -> Machine {
    let cpu_model = read("/proc/cpuinfo").and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    });
    let memory_total_mib = read("/proc/meminfo").and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib / 1024)
    });
    let git_commit = command_output("git", &["rev-parse", "--short", "HEAD"]).map(|c| {
        let dirty =
            command_output("git", &["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
        if dirty {
            format!("{c} (with uncommitted changes)")
        } else {
            c
        }
    });

    let mut postgres_version = None;
    let mut postgres_settings = Vec::new();
    if let Ok(mut conn) = PgConnection::connect(&servers.database_url).await {
        postgres_version = sqlx::query_scalar::<_, String>("select version()")
            .fetch_one(&mut conn)
            .await
            .ok();
        for name in [
            "fsync",
            "synchronous_commit",
            "shared_buffers",
            "max_connections",
        ] {
            if let Ok(v) =
                sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("show {name}")))
                    .fetch_one(&mut conn)
                    .await
            {
                postgres_settings.push((name.to_owned(), v));
            }
        }
        let _ = conn.close().await;
    }

    let (mut mongodb_version, mut mongodb_process, mut mongodb_replica_set) = (None, None, false);
    if let Ok(client) = servers.mongo_client().await {
        if let Some(info) = env::admin_command(&client, env::build_info()).await {
            mongodb_version = info.get_str("version").ok().map(str::to_owned);
            mongodb_process = match info.get("process") {
                Some(Bson::String(p)) => Some(p.clone()),
                _ => None,
            };
        }
        if let Some(hello) = env::admin_command(&client, mongodb::bson::doc! {"hello": 1}).await {
            mongodb_replica_set =
                hello.contains_key("setName") || hello.get_str("msg").ok() == Some("isdbgrid");
        }
    }
    let mongodb_is_nx = mongodb_process.as_deref().is_some_and(|p| p.contains("nx"));

    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        memory_total_mib,
        kernel: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        git_commit,
        postgres_version,
        postgres_settings,
        mongodb_version,
        mongodb_process,
        mongodb_is_nx,
        mongodb_replica_set,
    }
}

/// CPU time of the whole machine and of this process, to say how busy a run kept the CPUs.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: Instant,
    machine_busy: u64,
    machine_total: u64,
    machine_cpus: usize,
    process: u64,
    postgres: u64,
}

/// What a run used: the machine's CPUs busy (0..=cores) and this process's share.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    /// Busy CPUs of the whole machine on average over the run, e.g. 1.9 of 2.
    pub machine_busy_cores: f64,
    pub machine_cpus: usize,
    /// CPUs this process (load generator and in-process service) used on average.
    pub process_cores: f64,
    /// CPUs all `postgres` processes on this machine used on average (a backend that exits
    /// during the window is missed, so this is a lower bound).
    pub postgres_cores: f64,
}

/// utime + stime in clock ticks of `/proc/<pid>/stat`.
fn ticks_of(stat: &str) -> Option<(&str, u64)> {
    let (head, after) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    // utime and stime are fields 14 and 15, after the parenthesised command name.
    let f: Vec<&str> = after.split_whitespace().collect();
    Some((
        comm,
        f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    ))
}

/// CPU ticks of every process named `postgres`.
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| read(&e.path().join("stat").to_string_lossy()))
        .filter_map(|s| {
            ticks_of(&s)
                .filter(|(c, _)| *c == "postgres")
                .map(|(_, t)| t)
        })
        .sum()
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        command_output("getconf", &["CLK_TCK"])
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(100.0)
    })
}

impl CpuSample {
    pub fn now() -> CpuSample {
        let (mut busy, mut total, mut cpus) = (0, 0, 1);
        if let Some(stat) = read("/proc/stat")
            && let Some(line) = stat.lines().next()
        {
            cpus = stat
                .lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count()
                .max(1);
            // cpu user nice system idle iowait irq softirq steal ...
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            total = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            busy = total.saturating_sub(idle);
        }
        let process = read("/proc/self/stat")
            .and_then(|s| ticks_of(&s).map(|(_, t)| t))
            .unwrap_or(0);
        CpuSample {
            at: Instant::now(),
            machine_busy: busy,
            machine_total: total,
            machine_cpus: cpus,
            process,
            postgres: postgres_ticks(),
        }
    }

    pub fn since(&self, start: &CpuSample) -> CpuUse {
        let ticks = clock_ticks_per_second();
        let seconds = self.at.duration_since(start.at).as_secs_f64().max(1e-9);
        let total = self
            .machine_total
            .saturating_sub(start.machine_total)
            .max(1) as f64;
        let busy = self.machine_busy.saturating_sub(start.machine_busy) as f64;
        CpuUse {
            machine_busy_cores: busy / total * self.machine_cpus as f64,
            machine_cpus: self.machine_cpus,
            process_cores: self.process.saturating_sub(start.process) as f64 / ticks / seconds,
            postgres_cores: self.postgres.saturating_sub(start.postgres) as f64 / ticks / seconds,
        }
    }
}
