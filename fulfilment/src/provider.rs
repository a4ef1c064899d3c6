//! The payment provider, over the subset of Stripe's API the process needs: a confirmed
//! PaymentIntent per order (`POST /v1/payment_intents`), refunds (`POST /v1/refunds`) and
//! the search that finds a charge whose answer was lost. Every write carries an
//! `Idempotency-Key`, so a retry never charges twice. Answers are sorted into what the
//! process does next; nothing here retries by itself.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Clone)]
pub struct Provider {
    http: reqwest::Client,
    base: String,
    key: SecretString,
}

/// One charge, as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Charge {
    pub order_id: String,
    pub amount_cents: i64,
    /// ISO 4217, upper case as the domain writes it; the provider gets it lower case.
    pub currency: String,
    pub payment_method: String,
}

/// One refund, as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refund {
    pub order_id: String,
    pub payment_intent_id: String,
    pub amount_cents: i64,
    pub currency: String,
}

/// What a charge came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Succeeded {
        payment_intent_id: String,
    },
    /// Refused for good: the card was declined, or the payment method is unusable.
    Declined {
        code: String,
        decline_code: Option<String>,
        message: String,
    },
    Retry(Failure),
}

/// What a refund came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    Succeeded {
        refund_id: String,
    },
    Retry(Failure),
    /// Refused for good (e.g. the payment was refunded outside this process): needs a
    /// person.
    Refused {
        message: String,
    },
}

/// A request that did not settle the question: worth another attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// The request may have reached the provider and taken effect without us hearing the
    /// answer (a timeout, a reset connection, a 500).
    pub outcome_unknown: bool,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ApiError,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
    decline_code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct PaymentIntent {
    id: String,
    status: String,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct SearchResult {
    data: Vec<PaymentIntent>,
}

#[derive(Deserialize)]
struct RefundObject {
    id: String,
}

impl Provider {
    pub fn new(base: &str, key: SecretString, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
        })
    }

    /// A form-encoded `POST /v1/{resource}` with the key and the idempotency key.
    async fn post(
        &self,
        resource: &str,
        form: &[(&str, String)],
        idempotency_key: &str,
    ) -> Result<(StatusCode, String), Failure> {
        let sent = self
            .http
            .post(format!("{}/v1/{resource}", self.base))
            .bearer_auth(self.key.expose_secret())
            .header("Idempotency-Key", idempotency_key)
            .form(form)
            .send()
            .await;
        read(sent).await
    }

    /// Creates and confirms a PaymentIntent for the order.
    pub async fn charge(&self, charge: &Charge, idempotency_key: &str) -> ChargeOutcome {
        let form = [
            ("amount", charge.amount_cents.to_string()),
            ("currency", charge.currency.to_ascii_lowercase()),
            ("payment_method", charge.payment_method.clone()),
            ("confirm", "true".to_owned()),
            ("metadata[order_id]", charge.order_id.clone()),
        ];
        let (status, body) = match self.post("payment_intents", &form, idempotency_key).await {
            Ok(answer) => answer,
            Err(failure) => return ChargeOutcome::Retry(failure),
        };
        if status.is_success() {
            return match serde_json::from_str::<PaymentIntent>(&body) {
                Ok(pi) if pi.status == "succeeded" => ChargeOutcome::Succeeded {
                    payment_intent_id: pi.id,
                },
                // requires_action (3-D Secure) and the like: this process cannot complete
                // them, so the order does not get paid.
                Ok(pi) => ChargeOutcome::Declined {
                    code: format!("payment_intent_{}", pi.status),
                    decline_code: None,
                    message: format!("the payment needs `{}`", pi.status),
                },
                Err(e) => ChargeOutcome::Retry(unknown(format!("unreadable payment intent: {e}"))),
            };
        }
        match classify(status, &body) {
            Classified::Permanent(e) => ChargeOutcome::Declined {
                code: e.code.unwrap_or_else(|| "payment_failed".into()),
                decline_code: e.decline_code,
                message: e.message.unwrap_or_else(|| "the payment failed".into()),
            },
            Classified::Retry(f) => ChargeOutcome::Retry(f),
        }
    }

    /// Refunds the whole of a captured payment.
    pub async fn refund(&self, refund: &Refund, idempotency_key: &str) -> RefundOutcome {
        let form = [
            ("payment_intent", refund.payment_intent_id.clone()),
            ("amount", refund.amount_cents.to_string()),
            ("metadata[order_id]", refund.order_id.clone()),
        ];
        let (status, body) = match self.post("refunds", &form, idempotency_key).await {
            Ok(answer) => answer,
            Err(failure) => return RefundOutcome::Retry(failure),
        };
        if status.is_success() {
            return match serde_json::from_str::<RefundObject>(&body) {
                Ok(r) => RefundOutcome::Succeeded { refund_id: r.id },
                Err(e) => RefundOutcome::Retry(unknown(format!("unreadable refund: {e}"))),
            };
        }
        match classify(status, &body) {
            Classified::Permanent(e) => RefundOutcome::Refused {
                message: e
                    .message
                    .unwrap_or_else(|| format!("refused with {status}")),
            },
            Classified::Retry(f) => RefundOutcome::Retry(f),
        }
    }

    /// The order's succeeded PaymentIntent, if the provider holds one: how a charge whose
    /// answer was lost is settled without charging again.
    pub async fn find_succeeded(&self, order_id: &str) -> Result<Option<String>, Failure> {
        let query = format!("metadata['order_id']:'{order_id}'");
        let sent = self
            .http
            .get(format!("{}/v1/payment_intents/search", self.base))
            .bearer_auth(self.key.expose_secret())
            .query(&[("query", query.as_str())])
            .send()
            .await;
        let (status, body) = read(sent).await?;
        if !status.is_success() {
            return Err(match classify(status, &body) {
                Classified::Retry(f) => f,
                Classified::Permanent(e) => known(e.message.unwrap_or_else(|| status.to_string())),
            });
        }
        let found: SearchResult = serde_json::from_str(&body)
            .map_err(|e| known(format!("unreadable search result: {e}")))?;
        Ok(found
            .data
            .into_iter()
            .find(|pi| {
                pi.status == "succeeded"
                    && pi.metadata.get("order_id").map(String::as_str) == Some(order_id)
            })
            .map(|pi| pi.id))
    }
}

enum Classified {
    Permanent(ApiError),
    Retry(Failure),
}

fn known(message: String) -> Failure {
    Failure {
        message,
        outcome_unknown: false,
    }
}

fn unknown(message: String) -> Failure {
    Failure {
        message,
        outcome_unknown: true,
    }
}

/// The answer's status and body, or why there is none.
async fn read(
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<(StatusCode, String), Failure> {
    let response = sent.map_err(|e| {
        // A refused connection never reached the provider; anything later may have.
        let message = format!("payment provider: {e}");
        if e.is_connect() {
            known(message)
        } else {
            unknown(message)
        }
    })?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| unknown(format!("payment provider answer lost: {e}")))?;
    Ok((status, body))
}

/// Sorts an error answer: declines and invalid requests are final; rate limits, outages and
/// concurrent use of a key are worth another attempt.
fn classify(status: StatusCode, body: &str) -> Classified {
    let error = serde_json::from_str::<ErrorEnvelope>(body)
        .map(|e| e.error)
        .ok();
    let detail = error
        .as_ref()
        .and_then(|e| e.message.clone())
        .unwrap_or_else(|| body.chars().take(200).collect());
    let message = || format!("payment provider answered {status}: {detail}");
    match status {
        StatusCode::PAYMENT_REQUIRED => match error {
            Some(e) => Classified::Permanent(e),
            None => Classified::Retry(unknown(message())),
        },
        StatusCode::BAD_REQUEST => match error {
            // The same key with other parameters: a bug here, not the customer's; the first
            // request's fate is unknown.
            Some(e) if e.kind.as_deref() == Some("idempotency_error") => {
                Classified::Retry(unknown(message()))
            }
            Some(e) => Classified::Permanent(e),
            None => Classified::Retry(unknown(message())),
        },
        // A request with this key is still running at the provider.
        StatusCode::CONFLICT => Classified::Retry(unknown(message())),
        // Refused before any work: wrong key, rate limit, the provider down.
        StatusCode::UNAUTHORIZED
        | StatusCode::FORBIDDEN
        | StatusCode::TOO_MANY_REQUESTS
        | StatusCode::SERVICE_UNAVAILABLE => Classified::Retry(known(message())),
        _ => Classified::Retry(unknown(message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stripe's API is https: the client speaks TLS (a refused connection, not an
    /// unsupported scheme or a missing crypto provider).
    #[tokio::test]
    async fn https_providers_are_reachable_in_principle() {
        let p = Provider::new(
            "https://127.0.0.1:9",
            SecretString::from("sk_test_x"),
            Duration::from_secs(2),
        )
        .expect("a client");
        let charge = Charge {
            order_id: "o".into(),
            amount_cents: 1,
            currency: "USD".into(),
            payment_method: "pm_card_visa".into(),
        };
        match p.charge(&charge, "k").await {
            ChargeOutcome::Retry(f) => assert!(!f.outcome_unknown, "{}", f.message),
            other => panic!("{other:?}"),
        }
    }
}
