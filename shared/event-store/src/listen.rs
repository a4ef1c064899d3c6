//! Wake-ups for tailers: the write-service NOTIFYs [`EVENTS_CHANNEL`] after each commit.
//! Only a hint (a lost notification costs one poll interval), never the data.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::EVENTS_CHANNEL;

/// Bumps `wake` on every notification until `cancel`; reconnects with back-off when the
/// listening connection is lost, and says so.
pub async fn listen_for_appends(
    options: PgConnectOptions,
    wake: watch::Sender<u64>,
    cancel: CancellationToken,
) {
    let mut delay = Duration::from_millis(200);
    while !cancel.is_cancelled() {
        let listener = async {
            let mut l =
                PgListener::connect_with(&sqlx::PgPool::connect_lazy_with(options.clone())).await?;
            l.listen(EVENTS_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match listener.await {
            Ok(mut l) => loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    n = l.recv() => match n {
                        Ok(_) => { wake.send_modify(|v| *v = v.wrapping_add(1)); delay = Duration::from_millis(200); }
                        Err(e) => { tracing::warn!(error = %e, "notification listener lost"); break; }
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot listen for notifications; polling only"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
