//! The customer emails: which event sends which message, and its text. Each message's
//! `Message-ID` is derived from the event that caused it, so a message sent twice (the
//! dispatcher is at-least-once) is recognisably the same message.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub body: String,
    /// Without angle brackets, e.g. `6f1c…@order-backend`.
    pub message_id: String,
}

/// Why a customer hears from the shop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Received,
    PaymentReceived,
    /// Cancelled: by the customer or staff, or because the payment was declined or timed out.
    Cancelled {
        reason: Option<String>,
    },
    Shipped {
        carrier: String,
        tracking_number: String,
    },
    Delivered,
    Refunded {
        amount_cents: i64,
    },
}

impl Notice {
    fn kind(&self) -> &'static str {
        match self {
            Notice::Received => "received",
            Notice::PaymentReceived => "paid",
            Notice::Cancelled { .. } => "cancelled",
            Notice::Shipped { .. } => "shipped",
            Notice::Delivered => "delivered",
            Notice::Refunded { .. } => "refunded",
        }
    }
}

/// What the messages say about the order.
pub struct About<'a> {
    pub order_id: Uuid,
    pub to: &'a str,
    pub amount_cents: i64,
    pub currency: &'a str,
}

/// The `Message-ID` of the message `cause` sends: one event, one message.
pub fn message_id(cause: Uuid, notice: &Notice) -> String {
    format!("{cause}.{}@order-backend", notice.kind())
}

/// `1234` cents of `USD` as `12.34 USD`.
fn money(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", cents / 100, cents % 100)
}

pub fn compose(about: &About<'_>, cause: Uuid, notice: &Notice) -> Email {
    let order = about.order_id;
    let total = money(about.amount_cents, about.currency);
    let (subject, body) = match notice {
        Notice::Received => (
            format!("We received your order {order}"),
            format!(
                "Thank you for your order {order}.\n\nTotal: {total}. We are taking the payment now and will write again when it is through.\n"
            ),
        ),
        Notice::PaymentReceived => (
            format!("Payment received for order {order}"),
            format!(
                "We received your payment of {total} for order {order}. We will let you know when it ships.\n"
            ),
        ),
        Notice::Cancelled { reason } => match reason.as_deref() {
            Some(domain::order::REASON_PAYMENT_DECLINED) => (
                format!("Payment failed: order {order} is cancelled"),
                format!(
                    "Your payment of {total} for order {order} was declined, so the order is cancelled and nothing was charged.\n"
                ),
            ),
            Some(domain::order::REASON_PAYMENT_TIMEOUT) => (
                format!("Payment not completed: order {order} is cancelled"),
                format!(
                    "We could not complete the payment of {total} for order {order} in time, so the order is cancelled. If any amount was taken, it will be refunded.\n"
                ),
            ),
            other => (
                format!("Order {order} is cancelled"),
                format!(
                    "Your order {order} is cancelled{}. If you paid for it, the refund follows.\n",
                    other.map(|r| format!(" (reason: {r})")).unwrap_or_default()
                ),
            ),
        },
        Notice::Shipped {
            carrier,
            tracking_number,
        } => (
            format!("Order {order} has shipped"),
            format!(
                "Your order {order} is on its way with {carrier}, tracking number {tracking_number}.\n"
            ),
        ),
        Notice::Delivered => (
            format!("Order {order} was delivered"),
            format!("Your order {order} was delivered. Thank you for shopping with us.\n"),
        ),
        Notice::Refunded { amount_cents } => (
            format!("Refund for order {order}"),
            format!(
                "We refunded {} for order {order}. It may take a few days to show on your statement.\n",
                money(*amount_cents, about.currency)
            ),
        ),
    };
    Email {
        to: about.to.to_owned(),
        subject,
        body,
        message_id: message_id(cause, notice),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact_minor_units() {
        assert_eq!(money(1234, "USD"), "12.34 USD");
        assert_eq!(money(5, "EUR"), "0.05 EUR");
        assert_eq!(money(-100, "USD"), "-1.00 USD");
    }

    #[test]
    fn one_event_one_message_id() {
        let cause = Uuid::new_v4();
        let about = About {
            order_id: Uuid::new_v4(),
            to: "a@example.com",
            amount_cents: 100,
            currency: "USD",
        };
        let a = compose(&about, cause, &Notice::Received);
        let b = compose(&about, cause, &Notice::Received);
        assert_eq!(a.message_id, b.message_id);
        assert_ne!(
            a.message_id,
            compose(&about, Uuid::new_v4(), &Notice::Received).message_id
        );
        let shipped = Notice::Shipped {
            carrier: "DHL".into(),
            tracking_number: "T1".into(),
        };
        assert!(
            compose(&about, cause, &shipped)
                .body
                .contains("DHL, tracking number T1")
        );
    }
}
