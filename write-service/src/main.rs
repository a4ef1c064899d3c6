use clap::{Parser, Subcommand};
use service_kit::shutdown::shutdown_signal;
use service_kit::telemetry;
use write_service::{Application, Settings, migrate};

#[derive(Parser)]
#[command(
    version,
    about = "Order command service: validates commands and appends events to PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_tracing();
    tracing::info!(settings = ?cli.settings, "starting");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            let pool = cli.settings.pool()?;
            migrate(&pool, std::time::Duration::from_secs(30)).await?;
            tracing::info!("migrations applied");
        }
        Command::Serve => {
            let app = Application::build(cli.settings).await?;
            tracing::info!(port = app.port(), "write-service listening");
            app.run_until(shutdown_signal()).await?;
        }
    }
    Ok(())
}
