//! What the process records on the log: a payment's outcome on the order's stream, and,
//! for a declined or timed-out payment, the cancellation and the release of every line's
//! stock in the same commit. Decided on the streams as they are inside the process's
//! transaction (`EventStore::execute_in`), so the events, the process's rows and the
//! outbox commit together or not at all.

use domain::events::DomainEvent;
use domain::order::{self, OrderCommand, OrderState, OrderStatus, PaymentStatus};
use domain::product;
use domain::{Currency, OrderId};
use event_store::{CommandError, Decide, Decision, OrderAggregate, ProductAggregate};

/// Why the log refused a step: the order is not where the step expects it (e.g. the
/// payment was recorded already). Nothing was appended.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

pub enum Step {
    Capture {
        payment_intent_id: String,
        amount_cents: i64,
        currency: Currency,
    },
    /// Records the decline and, unless the order was cancelled meanwhile, cancels it with
    /// reason `payment_declined`, releasing its stock.
    Decline {
        code: String,
        decline_code: Option<String>,
        message: String,
    },
    /// Cancels an order still awaiting its payment (reason `payment_timeout`), releasing
    /// its stock; nothing if it is no longer waiting.
    Timeout,
    Refund {
        refund_id: String,
        amount_cents: i64,
        currency: Currency,
    },
}

pub struct OrderStep {
    pub order_id: OrderId,
    pub step: Step,
}

type Failed = CommandError<Refused>;

fn refused(e: impl std::fmt::Display) -> Failed {
    CommandError::Rejected(Refused(e.to_string()))
}

impl Decide<Refused> for OrderStep {
    async fn decide(&mut self, decision: &mut Decision<'_>) -> Result<(), Failed> {
        let stream = self.order_id.stream_id();
        let mut state = decision.load::<OrderAggregate>(&stream).await?;
        let mut commands = Vec::new();
        match &self.step {
            Step::Capture {
                payment_intent_id,
                amount_cents,
                currency,
            } => commands.push(OrderCommand::CapturePayment {
                payment_intent_id: payment_intent_id.clone(),
                amount_cents: *amount_cents,
                currency: *currency,
            }),
            Step::Decline {
                code,
                decline_code,
                message,
            } => {
                commands.push(OrderCommand::DeclinePayment {
                    code: code.clone(),
                    decline_code: decline_code.clone(),
                    message: message.clone(),
                });
                if status(&state) == Some(OrderStatus::Confirmed) {
                    commands.push(cancel(order::REASON_PAYMENT_DECLINED));
                }
            }
            Step::Timeout => {
                let waiting = state.order().is_some_and(|o| {
                    o.status == OrderStatus::Confirmed && o.payment == Some(PaymentStatus::Awaiting)
                });
                if waiting {
                    commands.push(cancel(order::REASON_PAYMENT_TIMEOUT));
                }
            }
            Step::Refund {
                refund_id,
                amount_cents,
                currency,
            } => commands.push(OrderCommand::RefundPayment {
                refund_id: refund_id.clone(),
                amount_cents: *amount_cents,
                currency: *currency,
            }),
        }
        for command in commands {
            for product_command in order::stock_commands(&state, &command) {
                let product_stream = product_command.product_id().stream_id();
                let product = decision.load::<ProductAggregate>(&product_stream).await?;
                let events = product::decide(&product, product_command).map_err(refused)?;
                decision.append::<ProductAggregate>(
                    &product_stream,
                    events.into_iter().map(DomainEvent::Product),
                )?;
            }
            let events = order::decide(&state, command).map_err(refused)?;
            for e in &events {
                state = state.apply(e);
            }
            decision
                .append::<OrderAggregate>(&stream, events.into_iter().map(DomainEvent::Order))?;
        }
        Ok(())
    }
}

fn cancel(reason: &str) -> OrderCommand {
    OrderCommand::Cancel {
        reason: Some(reason.to_owned()),
    }
}

fn status(state: &OrderState) -> Option<OrderStatus> {
    state.order().map(|o| o.status)
}
