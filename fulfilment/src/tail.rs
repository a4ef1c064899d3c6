//! Follows the event log from the process's checkpoint, the way the projector does: the
//! committed prefix in `(tx_id, global_position)` order, so no late commit is skipped.
//! Each event that concerns an order's process is one step (its reaction, the inbox and the
//! checkpoint in one transaction); runs of other events only move the checkpoint.

use std::sync::Arc;
use std::time::Duration;

use domain::Position;
use domain::events::{DomainEvent, OrderEvent};
use event_store::EventStore;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::steps::{StepError, Steps};
use crate::store;

pub struct Tail {
    pub pool: PgPool,
    pub store: EventStore,
    pub steps: Steps,
    pub batch_size: i64,
    pub poll_interval: Duration,
    /// Bumped by NOTIFYs from writers.
    pub wake: watch::Receiver<u64>,
    /// Notified by the process's own appends.
    pub appended: Arc<Notify>,
    pub work_queued: Arc<Notify>,
}

/// The event types a process reacts to, by stored name.
const CONCERNED: &[&str] = &[
    "OrderConfirmed",
    "OrderCancelled",
    "OrderShipped",
    "OrderDelivered",
    "PaymentCaptured",
    "PaymentRefunded",
];

/// The events a process reacts to.
fn concerns_a_process(e: &DomainEvent) -> bool {
    matches!(
        e,
        DomainEvent::Order(
            OrderEvent::OrderConfirmed(_)
                | OrderEvent::OrderCancelled(_)
                | OrderEvent::OrderShipped(_)
                | OrderEvent::OrderDelivered
                | OrderEvent::PaymentCaptured(_)
                | OrderEvent::PaymentRefunded(_)
        )
    )
}

impl Tail {
    /// Runs until `cancel`; on an error it reports, backs off and resumes from the
    /// checkpoint, so nothing is lost or done twice.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        while !cancel.is_cancelled() {
            match self.catch_up(&cancel).await {
                Ok(()) => delay = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, ?delay, "following the log failed; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = self.wake.changed() => {}
                () = self.appended.notified() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Reads and handles batches until the committed log is exhausted.
    async fn catch_up(&mut self, cancel: &CancellationToken) -> Result<(), StepError> {
        let mut at = store::checkpoint(&self.pool).await?;
        loop {
            let rows = self.store.read_committed_after(at, self.batch_size).await?;
            let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= self.batch_size;
            let mut skipped: Option<Position> = None;
            for row in rows {
                if cancel.is_cancelled() {
                    break;
                }
                match row {
                    Ok(e) if concerns_a_process(&e.event) => {
                        if let Some(to) = skipped.take() {
                            self.steps.skip(&self.pool, at, to).await?;
                            at = to;
                        }
                        if self.steps.follow(&self.pool, at, &e).await? {
                            self.work_queued.notify_one();
                        }
                        at = e.position;
                    }
                    Ok(e) => skipped = Some(e.position),
                    Err(unreadable) if CONCERNED.contains(&unreadable.event_type.as_str()) => {
                        // Passing over it could strand an order: stop here, and say why.
                        return Err(StepError::Corrupt(format!(
                            "event at {} ({} v{}) is unreadable: {}",
                            unreadable.position,
                            unreadable.event_type,
                            unreadable.schema_version,
                            unreadable.error
                        )));
                    }
                    Err(unreadable) => {
                        // A type this process never reacts to: it cannot concern an order.
                        tracing::error!(
                            position = %unreadable.position,
                            event_type = unreadable.event_type,
                            error = unreadable.error,
                            "an event the process cannot read; passing over it"
                        );
                        metrics::counter!("fulfilment_unreadable_events_total").increment(1);
                        skipped = Some(unreadable.position);
                    }
                }
            }
            if let Some(to) = skipped {
                self.steps.skip(&self.pool, at, to).await?;
                at = to;
            }
            let (lag, _) = self.store.lag_after(at).await?;
            metrics::gauge!("fulfilment_lag_events").set(lag as f64);
            if !full || cancel.is_cancelled() {
                return Ok(());
            }
        }
    }
}
