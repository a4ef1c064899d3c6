//! The dispatcher: does the outbox's outside work (charges, refunds, emails) at least once,
//! each piece with the idempotency key or `Message-ID` the other side de-duplicates on, and
//! records each outcome through a step. Pieces run side by side (bounded), each with its
//! own back-off, so one that hangs or keeps failing never holds up the others.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use domain::OrderId;
use domain::order::OrderStatus;
use event_store::OrderAggregate;

use crate::mailer::Mailer;
use crate::provider::{ChargeOutcome, Failure, Provider, RefundOutcome};
use crate::steps::{self, StepError, Steps};
use crate::store::{self, State, Work, WorkKind};

/// Pieces of work in flight at once.
const CONCURRENCY: usize = 16;

#[derive(Clone)]
pub struct Dispatcher {
    pub pool: PgPool,
    pub steps: Steps,
    pub provider: Provider,
    pub mailer: Mailer,
    pub poll_interval: Duration,
    pub max_retry_delay: Duration,
    /// Woken when a step queued work, or appended events the tail should see.
    pub work_queued: Arc<Notify>,
    pub appended: Arc<Notify>,
}

impl Dispatcher {
    pub async fn run(self, cancel: CancellationToken) {
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        // The leader is the only dispatcher; this keeps one attempt per piece in flight.
        let in_flight: Arc<Mutex<HashSet<uuid::Uuid>>> = Arc::default();
        while !cancel.is_cancelled() {
            match store::due_work(&self.pool, 64).await {
                Ok(due) => {
                    for w in due {
                        let fresh = in_flight
                            .lock()
                            .is_ok_and(|mut running| running.insert(w.id));
                        if !fresh {
                            continue;
                        }
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            return;
                        };
                        let (me, in_flight) = (self.clone(), in_flight.clone());
                        tokio::spawn(async move {
                            let id = w.id;
                            me.attempt(w).await;
                            if let Ok(mut running) = in_flight.lock() {
                                running.remove(&id);
                            }
                            drop(permit);
                            me.work_queued.notify_one();
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the outbox; retrying"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.work_queued.notified() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// One attempt at one piece of work; its outcome is recorded, or the piece is
    /// rescheduled. Never panics, never gives up silently.
    async fn attempt(&self, w: Work) {
        // Whether an earlier attempt may have taken effect (the mark is set below).
        let earlier_unknown = w.outcome_unknown;
        let w = match store::begin_attempt(&self.pool, &w).await {
            Ok(Some(w)) => w,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(work = %w.id, error = %e, "cannot start an attempt; the next poll retries");
                return;
            }
        };
        let result = match w.kind {
            WorkKind::Charge => self.charge(&w, earlier_unknown).await,
            WorkKind::Refund => self.refund(&w).await,
            WorkKind::Email => self.email(&w).await,
        };
        match result {
            Ok(Some(failure)) => {
                metrics::counter!("fulfilment_work_retries_total", "kind" => kind(&w)).increment(1);
                let delay = self.delay(w.attempts);
                tracing::info!(work = %w.id, kind = kind(&w), attempts = w.attempts, ?delay, error = %failure.message, "will try again");
                if let Err(e) = store::retry_later(
                    &self.pool,
                    &w,
                    delay,
                    earlier_unknown || failure.outcome_unknown,
                    &failure.message,
                )
                .await
                {
                    tracing::warn!(work = %w.id, error = %e, "cannot reschedule; the next poll retries");
                }
            }
            Ok(None) => {}
            Err(e) => {
                // The outcome (if any) is not recorded: the piece stays due and is tried
                // again, and the other side's idempotency keeps that safe.
                tracing::warn!(work = %w.id, kind = kind(&w), error = %e, "cannot record the outcome; will retry");
                let failure = Failure {
                    message: e.to_string(),
                    outcome_unknown: true,
                };
                let _ = store::retry_later(
                    &self.pool,
                    &w,
                    self.delay(w.attempts),
                    failure.outcome_unknown,
                    &failure.message,
                )
                .await;
            }
        }
    }

    /// The wait after the `attempts`th attempt failed.
    fn delay(&self, attempts: i32) -> Duration {
        let nth = usize::try_from(attempts.saturating_sub(1)).unwrap_or(0);
        ExponentialBuilder::new()
            .with_jitter()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(self.max_retry_delay)
            .without_max_times()
            .build()
            .nth(nth)
            .unwrap_or(self.max_retry_delay)
    }

    /// After a step appended events: wakes this process's tail, and every other tailer
    /// (projectors) through PostgreSQL's NOTIFY, as the write-service does.
    async fn woke(&self, appended: bool) {
        if appended {
            self.appended.notify_one();
            if let Err(e) = self.steps.store.notify_appended().await {
                tracing::debug!(error = %e, "no notification sent; tailers poll");
            }
        }
    }

    /// `Some(failure)`: try again later.
    async fn charge(&self, w: &Work, earlier_unknown: bool) -> Result<Option<Failure>, StepError> {
        let charge = steps::charge_of(w)?;
        let state = {
            let mut conn = self.pool.acquire().await?;
            store::process(&mut conn, w.order_id)
                .await?
                .map(|p| p.state)
        };
        // The log may already say the order was cancelled, before the tail got there.
        let order = self
            .steps
            .store
            .load::<OrderAggregate>(&OrderId(w.order_id).stream_id())
            .await?;
        let still_confirmed = order
            .state
            .order()
            .is_some_and(|o| o.status == OrderStatus::Confirmed);
        let outcome = if state == Some(State::AwaitingPayment) && still_confirmed {
            self.provider.charge(&charge, &w.idempotency_key).await
        } else if earlier_unknown {
            // No longer wanted, but an earlier attempt may have gone through: ask the
            // provider rather than charge again.
            match self.provider.find_succeeded(&charge.order_id).await {
                Ok(Some(payment_intent_id)) => ChargeOutcome::Succeeded { payment_intent_id },
                Ok(None) => {
                    self.steps
                        .drop_charge(
                            &self.pool,
                            w,
                            "the order was cancelled; the provider holds no charge",
                        )
                        .await?;
                    return Ok(None);
                }
                Err(f) => ChargeOutcome::Retry(f),
            }
        } else {
            self.steps
                .drop_charge(
                    &self.pool,
                    w,
                    "the order was cancelled before it was charged",
                )
                .await?;
            return Ok(None);
        };
        match outcome {
            ChargeOutcome::Succeeded { payment_intent_id } => {
                let appended = self
                    .steps
                    .charged(&self.pool, w, &payment_intent_id)
                    .await?;
                self.woke(appended).await;
                Ok(None)
            }
            ChargeOutcome::Declined {
                code,
                decline_code,
                message,
            } => {
                let appended = self
                    .steps
                    .declined(&self.pool, w, &code, decline_code.as_deref(), &message)
                    .await?;
                self.woke(appended).await;
                Ok(None)
            }
            ChargeOutcome::Retry(f) => {
                metrics::counter!("fulfilment_provider_errors_total").increment(1);
                Ok(Some(f))
            }
        }
    }

    async fn refund(&self, w: &Work) -> Result<Option<Failure>, StepError> {
        let refund = serde_json::from_value(w.payload.clone())?;
        match self.provider.refund(&refund, &w.idempotency_key).await {
            RefundOutcome::Succeeded { refund_id } => {
                let appended = self.steps.refunded(&self.pool, w, &refund_id).await?;
                self.woke(appended).await;
                Ok(None)
            }
            RefundOutcome::Refused { message } => {
                tracing::error!(work = %w.id, order = %w.order_id, message, "the provider refused a refund; it needs a person (see `fulfilment status`)");
                self.steps
                    .finished(&self.pool, w, "failed", Some(&message))
                    .await?;
                Ok(None)
            }
            RefundOutcome::Retry(f) => {
                metrics::counter!("fulfilment_provider_errors_total").increment(1);
                Ok(Some(f))
            }
        }
    }

    async fn email(&self, w: &Work) -> Result<Option<Failure>, StepError> {
        let email = steps::email_of(w)?;
        // The connection that records the send is taken before it: once the server has the
        // message, one statement marks it sent, so a crash in between (which sends it again)
        // has the shortest window there can be.
        let mut conn = self.pool.acquire().await?;
        match self.mailer.send(&email).await {
            Ok(()) => {
                store::finish(&mut conn, w, "done", None).await?;
                Ok(None)
            }
            Err(e) if e.is_permanent() => {
                tracing::error!(work = %w.id, error = %e, "an email cannot be sent; it needs a person");
                self.steps
                    .finished(&self.pool, w, "failed", Some(&e.to_string()))
                    .await?;
                Ok(None)
            }
            // A message the server may have taken before the connection broke is sent
            // again: the same Message-ID lets the reader's client fold the two.
            Err(e) => Ok(Some(Failure {
                message: e.to_string(),
                outcome_unknown: true,
            })),
        }
    }
}

fn kind(w: &Work) -> &'static str {
    w.kind.into()
}
