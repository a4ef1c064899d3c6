//! The naive projector S4 compares against: the classic at-least-once projector that sends
//! one `updateOne` (`$inc` / `$set`, upsert) per event per view document it touches, and
//! saves each view's checkpoint once per batch of 500 events (generous: many save it per
//! event). It reads the same log with the same order context (`projector::context::enrich`,
//! PostgreSQL) and touches the same documents as the real views (`Projection::keys`), so the two
//! differ only in how they talk to MongoDB. It keeps no per-document guard, so unlike the
//! real projector a replay after a crash would count twice.
//!
//! `plan` is the single source of its writes: `dry_count` counts them over a whole log
//! without MongoDB (exact), `run` executes them; the wire count of a run is checked against
//! the plan.

use std::collections::BTreeMap;
use std::time::Instant;

use domain::Position;
use domain::events::{DomainEvent, OrderEvent, ProductEvent};
use domain::order::OrderStatus;
use event_store::{EventStore, TailRow};
use mongodb::bson::{self, Bson, Document, doc};
use projector::context::{Enriched, enrich};
use projector::projections::daily_sales::DailySalesProjection;
use projector::projections::date;
use projector::projections::inventory::InventoryProjection;
use projector::projections::orders::OrdersProjection;
use projector::projections::users::UsersProjection;
use projector::projections::{Projection, Thresholds};
use read_model::{OrderDoc, RECENT_ORDERS};

use crate::projection::BATCH;

/// One `updateOne` of the naive projector.
pub struct Write {
    pub view: &'static str,
    pub filter: Document,
    pub update: Document,
}

const CHECKPOINTS: &str = "naive_checkpoints";

/// An order confirmed before payments existed, whose revenue counted from confirmation and
/// is given back when it is cancelled after it (the rule of `daily_sales`).
fn legacy(e: &Enriched) -> bool {
    e.after.as_ref().is_some_and(|a| a.is_legacy())
}

fn legacy_reversed(e: &Enriched) -> bool {
    legacy(e)
        && e.before
            .as_ref()
            .is_some_and(|b| matches!(b.order.status, OrderStatus::Confirmed | OrderStatus::Paid))
}

/// The writes the naive projector makes for one event, view by view.
pub fn plan(e: &Enriched) -> anyhow::Result<Vec<Write>> {
    let mut out = Vec::new();
    let at = date(e.event.recorded_at);
    let order_event = match &e.event.event {
        DomainEvent::Order(o) => Some(o),
        DomainEvent::Product(_) => None,
    };
    let total = e.after.as_ref().map_or(0, |a| a.order.total_cents);

    for key in OrdersProjection::keys(e) {
        let mut d = OrderDoc::default();
        OrdersProjection::apply(&mut d, &key, e, &Thresholds::default());
        let set = bson::to_document(&d)?;
        out.push(Write {
            view: OrdersProjection::VIEW.name(),
            filter: doc! {"_id": &key},
            update: doc! {"$set": set},
        });
    }

    for key in UsersProjection::keys(e) {
        let set = doc! {"userId": &key, "updatedAt": at};
        let update = match order_event {
            Some(OrderEvent::OrderCreated(_)) => {
                let after = e.after.as_ref();
                let recent = doc! {
                    "orderId": after.map(|a| a.order.order_id.to_string()),
                    "totalCents": total,
                    "status": after.map(|a| a.order.status.as_str()),
                    "paymentStatus": Bson::Null,
                    "createdAt": after.map(|a| date(a.created_at)),
                };
                doc! {
                    "$inc": {"orderCount": 1_i64},
                    "$set": set,
                    "$push": {"recentOrders": {"$each": [recent], "$position": 0, "$slice": RECENT_ORDERS as i64}},
                }
            }
            Some(OrderEvent::OrderConfirmed(_)) if legacy(e) => {
                doc! {"$inc": {"totalSpentCents": total}, "$set": set}
            }
            Some(OrderEvent::OrderCancelled(_)) if legacy_reversed(e) => {
                doc! {"$inc": {"totalSpentCents": -total}, "$set": set}
            }
            Some(OrderEvent::PaymentCaptured(p)) if !legacy(e) => {
                doc! {"$inc": {"totalSpentCents": p.amount_cents}, "$set": set}
            }
            Some(OrderEvent::PaymentRefunded(r)) if !legacy(e) => {
                doc! {"$inc": {"totalSpentCents": -r.amount_cents}, "$set": set}
            }
            _ => doc! {"$set": set},
        };
        out.push(Write {
            view: UsersProjection::VIEW.name(),
            filter: doc! {"_id": &key},
            update,
        });
    }

    let units: i64 = e
        .after
        .iter()
        .flat_map(|a| a.order.items.iter())
        .map(|l| i64::from(l.quantity))
        .sum();
    for key in DailySalesProjection::keys(e) {
        // `keys` names a day only for the events that change its figures.
        let inc = match order_event {
            Some(OrderEvent::OrderCreated(_)) => doc! {"ordersPlaced": 1_i64},
            Some(OrderEvent::OrderConfirmed(_)) if legacy(e) => {
                doc! {"ordersConfirmed": 1_i64, "revenueCents": total, "netRevenueCents": total, "unitsSold": units}
            }
            Some(OrderEvent::OrderConfirmed(_)) => doc! {"ordersConfirmed": 1_i64},
            Some(OrderEvent::OrderCancelled(_)) if legacy_reversed(e) => {
                doc! {"ordersCancelled": 1_i64, "refundedCents": total, "netRevenueCents": -total}
            }
            Some(OrderEvent::OrderCancelled(_)) => doc! {"ordersCancelled": 1_i64},
            Some(OrderEvent::PaymentCaptured(p)) => {
                let amount = p.amount_cents;
                doc! {"ordersPaid": 1_i64, "revenueCents": amount, "netRevenueCents": amount, "unitsSold": units}
            }
            Some(OrderEvent::PaymentRefunded(r)) => {
                let amount = r.amount_cents;
                doc! {"ordersRefunded": 1_i64, "refundedCents": amount, "netRevenueCents": -amount}
            }
            Some(OrderEvent::PaymentDeclined(_)) => doc! {"paymentsDeclined": 1_i64},
            _ => anyhow::bail!("daily_sales names a day for {}", e.event.event_type),
        };
        out.push(Write {
            view: DailySalesProjection::VIEW.name(),
            filter: doc! {"_id": &key},
            update: doc! {"$inc": inc, "$set": {"date": &key, "updatedAt": at}},
        });
    }

    for key in InventoryProjection::keys(e) {
        // The view follows the product stream alone.
        let DomainEvent::Product(product) = &e.event.event else {
            continue;
        };
        let mut set = doc! {"productId": &key, "updatedAt": at};
        let inc = match product {
            ProductEvent::ProductDetailsSet(d) => {
                set.insert("name", &d.name);
                None
            }
            ProductEvent::StockReceived(s) => {
                let q = i64::from(s.quantity);
                Some(doc! {"receivedUnits": q, "availableUnits": q})
            }
            ProductEvent::StockAdjusted(a) => {
                let q = a.delta.get();
                Some(doc! {"receivedUnits": q, "availableUnits": q})
            }
            ProductEvent::StockReserved(r) => {
                let q = i64::from(r.quantity);
                Some(doc! {"reservedUnits": q, "availableUnits": -q, "soldUnits": q})
            }
            ProductEvent::StockReleased(r) => {
                let q = i64::from(r.quantity);
                Some(doc! {"reservedUnits": -q, "availableUnits": q, "soldUnits": -q})
            }
            ProductEvent::StockShipped(s) => {
                let q = i64::from(s.quantity);
                Some(doc! {"reservedUnits": -q, "shippedUnits": q})
            }
        };
        let mut update = doc! {"$set": set};
        if let Some(inc) = inc {
            update.insert("$inc", inc);
        }
        out.push(Write {
            view: InventoryProjection::VIEW.name(),
            filter: doc! {"_id": &key},
            update,
        });
    }
    Ok(out)
}

/// Writes the naive projector would make for a whole log: per view, plus checkpoints.
#[derive(Debug, Clone, Default)]
pub struct Count {
    pub events: u64,
    pub batches: u64,
    pub per_view: BTreeMap<&'static str, u64>,
    pub checkpoints: u64,
}

impl Count {
    pub fn total(&self) -> u64 {
        self.per_view.values().sum::<u64>() + self.checkpoints
    }

    fn add_batch(&mut self, enriched: &[Enriched]) -> anyhow::Result<Vec<Write>> {
        let mut writes = Vec::new();
        for e in enriched {
            for w in plan(e)? {
                *self.per_view.entry(w.view).or_insert(0) += 1;
                writes.push(w);
            }
        }
        self.events += enriched.len() as u64;
        self.batches += 1;
        self.checkpoints += crate::projection::FOUR_VIEWS.len() as u64;
        Ok(writes)
    }
}

async fn next_batch(
    store: &EventStore,
    after: Position,
    limit: i64,
) -> anyhow::Result<Option<(Position, Vec<Enriched>)>> {
    let rows: Vec<TailRow> = store.read_committed_after(after, limit).await?;
    let Some(last) = rows.last() else {
        return Ok(None);
    };
    let last = match last {
        Ok(e) => e.position,
        Err(u) => u.position,
    };
    let mut out = Vec::with_capacity(rows.len());
    // The four classic views read no event time; the naive projector keeps nothing between
    // batches, order facts included.
    let nothing_kept = projector::context::FactsCache::default();
    for item in enrich(store, &nothing_kept, rows, &mut None).await? {
        match item {
            Ok(e) => out.push(e),
            Err(p) => anyhow::bail!(
                "unreadable event at {}: {}",
                p.event.position,
                p.event.error
            ),
        }
    }
    Ok(Some((last, out)))
}

/// Counts the naive projector's writes over the whole log, without MongoDB.
pub async fn dry_count(store: &EventStore) -> anyhow::Result<Count> {
    let mut count = Count::default();
    let mut at = Position::ZERO;
    while let Some((last, batch)) = next_batch(store, at, BATCH).await? {
        count.add_batch(&batch)?;
        at = last;
    }
    Ok(count)
}

#[derive(Debug, Clone)]
pub struct Run {
    pub seconds: f64,
    /// What `plan` says it sent; the caller compares it with the wire.
    pub planned: Count,
}

/// Runs the naive projector over the first `limit` events of the log into `db`.
pub async fn run(store: &EventStore, db: &mongodb::Database, limit: usize) -> anyhow::Result<Run> {
    let mut planned = Count::default();
    let mut at = Position::ZERO;
    let t = Instant::now();
    while (planned.events as usize) < limit {
        let want = (limit - planned.events as usize).min(BATCH as usize) as i64;
        let Some((last, batch)) = next_batch(store, at, want).await? else {
            break;
        };
        for w in planned.add_batch(&batch)? {
            db.collection::<Document>(&format!("{}_naive", w.view))
                .update_one(w.filter, w.update)
                .upsert(true)
                .await?;
        }
        for view in crate::projection::FOUR_VIEWS {
            db.collection::<Document>(CHECKPOINTS)
                .update_one(
                    doc! {"_id": view.name()},
                    doc! {"$set": {"position": Bson::String(last.to_string())}},
                )
                .upsert(true)
                .await?;
        }
        at = last;
    }
    Ok(Run {
        seconds: t.elapsed().as_secs_f64(),
        planned,
    })
}
