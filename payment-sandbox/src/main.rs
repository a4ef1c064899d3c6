//! `payment-sandbox`: runs the sandbox of Stripe's test mode (see the library's docs) on one
//! address until Ctrl-C or SIGTERM. For local runs and tests only; it is not a payment provider.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use service_kit::shutdown::shutdown_signal;
use service_kit::telemetry;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A SANDBOX of Stripe's test mode (PaymentIntents, refunds, search, idempotency keys) for local runs and tests; in memory. Not a payment provider."
)]
struct Cli {
    /// Where to listen.
    #[arg(long, env = "PAYMENT_SANDBOX_ADDR", default_value = "127.0.0.1:12111")]
    addr: SocketAddr,
}

/// How long a shutdown waits for requests still being answered. Requests held in `hang`
/// mode never finish by design, so the server cannot wait for all of them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_tracing();
    let listener = tokio::net::TcpListener::bind(cli.addr)
        .await
        .map_err(|e| anyhow::anyhow!("bind {}: {e}", cli.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "payment-sandbox (Stripe test-mode sandbox) listening");
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let server =
        axum::serve(listener, payment_sandbox::router()).with_graceful_shutdown(async move {
            shutdown_signal().await;
            let _ = stopping_tx.send(true);
        });
    let mut stopping = stopping_rx;
    tokio::select! {
        result = server => result?,
        () = async {
            let _ = stopping.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::info!("stopped with requests still held (hang mode)"),
    }
    Ok(())
}
