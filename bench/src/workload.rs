//! A realistic event log for the projection scenarios, and the counters the views must show.
//!
//! Orders go through the domain's own `decide`, so every event is one the write-service could
//! have written. Many orders are in flight at once and each transaction carries one event of
//! each of many orders (a multi-stream append), so the log interleaves orders as a busy shop's
//! does. Per order: created with 1-3 lines, 4-7 items added, often one removed, then 60%
//! confirmed, paid, shipped and delivered; 5% confirmed, paid, cancelled and refunded; 5%
//! confirmed, declined and cancelled (`payment_declined`); 5% confirmed then cancelled
//! before any payment; 10% cancelled while pending; 5% confirmed and paid only; 5%
//! confirmed only (awaiting payment); 5% left pending. The payment events are the ones the
//! fulfilment process records. About one stock delivery per ten orders.
//!
//! Products go through the domain too, as the write-service drives them: a product gets its
//! name, price and opening stock in the transaction of the first order that names it; a
//! confirmation reserves each line on the product's stream in the same transaction
//! (preceded by a delivery when the product could not cover it, so no confirmation is
//! refused), a cancellation releases, a shipment ships.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use anyhow::Context;
use domain::events::{DomainEvent, LineItem, OrderEvent, ProductEvent, ReleaseReason};
use domain::order::{self, OrderCommand, OrderState, PaymentStatus};
use domain::product::{self, Price, ProductCommand, ProductError, ProductState};
use domain::{Currency, OrderId, ProductId, Quantity, StockQuantity, UnitPriceCents};
use event_store::{
    Aggregate, EventStore, NewEvent, OrderAggregate, ProductAggregate, StreamAppend,
};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct Mix {
    /// Stop after at least this many events.
    pub events: usize,
    /// Orders in flight at once.
    pub window: usize,
    /// Orders advanced by one event in each transaction.
    pub streams_per_tx: usize,
    pub users: usize,
    /// Every line is of one product when 1 (the hot-key case: no removals then, since an
    /// order with one line cannot lose it).
    pub products: usize,
    pub seed: u64,
}

impl Mix {
    pub fn realistic(events: usize, window: usize) -> Mix {
        let orders = events / 10 + 1;
        Mix {
            events,
            window,
            streams_per_tx: 100.min(window),
            users: (orders / 5).max(1),
            products: 500.min(orders).max(2),
            seed: 6,
        }
    }
}

/// Totals the views must reach, computed from the commands alone (not by the projector).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expected {
    pub orders_placed: i64,
    pub orders_confirmed: i64,
    pub orders_cancelled: i64,
    pub orders_paid: i64,
    pub orders_refunded: i64,
    pub payments_declined: i64,
    /// Payments captured (`daily_sales` recognises revenue on capture).
    pub revenue_cents: i64,
    /// Refunds made.
    pub refunded_cents: i64,
    /// Units on orders at the moment their payment was captured (`daily_sales.unitsSold`).
    pub units_sold: i64,
    /// Per product, as its stream holds it.
    pub products: BTreeMap<String, Stock>,
    pub event_types: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Add(usize),
    Remove(usize),
    Confirm,
    Pay,
    Decline,
    Refund,
    Cancel,
    Ship,
    Deliver,
}

struct InFlight {
    id: OrderId,
    user: usize,
    state: OrderState,
    version: u64,
    created: bool,
    lines: Vec<usize>,
    steps: VecDeque<Step>,
}

/// A product's stock counters (`inventory_view`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stock {
    pub received: i64,
    pub reserved: i64,
    pub shipped: i64,
}

impl Stock {
    pub fn available(&self) -> i64 {
        self.received - self.reserved - self.shipped
    }
}

/// Units each product receives with its price; a delivery of at least `RESTOCK` units comes
/// whenever a confirmation would find too few.
const OPENING_STOCK: i64 = 200;
const RESTOCK: i64 = 500;

pub struct Generator {
    mix: Mix,
    rng: fastrand::Rng,
    in_flight: Vec<InFlight>,
    product_versions: HashMap<usize, u64>,
    products: HashMap<usize, ProductState>,
    /// The product events of the transaction being generated, by product.
    product_events: BTreeMap<usize, Vec<ProductEvent>>,
    pub emitted: usize,
    pub transactions: usize,
    pub expected: Expected,
}

fn product_id(p: usize) -> ProductId {
    format!("p-{p:04}").parse().expect("a valid product id")
}

fn price(p: usize) -> UnitPriceCents {
    UnitPriceCents::try_from(99 + (p * 37 % 9_900) as i64).expect("in range")
}

/// The generator's index of a product id it made.
fn product_index(id: &ProductId) -> usize {
    id.as_str()
        .strip_prefix("p-")
        .and_then(|n| n.parse().ok())
        .expect("a generated product id")
}

impl Generator {
    pub fn new(mix: Mix) -> Generator {
        Generator {
            rng: fastrand::Rng::with_seed(mix.seed),
            mix,
            in_flight: Vec::new(),
            product_versions: HashMap::new(),
            products: HashMap::new(),
            product_events: BTreeMap::new(),
            emitted: 0,
            transactions: 0,
            expected: Expected::default(),
        }
    }

    fn new_order(&mut self) -> InFlight {
        let rng = &mut self.rng;
        let products = self.mix.products;
        let pick = |rng: &mut fastrand::Rng, taken: &[usize]| -> usize {
            if products <= 1 {
                return 0;
            }
            if taken.len() >= products {
                return taken[0];
            }
            loop {
                let p = rng.usize(0..products);
                if !taken.contains(&p) {
                    return p;
                }
            }
        };
        let mut lines = Vec::new();
        for _ in 0..rng.usize(1..=3) {
            let p = pick(rng, &lines);
            if !lines.contains(&p) {
                lines.push(p);
            }
        }
        let mut steps = VecDeque::new();
        let mut on_order = lines.clone();
        let mut added = Vec::new();
        for _ in 0..rng.usize(4..=7) {
            // Mostly new products, sometimes more of one already on the order.
            let p = if products > 1 && rng.u8(0..4) > 0 && on_order.len() < 90 {
                pick(rng, &on_order)
            } else {
                on_order[rng.usize(0..on_order.len())]
            };
            if !on_order.contains(&p) {
                on_order.push(p);
                added.push(p);
            }
            steps.push_back(Step::Add(p));
        }
        if !added.is_empty() && rng.u8(0..10) < 7 {
            steps.push_back(Step::Remove(added[rng.usize(0..added.len())]));
        }
        match rng.u8(0..100) {
            0..60 => steps.extend([Step::Confirm, Step::Pay, Step::Ship, Step::Deliver]),
            60..65 => steps.extend([Step::Confirm, Step::Pay, Step::Cancel, Step::Refund]),
            65..70 => steps.extend([Step::Confirm, Step::Decline, Step::Cancel]),
            70..75 => steps.extend([Step::Confirm, Step::Cancel]),
            75..85 => steps.push_back(Step::Cancel),
            85..90 => steps.extend([Step::Confirm, Step::Pay]),
            90..95 => steps.push_back(Step::Confirm),
            _ => {}
        }
        InFlight {
            id: OrderId::new(),
            user: rng.usize(0..self.mix.users),
            state: OrderState::default(),
            version: 0,
            created: false,
            lines,
            steps,
        }
    }

    /// Decides a product command and records its events in the transaction being generated.
    fn product_command(&mut self, p: usize, cmd: ProductCommand) -> Result<(), ProductError> {
        let state = self.products.entry(p).or_default();
        for e in product::decide(state, cmd)? {
            *state = std::mem::take(state).apply(&e);
            let kind = DomainEvent::Product(e.clone()).event_type();
            *self.expected.event_types.entry(kind).or_insert(0) += 1;
            self.product_events.entry(p).or_default().push(e);
        }
        self.expected.products.insert(
            product_id(p).to_string(),
            Stock {
                received: state.received_units,
                reserved: state.reserved_units,
                shipped: state.shipped_units,
            },
        );
        Ok(())
    }

    fn receive(&mut self, p: usize, units: i64) -> anyhow::Result<()> {
        let quantity = StockQuantity::try_from(units).context("a delivery's size")?;
        let product_id = product_id(p);
        self.product_command(
            p,
            ProductCommand::ReceiveStock {
                product_id,
                quantity,
            },
        )?;
        Ok(())
    }

    /// Name, price and opening stock, the first time an order names the product.
    fn catalogue(&mut self, p: usize) -> anyhow::Result<()> {
        if self.products.get(&p).is_some_and(|s| s.price.is_some()) {
            return Ok(());
        }
        let details = ProductCommand::SetDetails {
            product_id: product_id(p),
            name: format!("Product {p}"),
            price: Price {
                currency: Currency::USD,
                unit_price_cents: price(p),
            },
        };
        self.product_command(p, details)?;
        self.receive(p, OPENING_STOCK)
    }

    /// What confirming, cancelling or shipping an order does to its products' streams.
    fn follow(&mut self, before: &OrderState, event: &OrderEvent) -> anyhow::Result<()> {
        let Some(o) = before.order() else {
            return Ok(());
        };
        for l in &o.items {
            let p = product_index(&l.product_id);
            let (product_id, order_id) = (l.product_id.clone(), o.order_id);
            match event {
                OrderEvent::OrderConfirmed(_) => {
                    let reserve = || ProductCommand::Reserve {
                        product_id: product_id.clone(),
                        order_id,
                        quantity: l.quantity,
                    };
                    if let Err(ProductError::InsufficientStock { asked, available }) =
                        self.product_command(p, reserve())
                    {
                        self.receive(p, (asked - available).max(RESTOCK))?;
                        self.product_command(p, reserve())?;
                    }
                }
                OrderEvent::OrderCancelled(_) => self.product_command(
                    p,
                    ProductCommand::Release {
                        product_id,
                        order_id,
                        reason: ReleaseReason::OrderCancelled,
                        held_by_order: o.stock_reserved.then_some(l.quantity),
                    },
                )?,
                OrderEvent::OrderShipped(_) => self.product_command(
                    p,
                    ProductCommand::Ship {
                        product_id,
                        order_id,
                        held_by_order: o.stock_reserved.then_some(l.quantity),
                    },
                )?,
                _ => {}
            }
        }
        Ok(())
    }

    fn line(&mut self, p: usize) -> LineItem {
        // Lines are priced by the catalogue, so the product is in it first.
        self.catalogue(p)
            .expect("the generator's catalogue entries are valid");
        LineItem {
            product_id: product_id(p),
            quantity: Quantity::try_from(self.rng.i64(1..=3)).expect("in range"),
            unit_price_cents: price(p),
        }
    }

    /// The next command of an order, or None when it has nothing left to do.
    fn next_command(&mut self, i: usize) -> Option<OrderCommand> {
        if !self.in_flight[i].created {
            let lines = self.in_flight[i].lines.clone();
            let items = lines.into_iter().map(|p| self.line(p)).collect();
            let o = &self.in_flight[i];
            return Some(OrderCommand::Create {
                order_id: o.id,
                user_id: format!("user-{:05}", o.user)
                    .parse()
                    .expect("a valid user id"),
                currency: Currency::USD,
                items,
            });
        }
        let step = self.in_flight[i].steps.pop_front()?;
        let (id, total) = self.in_flight[i]
            .state
            .order()
            .map_or((self.in_flight[i].id, 0), |o| (o.order_id, o.total_cents));
        Some(match step {
            Step::Add(p) => OrderCommand::AddItem(self.line(p)),
            Step::Remove(p) => OrderCommand::RemoveItem(product_id(p)),
            Step::Confirm => OrderCommand::Confirm {
                payment_method: "pm_card_visa".to_owned(),
                email: None,
            },
            // The provider's answers, as the fulfilment process records them: the whole
            // total captured, and refunded in full.
            Step::Pay => OrderCommand::CapturePayment {
                payment_intent_id: format!("pi_{}", id.0.simple()),
                amount_cents: total,
                currency: Currency::USD,
            },
            Step::Decline => OrderCommand::DeclinePayment {
                code: "card_declined".to_owned(),
                decline_code: Some("generic_decline".to_owned()),
                message: "Your card was declined.".to_owned(),
            },
            Step::Refund => OrderCommand::RefundPayment {
                refund_id: format!("re_{}", id.0.simple()),
                amount_cents: total,
                currency: Currency::USD,
            },
            Step::Cancel => OrderCommand::Cancel {
                reason: Some(
                    if self.in_flight[i].state.order().and_then(|o| o.payment)
                        == Some(PaymentStatus::Declined)
                    {
                        order::REASON_PAYMENT_DECLINED
                    } else {
                        "changed my mind"
                    }
                    .to_owned(),
                ),
            },
            Step::Ship => OrderCommand::Ship {
                carrier: "DHL".to_owned(),
                tracking_number: format!("TRK{}", self.rng.u64(..)),
            },
            Step::Deliver => OrderCommand::Deliver,
        })
    }

    fn count(&mut self, before: &OrderState, event: &OrderEvent) {
        let e = &mut self.expected;
        *e.event_types.entry(event_type(event)).or_insert(0) += 1;
        let Some(o) = before.order() else {
            if matches!(event, OrderEvent::OrderCreated(_)) {
                e.orders_placed += 1;
            }
            return;
        };
        // Every confirmation names a payment method, so revenue follows the payments.
        match event {
            OrderEvent::OrderConfirmed(_) => e.orders_confirmed += 1,
            OrderEvent::OrderCancelled(_) => e.orders_cancelled += 1,
            OrderEvent::PaymentCaptured(p) => {
                e.orders_paid += 1;
                e.revenue_cents += p.amount_cents;
                for l in &o.items {
                    e.units_sold += i64::from(l.quantity);
                }
            }
            OrderEvent::PaymentRefunded(r) => {
                e.orders_refunded += 1;
                e.refunded_cents += r.amount_cents;
            }
            OrderEvent::PaymentDeclined(_) => e.payments_declined += 1,
            _ => {}
        }
    }

    /// The streams of the next transaction, or None once `events` have been generated.
    pub fn next_tx(&mut self) -> Option<Vec<StreamAppend>> {
        if self.emitted >= self.mix.events {
            return None;
        }
        while self.in_flight.len() < self.mix.window {
            let o = self.new_order();
            self.in_flight.push(o);
        }
        // Distinct orders, chosen at random among those in flight.
        let k = self.mix.streams_per_tx.min(self.in_flight.len());
        let mut chosen: Vec<usize> = (0..self.in_flight.len()).collect();
        self.rng.shuffle(&mut chosen);
        chosen.truncate(k);
        chosen.sort_unstable();

        let mut appends = Vec::with_capacity(k + 1);
        let mut finished = Vec::new();
        for &i in &chosen {
            let event = loop {
                let Some(cmd) = self.next_command(i) else {
                    break None;
                };
                match order::decide(&self.in_flight[i].state, cmd) {
                    Ok(mut es) if es.len() == 1 => break es.pop(),
                    // A step that no longer fits (it cannot happen with these plans): skip it.
                    _ => continue,
                }
            };
            let Some(event) = event else {
                finished.push(i);
                continue;
            };
            let before = self.in_flight[i].state.clone();
            self.count(&before, &event);
            // The reservations, releases and shipments commit with the order's event.
            self.follow(&before, &event)
                .expect("the generator restocks before a reservation could fail");
            let o = &mut self.in_flight[i];
            o.created = true;
            o.state = before.apply(&event);
            appends.push(StreamAppend {
                stream_id: o.id.stream_id(),
                stream_type: OrderAggregate::STREAM_TYPE,
                expected_version: o.version,
                events: vec![new_event(DomainEvent::Order(event))],
                snapshot: None,
            });
            o.version += 1;
            if o.steps.is_empty() {
                finished.push(i);
            }
        }
        // About one delivery of stock per ten orders (an order is about ten events).
        if self.rng.usize(0..100) < appends.len() {
            let p = self.rng.usize(0..self.mix.products);
            let q = self.rng.i64(10..=500);
            self.receive(p, q).expect("a delivery in range");
        }
        // Each product stream touched once per transaction, with all its events, before the
        // orders (a product is priced before an order names it).
        let mut products = Vec::with_capacity(self.product_events.len());
        for (p, events) in std::mem::take(&mut self.product_events) {
            let version = self.product_versions.entry(p).or_insert(0);
            products.push(StreamAppend {
                stream_id: product_id(p).stream_id(),
                stream_type: ProductAggregate::STREAM_TYPE,
                expected_version: *version,
                events: events
                    .into_iter()
                    .map(|e| new_event(DomainEvent::Product(e)))
                    .collect(),
                snapshot: None,
            });
            *version += products.last().map_or(0, |a| a.events.len() as u64);
        }
        products.append(&mut appends);
        let appends = products;
        finished.sort_unstable();
        finished.dedup();
        for i in finished.into_iter().rev() {
            self.in_flight.swap_remove(i);
        }
        self.emitted += appends.iter().map(|a| a.events.len()).sum::<usize>();
        self.transactions += 1;
        Some(appends)
    }
}

fn event_type(e: &OrderEvent) -> &'static str {
    DomainEvent::Order(e.clone()).event_type()
}

fn new_event(event: DomainEvent) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event: event.encode(),
        metadata: json!({}),
    }
}

#[derive(Debug, Clone)]
pub struct Seeded {
    pub events: usize,
    pub transactions: usize,
    pub seconds: f64,
    pub expected: Expected,
}

/// How `recorded_at` is spread once the log is written.
#[derive(Debug, Clone, Copy)]
pub enum Days {
    /// Every event on one UTC day.
    One,
    /// Evenly over this many days ending today.
    Spread(u32),
}

/// Appends the whole generated log (one `EventStore::append` per transaction), then sets
/// `recorded_at` so the events fall on the days asked for, in log order. Events carry the
/// time they are written; this one statement on the scratch database stands in for a log
/// that was written over weeks.
pub async fn seed(store: &EventStore, mix: Mix, days: Days) -> anyhow::Result<Seeded> {
    let t = Instant::now();
    let mut generator = Generator::new(mix);
    while let Some(tx) = generator.next_tx() {
        store.append(&tx, None).await?;
    }
    let today = chrono::Utc::now().date_naive();
    let (first_day, span_days) = match days {
        Days::One => (today, 1),
        Days::Spread(d) => (today - chrono::Days::new(u64::from(d.max(1)) - 1), d.max(1)),
    };
    let start = first_day
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    // Spread over [start, start + span) in global_position order, ending a second early.
    sqlx::query(
        "with b as (select min(global_position) as lo, max(global_position) as hi from events)
         update events set recorded_at = $1::timestamptz
             + ((global_position - b.lo)::float8 / greatest(b.hi - b.lo, 1))
               * ($2::float8 * interval '1 day' - interval '1 second')
         from b",
    )
    .bind(start)
    .bind(f64::from(span_days))
    .execute(store.pool())
    .await?;
    sqlx::query("analyze events").execute(store.pool()).await?;
    Ok(Seeded {
        events: generator.emitted,
        transactions: generator.transactions,
        seconds: t.elapsed().as_secs_f64(),
        expected: generator.expected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_valid_interleaved_and_about_ten_events_per_order() {
        let mut g = Generator::new(Mix::realistic(5_000, 100));
        let mut streams = std::collections::HashSet::new();
        let mut events = 0;
        while let Some(tx) = g.next_tx() {
            let ids: std::collections::HashSet<_> = tx.iter().map(|a| &a.stream_id).collect();
            assert_eq!(ids.len(), tx.len(), "one event per stream per transaction");
            for a in &tx {
                streams.insert(a.stream_id.clone());
                events += a.events.len();
            }
        }
        assert_eq!(events, g.emitted);
        assert!(events >= 5_000);
        let orders = g.expected.orders_placed as f64;
        let order_events: u64 = g
            .expected
            .event_types
            .iter()
            .filter(|(t, _)| t.starts_with("Order") || t.starts_with("Item"))
            .map(|(_, n)| n)
            .sum();
        let per_order = order_events as f64 / orders;
        assert!(
            (7.0..12.0).contains(&per_order),
            "{per_order} events per order"
        );
        assert!(g.expected.orders_confirmed > 0 && g.expected.orders_cancelled > 0);
        let e = &g.expected;
        assert!(e.orders_paid > 0 && e.orders_refunded > 0 && e.payments_declined > 0);
        assert!(e.revenue_cents > e.refunded_cents && e.refunded_cents > 0);
        // Every confirmation reserved, every shipment and release followed, and no
        // product promised more than it received.
        for t in [
            "OrderShipped",
            "OrderDelivered",
            "PaymentCaptured",
            "PaymentDeclined",
            "PaymentRefunded",
            "ProductDetailsSet",
            "StockReserved",
            "StockReleased",
            "StockShipped",
        ] {
            assert!(g.expected.event_types.get(t).is_some_and(|n| *n > 0), "{t}");
        }
        for (p, s) in &g.expected.products {
            assert!(s.available() >= 0, "{p}: {s:?}");
        }
        let reserved: i64 = g.expected.products.values().map(|s| s.reserved).sum();
        let shipped: i64 = g.expected.products.values().map(|s| s.shipped).sum();
        assert!(reserved > 0 && shipped > 0);
    }

    #[test]
    fn the_hot_mix_uses_one_product() {
        let mut mix = Mix::realistic(2_000, 50);
        mix.products = 1;
        let mut g = Generator::new(mix);
        while g.next_tx().is_some() {}
        assert_eq!(g.expected.products.len(), 1);
        assert!(!g.expected.event_types.contains_key("ItemRemoved"));
    }
}
