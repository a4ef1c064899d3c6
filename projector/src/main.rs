use clap::{Parser, Subcommand};
use projector::projections::View;
use projector::{Application, Projector, Settings, for_view, rebuild, status};
use service_kit::shutdown::shutdown_signal;
use service_kit::telemetry;
use tokio_util::sync::CancellationToken;

/// In a perf profile of S1 (`make bench`), glibc malloc and free were about a quarter of the
/// process running the write-service and its load generator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Tails the event log into the MongoDB views; rebuilds them without downtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Keep every projection current (the default).
    Run,
    /// Build new generations from position zero, then switch readers to them.
    Rebuild {
        /// Projection to rebuild (repeatable); all when omitted.
        #[arg(long = "projection", value_parser = clap::builder::PossibleValuesParser::new(View::ALL.iter().map(|v| v.name())))]
        projections: Vec<String>,
        /// Drop the previous generation once the new one serves.
        #[arg(long)]
        drop_old: bool,
    },
    /// Print each projection's checkpoint, the head, and the lag.
    Status,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_tracing();
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            tracing::info!(settings = ?cli.settings, "starting");
            let app = Application::build(cli.settings).await?;
            tracing::info!(port = app.port(), "projector health and metrics listening");
            app.run_until(cancel).await?;
        }
        Command::Rebuild {
            projections,
            drop_old,
        } => {
            let projector = Projector::connect(&cli.settings).await?;
            let views: Vec<View> = if projections.is_empty() {
                View::ALL.to_vec()
            } else {
                projections
                    .iter()
                    .map(|name| name.parse())
                    .collect::<Result<_, _>>()?
            };
            for view in views {
                let report = for_view!(view, rebuild::rebuild(&projector, drop_old, &cancel))?;
                println!(
                    "{}: generation {} -> {} ({} events in {:.1}s)",
                    report.projection,
                    report.previous,
                    report.generation,
                    report.events,
                    report.elapsed.as_secs_f64()
                );
            }
        }
        Command::Status => {
            let projector = Projector::connect(&cli.settings).await?;
            status::print(&status::standings(&projector).await?);
        }
    }
    Ok(())
}
