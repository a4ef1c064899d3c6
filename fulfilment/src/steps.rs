//! Every step of the process as one PostgreSQL transaction: the events it appends (first,
//! as the event store requires), then the process's rows, the outbox and the deadlines, and
//! for a step driven by the log, the inbox and the checkpoint. A step that loses a race
//! (a stream or a row moved under it) rolls back whole and is decided again.

use std::time::Duration;

use domain::events::{DomainEvent, OrderEvent};
use domain::{Currency, OrderId, Position};
use event_store::{
    CommandError, EventStore, OrderAggregate, RecordedEvent, StoreError as LogError, Until,
};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::emails::{self, About, Notice};
use crate::orders::{OrderStep, Refused, Step};
use crate::provider::{Charge, Refund};
use crate::store::{self, OrderProcess, State, Work, WorkKind};

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("unreadable outbox payload: {0}")]
    Payload(#[from] serde_json::Error),
    #[error("{0}")]
    Corrupt(String),
}

impl StepError {
    /// Lost a race: worth deciding again at once.
    fn is_race(&self) -> bool {
        matches!(
            self,
            StepError::Store(store::StoreError::Moved(_))
                | StepError::Log(LogError::WrongExpectedVersion { .. })
        )
    }
}

impl From<sqlx::Error> for StepError {
    fn from(e: sqlx::Error) -> Self {
        StepError::Store(e.into())
    }
}

/// What a step needs besides its transaction.
#[derive(Clone)]
pub struct Steps {
    pub store: EventStore,
    pub payment_timeout: Duration,
    pub customer_email_domain: String,
}

/// Runs `$body` (with `$tx` the transaction) until it commits without losing a race, at
/// most 20 times; evaluates to `Ok(true)` when the step appended events (tailers should be
/// woken). A macro, not a function taking a closure: the body borrows both the transaction
/// and the caller's data across awaits.
macro_rules! transact {
    ($pool:expr, $what:expr, |$tx:ident| $body:block) => {{
        let mut attempt: u64 = 0;
        loop {
            let mut transaction = $pool.begin().await?;
            let outcome: Result<bool, StepError> = {
                let $tx = &mut transaction;
                async { $body }.await
            };
            match outcome {
                Ok(appended) => {
                    transaction.commit().await?;
                    break Ok::<bool, StepError>(appended);
                }
                Err(e) if e.is_race() && attempt < 20 => {
                    attempt += 1;
                    drop(transaction);
                    tracing::debug!(step = $what, error = %e, attempt, "lost a race; deciding again");
                    tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
                }
                Err(e) => break Err(e),
            }
        }
    }};
}

/// Appends a step's events to the order (first write of the transaction). `false`: the
/// order is not where the step expects it, and nothing was appended.
async fn record(
    store: &EventStore,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    order_id: Uuid,
    cause: Uuid,
    step: Step,
) -> Result<bool, StepError> {
    let order_id = OrderId(order_id);
    let metadata = json!({
        "causationId": cause,
        "correlationId": order_id,
        "processedBy": store::PROCESS,
    });
    let stream = order_id.stream_id();
    let mut decision = OrderStep { order_id, step };
    match store
        .execute_in(tx, &stream, &metadata, &mut decision)
        .await
    {
        Ok(appended) => Ok(appended.is_some()),
        Err(CommandError::Rejected(Refused(why))) => {
            tracing::warn!(order = %order_id, why, "the order refused the step; nothing appended");
            Ok(false)
        }
        Err(CommandError::Store(e)) => Err(e.into()),
        Err(e) => Err(StepError::Corrupt(e.to_string())),
    }
}

fn currency(p: &OrderProcess) -> Result<Currency, StepError> {
    Currency::try_from(p.currency.clone())
        .map_err(|e| StepError::Corrupt(format!("currency of {}: {e}", p.order_id)))
}

async fn queue_email(
    conn: &mut PgConnection,
    p: &OrderProcess,
    cause: Uuid,
    notice: Notice,
) -> Result<(), StepError> {
    let about = About {
        order_id: p.order_id,
        to: &p.email,
        amount_cents: p.amount_cents,
        currency: &p.currency,
    };
    let email = emails::compose(&about, cause, &notice);
    let payload = serde_json::to_value(&email)?;
    store::enqueue(
        conn,
        p.order_id,
        WorkKind::Email,
        &payload,
        &email.message_id,
        cause,
    )
    .await?;
    Ok(())
}

async fn queue_refund(
    conn: &mut PgConnection,
    p: &OrderProcess,
    cause: Uuid,
    intent: &str,
) -> Result<(), StepError> {
    let refund = Refund {
        order_id: p.order_id.to_string(),
        payment_intent_id: intent.to_owned(),
        amount_cents: p.amount_cents,
        currency: p.currency.clone(),
    };
    let key = format!("refund-{cause}");
    store::enqueue(
        conn,
        p.order_id,
        WorkKind::Refund,
        &serde_json::to_value(&refund)?,
        &key,
        cause,
    )
    .await?;
    Ok(())
}

fn order_of(e: &RecordedEvent) -> Option<Uuid> {
    e.stream_id.strip_prefix("order-")?.parse().ok()
}

impl Steps {
    /// Handles one event of the log and moves the checkpoint from `from` to past it, in one
    /// transaction. An event handled before (the inbox has it) only moves the checkpoint.
    /// `true`: it queued outside work.
    pub async fn follow(
        &self,
        pool: &PgPool,
        from: Position,
        e: &RecordedEvent,
    ) -> Result<bool, StepError> {
        // Read before the transaction: the order as it was at this event, from the log.
        let confirmed_order = match &e.event {
            DomainEvent::Order(OrderEvent::OrderConfirmed(c)) if c.payment_method.is_some() => {
                let upto = Until::Version(e.stream_position);
                let loaded = self
                    .store
                    .replay::<OrderAggregate>(&e.stream_id, upto)
                    .await?;
                loaded.state.order().cloned()
            }
            _ => None,
        };
        transact!(pool, "follow", |tx| {
            let queued = if store::first_time(tx, e.event_id).await? {
                self.react(tx, e, confirmed_order.as_ref()).await?
            } else {
                false
            };
            store::advance(tx, from, e.position).await?;
            Ok(queued)
        })
    }

    async fn react(
        &self,
        tx: &mut PgConnection,
        e: &RecordedEvent,
        confirmed_order: Option<&domain::order::Order>,
    ) -> Result<bool, StepError> {
        let (DomainEvent::Order(event), Some(order_id)) = (&e.event, order_of(e)) else {
            return Ok(false);
        };
        let cause = e.event_id;
        if let OrderEvent::OrderConfirmed(c) = event {
            // Confirmed before payments existed: nothing to charge.
            let (Some(payment_method), Some(order)) = (&c.payment_method, confirmed_order) else {
                return Ok(false);
            };
            let p = OrderProcess {
                order_id,
                state: State::AwaitingPayment,
                version: 1,
                user_id: order.user_id.to_string(),
                email: c
                    .email
                    .clone()
                    .unwrap_or_else(|| format!("{}@{}", order.user_id, self.customer_email_domain)),
                payment_method: payment_method.clone(),
                amount_cents: order.total_cents,
                currency: order.currency.as_str().to_owned(),
                payment_intent_id: None,
                confirmed_event_id: cause,
            };
            if !store::start(tx, &p).await? {
                return Ok(false);
            }
            queue_email(tx, &p, cause, Notice::Received).await?;
            let charge = Charge {
                order_id: order_id.to_string(),
                amount_cents: p.amount_cents,
                currency: p.currency.clone(),
                payment_method: p.payment_method.clone(),
            };
            let key = format!("charge-{cause}");
            store::enqueue(
                tx,
                order_id,
                WorkKind::Charge,
                &serde_json::to_value(&charge)?,
                &key,
                cause,
            )
            .await?;
            store::add_deadline(tx, order_id, self.payment_timeout).await?;
            return Ok(true);
        }
        // Orders never checked out with a payment method are not this process's.
        let Some(p) = store::process(tx, order_id).await? else {
            return Ok(false);
        };
        match event {
            OrderEvent::PaymentCaptured(_) if matches!(p.state, State::Paid | State::Completed) => {
                queue_email(tx, &p, cause, Notice::PaymentReceived).await?;
            }
            OrderEvent::PaymentRefunded(r) => {
                let notice = Notice::Refunded {
                    amount_cents: r.amount_cents,
                };
                queue_email(tx, &p, cause, notice).await?;
            }
            OrderEvent::OrderCancelled(c) => {
                match p.state {
                    // Cancelled by the customer or staff before the payment settled: no
                    // charge is started any more (one already sent is settled, and refunded
                    // if it went through), and the timeout is moot.
                    State::AwaitingPayment => {
                        store::set_state(tx, &p, State::Cancelled, None).await?;
                        store::cancel_deadlines(tx, order_id).await?;
                    }
                    State::Paid => {
                        let Some(intent) = p.payment_intent_id.clone() else {
                            return Err(StepError::Corrupt(format!(
                                "paid order {order_id} without a payment"
                            )));
                        };
                        store::set_state(tx, &p, State::Refunding, None).await?;
                        queue_refund(tx, &p, cause, &intent).await?;
                    }
                    _ => {}
                }
                let notice = Notice::Cancelled {
                    reason: c.reason.clone(),
                };
                queue_email(tx, &p, cause, notice).await?;
            }
            OrderEvent::OrderShipped(s) => {
                let notice = Notice::Shipped {
                    carrier: s.carrier.clone(),
                    tracking_number: s.tracking_number.clone(),
                };
                queue_email(tx, &p, cause, notice).await?;
            }
            OrderEvent::OrderDelivered => {
                if p.state == State::Paid {
                    store::set_state(tx, &p, State::Completed, None).await?;
                }
                queue_email(tx, &p, cause, Notice::Delivered).await?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Moves the checkpoint over events that concern no order process.
    pub async fn skip(&self, pool: &PgPool, from: Position, to: Position) -> Result<(), StepError> {
        transact!(pool, "skip", |tx| {
            store::advance(tx, from, to).await?;
            Ok(false)
        })?;
        Ok(())
    }

    /// A charge went through: the order is paid, or, if it was cancelled meanwhile, the
    /// payment is recorded and refunded.
    pub async fn charged(&self, pool: &PgPool, w: &Work, intent: &str) -> Result<bool, StepError> {
        transact!(pool, "charged", |tx| {
            let p = self.process_of(tx, w).await?;
            let step = Step::Capture {
                payment_intent_id: intent.to_owned(),
                amount_cents: p.amount_cents,
                currency: currency(&p)?,
            };
            let appended = record(&self.store, tx, w.order_id, w.cause_event_id, step).await?;
            match p.state {
                State::AwaitingPayment => {
                    store::set_state(tx, &p, State::Paid, Some(intent)).await?;
                    store::cancel_deadlines(tx, w.order_id).await?;
                }
                State::Cancelled if appended => {
                    store::set_state(tx, &p, State::Refunding, Some(intent)).await?;
                    queue_refund(tx, &p, w.id, intent).await?;
                }
                _ => {}
            }
            store::finish(tx, w, "done", None).await?;
            Ok(appended)
        })
    }

    /// A charge was refused for good: recorded, and the order cancelled (its stock
    /// released) unless it was already.
    pub async fn declined(
        &self,
        pool: &PgPool,
        w: &Work,
        code: &str,
        decline_code: Option<&str>,
        message: &str,
    ) -> Result<bool, StepError> {
        transact!(pool, "declined", |tx| {
            let p = self.process_of(tx, w).await?;
            let step = Step::Decline {
                code: code.to_owned(),
                decline_code: decline_code.map(str::to_owned),
                message: message.to_owned(),
            };
            let appended = record(&self.store, tx, w.order_id, w.cause_event_id, step).await?;
            if p.state == State::AwaitingPayment {
                store::set_state(tx, &p, State::Cancelled, None).await?;
                store::cancel_deadlines(tx, w.order_id).await?;
            }
            store::finish(tx, w, "done", Some(message)).await?;
            Ok(appended)
        })
    }

    /// A charge that is no longer wanted and provably never taken: dropped.
    pub async fn drop_charge(&self, pool: &PgPool, w: &Work, why: &str) -> Result<(), StepError> {
        transact!(pool, "drop charge", |tx| {
            store::finish(tx, w, "cancelled", Some(why)).await?;
            Ok(false)
        })?;
        Ok(())
    }

    pub async fn refunded(
        &self,
        pool: &PgPool,
        w: &Work,
        refund_id: &str,
    ) -> Result<bool, StepError> {
        let refund: Refund = serde_json::from_value(w.payload.clone())?;
        transact!(pool, "refunded", |tx| {
            let p = self.process_of(tx, w).await?;
            let step = Step::Refund {
                refund_id: refund_id.to_owned(),
                amount_cents: refund.amount_cents,
                currency: currency(&p)?,
            };
            let appended = record(&self.store, tx, w.order_id, w.cause_event_id, step).await?;
            if p.state == State::Refunding {
                store::set_state(tx, &p, State::Refunded, None).await?;
            }
            store::finish(tx, w, "done", None).await?;
            Ok(appended)
        })
    }

    /// Ends a piece of work that needs no events (an email sent, a refusal that needs a
    /// person).
    pub async fn finished(
        &self,
        pool: &PgPool,
        w: &Work,
        status: &str,
        note: Option<&str>,
    ) -> Result<(), StepError> {
        transact!(pool, "finish", |tx| {
            store::finish(tx, w, status, note).await?;
            Ok(false)
        })?;
        Ok(())
    }

    /// The payment timeout: an order still awaiting its payment is cancelled and its stock
    /// released; for any other, the deadline is moot and does nothing.
    pub async fn timeout(&self, pool: &PgPool, d: &store::Deadline) -> Result<bool, StepError> {
        transact!(pool, "timeout", |tx| {
            let p = store::process(tx, d.order_id).await?;
            let Some(p) = p.filter(|p| p.state == State::AwaitingPayment) else {
                store::end_deadline(tx, d.id, "cancelled").await?;
                return Ok(false);
            };
            let appended = record(&self.store, tx, d.order_id, d.id, Step::Timeout).await?;
            store::set_state(tx, &p, State::Cancelled, None).await?;
            store::end_deadline(tx, d.id, "fired").await?;
            Ok(appended)
        })
    }

    async fn process_of(&self, tx: &mut PgConnection, w: &Work) -> Result<OrderProcess, StepError> {
        store::process(tx, w.order_id)
            .await?
            .ok_or_else(|| StepError::Corrupt(format!("outbox entry {} without its order", w.id)))
    }
}

/// The payload of a charge.
pub fn charge_of(w: &Work) -> Result<Charge, StepError> {
    Ok(serde_json::from_value(w.payload.clone())?)
}

/// The payload of an email.
pub fn email_of(w: &Work) -> Result<emails::Email, StepError> {
    Ok(serde_json::from_value(w.payload.clone())?)
}
