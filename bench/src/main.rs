//! `bench [--full] [--tiny] [--out DIR] [--scenario S1]...`: runs the benchmark suite against
//! `DATABASE_URL` and `MONGODB_URI` and writes `DIR/report.md` and `DIR/report.json`.

use std::path::PathBuf;

use bench::env::Servers;
use bench::{Config, Mode};
use clap::Parser;

/// The services' own allocator, since the services measured here run in this process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Measures the order backend (issue 6) and writes a Markdown and JSON report",
    long_about = "Measures the order backend against the PostgreSQL server of DATABASE_URL and \
                  the MongoDB server of MONGODB_URI (run it under scripts/with-services.sh). \
                  Each scenario creates its own databases on them and drops them after."
)]
struct Cli {
    /// The large suite (1M-event rebuild, longer runs).
    #[arg(long, conflicts_with = "tiny")]
    full: bool,
    /// Tiny sizes: the same code paths in seconds (for tests; the numbers mean little).
    #[arg(long)]
    tiny: bool,
    /// Directory for report.md and report.json.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Run only these scenarios (S1, S2, S4, S5, S7); the others are marked "not run".
    #[arg(long = "scenario", value_name = "ID")]
    scenarios: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mode = if cli.full {
        Mode::Full
    } else if cli.tiny {
        Mode::Tiny
    } else {
        Mode::Quick
    };
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|p| {
            PathBuf::from(&p)
                .file_name()
                .map_or(p.clone(), |f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "bench".to_owned());
    // `make bench` names itself, so the report shows the command a reader would type.
    let command = std::env::var("BENCH_COMMAND").unwrap_or_else(|_| {
        std::iter::once(program)
            .chain(args)
            .collect::<Vec<_>>()
            .join(" ")
    });
    let config = Config {
        mode,
        out_dir: cli.out.clone(),
        command,
        servers: Servers::from_env()?,
        only: cli.scenarios,
    };
    let report = tokio::select! {
        report = bench::run(&config) => report?,
        () = interrupted() => {
            eprintln!("bench: interrupted; dropping the scratch databases");
            bench::env::drop_live_scratch().await;
            std::process::exit(130);
        }
    };
    let (md, json) = report.write(&config.out_dir)?;
    println!("{}", report.markdown());
    eprintln!(
        "bench: wrote {} and {} in {:.0} s",
        md.display(),
        json.display(),
        report.wall_seconds
    );
    let failed: Vec<&str> = report
        .scenarios
        .iter()
        .filter(|s| s.status == bench::report::Status::Failed)
        .map(|s| s.id.as_str())
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
