use clap::Parser;
use read_service::{Application, Settings};
use service_kit::shutdown::shutdown_signal;
use service_kit::telemetry;

/// glibc malloc was a quarter of the write-service's CPU in S1's profile (`make bench`).
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
