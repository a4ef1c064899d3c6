//! The whole system end to end: the write-service, the projector and the read-service run
//! as real processes (the binaries `cargo build --workspace` leaves in `target/debug`) on a
//! fresh PostgreSQL database and a fresh MongoDB database, driven and read over HTTP only.
//!
//! The test keeps a model of every command it sent and what the write-service answered, and
//! derives every expected number from it: order documents, user counters and history,
//! daily sales, inventory, the dashboard and search. Reads carry the newest write's
//! `position` as `X-Consistency-Token`, so they see every write without sleeping. Event
//! times (which decide the sales day) come from the write-service's `/orders/{id}/events`.
//!
//! The second test SIGKILLs and restarts the projector while commands keep flowing, and
//! then demands the same exact numbers: nothing lost, nothing counted twice.
//!
//! Needs DATABASE_URL and MONGODB_URI (`make test` starts both servers and builds the
//! binaries; `cargo test -p e2e` alone does not build them).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveDate, Utc};
use domain::OrderId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_support::events::Events;
use tokio::process::Command;
use tokio::sync::watch;

mod common;
use common::*;

/// How long the read-service waits for a consistency token before 503 (its maximum is 60 s).
/// Generous: after a SIGKILL the next projector first catches up with the backlog.
const CONSISTENCY_TIMEOUT_MS: u64 = 20_000;

/// The three services on the test's own PostgreSQL database and MongoDB database.
struct System {
    http: reqwest::Client,
    database_url: String,
    write: Service,
    read: Service,
    projector: Option<Service>,
    /// The event store of the same database, for what no endpoint writes (payments).
    events: Events,
    /// Last, so it is dropped after the processes are told to die.
    mongodb_database: MongoDatabase,
}

impl System {
    async fn start(pool: &PgPool) -> System {
        let database = pool
            .connect_options()
            .get_database()
            .unwrap_or("postgres")
            .to_owned();
        let http = staff_http();
        let (mut write, mut read, database_url, mongodb_database) =
            write_and_read(&database, CONSISTENCY_TIMEOUT_MS).await;
        write.wait_ready(&http).await;
        read.wait_ready(&http).await;
        let mut system = System {
            http,
            database_url,
            mongodb_database,
            write,
            read,
            projector: None,
            events: Events::new(pool.clone()),
        };
        system.start_projector(100).await;
        system
    }

    async fn start_projector(&mut self, batch_size: u32) {
        assert!(self.projector.is_none(), "one projector at a time");
        let mut projector = Service::start(
            "projector",
            &[
                ("DATABASE_URL", self.database_url.clone()),
                ("MONGODB_URI", mongodb_uri()),
                ("MONGODB_DATABASE", self.mongodb_database.name.clone()),
                ("PROJECTOR_ADDR", "127.0.0.1:0".into()),
                ("PROJECTOR_BATCH_SIZE", batch_size.to_string()),
                ("PROJECTOR_POLL_INTERVAL_MS", "50".into()),
            ],
        )
        .await;
        projector.wait_ready(&self.http).await;
        self.projector = Some(projector);
    }

    async fn kill_projector(&mut self) {
        self.projector
            .take()
            .expect("a projector is running")
            .kill()
            .await;
    }

    fn api(&self) -> Api {
        Api {
            http: self.http.clone(),
            write: self.write.url(),
            read: self.read.url(),
            events: self.events.clone(),
        }
    }

    /// Stops every process and waits for it (before sqlx drops the test database), then
    /// drops the MongoDB database.
    async fn stop(self) {
        if let Some(p) = self.projector {
            p.kill().await;
        }
        self.write.kill().await;
        self.read.kill().await;
    }
}

// ---- HTTP -----------------------------------------------------------------------------------

/// The two public HTTP APIs, and the event store behind the write-service: the payment
/// provider's answers are recorded by the fulfilment process, which appends
/// `PaymentCaptured`, `PaymentDeclined` and `PaymentRefunded` through the event store (no
/// endpoint takes them), and so do these tests.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    write: String,
    read: String,
    events: Events,
}

impl Api {
    async fn send(
        &self,
        method: Method,
        url: String,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = token {
            request = request.header("x-consistency-token", token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        answer(request, &format!("{method} {url}")).await
    }

    async fn command(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        self.send(method, format!("{}{path}", self.write), None, body)
            .await
    }

    /// A read-service GET that includes every write up to `token`.
    async fn read(&self, path: &str, token: &str) -> Reply {
        let r = self
            .send(
                Method::GET,
                format!("{}{path}", self.read),
                Some(token),
                None,
            )
            .await;
        if r.status == StatusCode::OK {
            let position = r.headers["x-projection-position"].to_str().unwrap();
            // Fixed-width hex: the strings sort like the positions.
            assert!(
                position >= token,
                "GET {path}: answered from {position}, before the token {token}"
            );
        }
        r
    }

    async fn read_ok(&self, path: &str, token: &str) -> Value {
        let r = self.read(path, token).await;
        assert_eq!(r.status, StatusCode::OK, "GET {path}: {}", r.body);
        r.body
    }

    /// Every item of a paged listing (`field` holds the page's items), following
    /// `nextCursor`; every page but the last is full.
    async fn all_pages(&self, path: &str, field: &str, limit: usize, token: &str) -> Vec<Value> {
        let join = if path.contains('?') { '&' } else { '?' };
        let mut items = vec![];
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{path}{join}limit={limit}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = self.read_ok(&url, token).await;
            let found = page[field]
                .as_array()
                .unwrap_or_else(|| panic!("{url}: {page}"));
            assert!(found.len() <= limit, "{url}: more than {limit}");
            items.extend(found.iter().cloned());
            match page["nextCursor"].as_str() {
                Some(next) => {
                    assert_eq!(found.len(), limit, "{url}: a page before the last is full");
                    cursor = Some(next.to_owned());
                }
                None => return items,
            }
        }
    }

    /// The order's events as the write-service's event store holds them.
    async fn trail(&self, order: &str) -> Trail {
        let r = self
            .command(Method::GET, &format!("/orders/{order}/events"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "events of {order}: {}", r.body);
        let events = r.body["events"].as_array().unwrap();
        Trail {
            events: events
                .iter()
                .map(|e| {
                    (
                        e["type"].as_str().unwrap().to_owned(),
                        time(&e["recordedAt"]),
                    )
                })
                .collect(),
        }
    }
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
        .with_timezone(&Utc)
}

fn ids(orders: &[Value]) -> Vec<String> {
    orders
        .iter()
        .map(|o| o["orderId"].as_str().unwrap().to_owned())
        .collect()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// An order's events: type and recording time, in stream order.
struct Trail {
    events: Vec<(String, DateTime<Utc>)>,
}

impl Trail {
    fn at(&self, event_type: &str) -> Option<DateTime<Utc>> {
        self.events
            .iter()
            .find(|(t, _)| t == event_type)
            .map(|(_, at)| *at)
    }

    fn created(&self) -> DateTime<Utc> {
        self.events[0].1
    }

    fn updated(&self) -> DateTime<Utc> {
        self.events.last().unwrap().1
    }
}

/// Views store times in milliseconds.
fn millis(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

// ---- the model of what was written ----------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Pending,
    Confirmed,
    /// Its payment captured: it may ship.
    Paid,
    Cancelled,
    Shipped,
    Delivered,
}

impl Status {
    /// Every status, as the dashboard counts them.
    const ALL: [Status; 6] = [
        Status::Pending,
        Status::Confirmed,
        Status::Paid,
        Status::Cancelled,
        Status::Shipped,
        Status::Delivered,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Confirmed => "confirmed",
            Status::Paid => "paid",
            Status::Cancelled => "cancelled",
            Status::Shipped => "shipped",
            Status::Delivered => "delivered",
        }
    }
}

/// Where an order's payment is, from its checkout on (`paymentStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payment {
    Awaiting,
    Captured,
    Declined,
    Refunded,
}

impl Payment {
    fn as_str(self) -> &'static str {
        match self {
            Payment::Awaiting => "awaiting",
            Payment::Captured => "captured",
            Payment::Declined => "declined",
            Payment::Refunded => "refunded",
        }
    }
}

/// The payment method every checkout here names.
const PAYMENT_METHOD: &str = "pm_card_visa";
/// The provider's reason `Events::decline` records (its decline code).
const DECLINE_CODE: &str = "insufficient_funds";

/// A catalogue entry, as `PUT /products/{id}` sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Product {
    name: String,
    currency: &'static str,
    price: i64,
}

#[derive(Debug, Clone)]
struct Line {
    product: String,
    quantity: i64,
    /// What the order charges: the catalogue's price when the line was added (set by
    /// `Model::apply`).
    price: i64,
    /// The `unitPriceCents` the client sends ("the price I was shown"), if any.
    sent: Option<i64>,
}

impl Line {
    fn json(&self) -> Value {
        let mut v = json!({"productId": self.product, "quantity": self.quantity});
        if let Some(cents) = self.sent {
            v["unitPriceCents"] = json!(cents);
        }
        v
    }
}

#[derive(Debug, Clone)]
struct OrderModel {
    id: String,
    user: String,
    currency: String,
    lines: Vec<Line>,
    status: Status,
    cancel_reason: Option<String>,
    carrier: Option<String>,
    tracking_number: Option<String>,
    /// None before checkout.
    payment: Option<Payment>,
    /// Amount captured (the order's total, once captured; 0 before).
    paid: i64,
    /// Amount refunded (the order's total, once refunded; 0 before).
    refunded: i64,
    /// Set by a declined charge, kept after a later capture.
    decline_code: Option<&'static str>,
    /// The event types appended, in order.
    events: Vec<&'static str>,
}

impl OrderModel {
    fn total(&self) -> i64 {
        self.lines.iter().map(|l| l.quantity * l.price).sum()
    }

    fn units(&self) -> i64 {
        self.lines.iter().map(|l| l.quantity).sum()
    }

    fn version(&self) -> i64 {
        self.events.len() as i64
    }

    fn was_confirmed(&self) -> bool {
        self.events.contains(&"OrderConfirmed")
    }

    /// What the user spent on it: captured, less refunded.
    fn spent(&self) -> i64 {
        self.paid - self.refunded
    }

    fn has(&self, product: &str) -> bool {
        self.lines.iter().any(|l| l.product == product)
    }

    fn quantity_of(&self, product: &str) -> i64 {
        self.lines
            .iter()
            .filter(|l| l.product == product)
            .map(|l| l.quantity)
            .sum()
    }

    /// Lines merge by product, keeping their first place.
    fn merge(&mut self, line: Line) {
        match self.lines.iter_mut().find(|l| l.product == line.product) {
            Some(existing) => existing.quantity += line.quantity,
            None => self.lines.push(line),
        }
    }

    /// The order document without its times, as the read-service should show it.
    fn expected_doc(&self) -> Value {
        // The intent id `Events::pay` records, kept after a refund.
        let intent = (self.paid > 0).then(|| format!("pi_test_{}", self.id.replace('-', "")));
        let items: Vec<Value> = self
            .lines
            .iter()
            .map(|l| {
                json!({
                    "productId": l.product,
                    "quantity": l.quantity,
                    "unitPriceCents": l.price,
                    "lineTotalCents": l.quantity * l.price,
                })
            })
            .collect();
        json!({
            "orderId": self.id,
            "userId": self.user,
            "currency": self.currency,
            "items": items,
            "itemCount": self.units(),
            "totalCents": self.total(),
            "status": self.status.as_str(),
            "cancelReason": self.cancel_reason,
            "carrier": self.carrier,
            "trackingNumber": self.tracking_number,
            "paymentStatus": self.payment.map(Payment::as_str),
            "paymentMethod": self.payment.map(|_| PAYMENT_METHOD),
            "paymentIntentId": intent,
            "paidCents": self.paid,
            "refundedCents": self.refunded,
            "paymentDeclineCode": self.decline_code,
            "version": self.version(),
        })
    }
}

#[derive(Debug, Clone)]
enum Cmd {
    Place {
        user: String,
        currency: Option<&'static str>,
        lines: Vec<Line>,
    },
    Add(String, Line),
    Remove(String, String),
    Confirm(String),
    /// The payment captured, as the fulfilment process records it (not over HTTP): the
    /// order's total. Also late, on an order cancelled while its charge was under way.
    Pay(String),
    /// The charge declined, as the fulfilment process records it (not over HTTP); the order
    /// stays as it was and may still be paid (a retry) or cancelled.
    Decline(String),
    /// The captured payment of a cancelled order given back, as the fulfilment process
    /// records it (not over HTTP): the whole total.
    Refund(String),
    Cancel(String, Option<String>),
    Ship(String, String, String),
    Deliver(String),
    SetProduct(String, Product),
    Receive(String, i64),
    Adjust(String, i64, Option<String>),
}

impl Cmd {
    fn request(&self) -> (Method, String, Option<Value>) {
        match self {
            Cmd::Place {
                user,
                currency,
                lines,
            } => {
                let mut body = json!({"userId": user, "items": lines.iter().map(Line::json).collect::<Vec<_>>()});
                if let Some(c) = currency {
                    body["currency"] = json!(c);
                }
                (Method::POST, "/orders".into(), Some(body))
            }
            Cmd::Add(id, l) => (Method::POST, format!("/orders/{id}/items"), Some(l.json())),
            Cmd::Remove(id, p) => (Method::DELETE, format!("/orders/{id}/items/{p}"), None),
            Cmd::Confirm(id) => (
                Method::POST,
                format!("/orders/{id}/confirm"),
                Some(json!({"paymentMethod": PAYMENT_METHOD})),
            ),
            Cmd::Pay(_) | Cmd::Decline(_) | Cmd::Refund(_) => {
                unreachable!("a payment is recorded through the event store")
            }
            Cmd::Cancel(id, reason) => (
                Method::POST,
                format!("/orders/{id}/cancel"),
                reason.as_ref().map(|r| json!({"reason": r})),
            ),
            Cmd::Ship(id, carrier, tracking) => (
                Method::POST,
                format!("/orders/{id}/ship"),
                Some(json!({"carrier": carrier, "trackingNumber": tracking})),
            ),
            Cmd::Deliver(id) => (Method::POST, format!("/orders/{id}/deliver"), None),
            Cmd::SetProduct(p, d) => (
                Method::PUT,
                format!("/products/{p}"),
                Some(json!({"name": d.name, "unitPriceCents": d.price, "currency": d.currency})),
            ),
            Cmd::Receive(p, q) => (
                Method::POST,
                format!("/products/{p}/stock"),
                Some(json!({"quantity": q})),
            ),
            Cmd::Adjust(p, q, reason) => {
                let mut body = json!({"quantity": q});
                if let Some(r) = reason {
                    body["reason"] = json!(r);
                }
                (
                    Method::POST,
                    format!("/products/{p}/stock/adjustments"),
                    Some(body),
                )
            }
        }
    }

    fn order(&self) -> Option<&str> {
        match self {
            Cmd::Place { .. } | Cmd::SetProduct(..) | Cmd::Receive(..) | Cmd::Adjust(..) => None,
            Cmd::Add(id, _)
            | Cmd::Remove(id, _)
            | Cmd::Confirm(id)
            | Cmd::Pay(id)
            | Cmd::Decline(id)
            | Cmd::Refund(id)
            | Cmd::Cancel(id, _)
            | Cmd::Ship(id, ..)
            | Cmd::Deliver(id) => Some(id),
        }
    }

    fn product(&self) -> Option<&str> {
        match self {
            Cmd::SetProduct(p, _) | Cmd::Receive(p, _) | Cmd::Adjust(p, ..) => Some(p),
            _ => None,
        }
    }
}

/// An answer the write-service should refuse a command with; `field` and `details` are
/// checked when given.
#[derive(Debug, Clone)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    field: Option<String>,
    details: Option<Value>,
}

fn refusal(status: StatusCode, code: &'static str) -> Refusal {
    Refusal {
        status,
        code,
        field: None,
        details: None,
    }
}

/// `details` entries in a fixed order (by product), so two lists compare as sets.
fn by_product(details: &Value) -> Value {
    let mut items = details.as_array().cloned().unwrap_or_default();
    items.sort_by_key(|d| d["productId"].as_str().unwrap_or_default().to_owned());
    Value::Array(items)
}

/// A product's stock as its stream holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stock {
    received: i64,
    reserved: i64,
    shipped: i64,
}

impl Stock {
    fn available(&self) -> i64 {
        self.received - self.reserved - self.shipped
    }

    /// What the dashboard ranks products by.
    fn sold(&self) -> i64 {
        self.reserved + self.shipped
    }
}

/// Everything written and answered: the catalogue, orders by id, stock received per
/// product, and the newest consistency token.
#[derive(Debug, Default)]
struct Model {
    catalogue: BTreeMap<String, Product>,
    orders: BTreeMap<String, OrderModel>,
    /// Units received per product: deliveries plus adjustments.
    received: BTreeMap<String, i64>,
    /// Events on each product stream from its own commands (details changed, deliveries,
    /// adjustments); the reservations, releases and shipments follow from the orders.
    product_writes: BTreeMap<String, i64>,
    token: Option<String>,
    /// The id of the order placed last.
    placed: Option<String>,
    /// Read each write back at once with its own token (read-your-writes).
    read_back: bool,
    /// Other writers use the same products: whether a confirmation finds enough stock, and
    /// a product's version, are not this model's to predict.
    shared_stock: bool,
    /// Confirmations refused for want of stock that this model could not predict.
    short: usize,
}

impl Model {
    /// Stock per product with any event on its stream. Every order confirmed here reserved
    /// its lines; cancelling released them, shipping shipped them.
    fn stock(&self) -> BTreeMap<String, Stock> {
        let mut stock: BTreeMap<String, Stock> = self
            .catalogue
            .keys()
            .chain(self.received.keys())
            .map(|p| (p.clone(), Stock::default()))
            .collect();
        for (p, q) in &self.received {
            stock.entry(p.clone()).or_default().received = *q;
        }
        for o in self.orders.values().filter(|o| o.was_confirmed()) {
            for l in &o.lines {
                let s = stock.entry(l.product.clone()).or_default();
                match o.status {
                    Status::Confirmed | Status::Paid => s.reserved += l.quantity,
                    Status::Shipped | Status::Delivered => s.shipped += l.quantity,
                    _ => {}
                }
            }
        }
        stock
    }

    /// Events on the product's stream: its own commands, and one per confirmation,
    /// release (a confirmed or paid order cancelled) and shipment of an order with a line
    /// of it (a payment touches no product).
    fn product_version(&self, product: &str) -> i64 {
        let mut n = self.product_writes.get(product).copied().unwrap_or(0);
        for o in self.orders.values().filter(|o| o.has(product)) {
            n += o
                .events
                .iter()
                .filter(|e| matches!(**e, "OrderConfirmed" | "OrderShipped"))
                .count() as i64;
            if o.was_confirmed() && o.status == Status::Cancelled {
                n += 1;
            }
        }
        n
    }

    /// The catalogue's refusals of lines for an order in `currency`: a product without a
    /// price or in another currency (422 on the line's product), then every line whose
    /// price the client sent and the catalogue no longer has (409 `price_changed`).
    /// `prefix` is how the fields of line `i` are named (`items[i].` or nothing).
    fn check_lines(
        &self,
        lines: &[Line],
        currency: &str,
        prefix: impl Fn(usize) -> String,
    ) -> Result<(), Refusal> {
        for (i, l) in lines.iter().enumerate() {
            let priced = self.catalogue.get(&l.product);
            if priced.is_none_or(|p| p.currency != currency) {
                return Err(Refusal {
                    field: Some(format!("{}productId", prefix(i))),
                    ..refusal(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
                });
            }
        }
        let changed: Vec<(usize, &Line, i64)> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l, self.catalogue[&l.product].price))
            .filter(|(_, l, now)| l.sent.is_some_and(|sent| sent != *now))
            .collect();
        if let Some((first, ..)) = changed.first() {
            let details: Vec<Value> = changed
                .iter()
                .map(|(_, l, now)| json!({"productId": l.product, "unitPriceCents": now}))
                .collect();
            return Err(Refusal {
                field: Some(format!("{}unitPriceCents", prefix(*first))),
                details: Some(Value::Array(details)),
                ..refusal(StatusCode::CONFLICT, "price_changed")
            });
        }
        Ok(())
    }

    /// What the write-service should answer: `Ok` or the refusal.
    fn predict(&self, cmd: &Cmd) -> Result<(), Refusal> {
        let conflict = Err(refusal(StatusCode::CONFLICT, "invalid_state"));
        match cmd {
            Cmd::Place {
                currency, lines, ..
            } => {
                return self
                    .check_lines(lines, currency.unwrap_or("USD"), |i| format!("items[{i}]."));
            }
            Cmd::Adjust(p, delta, _) => {
                let s = self.stock().get(p.as_str()).copied().unwrap_or_default();
                return if !self.shared_stock && s.received + delta < s.reserved + s.shipped {
                    Err(refusal(StatusCode::CONFLICT, "below_committed"))
                } else {
                    Ok(())
                };
            }
            Cmd::SetProduct(..) | Cmd::Receive(..) => return Ok(()),
            _ => {}
        }
        let id = cmd.order().expect("an order command");
        let o = &self.orders[id];
        match cmd {
            Cmd::Add(_, l) => {
                if o.status != Status::Pending {
                    return conflict;
                }
                self.check_lines(std::slice::from_ref(l), &o.currency, |_| String::new())?;
                if o.lines
                    .iter()
                    .any(|x| x.product == l.product && x.price != self.catalogue[&l.product].price)
                {
                    Err(refusal(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "validation_failed",
                    ))
                } else {
                    Ok(())
                }
            }
            Cmd::Remove(_, p) => {
                if o.status != Status::Pending {
                    conflict
                } else if !o.has(p) {
                    Err(refusal(StatusCode::NOT_FOUND, "item_not_found"))
                } else if o.lines.len() == 1 {
                    Err(refusal(StatusCode::CONFLICT, "last_item"))
                } else {
                    Ok(())
                }
            }
            Cmd::Confirm(_) if o.status == Status::Pending => {
                if self.shared_stock {
                    return Ok(());
                }
                let stock = self.stock();
                let short: Vec<Value> = o
                    .lines
                    .iter()
                    .map(|l| (l, stock.get(&l.product).copied().unwrap_or_default()))
                    .filter(|(l, s)| l.quantity > s.available())
                    .map(|(l, s)| {
                        json!({
                            "productId": l.product,
                            "askedUnits": l.quantity,
                            "availableUnits": s.available(),
                        })
                    })
                    .collect();
                if short.is_empty() {
                    Ok(())
                } else {
                    Err(Refusal {
                        details: Some(Value::Array(short)),
                        ..refusal(StatusCode::CONFLICT, "insufficient_stock")
                    })
                }
            }
            // A capture answers a charge in flight (awaiting) or retried after a decline;
            // the domain records it even if the order was cancelled meanwhile.
            Cmd::Pay(_)
                if matches!(o.status, Status::Confirmed | Status::Cancelled)
                    && matches!(o.payment, Some(Payment::Awaiting | Payment::Declined)) =>
            {
                Ok(())
            }
            Cmd::Decline(_)
                if matches!(o.status, Status::Confirmed | Status::Cancelled)
                    && o.payment == Some(Payment::Awaiting) =>
            {
                Ok(())
            }
            Cmd::Refund(_)
                if o.status == Status::Cancelled && o.payment == Some(Payment::Captured) =>
            {
                Ok(())
            }
            Cmd::Cancel(..)
                if matches!(o.status, Status::Pending | Status::Confirmed | Status::Paid) =>
            {
                Ok(())
            }
            // Only a paid order ships.
            Cmd::Ship(..) if o.status == Status::Paid => Ok(()),
            Cmd::Deliver(_) if o.status == Status::Shipped => Ok(()),
            _ => conflict,
        }
    }

    fn order(&mut self, id: &str) -> &mut OrderModel {
        self.orders.get_mut(id).unwrap()
    }

    /// The line as the order records it: at the catalogue's price.
    fn priced(&self, l: &Line) -> Line {
        Line {
            price: self.catalogue[&l.product].price,
            ..l.clone()
        }
    }

    fn apply(&mut self, cmd: &Cmd, body: &Value) -> Option<String> {
        match cmd {
            Cmd::Place {
                user,
                currency,
                lines,
            } => {
                let id = body["orderId"].as_str().unwrap().to_owned();
                let mut o = OrderModel {
                    id: id.clone(),
                    user: user.clone(),
                    currency: currency.unwrap_or("USD").to_owned(),
                    lines: vec![],
                    status: Status::Pending,
                    cancel_reason: None,
                    carrier: None,
                    tracking_number: None,
                    payment: None,
                    paid: 0,
                    refunded: 0,
                    decline_code: None,
                    events: vec!["OrderCreated"],
                };
                for l in lines {
                    o.merge(self.priced(l));
                }
                let fresh = self.orders.insert(id.clone(), o).is_none();
                assert!(fresh, "order id {id} given twice");
                self.placed = Some(id.clone());
                return Some(id);
            }
            Cmd::Add(id, l) => {
                let l = self.priced(l);
                let o = self.order(id);
                o.merge(l);
                o.events.push("ItemAdded");
            }
            Cmd::Remove(id, p) => {
                let o = self.order(id);
                o.lines.retain(|l| &l.product != p);
                o.events.push("ItemRemoved");
            }
            Cmd::Confirm(id) => {
                let o = self.order(id);
                o.status = Status::Confirmed;
                o.payment = Some(Payment::Awaiting);
                o.events.push("OrderConfirmed");
            }
            Cmd::Pay(id) => {
                let o = self.order(id);
                if o.status == Status::Confirmed {
                    o.status = Status::Paid;
                }
                o.payment = Some(Payment::Captured);
                o.paid = o.total();
                o.events.push("PaymentCaptured");
            }
            Cmd::Decline(id) => {
                let o = self.order(id);
                o.payment = Some(Payment::Declined);
                o.decline_code = Some(DECLINE_CODE);
                o.events.push("PaymentDeclined");
            }
            Cmd::Refund(id) => {
                let o = self.order(id);
                o.payment = Some(Payment::Refunded);
                o.refunded = o.paid;
                o.events.push("PaymentRefunded");
            }
            Cmd::Cancel(id, reason) => {
                let o = self.order(id);
                o.status = Status::Cancelled;
                o.cancel_reason = reason.clone();
                o.events.push("OrderCancelled");
            }
            Cmd::Ship(id, carrier, tracking) => {
                let o = self.order(id);
                o.status = Status::Shipped;
                o.carrier = Some(carrier.clone());
                o.tracking_number = Some(tracking.clone());
                o.events.push("OrderShipped");
            }
            Cmd::Deliver(id) => {
                let o = self.order(id);
                o.status = Status::Delivered;
                o.events.push("OrderDelivered");
            }
            Cmd::SetProduct(p, d) => {
                // Setting the same details again appends nothing.
                if self.catalogue.get(p) != Some(d) {
                    *self.product_writes.entry(p.clone()).or_default() += 1;
                    self.catalogue.insert(p.clone(), d.clone());
                }
            }
            Cmd::Receive(p, q) | Cmd::Adjust(p, q, _) => {
                *self.received.entry(p.clone()).or_default() += q;
                *self.product_writes.entry(p.clone()).or_default() += 1;
            }
        }
        cmd.order().map(str::to_owned)
    }

    /// Sends the command and checks the answer against the prediction. True (and the model
    /// updated) if the write-service appended; false if it refused, as predicted, or gave
    /// up after losing races on the stream (409 `concurrency_conflict`: nothing appended).
    async fn run(&mut self, api: &Api, cmd: Cmd) -> bool {
        let expected = self.predict(&cmd);
        if let Cmd::Pay(id) | Cmd::Decline(id) | Cmd::Refund(id) = &cmd {
            let order = OrderId(id.parse().expect("an order id"));
            let written = match cmd {
                Cmd::Pay(_) => api.events.try_pay(order).await,
                Cmd::Decline(_) => api.events.try_decline(order).await,
                _ => api.events.try_refund(order).await,
            };
            assert_eq!(
                written.is_some(),
                expected.is_ok(),
                "{cmd:?} on an order {:?} with payment {:?}",
                self.orders[id].status,
                self.orders[id].payment
            );
            let Some(token) = written else {
                return false;
            };
            let token = token.to_string();
            self.apply(&cmd, &Value::Null);
            self.saw(token.clone());
            self.read_back_order(api, id, &token, &format!("{cmd:?}"))
                .await;
            return true;
        }
        let (method, path, body) = cmd.request();
        let r = api.command(method.clone(), &path, body.as_ref()).await;
        let what = format!("{method} {path} {body:?}");
        if r.status == StatusCode::CONFLICT && r.code() == "concurrency_conflict" {
            return false;
        }
        if let (Cmd::Confirm(id), true, Ok(())) = (&cmd, self.shared_stock, &expected)
            && (r.status, r.code()) == (StatusCode::CONFLICT, "insufficient_stock")
        {
            // Other writers took the stock: each short line is one of the order's, asked
            // in full, and more than is available.
            let o = &self.orders[id];
            let details = r.body["error"]["details"].as_array().cloned();
            let details = details.unwrap_or_else(|| panic!("{what}: no details: {}", r.body));
            assert!(!details.is_empty(), "{what}: {}", r.body);
            for d in details {
                let p = d["productId"].as_str().unwrap_or_default();
                let (asked, available) = (int(&d["askedUnits"]), int(&d["availableUnits"]));
                assert!(o.has(p), "{what}: {d} is not a line of the order");
                assert_eq!(asked, o.quantity_of(p), "{what}: {d}");
                assert!((0..asked).contains(&available), "{what}: {d}");
            }
            self.short += 1;
            return false;
        }
        if let Err(want) = expected {
            assert_eq!(
                (r.status, r.code()),
                (want.status, want.code),
                "{what}: {}",
                r.body
            );
            if let Some(field) = &want.field {
                assert_eq!(r.body["error"]["field"], json!(field), "{what}: {}", r.body);
            }
            if let Some(details) = &want.details {
                assert_eq!(
                    by_product(&r.body["error"]["details"]),
                    by_product(details),
                    "{what}: {}",
                    r.body
                );
            }
            return false;
        }
        let created = matches!(cmd, Cmd::Place { .. });
        let success = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        assert_eq!(r.status, success, "{what}: {}", r.body);
        let token = r.body["position"]
            .as_str()
            .unwrap_or_else(|| panic!("no position: {}", r.body))
            .to_owned();
        let touched = self.apply(&cmd, &r.body);
        self.saw(token.clone());
        if let Some(id) = &touched {
            let o = &self.orders[id];
            assert_eq!(int(&r.body["version"]), o.version(), "{path}: {}", r.body);
            self.read_back_order(api, id, &token, &what).await;
        } else if let Some(p) = cmd.product() {
            assert_eq!(r.body["productId"], json!(p), "{what}: {}", r.body);
            if !self.shared_stock {
                assert_eq!(
                    int(&r.body["version"]),
                    self.product_version(p),
                    "{what}: {}",
                    r.body
                );
            }
            if self.read_back {
                let item = api.read_ok(&format!("/inventory/{p}"), &token).await;
                let s = self.stock()[p];
                assert_eq!(
                    (
                        &item["name"],
                        &item["receivedUnits"],
                        &item["availableUnits"]
                    ),
                    (
                        &json!(self.catalogue.get(p).map(|d| &d.name)),
                        &json!(s.received),
                        &json!(s.available())
                    ),
                    "{what} read back with its token: {item}"
                );
            }
        }
        true
    }

    /// With `read_back`, reads the order written with the write's own token: the answer
    /// includes the write, though nothing waited for the projector.
    async fn read_back_order(&self, api: &Api, id: &str, token: &str, what: &str) {
        if !self.read_back {
            return;
        }
        let o = &self.orders[id];
        let doc = api.read_ok(&format!("/orders/{id}"), token).await;
        assert_eq!(
            (
                &doc["version"],
                &doc["status"],
                &doc["totalCents"],
                &doc["paymentStatus"]
            ),
            (
                &json!(o.version()),
                &json!(o.status.as_str()),
                &json!(o.total()),
                &json!(o.payment.map(Payment::as_str))
            ),
            "{what} read back with its token"
        );
    }

    /// Keeps the newest consistency token.
    fn saw(&mut self, token: String) {
        if self.token.as_ref().is_none_or(|t| *t < token) {
            self.token = Some(token);
        }
    }

    /// Records the order's payment, then ships it. A ship that lost its races on the
    /// products' streams (409 `concurrency_conflict`, nothing appended) is sent again.
    async fn pay_and_ship(&mut self, api: &Api, id: &str, carrier: &str, tracking: &str) {
        self.ok(api, Cmd::Pay(id.into())).await;
        let ship = Cmd::Ship(id.into(), carrier.into(), tracking.into());
        for _ in 0..10 {
            if self.run(api, ship.clone()).await {
                return;
            }
        }
        panic!("{ship:?} lost its races ten times");
    }

    /// Runs a command the domain accepts; for a new order, its id.
    async fn ok(&mut self, api: &Api, cmd: Cmd) -> Option<String> {
        let placing = matches!(cmd, Cmd::Place { .. });
        assert!(self.run(api, cmd.clone()).await, "refused: {cmd:?}");
        if placing { self.placed.clone() } else { None }
    }

    async fn place(&mut self, api: &Api, user: &str, lines: Vec<Line>) -> String {
        self.ok(
            api,
            Cmd::Place {
                user: user.into(),
                currency: None,
                lines,
            },
        )
        .await
        .unwrap()
    }

    /// Runs a command the domain refuses (the expected refusal is checked in `run`).
    async fn refused(&mut self, api: &Api, cmd: Cmd) {
        assert!(self.predict(&cmd).is_err(), "not a refusal: {cmd:?}");
        assert!(!self.run(api, cmd).await);
    }

    /// Opens the shop: every product of the catalogue gets its name and price, and the
    /// products in `stock` receive those units, before any order names them.
    async fn open_shop(&mut self, api: &Api, stock: &[(&str, i64)]) {
        for (id, product) in catalogue() {
            self.ok(api, Cmd::SetProduct(id.into(), product)).await;
        }
        for (p, q) in stock {
            self.ok(api, Cmd::Receive((*p).into(), *q)).await;
        }
    }

    /// A writer's model that starts from this one's catalogue.
    fn writer(&self) -> Model {
        Model {
            catalogue: self.catalogue.clone(),
            shared_stock: true,
            ..Model::default()
        }
    }

    fn absorb(&mut self, other: Model) {
        for (id, o) in other.orders {
            assert!(
                self.orders.insert(id, o).is_none(),
                "two writers, one order"
            );
        }
        for (p, q) in other.received {
            *self.received.entry(p).or_default() += q;
        }
        for (p, n) in other.product_writes {
            *self.product_writes.entry(p).or_default() += n;
        }
        self.short += other.short;
        if let Some(t) = other.token
            && self.token.as_ref().is_none_or(|mine| *mine < t)
        {
            self.token = Some(t);
        }
    }
}

// ---- the expected views ---------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Figures {
    placed: i64,
    confirmed: i64,
    cancelled: i64,
    /// Orders whose payment was captured.
    paid: i64,
    /// Orders whose payment was refunded.
    refunds: i64,
    /// Charges declined.
    declined: i64,
    revenue: i64,
    refunded: i64,
    units: i64,
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.placed += o.placed;
        self.confirmed += o.confirmed;
        self.cancelled += o.cancelled;
        self.paid += o.paid;
        self.refunds += o.refunds;
        self.declined += o.declined;
        self.revenue += o.revenue;
        self.refunded += o.refunded;
        self.units += o.units;
    }

    fn net(&self) -> i64 {
        self.revenue - self.refunded
    }

    /// As the read-service shows a day or a total (without the date).
    fn json(&self) -> Value {
        json!({
            "ordersPlaced": self.placed,
            "ordersConfirmed": self.confirmed,
            "ordersCancelled": self.cancelled,
            "ordersPaid": self.paid,
            "ordersRefunded": self.refunds,
            "paymentsDeclined": self.declined,
            "revenueCents": self.revenue,
            "refundedCents": self.refunded,
            "netRevenueCents": self.net(),
            "unitsSold": self.units,
        })
    }

    fn of(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("date");
        }
        v
    }
}

/// Sales per UTC day, each event on the day it was recorded: an order is placed, checked out
/// (confirmed) and cancelled, whatever came before; revenue (the amount captured) and units
/// count on the day its payment is captured, also when that is after a cancellation; a
/// refund counts on its own day. Every checkout here names a payment method, so no order
/// follows the rule of orders confirmed before payments existed.
fn expected_sales(model: &Model, trails: &BTreeMap<String, Trail>) -> BTreeMap<NaiveDate, Figures> {
    let mut days: BTreeMap<NaiveDate, Figures> = BTreeMap::new();
    for o in model.orders.values() {
        let trail = &trails[&o.id];
        for (event, at) in &trail.events {
            let d = days.entry(at.date_naive()).or_default();
            match event.as_str() {
                "OrderCreated" => d.placed += 1,
                "OrderConfirmed" => d.confirmed += 1,
                "OrderCancelled" => d.cancelled += 1,
                "PaymentCaptured" => {
                    d.paid += 1;
                    d.revenue += o.paid;
                    d.units += o.units();
                }
                "PaymentRefunded" => {
                    d.refunds += 1;
                    d.refunded += o.refunded;
                }
                "PaymentDeclined" => d.declined += 1,
                _ => {}
            }
        }
    }
    // Days with only other events (items changed, shipped, delivered) have no document.
    days.retain(|_, f| *f != Figures::default());
    days
}

/// Newest first, ties by id descending: the read-service's default order.
fn newest_first<'a>(
    orders: impl Iterator<Item = &'a OrderModel>,
    created: &BTreeMap<String, i64>,
) -> Vec<String> {
    let mut ids: Vec<&OrderModel> = orders.collect();
    ids.sort_by_key(|o| Reverse((created[&o.id], o.id.clone())));
    ids.into_iter().map(|o| o.id.clone()).collect()
}

/// The views `verify` expected and found, for the tests' own assertions.
struct Seen {
    docs: BTreeMap<String, Value>,
    sales: BTreeMap<NaiveDate, Figures>,
    inventory: BTreeMap<String, Stock>,
    /// Creation time of each order, in milliseconds.
    created: BTreeMap<String, i64>,
}

/// Reads every view back with the model's newest token and checks every number.
async fn verify(api: &Api, model: &Model, page: usize) -> Seen {
    let token = model.token.clone().expect("something was written");
    let token = token.as_str();

    // Orders: the document against the model, its times against the event store.
    let mut trails = BTreeMap::new();
    let mut docs = BTreeMap::new();
    let mut created = BTreeMap::new();
    for o in model.orders.values() {
        let trail = api.trail(&o.id).await;
        let types: Vec<&str> = trail.events.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            types, o.events,
            "{}: the event store holds what was answered",
            o.id
        );
        let doc = api.read_ok(&format!("/orders/{}", o.id), token).await;
        let mut plain = doc.clone();
        let times = [
            ("createdAt", Some(trail.created())),
            ("updatedAt", Some(trail.updated())),
            ("confirmedAt", trail.at("OrderConfirmed")),
            ("cancelledAt", trail.at("OrderCancelled")),
            ("shippedAt", trail.at("OrderShipped")),
            ("deliveredAt", trail.at("OrderDelivered")),
            ("paidAt", trail.at("PaymentCaptured")),
            ("refundedAt", trail.at("PaymentRefunded")),
            ("paymentDeclinedAt", trail.at("PaymentDeclined")),
        ];
        for (field, at) in times {
            let shown = plain
                .as_object_mut()
                .unwrap()
                .remove(field)
                .unwrap_or_else(|| panic!("{}: no {field}: {doc}", o.id));
            let shown = (!shown.is_null()).then(|| time(&shown));
            assert_eq!(
                millis(shown),
                millis(at),
                "{}: {field} is the time of its event: {doc}",
                o.id
            );
        }
        assert_eq!(plain, o.expected_doc(), "order {}", o.id);
        created.insert(o.id.clone(), trail.created().timestamp_millis());
        trails.insert(o.id.clone(), trail);
        docs.insert(o.id.clone(), doc);
    }

    // Users: counters, and the whole history paged newest first.
    let users: BTreeSet<&str> = model.orders.values().map(|o| o.user.as_str()).collect();
    for user in users {
        let mine = || model.orders.values().filter(move |o| o.user == user);
        let path = format!("/users/{user}/orders");
        let first = api.read_ok(&path, token).await;
        assert_eq!(first["userId"], user);
        assert_eq!(
            int(&first["orderCount"]),
            mine().count() as i64,
            "{user}: orderCount"
        );
        assert_eq!(
            int(&first["totalSpentCents"]),
            mine().map(OrderModel::spent).sum::<i64>(),
            "{user}: totalSpentCents (captured less refunded)"
        );
        let history = api.all_pages(&path, "orders", page, token).await;
        assert_eq!(
            ids(&history),
            newest_first(mine(), &created),
            "{user}: history"
        );
        for o in &history {
            assert_eq!(
                o,
                &docs[o["orderId"].as_str().unwrap()],
                "{user}: history item"
            );
        }
    }

    // Daily sales: each day with events, a quiet day either side, and the range's totals.
    let sales = expected_sales(model, &trails);
    for (day, figures) in &sales {
        let shown = api.read_ok(&format!("/sales/daily/{day}"), token).await;
        assert_eq!(shown["date"], day.to_string());
        assert_eq!(Figures::of(&shown), figures.json(), "sales of {day}");
    }
    let first = *sales.keys().next().unwrap() - Days::new(1);
    let last = *sales.keys().last().unwrap() + Days::new(1);
    let range = api
        .read_ok(&format!("/sales/daily?from={first}&to={last}"), token)
        .await;
    let days = range["days"].as_array().unwrap();
    assert_eq!(days.len() as u64, (last - first).num_days() as u64 + 1);
    let mut totals = Figures::default();
    for d in days {
        let day: NaiveDate = d["date"].as_str().unwrap().parse().unwrap();
        let want = sales.get(&day).copied().unwrap_or_default();
        assert_eq!(Figures::of(d), want.json(), "range: {day}");
        totals.add(&want);
    }
    assert_eq!(range["totals"], totals.json());

    // Stock: each product in the view and in the write-service's own answer (its stream),
    // never anything promised beyond what was received; an unknown product; the low-stock
    // listing.
    let inventory = model.stock();
    for (product, s) in &inventory {
        let name = json!(model.catalogue.get(product).map(|d| &d.name));
        let item = api.read_ok(&format!("/inventory/{product}"), token).await;
        assert_eq!(
            (
                &item["productId"],
                &item["name"],
                &item["receivedUnits"],
                &item["reservedUnits"],
                &item["shippedUnits"],
                &item["availableUnits"]
            ),
            (
                &json!(product),
                &name,
                &json!(s.received),
                &json!(s.reserved),
                &json!(s.shipped),
                &json!(s.available())
            ),
            "inventory of {product}: {item}"
        );
        assert!(s.available() >= 0, "{product} oversold: {s:?}");
        let r = api
            .command(Method::GET, &format!("/products/{product}"), None)
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "GET /products/{product}: {}",
            r.body
        );
        let d = model.catalogue.get(product);
        assert_eq!(
            r.body,
            json!({
                "productId": product,
                "name": name,
                "currency": d.map(|d| d.currency),
                "unitPriceCents": d.map(|d| d.price),
                "receivedUnits": s.received,
                "reservedUnits": s.reserved,
                "shippedUnits": s.shipped,
                "availableUnits": s.available(),
                "version": model.product_version(product),
            }),
            "the stream of {product}"
        );
    }
    let r = api.read("/inventory/never-stocked", token).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "product_not_found"),
        "{}",
        r.body
    );
    let r = api
        .command(Method::GET, "/products/never-stocked", None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "product_not_found"),
        "{}",
        r.body
    );
    let mut by_available: Vec<(i64, &str)> = inventory
        .iter()
        .map(|(p, s)| (s.available(), p.as_str()))
        .collect();
    by_available.sort();
    let listed = api.all_pages("/inventory", "products", page, token).await;
    let listed: Vec<(i64, &str)> = listed
        .iter()
        .map(|p| (int(&p["availableUnits"]), p["productId"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, by_available, "low-stock listing");
    let threshold = by_available[by_available.len() / 2].0;
    let low = api
        .all_pages(
            &format!("/inventory?maxAvailable={threshold}"),
            "products",
            page,
            token,
        )
        .await;
    assert_eq!(
        low.len(),
        by_available.iter().filter(|(a, _)| *a <= threshold).count(),
        "maxAvailable={threshold}"
    );

    // The dashboard, for whatever day the read-service calls today.
    let before = Utc::now().date_naive();
    let summary = api.read_ok("/dashboard/summary", token).await;
    let after = Utc::now().date_naive();
    let today: NaiveDate = summary["today"]["date"].as_str().unwrap().parse().unwrap();
    assert!(today == before || today == after, "today is {today}");
    assert_eq!(
        Figures::of(&summary["today"]),
        sales.get(&today).copied().unwrap_or_default().json(),
        "dashboard today"
    );
    let week_start = today - Days::new(6);
    let mut week = Figures::default();
    for (_, f) in sales.range(week_start..=today) {
        week.add(f);
    }
    assert_eq!(
        summary["last7Days"],
        json!({
            "from": week_start.to_string(),
            "to": today.to_string(),
            "ordersConfirmed": week.confirmed,
            "ordersPaid": week.paid,
            "netRevenueCents": week.net(),
        })
    );
    let count = |s: Status| model.orders.values().filter(|o| o.status == s).count();
    let by_status: serde_json::Map<String, Value> = Status::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), json!(count(*s))))
        .collect();
    assert_eq!(summary["ordersByStatus"], Value::Object(by_status));
    let mut top: Vec<(i64, &str)> = inventory
        .iter()
        .filter(|(_, s)| s.sold() > 0)
        .map(|(p, s)| (s.sold(), p.as_str()))
        .collect();
    top.sort_by_key(|(sold, p)| (Reverse(*sold), *p));
    top.truncate(10);
    let top: Vec<Value> = top
        .iter()
        .map(|(sold, p)| json!({"productId": p, "soldUnits": sold}))
        .collect();
    assert_eq!(summary["topProducts"], json!(top));
    let views = summary["projection"]["views"].as_array().unwrap();
    let names: BTreeSet<&str> = views.iter().map(|v| v["view"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "orders_view",
            "users_orders_view",
            "daily_sales",
            "inventory_view"
        ])
    );
    for v in views {
        assert!(v["position"].as_str().unwrap() >= token, "{v}");
    }

    // Search: everything, by status, by product, by total, and a combination.
    let everything = api.all_pages("/orders", "orders", page, token).await;
    assert_eq!(
        ids(&everything),
        newest_first(model.orders.values(), &created)
    );
    for o in &everything {
        assert_eq!(o, &docs[o["orderId"].as_str().unwrap()], "search item");
    }
    for s in Status::ALL {
        let found = api
            .all_pages(
                &format!("/orders?status={}", s.as_str()),
                "orders",
                page,
                token,
            )
            .await;
        let want = newest_first(model.orders.values().filter(|o| o.status == s), &created);
        assert_eq!(ids(&found), want, "status={}", s.as_str());
    }
    let mut totals: Vec<i64> = model.orders.values().map(OrderModel::total).collect();
    totals.sort_unstable();
    let (low, high) = (totals[totals.len() / 4], totals[totals.len() * 3 / 4]);
    let found = api
        .all_pages(
            &format!("/orders?minTotalCents={low}&maxTotalCents={high}&sort=totalCents"),
            "orders",
            page,
            token,
        )
        .await;
    let mut want: Vec<(i64, &str)> = model
        .orders
        .values()
        .filter(|o| (low..=high).contains(&o.total()))
        .map(|o| (o.total(), o.id.as_str()))
        .collect();
    want.sort();
    let want: Vec<&str> = want.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids(&found), want, "totals {low}..={high}, cheapest first");
    let user = model.orders.values().next().unwrap().user.clone();
    let found = api
        .all_pages(
            &format!("/orders?userId={user}&status=pending&sort=-totalCents"),
            "orders",
            page,
            token,
        )
        .await;
    let mut want: Vec<(i64, &str)> = model
        .orders
        .values()
        .filter(|o| o.user == user && o.status == Status::Pending)
        .map(|o| (o.total(), o.id.as_str()))
        .collect();
    want.sort_by_key(|w| Reverse(*w));
    let want: Vec<&str> = want.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids(&found), want, "{user}'s pending orders, dearest first");

    Seen {
        docs,
        sales,
        inventory,
        created,
    }
}

// ---- the tests ------------------------------------------------------------------------------

/// The tests' catalogue: id, name, currency, unit price. Quinces and dates are sold in euros.
const CATALOGUE: [(&str, &str, &str, i64); 9] = [
    ("apple", "Apple", "USD", 250),
    ("pear", "Pear", "USD", 120),
    ("kiwi", "Kiwi", "USD", 75),
    ("melon", "Melon", "USD", 899),
    ("fig", "Fig", "USD", 40),
    ("lime", "Lime", "USD", 55),
    ("plum", "Plum", "USD", 310),
    ("quince", "Quince", "EUR", 95),
    ("date", "Medjool date", "EUR", 30),
];

fn catalogue() -> impl Iterator<Item = (&'static str, Product)> {
    CATALOGUE.iter().map(|&(id, name, currency, price)| {
        (
            id,
            Product {
                name: name.into(),
                currency,
                price,
            },
        )
    })
}

/// A line at whatever the catalogue charges (no `unitPriceCents` sent).
fn item(product: &str, quantity: i64) -> Line {
    Line {
        product: product.to_owned(),
        quantity,
        price: 0,
        sent: None,
    }
}

/// A line that sends the price the client was shown.
fn shown(product: &str, quantity: i64, cents: i64) -> Line {
    Line {
        sent: Some(cents),
        ..item(product, quantity)
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn orders_flow_through_all_three_services_and_every_view_adds_up(pool: PgPool) {
    let system = System::start(&pool).await;
    let api = system.api();
    let mut m = Model {
        read_back: true,
        ..Model::default()
    };
    let cmd = |c: fn(String) -> Cmd, id: &String| c(id.clone());

    // Nothing can be ordered before the catalogue names its price.
    m.refused(
        &api,
        Cmd::Place {
            user: "alice".into(),
            currency: None,
            lines: vec![item("apple", 1)],
        },
    )
    .await;
    // Stock: two receipts of apples; kiwis run short; melons and limes not received yet.
    m.open_shop(
        &api,
        &[
            ("apple", 100),
            ("pear", 40),
            ("kiwi", 5),
            ("apple", 20),
            ("plum", 7),
            ("fig", 2),
        ],
    )
    .await;
    // The same details again append nothing (`run` checks the version).
    let (id, apple) = catalogue().next().unwrap();
    m.ok(&api, Cmd::SetProduct(id.into(), apple)).await;

    // alice: one order through its whole life, one refused, then paid, cancelled and
    // refunded, one left pending, one paid and not shipped yet.
    let a1 = m
        .place(&api, "alice", vec![item("apple", 2), shown("pear", 3, 120)])
        .await;
    m.ok(&api, Cmd::Add(a1.clone(), item("kiwi", 4))).await;
    m.ok(&api, Cmd::Add(a1.clone(), item("apple", 1))).await; // merges: 3 apples
    m.ok(&api, Cmd::Remove(a1.clone(), "pear".into())).await;
    m.ok(&api, cmd(Cmd::Confirm, &a1)).await;
    // Not before its payment is captured.
    m.refused(&api, Cmd::Ship(a1.clone(), "DHL".into(), "JD0146".into()))
        .await;
    m.pay_and_ship(&api, &a1, "DHL", "JD0146").await;
    m.ok(&api, cmd(Cmd::Deliver, &a1)).await;
    let a2 = m.place(&api, "alice", vec![item("melon", 1)]).await;
    m.refused(&api, cmd(Cmd::Confirm, &a2)).await; // no melon received
    m.ok(&api, Cmd::Receive("melon".into(), 3)).await;
    m.ok(&api, cmd(Cmd::Confirm, &a2)).await;
    m.refused(&api, cmd(Cmd::Refund, &a2)).await; // nothing captured yet
    m.ok(&api, cmd(Cmd::Pay, &a2)).await;
    m.refused(&api, cmd(Cmd::Refund, &a2)).await; // not cancelled
    m.ok(
        &api,
        Cmd::Cancel(a2.clone(), Some("arrived bruised".into())),
    )
    .await;
    m.ok(&api, cmd(Cmd::Refund, &a2)).await;
    m.refused(&api, cmd(Cmd::Refund, &a2)).await; // refunded once
    let a3 = m
        .place(&api, "alice", vec![item("pear", 1), item("lime", 2)])
        .await;
    m.ok(&api, Cmd::Add(a3.clone(), item("kiwi", 2))).await;
    let a4 = m.place(&api, "alice", vec![item("apple", 1)]).await;
    m.refused(&api, cmd(Cmd::Pay, &a4)).await; // not checked out
    m.ok(&api, cmd(Cmd::Confirm, &a4)).await;
    m.ok(&api, cmd(Cmd::Pay, &a4)).await;
    m.refused(&api, cmd(Cmd::Pay, &a4)).await; // captured once
    m.refused(&api, cmd(Cmd::Decline, &a4)).await;

    // bob: a euro order (of a product priced in euros) cancelled while pending; one
    // refused for want of kiwis, confirmed after a delivery, shipped.
    m.refused(
        &api,
        Cmd::Place {
            user: "bob".into(),
            currency: Some("EUR"),
            lines: vec![item("quince", 1), item("apple", 5)],
        },
    )
    .await;
    let b1 = m
        .ok(
            &api,
            Cmd::Place {
                user: "bob".into(),
                currency: Some("EUR"),
                lines: vec![item("quince", 5)],
            },
        )
        .await
        .unwrap();
    m.ok(&api, Cmd::Cancel(b1.clone(), None)).await;
    let b2 = m
        .place(&api, "bob", vec![item("kiwi", 2), item("pear", 2)])
        .await;
    m.refused(&api, cmd(Cmd::Confirm, &b2)).await; // 1 kiwi left
    m.ok(&api, Cmd::Receive("kiwi".into(), 10)).await;
    m.ok(&api, cmd(Cmd::Confirm, &b2)).await;
    m.pay_and_ship(&api, &b2, "UPS", "1Z999").await;

    // carol: a confirmed order (the melons alice's cancellation released) and five pending
    // ones, so her history takes pages.
    let c1 = m
        .place(&api, "carol", vec![item("melon", 2), item("apple", 1)])
        .await;
    m.ok(&api, Cmd::Remove(c1.clone(), "apple".into())).await;
    m.ok(&api, cmd(Cmd::Confirm, &c1)).await;
    let mut c2 = String::new();
    for n in 1..=5 {
        c2 = m.place(&api, "carol", vec![item("plum", n)]).await;
    }

    // dave: a card declined, the order cancelled for it, on a product with no other sale;
    // and one cancelled while its charge was under way, captured late (revenue all the
    // same), then refunded.
    let d1 = m
        .place(&api, "dave", vec![item("kiwi", 1), item("fig", 1)])
        .await;
    m.ok(&api, cmd(Cmd::Confirm, &d1)).await;
    m.ok(&api, cmd(Cmd::Decline, &d1)).await;
    m.refused(&api, cmd(Cmd::Decline, &d1)).await; // declined once
    m.refused(&api, Cmd::Ship(d1.clone(), "DHL".into(), "X0".into()))
        .await;
    m.ok(
        &api,
        Cmd::Cancel(d1.clone(), Some("payment_declined".into())),
    )
    .await;
    m.refused(&api, cmd(Cmd::Refund, &d1)).await; // nothing captured
    let d2 = m.place(&api, "dave", vec![item("plum", 2)]).await;
    m.ok(&api, cmd(Cmd::Confirm, &d2)).await;
    m.ok(&api, Cmd::Cancel(d2.clone(), Some("duplicate".into())))
        .await;
    m.ok(&api, cmd(Cmd::Pay, &d2)).await;
    m.refused(&api, Cmd::Ship(d2.clone(), "DHL".into(), "X3".into()))
        .await;
    m.ok(&api, cmd(Cmd::Refund, &d2)).await;

    // erin: pears go up; a client that shows the old price is told the new one.
    let pear = Product {
        price: 130,
        ..catalogue().nth(1).unwrap().1
    };
    m.ok(&api, Cmd::SetProduct("pear".into(), pear)).await;
    m.refused(
        &api,
        Cmd::Place {
            user: "erin".into(),
            currency: None,
            lines: vec![item("apple", 1), shown("pear", 1, 120)],
        },
    )
    .await;
    let e1 = m
        .place(&api, "erin", vec![item("apple", 1), shown("pear", 1, 130)])
        .await;

    // Stock counts: not below what is reserved and shipped (4 apples), then a write-off.
    m.refused(&api, Cmd::Adjust("apple".into(), -117, None))
        .await;
    m.ok(
        &api,
        Cmd::Adjust("apple".into(), -100, Some("damaged in transit".into())),
    )
    .await;
    m.ok(&api, Cmd::Adjust("plum".into(), 3, None)).await;

    // Refusals change nothing (`verify` checks every version).
    m.refused(&api, cmd(Cmd::Confirm, &a1)).await;
    m.refused(&api, Cmd::Cancel(a1.clone(), None)).await;
    m.refused(&api, Cmd::Add(a3.clone(), shown("plum", 1, 1)))
        .await;
    m.refused(&api, Cmd::Add(a3.clone(), item("durian", 1)))
        .await;
    m.refused(&api, Cmd::Add(a3.clone(), item("date", 1))).await; // priced in euros
    m.refused(&api, Cmd::Remove(a3.clone(), "melon".into()))
        .await;
    m.refused(&api, Cmd::Remove(a4.clone(), "apple".into()))
        .await;
    m.refused(&api, Cmd::Remove(c2.clone(), "plum".into()))
        .await;
    m.refused(&api, cmd(Cmd::Deliver, &a4)).await;
    m.refused(&api, Cmd::Ship(b1.clone(), "DHL".into(), "X1".into()))
        .await;
    m.refused(&api, cmd(Cmd::Pay, &b1)).await; // cancelled before checkout
    m.refused(&api, cmd(Cmd::Refund, &a1)).await; // delivered, not cancelled
    m.refused(&api, cmd(Cmd::Deliver, &c1)).await;
    m.refused(&api, Cmd::Ship(c1.clone(), "DHL".into(), "X2".into()))
        .await; // confirmed, not paid

    let seen = verify(&api, &m, 2).await;

    // The scenario, spelled out (`verify` found the views equal to these expectations).
    let status = |id: &String| seen.docs[id]["status"].as_str().unwrap().to_owned();
    let payment = |id: &String| seen.docs[id]["paymentStatus"].as_str().map(str::to_owned);
    let orders = [&a1, &a2, &a3, &a4, &b1, &b2, &c1, &d1, &d2, &e1];
    assert_eq!(
        orders.map(|id| (status(id), payment(id))),
        [
            ("delivered", Some("captured")),
            ("cancelled", Some("refunded")),
            ("pending", None),
            ("paid", Some("captured")),
            ("cancelled", None),
            ("shipped", Some("captured")),
            ("confirmed", Some("awaiting")),
            ("cancelled", Some("declined")),
            ("cancelled", Some("refunded")),
            ("pending", None),
        ]
        .map(|(s, p)| (s.to_owned(), p.map(str::to_owned)))
    );
    assert_eq!(seen.docs[&d1]["paymentDeclineCode"], "insufficient_funds");
    assert_eq!(seen.docs[&d2]["paidCents"], 620);
    assert_eq!(seen.docs[&d2]["refundedCents"], 620);
    assert_eq!(
        seen.docs[&a1]["items"],
        json!([
            {"productId": "apple", "quantity": 3, "unitPriceCents": 250, "lineTotalCents": 750},
            {"productId": "kiwi", "quantity": 4, "unitPriceCents": 75, "lineTotalCents": 300},
        ])
    );
    assert_eq!(seen.docs[&a3]["items"][0]["unitPriceCents"], 120);
    assert_eq!(seen.docs[&e1]["items"][1]["unitPriceCents"], 130);
    assert_eq!(seen.docs[&b1]["currency"], "EUR");
    assert_eq!(seen.docs[&a2]["cancelReason"], "arrived bruised");
    let all: Figures = seen.sales.values().fold(Figures::default(), |mut a, f| {
        a.add(f);
        a
    });
    assert_eq!(
        (all.placed, all.confirmed, all.cancelled),
        (15, 7, 4),
        "placed, confirmed, cancelled"
    );
    assert_eq!(
        (all.paid, all.refunds, all.declined),
        (5, 2, 1),
        "paid, refunded, declined"
    );
    let total = |id: &String| m.orders[id].total();
    assert_eq!(
        all.revenue,
        [&a1, &a2, &a4, &b2, &d2].map(total).iter().sum::<i64>()
    );
    assert_eq!(all.refunded, total(&a2) + total(&d2));
    let stock = |p: &str| {
        let s = seen.inventory[p];
        (s.received, s.reserved, s.shipped, s.available())
    };
    assert_eq!(stock("kiwi"), (15, 0, 6, 9), "kiwis: a1 and b2 shipped");
    assert_eq!(
        stock("melon"),
        (3, 2, 0, 1),
        "melons: a2 released, c1 holds 2"
    );
    assert_eq!(
        stock("apple"),
        (20, 1, 3, 16),
        "apples: written off, a4 holds 1"
    );
    assert_eq!(
        stock("fig"),
        (2, 0, 0, 2),
        "the one fig ordered was released"
    );
    assert_eq!(stock("lime"), (0, 0, 0, 0), "limes only on a pending order");
    assert!(
        !seen.inventory.contains_key("durian"),
        "never in the catalogue"
    );

    system.stop().await;
}

/// `make run`'s demo data (`scripts/run.sh seed`) goes through the real write-service: every
/// product has a price and the stock its confirmed orders reserve.
#[sqlx::test(migrations = "../migrations")]
async fn the_demo_data_of_make_run_is_accepted(pool: PgPool) {
    let system = System::start(&pool).await;
    let api = system.api();
    let write_addr = api.write.trim_start_matches("http://").to_owned();
    let seed = || async {
        let run = Command::new(workspace_root().join("scripts/run.sh"))
            .arg("seed")
            .env("WRITE_SERVICE_ADDR", &write_addr)
            .env("AUTH_HS256_SECRET", test_support::auth::SECRET)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run scripts/run.sh seed");
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(run.status.success(), "scripts/run.sh seed:\n{stderr}");
        stderr
    };
    // No fulfilment process runs here: the test records the payments of the demo orders the
    // seed ships (1 and 5, which it waits for), as the process would once they are confirmed.
    let payer = tokio::spawn(pay_when_confirmed(api.clone(), [1, 5].map(demo_order)));
    seed().await;
    payer.abort();
    // A second run finds the demo orders and adds nothing.
    let again = seed().await;
    assert!(again.contains("not seeding"), "{again}");

    let mut statuses = vec![];
    for n in 1..=6 {
        let id = demo_order(n);
        let r = api
            .command(Method::GET, &format!("/orders/{id}/state"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "demo order {n}: {}", r.body);
        statuses.push(r.body["status"].as_str().unwrap_or("?").to_owned());
    }
    assert_eq!(
        statuses,
        [
            "delivered",
            "confirmed",
            "cancelled",
            "pending",
            "shipped",
            "cancelled"
        ],
        "demo orders"
    );
    // A write after the seeding: its position is a token that covers all of it.
    let r = api
        .command(
            Method::POST,
            "/products/after-the-demo/stock",
            Some(&json!({"quantity": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = r.body["position"].as_str().unwrap().to_owned();
    // keyboard: 40 in, 1 shipped; mouse: 120 in, 2 + 1 shipped; monitor: 10 in, 1 reserved,
    // 2 shipped.
    for (product, name, price, stock) in [
        ("keyboard", "Mechanical keyboard", 8999, [40, 0, 1, 39]),
        ("mouse", "Wireless mouse", 2499, [120, 0, 3, 117]),
        ("monitor", "27-inch monitor", 24900, [10, 1, 2, 7]),
    ] {
        let r = api
            .command(Method::GET, &format!("/products/{product}"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{product}: {}", r.body);
        let b = &r.body;
        assert_eq!(
            (&b["name"], &b["unitPriceCents"], &b["currency"]),
            (&json!(name), &json!(price), &json!("USD")),
            "{product}: {b}"
        );
        let counts = [
            "receivedUnits",
            "reservedUnits",
            "shippedUnits",
            "availableUnits",
        ];
        assert_eq!(counts.map(|c| int(&b[c])), stock, "{product}: {b}");
        let item = api.read_ok(&format!("/inventory/{product}"), &token).await;
        assert_eq!(counts.map(|c| int(&item[c])), stock, "{product}: {item}");
    }
    system.stop().await;
}

/// The id of `scripts/run.sh seed`'s demo order `n`.
fn demo_order(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Records the payment of each order, in turn, once the write-service has it confirmed: the
/// fulfilment process's part for a seed that waits for it. Polls, as a client of the
/// write-service would; the seed gives up on its own if no payment comes.
async fn pay_when_confirmed(api: Api, orders: impl IntoIterator<Item = String>) {
    for id in orders {
        loop {
            let r = api
                .command(Method::GET, &format!("/orders/{id}/state"), None)
                .await;
            if r.status == StatusCode::OK && r.body["status"] == "confirmed" {
                api.events
                    .pay(OrderId(id.parse().expect("an order id")))
                    .await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A product of the random writers' catalogue, in the order's currency.
fn product(rng: &mut fastrand::Rng, currency: &str) -> &'static str {
    let fits: Vec<&str> = CATALOGUE
        .iter()
        .filter(|(.., c, _)| *c == currency)
        .map(|(id, ..)| *id)
        .collect();
    fits[rng.usize(..fits.len())]
}

/// How far the random writers have got.
#[derive(Debug, Default)]
struct Flow {
    /// Commands the write-service appended.
    appended: usize,
    /// The newest consistency token any writer received.
    newest: String,
}

/// Random traffic over shared users and products until `stop`; every answer is checked
/// against the writer's own model.
async fn random_writer(
    api: Api,
    seed: u64,
    flow: Arc<watch::Sender<Flow>>,
    stop: Arc<AtomicBool>,
    mut m: Model,
) -> Model {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut mine: Vec<String> = vec![];
    let mut appended = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let pick = rng.u32(0..100);
        let currency = if rng.bool() { "EUR" } else { "USD" };
        let cmd = if pick < 8 {
            Cmd::Receive(product(&mut rng, currency).into(), rng.i64(1..40))
        } else if pick < 30 || mine.is_empty() {
            let lines = (0..rng.usize(1..4))
                .map(|_| item(product(&mut rng, currency), rng.i64(1..5)))
                .collect();
            Cmd::Place {
                user: format!("u{}", rng.u32(0..6)),
                currency: (currency == "EUR").then_some("EUR"),
                lines,
            }
        } else {
            // Mostly recent orders, so lifecycles get somewhere.
            let n = mine.len();
            let mut id = mine[n - 1 - rng.usize(0..n.min(8))].clone();
            // The fulfilment process's answers mostly go to an order that waits for one (a
            // charge to an order awaiting it, even one cancelled meanwhile; a refund to a
            // cancelled order whose payment was captured), else to any (and are refused).
            // Some cancellations are of paid orders.
            let mut one_of = |fits: &dyn Fn(&OrderModel) -> bool| {
                let fits: Vec<&String> = mine.iter().filter(|o| fits(&m.orders[*o])).collect();
                (!fits.is_empty()).then(|| fits[rng.usize(..fits.len())].clone())
            };
            let chosen = match pick {
                68..=75 => one_of(&|o| o.payment == Some(Payment::Awaiting)),
                76..=78 => one_of(&|o| o.status == Status::Paid),
                92..=95 => one_of(&|o| {
                    o.status == Status::Cancelled && o.payment == Some(Payment::Captured)
                }),
                _ => None,
            };
            if let Some(chosen) = chosen
                && rng.u32(0..10) > 0
            {
                id = chosen;
            }
            let currency = m.orders[&id].currency.clone();
            match pick {
                30..=45 => Cmd::Add(id, item(product(&mut rng, &currency), rng.i64(1..3))),
                46..=53 => Cmd::Remove(id, product(&mut rng, &currency).into()),
                54..=67 => Cmd::Confirm(id),
                // Mostly captures, some declines (and a later capture is a retry).
                68..=72 => Cmd::Pay(id),
                73..=75 => Cmd::Decline(id),
                76..=81 => Cmd::Cancel(id, rng.bool().then(|| "changed my mind".into())),
                82..=91 => Cmd::Ship(id, "DHL".into(), format!("T{}", rng.u32(..))),
                92..=95 => Cmd::Refund(id),
                _ => Cmd::Deliver(id),
            }
        };
        let written = match cmd {
            // A confirmed order is mostly paid, then shipped; else the ship is refused.
            Cmd::Ship(id, carrier, tracking)
                if m.orders[&id].status == Status::Confirmed && rng.u32(0..4) > 0 =>
            {
                m.pay_and_ship(&api, &id, &carrier, &tracking).await;
                2
            }
            cmd => {
                let placing = matches!(cmd, Cmd::Place { .. });
                let cancelled = match &cmd {
                    Cmd::Cancel(id, _) => Some(id.clone()),
                    _ => None,
                };
                if !m.run(&api, cmd).await {
                    continue;
                }
                if placing {
                    mine.push(m.placed.clone().unwrap());
                }
                // A paid order cancelled is mostly refunded at once, as the process does;
                // the rest wait for a later refund.
                match cancelled {
                    Some(id)
                        if m.orders[&id].payment == Some(Payment::Captured)
                            && rng.u32(0..4) > 0 =>
                    {
                        m.ok(&api, Cmd::Refund(id)).await;
                        2
                    }
                    _ => 1,
                }
            }
        };
        let token = m.token.clone().unwrap();
        flow.send_modify(|f| {
            f.appended += written;
            if f.newest < token {
                f.newest = token.clone();
            }
        });
        // Back-pressure: now and then wait until the views include this writer's writes,
        // so the projector's backlog stays bounded and the test fast.
        let before = appended;
        appended += written as u32;
        if appended / 30 > before / 30 {
            api.read_ok("/dashboard/summary", &token).await;
        }
    }
    m
}

#[sqlx::test(migrations = "../migrations")]
async fn the_projector_killed_mid_stream_neither_loses_nor_double_counts(pool: PgPool) {
    const KILLS: usize = 5;
    const WRITERS: u64 = 3;
    /// Commands appended between two kills.
    const PER_ROUND: usize = 25;
    const ZERO: &str = "0000000000000000-0000000000000000";
    let mut system = System::start(&pool).await;
    let api = system.api();
    // Some stock to start with; the writers receive more as they go, and some of their
    // confirmations are refused for want of it.
    let mut m = Model {
        shared_stock: true,
        ..Model::default()
    };
    let opening: Vec<(&str, i64)> = CATALOGUE.iter().map(|(id, ..)| (*id, 20)).collect();
    m.open_shop(&api, &opening).await;
    let stop = Arc::new(AtomicBool::new(false));
    let flow = Arc::new(watch::Sender::new(Flow::default()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let writer =
                random_writer(api.clone(), 100 + w, flow.clone(), stop.clone(), m.writer());
            tokio::spawn(writer)
        })
        .collect();

    let mut rng = fastrand::Rng::with_seed(5);
    let mut with_backlog = 0;
    for round in 1..=KILLS {
        // Let the writers append some more, and see this projector apply a write made after
        // it started (so it did work, not only its predecessor); then SIGKILL it while the
        // writers go on.
        let target = flow.borrow().appended + PER_ROUND;
        let mut progress = flow.subscribe();
        tokio::time::timeout(
            Duration::from_secs(60),
            progress.wait_for(|f| f.appended >= target),
        )
        .await
        .expect("the writers stalled")
        .unwrap();
        m.ok(&api, Cmd::Receive("plum".into(), 1)).await;
        api.read_ok("/dashboard/summary", m.token.as_deref().unwrap())
            .await;
        let newest = flow.borrow().newest.clone();
        system.kill_projector().await;
        let left = api.read_ok("/dashboard/summary", ZERO).await;
        let left = left["projection"]["position"].as_str().unwrap().to_owned();
        if left < newest {
            with_backlog += 1;
        }
        eprintln!("kill {round}: views at {left}, newest write seen {newest}");
        system.start_projector(rng.u32(1..40)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        m.absorb(w.await.unwrap());
    }
    let appended = flow.borrow().appended;
    assert!(appended >= KILLS * PER_ROUND);
    let by_status: Vec<(&str, usize)> = Status::ALL
        .iter()
        .map(|s| {
            let n = m.orders.values().filter(|o| o.status == *s).count();
            (s.as_str(), n)
        })
        .collect();
    let by_payment: Vec<(&str, usize)> = [
        Payment::Awaiting,
        Payment::Captured,
        Payment::Declined,
        Payment::Refunded,
    ]
    .iter()
    .map(|p| {
        let n = m.orders.values().filter(|o| o.payment == Some(*p)).count();
        (p.as_str(), n)
    })
    .collect();
    let late = m
        .orders
        .values()
        .filter(|o| {
            let at = |e| o.events.iter().position(|x| *x == e);
            at("PaymentCaptured") > at("OrderCancelled") && at("OrderCancelled").is_some()
        })
        .count();
    eprintln!(
        "{appended} commands appended by the writers, {} orders {by_status:?}, payments \
         {by_payment:?} ({late} captured after a cancellation), {} confirmations refused for \
         want of stock; {with_backlog} of {KILLS} kills left events unapplied",
        m.orders.len(),
        m.short,
    );

    verify(&api, &m, 25).await;
    system.stop().await;
}

/// `GET /orders?productId=` finds the orders with a line of the product now.
#[sqlx::test(migrations = "../migrations")]
async fn orders_are_found_by_product(pool: PgPool) {
    let system = System::start(&pool).await;
    let api = system.api();
    let mut m = Model::default();
    m.open_shop(&api, &[("apple", 5), ("pear", 5)]).await;
    let o1 = m
        .place(&api, "alice", vec![item("apple", 1), item("pear", 2)])
        .await;
    m.place(&api, "bob", vec![item("apple", 3)]).await;
    let o3 = m
        .place(&api, "alice", vec![item("kiwi", 1), item("apple", 1)])
        .await;
    m.ok(&api, Cmd::Remove(o3, "apple".into())).await;
    m.ok(&api, Cmd::Confirm(o1)).await;
    let o4 = m
        .place(&api, "carol", vec![item("melon", 1), item("pear", 1)])
        .await;
    m.ok(&api, Cmd::Cancel(o4, None)).await;
    let seen = verify(&api, &m, 2).await;

    let token = m.token.as_deref().unwrap();
    for product in ["apple", "pear", "kiwi", "melon"] {
        let found = api
            .all_pages(&format!("/orders?productId={product}"), "orders", 2, token)
            .await;
        let want = newest_first(m.orders.values().filter(|o| o.has(product)), &seen.created);
        assert!(!want.is_empty());
        assert_eq!(ids(&found), want, "productId={product}");
    }
    system.stop().await;
}

/// A token the write-service could not have returned is refused at once, end to end: the
/// projector records the head of the log, the read-service compares against it. A real one
/// is waited for.
#[sqlx::test(migrations = "../migrations")]
async fn a_forged_consistency_token_is_refused_at_once(pool: PgPool) {
    let system = System::start(&pool).await;
    let api = system.api();
    let mut m = Model::default();
    m.open_shop(&api, &[]).await;
    let order = m.place(&api, "alice", vec![item("apple", 1)]).await;
    let token = m.token.clone().unwrap();
    api.read_ok(&format!("/orders/{order}"), &token).await;
    // The projector records the head every poll interval (50 ms here): wait until it has
    // recorded one that includes the order.
    let client = mongodb::Client::with_uri_str(mongodb_uri()).await.unwrap();
    let pointers = client
        .database(&system.mongodb_database.name)
        .collection::<mongodb::bson::Document>("projections");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let head = pointers
            .find_one(mongodb::bson::doc! {"_id": "log_head"})
            .await
            .unwrap();
        // nx-27017 hands small Int64 values back as Int32.
        let position = head.and_then(|h| match h.get("maxGlobalPosition") {
            Some(mongodb::bson::Bson::Int64(n)) => Some(*n),
            Some(mongodb::bson::Bson::Int32(n)) => Some(i64::from(*n)),
            _ => None,
        });
        if position.is_some_and(|p| p >= 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the projector never recorded the log head"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The consistency timeout here is 20 s: a wait would show as a hang, not as a 400.
    let r = api
        .read(
            &format!("/orders/{order}"),
            "7fffffffffffffff-7fffffffffffffff",
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_consistency_token"),
        "{:?}",
        r.body
    );
    system.stop().await;
}

/// schemathesis against both services' own OpenAPI documents, every check on (the few
/// deliberate answers it cannot know of are allowed per operation in `schemathesis.toml`):
/// no 5xx but 503, every response as documented, every schema-valid request accepted.
#[sqlx::test(migrations = "../migrations")]
async fn apis_hold_to_their_openapi_documents(pool: PgPool) {
    let system = System::start(&pool).await;
    for service in [&system.write, &system.read] {
        let run = Command::new(workspace_root().join("scripts/schemathesis.sh"))
            .arg(format!("{}/openapi.json", service.url()))
            .arg("--header")
            .arg(format!(
                "Authorization: {}",
                test_support::auth::bearer(&test_support::auth::staff())
            ))
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run scripts/schemathesis.sh");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            run.status.success(),
            "schemathesis found failures in {}:\n{report}",
            service.name
        );
        // The summary's count line: proof that it generated and ran cases.
        let summary = report
            .lines()
            .find(|l| l.contains(" generated, "))
            .unwrap_or_else(|| panic!("no summary from schemathesis:\n{report}"));
        eprintln!("schemathesis, {}: {}", service.name, summary.trim());
    }
    system.stop().await;
}
