use clap::{Parser, Subcommand};
use fulfilment::{Application, Settings};
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
    about = "The fulfilment process: charges confirmed orders, cancels and refunds, enforces the payment timeout and emails customers, driven by the event log"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Follow the log and do the work (the default).
    Run,
    /// Print processes by state, the outside work waiting, the oldest due deadline and the lag.
    Status,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_tracing();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let cancel = CancellationToken::new();
            let on_signal = cancel.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                on_signal.cancel();
            });
            tracing::info!(settings = ?cli.settings, "starting");
            let app = Application::build(cli.settings).await?;
            tracing::info!(port = app.port(), "fulfilment health and metrics listening");
            app.run_until(cancel).await?;
        }
        Command::Status => {
            let status = fulfilment::status(&cli.settings).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
    }
    Ok(())
}
