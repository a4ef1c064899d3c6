//! Records how far the event log reaches in the view database, so the read-service can
//! refuse at once a consistency token that no write has returned (a forged one would
//! otherwise hold a request, and a MongoDB poll, for the whole consistency timeout).

use std::time::Duration;

use event_store::EventStore;
use mongodb::bson::{self, doc};
use read_model::{LOG_HEAD, LogHead, POINTERS};
use tokio_util::sync::CancellationToken;

use crate::mongo::ViewStore;

/// How far the log reaches now: its highest global position and PostgreSQL's next
/// transaction id (every event appended later has a `tx_id` at least that high).
pub async fn read(store: &EventStore) -> Result<LogHead, sqlx::Error> {
    let (max_global_position, next_tx_id): (i64, i64) = sqlx::query_as(
        "select coalesce(max(global_position), 0),
                pg_snapshot_xmax(pg_current_snapshot())::text::int8
         from events",
    )
    .fetch_one(store.pool())
    .await?;
    Ok(LogHead {
        max_global_position,
        next_tx_id,
    })
}

pub async fn record(views: &ViewStore, head: LogHead) -> Result<(), mongodb::error::Error> {
    views
        .database()
        .collection::<mongodb::bson::Document>(POINTERS)
        .update_one(
            doc! {"_id": LOG_HEAD},
            doc! {"$set": bson::to_document(&head)?},
        )
        .upsert(true)
        .await?;
    Ok(())
}

/// Every `every`, records the head if it moved. Errors are logged and retried next time:
/// a stale head only makes the read-service wait instead of refusing.
pub async fn keep_recorded(
    store: EventStore,
    views: ViewStore,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut recorded = None;
    loop {
        match read(&store).await {
            Ok(head) if recorded != Some(head) => match record(&views, head).await {
                Ok(()) => recorded = Some(head),
                Err(e) => tracing::warn!(error = %e, "cannot record the log head"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the log head"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
