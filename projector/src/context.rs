//! What a view needs to know beside the event itself: the order as it was before and after
//! it, with the times of its lifecycle steps, folded from the order's own stream.
//!
//! `OrderConfirmed` carries no total, user or items; the projector reads the order's earlier
//! events from PostgreSQL (one statement per batch) instead of keeping a copy in each view.
//! What it folded is kept between batches ([`FactsCache`]), so an order whose events continue
//! where the last batch left it is not read again.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use domain::events::{DomainEvent, OrderEvent};
use domain::order::{Order, OrderState};
use event_store::{
    Aggregate, EventStore, OrderAggregate, RecordedEvent, StoreError, TailRow, UnreadableEvent,
};

/// An order with the event times the views show.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderFacts {
    pub order: Order,
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the payment was captured, and how much (`PaymentCaptured`).
    pub paid_at: Option<DateTime<Utc>>,
    pub paid_cents: i64,
    /// When the payment was refunded, and how much in all (`PaymentRefunded`).
    pub refunded_at: Option<DateTime<Utc>>,
    pub refunded_cents: i64,
    /// When the provider declined the charge (`PaymentDeclined`), and its reason: the
    /// decline code when the provider gave one, else its error code.
    pub payment_declined_at: Option<DateTime<Utc>>,
    pub payment_decline_code: Option<String>,
}

impl OrderFacts {
    /// Confirmed before payments existed (`OrderConfirmed` v1, no payment method): such an
    /// order is never charged, and the sales views keep the rule it was counted by then
    /// (revenue on the day it was confirmed, reversed on the day it is cancelled).
    pub fn is_legacy(&self) -> bool {
        self.order.payment.is_some() && self.order.payment_method.is_none()
    }

    /// Folds one event in; `None` when the event does not fit (e.g. no `OrderCreated` first).
    pub fn apply(facts: Option<OrderFacts>, e: &RecordedEvent) -> Option<OrderFacts> {
        let DomainEvent::Order(event) = &e.event else {
            return facts;
        };
        let at = e.recorded_at;
        let state = match &facts {
            Some(f) => OrderState::Placed(f.order.clone()),
            None => OrderState::New,
        };
        let OrderState::Placed(order) = state.apply(event) else {
            return None;
        };
        let mut f = facts.unwrap_or(OrderFacts {
            order: order.clone(),
            version: 0,
            created_at: at,
            updated_at: at,
            confirmed_at: None,
            cancelled_at: None,
            shipped_at: None,
            delivered_at: None,
            paid_at: None,
            paid_cents: 0,
            refunded_at: None,
            refunded_cents: 0,
            payment_declined_at: None,
            payment_decline_code: None,
        });
        f.order = order;
        f.version = e.stream_position;
        f.updated_at = at;
        match event {
            OrderEvent::OrderConfirmed(_) => f.confirmed_at = Some(at),
            OrderEvent::OrderCancelled(_) => f.cancelled_at = Some(at),
            OrderEvent::OrderShipped(_) => f.shipped_at = Some(at),
            OrderEvent::OrderDelivered => f.delivered_at = Some(at),
            OrderEvent::PaymentCaptured(p) => {
                f.paid_at = Some(at);
                f.paid_cents = f.paid_cents.saturating_add(p.amount_cents);
            }
            OrderEvent::PaymentRefunded(r) => {
                f.refunded_at = Some(at);
                f.refunded_cents = f.refunded_cents.saturating_add(r.amount_cents);
            }
            OrderEvent::PaymentDeclined(d) => {
                f.payment_declined_at = Some(at);
                f.payment_decline_code = Some(d.decline_code.clone().unwrap_or(d.code.clone()));
            }
            _ => {}
        }
        Some(f)
    }
}

/// An event with its order context.
#[derive(Debug, Clone)]
pub struct Enriched {
    pub event: RecordedEvent,
    pub before: Option<OrderFacts>,
    pub after: Option<OrderFacts>,
    /// The log's event time just before this event: the latest recorded time of every event
    /// before it in the log (to the millisecond), `None` at the start of the log. Later
    /// events can have earlier times (a transaction that began earlier committed later), so
    /// this, not the event's own time, says how far event time has advanced.
    pub watermark: Option<DateTime<Utc>>,
}

/// The log's event time after an event recorded at `at`, given the one before it.
pub fn advance(watermark: Option<DateTime<Utc>>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Milliseconds, as checkpoints store it, so a restart resumes with the same value.
    let at = DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at);
    Some(watermark.map_or(at, |w| w.max(at)))
}

/// An event the projector cannot apply, and why.
#[derive(Debug, Clone)]
pub struct Poison {
    pub event: UnreadableEvent,
}

fn poison_from(e: &RecordedEvent, error: String) -> Poison {
    Poison {
        event: UnreadableEvent {
            position: e.position,
            stream_id: e.stream_id.clone(),
            stream_position: e.stream_position,
            event_type: e.event_type.clone(),
            schema_version: e.stored_schema_version,
            data: e.data.clone(),
            recorded_at: e.recorded_at,
            error,
        },
    }
}

/// How many orders' facts [`FactsCache`] keeps before it starts afresh.
const CACHED_ORDERS: usize = 20_000;

/// Orders' facts as the last batches left them, each at its stream version, shared by every
/// view (facts depend on the order's stream alone). Facts at version `v` are the fold of the
/// stream's events 1..=`v`, so they stand in for a read of the history before `v + 1`, and
/// for nothing else: a batch retried from earlier finds a later version here and reads.
/// Without it, each batch read again the whole history of every order it touched, and in a
/// log where orders interleave more (a larger shop) that grew per event (S13's profile).
#[derive(Debug, Default)]
pub struct FactsCache(Mutex<HashMap<String, OrderFacts>>);

impl FactsCache {
    /// The facts of `stream` at exactly `version`, if kept.
    fn at(&self, stream: &str, version: u64) -> Option<OrderFacts> {
        let kept = self.0.lock().ok()?;
        kept.get(stream).filter(|f| f.version == version).cloned()
    }

    fn keep(&self, facts: impl Iterator<Item = (String, OrderFacts)>) {
        let Ok(mut kept) = self.0.lock() else {
            return;
        };
        for (stream, f) in facts {
            if kept.len() >= CACHED_ORDERS && !kept.contains_key(&stream) {
                // Bounded memory; the orders still moving come back with their next read.
                kept.clear();
            }
            kept.insert(stream, f);
        }
    }
}

/// Decorates a batch with order context and event time, from the log's event time before
/// the batch (`watermark`, advanced to the batch's end). The result keeps the batch's order;
/// events that cannot be applied (unreadable, or in a stream whose history is unreadable)
/// are `Err`.
pub async fn enrich(
    store: &EventStore,
    cache: &FactsCache,
    rows: Vec<TailRow>,
    watermark: &mut Option<DateTime<Utc>>,
) -> Result<Vec<Result<Enriched, Poison>>, StoreError> {
    // The first position of each order stream in this batch (and of any stream with an
    // unreadable event, whose type is unknown): its history is what comes before. Only
    // order events read facts.
    let mut first: HashMap<String, u64> = HashMap::new();
    for row in &rows {
        let (stream, pos) = match row {
            Ok(e) if !matches!(e.event, DomainEvent::Order(_)) => continue,
            Ok(e) => (&e.stream_id, e.stream_position),
            Err(u) => (&u.stream_id, u.stream_position),
        };
        first.entry(stream.clone()).or_insert(pos);
    }
    let mut facts: HashMap<String, Result<Option<OrderFacts>, String>> = HashMap::new();
    let mut prefixes: Vec<(String, u64)> = Vec::new();
    for (stream, pos) in first {
        let before = pos.saturating_sub(1);
        if before == 0 {
            // A stream that starts in this batch has no history.
            facts.insert(stream, Ok(None));
        } else if let Some(f) = cache.at(&stream, before) {
            facts.insert(stream, Ok(Some(f)));
        } else {
            prefixes.push((stream, pos));
        }
    }
    if !prefixes.is_empty() {
        for row in store
            .read_stream_prefixes(OrderAggregate::STREAM_TYPE, &prefixes)
            .await?
        {
            match row {
                Ok(e) => {
                    let entry = facts.entry(e.stream_id.clone()).or_insert(Ok(None));
                    if let Ok(f) = entry {
                        *entry = Ok(OrderFacts::apply(f.take(), &e));
                    }
                }
                Err(u) => {
                    let reason =
                        format!("earlier event {} of this stream is unreadable", u.position);
                    facts.insert(u.stream_id.clone(), Err(reason));
                }
            }
        }
    }

    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let before_this = *watermark;
        *watermark = advance(
            before_this,
            match &row {
                Ok(e) => e.recorded_at,
                Err(u) => u.recorded_at,
            },
        );
        let e = match row {
            Ok(e) => e,
            Err(u) => {
                // Only order events read `facts`, so marking any stream is enough.
                let reason = format!("earlier event {} of this stream is unreadable", u.position);
                facts.insert(u.stream_id.clone(), Err(reason));
                out.push(Err(Poison { event: u }));
                continue;
            }
        };
        if !matches!(e.event, DomainEvent::Order(_)) {
            out.push(Ok(Enriched {
                event: e,
                before: None,
                after: None,
                watermark: before_this,
            }));
            continue;
        }
        let entry = facts.entry(e.stream_id.clone()).or_insert(Ok(None));
        let before = match entry {
            Err(reason) => {
                let reason = reason.clone();
                out.push(Err(poison_from(&e, reason)));
                continue;
            }
            Ok(f) => f.clone(),
        };
        match OrderFacts::apply(before.clone(), &e) {
            Some(after) => {
                *entry = Ok(Some(after.clone()));
                out.push(Ok(Enriched {
                    event: e,
                    before,
                    after: Some(after),
                    watermark: before_this,
                }));
            }
            None => {
                let reason = format!("`{}` does not apply to this order's history", e.event_type);
                *entry = Err(reason.clone());
                out.push(Err(poison_from(&e, reason)));
            }
        }
    }
    cache.keep(
        facts
            .into_iter()
            .filter_map(|(stream, f)| Some((stream, f.ok()??))),
    );
    Ok(out)
}
