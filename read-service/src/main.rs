use clap::Parser;
use read_service::{Application, Settings};
use service_kit::shutdown::shutdown_signal;
use service_kit::telemetry;

/// In a perf profile of S1 (`make bench`), glibc malloc and free were about a quarter of the
/// process running the write-service and its load generator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Order query service: answers reads from the MongoDB views"
)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_tracing();
    tracing::info!(settings = ?cli.settings, "starting");
    let app = Application::build(cli.settings).await?;
    tracing::info!(port = app.port(), "read-service listening");
    app.run_until(shutdown_signal()).await?;
    Ok(())
}
