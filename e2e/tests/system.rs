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
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveDate, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::{oneshot, watch};

/// How long a service may take to start listening and to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the read-service waits for a consistency token before 503 (its maximum is 60 s).
/// Generous: after a SIGKILL the next projector first catches up with the backlog.
const CONSISTENCY_TIMEOUT_MS: u64 = 20_000;
/// Log lines kept per service, printed when a test fails.
const LOG_LINES: usize = 200;

// ---- the service processes ------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
        .to_path_buf()
}

/// A service binary in the target directory (`CARGO_TARGET_DIR`, a relative one taken from
/// the workspace root, else `target/`), built by `cargo build --workspace` or `make test`.
fn binary(name: &str) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    };
    let path = target
        .join("debug")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} does not exist: build the services first with `cargo build --workspace` \
         (`make test` builds every target and starts the databases)",
        path.display()
    );
    path
}

/// The port in a line such as `... write-service listening port=41234`.
fn listening_port(line: &str) -> Option<u16> {
    if !line.contains("listening") {
        return None;
    }
    let after = line.split("port=").nth(1)?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

type Log = Arc<Mutex<VecDeque<String>>>;

/// Reads the child's stderr to the end, so it never blocks on a full pipe: keeps the last
/// lines and reports the port from the "listening" line.
async fn drain(stderr: ChildStderr, log: Log, port: oneshot::Sender<u16>) {
    let mut port = Some(port);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(p) = listening_port(&line)
            && let Some(tx) = port.take()
        {
            let _ = tx.send(p);
        }
        let mut log = log.lock().unwrap();
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

fn tail(log: &Log) -> String {
    let log = log.lock().unwrap();
    log.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// One running service binary; killed when dropped.
struct Service {
    name: &'static str,
    child: Child,
    port: u16,
    log: Log,
}

impl Service {
    async fn start(name: &'static str, env: &[(&str, String)]) -> Service {
        let mut command = Command::new(binary(name));
        command
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let log: Log = Arc::default();
        let (tx, rx) = oneshot::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        tokio::spawn(drain(stderr, log.clone(), tx));
        let port = match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(port)) => port,
            Ok(Err(_)) => panic!("{name} exited before listening:\n{}", tail(&log)),
            Err(_) => panic!(
                "{name} did not listen within {START_TIMEOUT:?}:\n{}",
                tail(&log)
            ),
        };
        Service {
            name,
            child,
            port,
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls `/health/ready` until it answers 200.
    async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("{}/health/ready", self.url());
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, tail(&self.log));
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {START_TIMEOUT:?}:\n{}",
                self.name,
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no graceful shutdown, no last checkpoint.
    async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reap");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} (port {}) log ----\n{}",
                self.name,
                self.port,
                tail(&self.log)
            );
        }
    }
}

use test_support::servers::{database_url, mongodb_uri};

/// The test's own MongoDB database, dropped when the test ends, whether it passed or not.
struct MongoDatabase {
    name: String,
}

impl Drop for MongoDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: drop the database from a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = mongodb::Client::with_uri_str(mongodb_uri()).await?;
                client.database(&name).drop().await
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop MongoDB database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop MongoDB database {}", self.name),
        }
    }
}

/// The three services on the test's own PostgreSQL database and MongoDB database.
struct System {
    http: reqwest::Client,
    database_url: String,
    write: Service,
    read: Service,
    projector: Option<Service>,
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
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let database_url = database_url(&database);
        let mongodb_database = MongoDatabase {
            name: format!("e2e{}", uuid::Uuid::new_v4().simple()),
        };
        let mut write = Service::start(
            "write-service",
            &[
                ("DATABASE_URL", database_url.clone()),
                ("WRITE_SERVICE_ADDR", "127.0.0.1:0".into()),
            ],
        )
        .await;
        let mut read = Service::start(
            "read-service",
            &[
                ("MONGODB_URI", mongodb_uri()),
                ("MONGODB_DATABASE", mongodb_database.name.clone()),
                ("READ_SERVICE_ADDR", "127.0.0.1:0".into()),
                (
                    "READ_CONSISTENCY_TIMEOUT_MS",
                    CONSISTENCY_TIMEOUT_MS.to_string(),
                ),
            ],
        )
        .await;
        write.wait_ready(&http).await;
        read.wait_ready(&http).await;
        let mut system = System {
            http,
            database_url,
            mongodb_database,
            write,
            read,
            projector: None,
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

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// The two public HTTP APIs.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    write: String,
    read: String,
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
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
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
    Cancelled,
    Shipped,
    Delivered,
}

impl Status {
    const ALL: [Status; 5] = [
        Status::Pending,
        Status::Confirmed,
        Status::Cancelled,
        Status::Shipped,
        Status::Delivered,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Confirmed => "confirmed",
            Status::Cancelled => "cancelled",
            Status::Shipped => "shipped",
            Status::Delivered => "delivered",
        }
    }
}

#[derive(Debug, Clone)]
struct Line {
    product: String,
    quantity: i64,
    price: i64,
}

fn line(product: &str, quantity: i64, price: i64) -> Line {
    Line {
        product: product.to_owned(),
        quantity,
        price,
    }
}

impl Line {
    fn json(&self) -> Value {
        json!({"productId": self.product, "quantity": self.quantity, "unitPriceCents": self.price})
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

    /// Confirmed and not cancelled: counts as spent and sold.
    fn is_sale(&self) -> bool {
        matches!(
            self.status,
            Status::Confirmed | Status::Shipped | Status::Delivered
        )
    }

    fn has(&self, product: &str) -> bool {
        self.lines.iter().any(|l| l.product == product)
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
    Cancel(String, Option<String>),
    Ship(String, String, String),
    Deliver(String),
    Receive(String, i64),
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
            Cmd::Confirm(id) => (Method::POST, format!("/orders/{id}/confirm"), None),
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
            Cmd::Receive(p, q) => (
                Method::POST,
                format!("/products/{p}/stock"),
                Some(json!({"quantity": q})),
            ),
        }
    }

    fn order(&self) -> Option<&str> {
        match self {
            Cmd::Place { .. } | Cmd::Receive(..) => None,
            Cmd::Add(id, _)
            | Cmd::Remove(id, _)
            | Cmd::Confirm(id)
            | Cmd::Cancel(id, _)
            | Cmd::Ship(id, ..)
            | Cmd::Deliver(id) => Some(id),
        }
    }
}

/// Everything written and answered: orders by id, stock received per product, and the
/// newest consistency token.
#[derive(Debug, Default)]
struct Model {
    orders: BTreeMap<String, OrderModel>,
    stock: BTreeMap<String, i64>,
    token: Option<String>,
    /// The id of the order placed last.
    placed: Option<String>,
    /// Read each write back at once with its own token (read-your-writes).
    read_back: bool,
}

impl Model {
    /// What the write-service should answer: `Ok` or the refusal's status and code.
    fn predict(&self, cmd: &Cmd) -> Result<(), (StatusCode, &'static str)> {
        let conflict = Err((StatusCode::CONFLICT, "invalid_state"));
        let Some(id) = cmd.order() else {
            return Ok(());
        };
        let o = &self.orders[id];
        match cmd {
            Cmd::Add(_, l) => {
                if o.status != Status::Pending {
                    conflict
                } else if o
                    .lines
                    .iter()
                    .any(|x| x.product == l.product && x.price != l.price)
                {
                    Err((StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"))
                } else {
                    Ok(())
                }
            }
            Cmd::Remove(_, p) => {
                if o.status != Status::Pending {
                    conflict
                } else if !o.has(p) {
                    Err((StatusCode::NOT_FOUND, "item_not_found"))
                } else if o.lines.len() == 1 {
                    Err((StatusCode::CONFLICT, "last_item"))
                } else {
                    Ok(())
                }
            }
            Cmd::Confirm(_) if o.status == Status::Pending => Ok(()),
            Cmd::Cancel(..) if matches!(o.status, Status::Pending | Status::Confirmed) => Ok(()),
            Cmd::Ship(..) if o.status == Status::Confirmed => Ok(()),
            Cmd::Deliver(_) if o.status == Status::Shipped => Ok(()),
            _ => conflict,
        }
    }

    fn order(&mut self, id: &str) -> &mut OrderModel {
        self.orders.get_mut(id).unwrap()
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
                    events: vec!["OrderCreated"],
                };
                for l in lines {
                    o.merge(l.clone());
                }
                let fresh = self.orders.insert(id.clone(), o).is_none();
                assert!(fresh, "order id {id} given twice");
                self.placed = Some(id.clone());
                return Some(id);
            }
            Cmd::Add(id, l) => {
                let o = self.order(id);
                o.merge(l.clone());
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
                o.events.push("OrderConfirmed");
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
            Cmd::Receive(p, q) => *self.stock.entry(p.clone()).or_default() += q,
        }
        cmd.order().map(str::to_owned)
    }

    /// Sends the command and checks the answer against the prediction. True (and the model
    /// updated) if the write-service appended; false if it refused, as predicted, or gave
    /// up after losing races on the stream (409 `concurrency_conflict`: nothing appended).
    async fn run(&mut self, api: &Api, cmd: Cmd) -> bool {
        let expected = self.predict(&cmd);
        let (method, path, body) = cmd.request();
        let r = api.command(method.clone(), &path, body.as_ref()).await;
        if r.status == StatusCode::CONFLICT && r.code() == "concurrency_conflict" {
            return false;
        }
        if let Err((status, code)) = expected {
            assert_eq!(
                (r.status, r.code()),
                (status, code),
                "{method} {path} {body:?}: {}",
                r.body
            );
            return false;
        }
        let created = matches!(cmd, Cmd::Place { .. });
        let success = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        assert_eq!(r.status, success, "{method} {path} {body:?}: {}", r.body);
        let token = r.body["position"]
            .as_str()
            .unwrap_or_else(|| panic!("no position: {}", r.body))
            .to_owned();
        let touched = self.apply(&cmd, &r.body);
        if self.token.as_ref().is_none_or(|t| *t < token) {
            self.token = Some(token.clone());
        }
        if let Some(id) = &touched {
            let o = &self.orders[id];
            assert_eq!(int(&r.body["version"]), o.version(), "{path}: {}", r.body);
            if self.read_back {
                // The answer includes this write, though nothing waited for the projector.
                let doc = api.read_ok(&format!("/orders/{id}"), &token).await;
                assert_eq!(
                    (&doc["version"], &doc["status"], &doc["totalCents"]),
                    (
                        &json!(o.version()),
                        &json!(o.status.as_str()),
                        &json!(o.total())
                    ),
                    "{method} {path} read back with its token"
                );
            }
        } else if let (Cmd::Receive(p, _), true) = (&cmd, self.read_back) {
            let item = api.read_ok(&format!("/inventory/{p}"), &token).await;
            assert_eq!(item["receivedUnits"], json!(self.stock[p]), "{p} read back");
        }
        true
    }

    /// Runs a command the domain accepts.
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

    fn absorb(&mut self, other: Model) {
        for (id, o) in other.orders {
            assert!(
                self.orders.insert(id, o).is_none(),
                "two writers, one order"
            );
        }
        for (p, q) in other.stock {
            *self.stock.entry(p).or_default() += q;
        }
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
    revenue: i64,
    refunded: i64,
    units: i64,
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.placed += o.placed;
        self.confirmed += o.confirmed;
        self.cancelled += o.cancelled;
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

#[derive(Debug, Clone, Copy, Default)]
struct Stock {
    received: i64,
    sold: i64,
}

impl Stock {
    fn available(&self) -> i64 {
        self.received - self.sold
    }
}

/// Sales per UTC day: an order is placed, confirmed (revenue, units) and cancelled (a refund
/// if it had been confirmed) on the days its events were recorded.
fn expected_sales(model: &Model, trails: &BTreeMap<String, Trail>) -> BTreeMap<NaiveDate, Figures> {
    let mut days: BTreeMap<NaiveDate, Figures> = BTreeMap::new();
    for o in model.orders.values() {
        let trail = &trails[&o.id];
        days.entry(trail.created().date_naive()).or_default().placed += 1;
        if let Some(at) = trail.at("OrderConfirmed") {
            let d = days.entry(at.date_naive()).or_default();
            d.confirmed += 1;
            d.revenue += o.total();
            d.units += o.units();
        }
        if let Some(at) = trail.at("OrderCancelled") {
            let d = days.entry(at.date_naive()).or_default();
            d.cancelled += 1;
            if o.was_confirmed() {
                d.refunded += o.total();
            }
        }
    }
    days
}

/// Stock per product with a receipt or a confirmed order; sold is what confirmed orders not
/// cancelled hold.
fn expected_inventory(model: &Model) -> BTreeMap<String, Stock> {
    let mut stock: BTreeMap<String, Stock> = model
        .stock
        .iter()
        .map(|(p, q)| {
            (
                p.clone(),
                Stock {
                    received: *q,
                    sold: 0,
                },
            )
        })
        .collect();
    for o in model.orders.values().filter(|o| o.was_confirmed()) {
        for l in &o.lines {
            let s = stock.entry(l.product.clone()).or_default();
            if o.is_sale() {
                s.sold += l.quantity;
            }
        }
    }
    stock
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
            mine()
                .filter(|o| o.is_sale())
                .map(OrderModel::total)
                .sum::<i64>(),
            "{user}: totalSpentCents (confirmed and not cancelled)"
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

    // Inventory: each product, the unknown ones, and the low-stock listing.
    let inventory = expected_inventory(model);
    for (product, s) in &inventory {
        let item = api.read_ok(&format!("/inventory/{product}"), token).await;
        assert_eq!(
            (
                &item["productId"],
                &item["receivedUnits"],
                &item["soldUnits"],
                &item["availableUnits"]
            ),
            (
                &json!(product),
                &json!(s.received),
                &json!(s.sold),
                &json!(s.available())
            ),
            "inventory of {product}: {item}"
        );
    }
    let on_orders: BTreeSet<&str> = model
        .orders
        .values()
        .flat_map(|o| o.lines.iter().map(|l| l.product.as_str()))
        .collect();
    for product in on_orders.iter().filter(|p| !inventory.contains_key(**p)) {
        let r = api.read(&format!("/inventory/{product}"), token).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "product_not_found"),
            "{product} was never received nor confirmed: {}",
            r.body
        );
    }
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
        .filter(|(_, s)| s.sold > 0)
        .map(|(p, s)| (s.sold, p.as_str()))
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

/// Unit prices of the scripted test's catalogue.
fn price(product: &str) -> i64 {
    match product {
        "apple" => 250,
        "pear" => 120,
        "kiwi" => 75,
        "melon" => 899,
        "fig" => 40,
        "lime" => 55,
        "plum" => 310,
        _ => 100,
    }
}

fn item(product: &str, quantity: i64) -> Line {
    line(product, quantity, price(product))
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

    // Stock: two receipts of apples; kiwis will be oversold; melons never received.
    for (p, q) in [
        ("apple", 100),
        ("pear", 40),
        ("kiwi", 5),
        ("apple", 20),
        ("plum", 7),
    ] {
        m.ok(&api, Cmd::Receive(p.into(), q)).await;
    }

    // alice: one order through its whole life, one refunded, one left pending, one confirmed.
    let a1 = m
        .place(&api, "alice", vec![item("apple", 2), item("pear", 3)])
        .await;
    m.ok(&api, Cmd::Add(a1.clone(), item("kiwi", 4))).await;
    m.ok(&api, Cmd::Add(a1.clone(), item("apple", 1))).await; // merges: 3 apples
    m.ok(&api, Cmd::Remove(a1.clone(), "pear".into())).await;
    m.ok(&api, cmd(Cmd::Confirm, &a1)).await;
    m.ok(&api, Cmd::Ship(a1.clone(), "DHL".into(), "JD0146".into()))
        .await;
    m.ok(&api, cmd(Cmd::Deliver, &a1)).await;
    let a2 = m.place(&api, "alice", vec![item("melon", 1)]).await;
    m.ok(&api, cmd(Cmd::Confirm, &a2)).await;
    m.ok(
        &api,
        Cmd::Cancel(a2.clone(), Some("arrived bruised".into())),
    )
    .await;
    let a3 = m
        .place(&api, "alice", vec![item("pear", 1), item("lime", 2)])
        .await;
    m.ok(&api, Cmd::Add(a3.clone(), item("kiwi", 2))).await;
    let a4 = m.place(&api, "alice", vec![item("apple", 1)]).await;
    m.ok(&api, cmd(Cmd::Confirm, &a4)).await;

    // bob: a euro order cancelled while pending, one shipped.
    let b1 = m
        .ok(
            &api,
            Cmd::Place {
                user: "bob".into(),
                currency: Some("EUR"),
                lines: vec![item("apple", 5)],
            },
        )
        .await
        .unwrap();
    m.ok(&api, Cmd::Cancel(b1.clone(), None)).await;
    let b2 = m
        .place(&api, "bob", vec![item("kiwi", 2), item("pear", 2)])
        .await;
    m.ok(&api, cmd(Cmd::Confirm, &b2)).await;
    m.ok(&api, Cmd::Ship(b2.clone(), "UPS".into(), "1Z999".into()))
        .await;

    // carol: a confirmed order and five pending ones, so her history takes pages.
    let c1 = m
        .place(&api, "carol", vec![item("melon", 2), item("apple", 1)])
        .await;
    m.ok(&api, Cmd::Remove(c1.clone(), "apple".into())).await;
    m.ok(&api, cmd(Cmd::Confirm, &c1)).await;
    let mut c2 = String::new();
    for n in 1..=5 {
        c2 = m.place(&api, "carol", vec![item("plum", n)]).await;
    }

    // dave: confirmed then cancelled (a refund) on a product with no other sale.
    let d1 = m
        .place(&api, "dave", vec![item("kiwi", 1), item("fig", 1)])
        .await;
    m.ok(&api, cmd(Cmd::Confirm, &d1)).await;
    m.ok(&api, Cmd::Cancel(d1.clone(), Some("duplicate".into())))
        .await;

    // Refusals change nothing (`verify` checks every version).
    m.refused(&api, cmd(Cmd::Confirm, &a1)).await;
    m.refused(&api, Cmd::Cancel(a1.clone(), None)).await;
    m.refused(&api, Cmd::Add(a3.clone(), line("pear", 1, 1)))
        .await;
    m.refused(&api, Cmd::Remove(a3.clone(), "melon".into()))
        .await;
    m.refused(&api, Cmd::Remove(a4.clone(), "apple".into()))
        .await;
    m.refused(&api, Cmd::Remove(c2.clone(), "plum".into()))
        .await;
    m.refused(&api, cmd(Cmd::Deliver, &a4)).await;
    m.refused(&api, Cmd::Ship(b1.clone(), "DHL".into(), "X1".into()))
        .await;
    m.refused(&api, cmd(Cmd::Deliver, &c1)).await;

    let seen = verify(&api, &m, 2).await;

    // The scenario, spelled out (`verify` found the views equal to these expectations).
    let status = |id: &String| seen.docs[id]["status"].as_str().unwrap().to_owned();
    assert_eq!(
        [&a1, &a2, &a3, &a4, &b1, &b2, &c1, &d1].map(status),
        [
            "delivered",
            "cancelled",
            "pending",
            "confirmed",
            "cancelled",
            "shipped",
            "confirmed",
            "cancelled"
        ]
    );
    assert_eq!(
        seen.docs[&a1]["items"],
        json!([
            {"productId": "apple", "quantity": 3, "unitPriceCents": 250, "lineTotalCents": 750},
            {"productId": "kiwi", "quantity": 4, "unitPriceCents": 75, "lineTotalCents": 300},
        ])
    );
    assert_eq!(seen.docs[&b1]["currency"], "EUR");
    assert_eq!(seen.docs[&a2]["cancelReason"], "arrived bruised");
    let all: Figures = seen.sales.values().fold(Figures::default(), |mut a, f| {
        a.add(f);
        a
    });
    assert_eq!(
        (all.placed, all.confirmed, all.cancelled),
        (13, 6, 3),
        "placed, confirmed, cancelled"
    );
    assert_eq!(all.refunded, m.orders[&a2].total() + m.orders[&d1].total());
    assert_eq!(
        seen.inventory["kiwi"].available(),
        5 - 4 - 2,
        "kiwis oversold"
    );
    assert_eq!(seen.inventory["melon"].received, 0);
    let fig = seen.inventory["fig"];
    assert_eq!(
        (fig.received, fig.sold),
        (0, 0),
        "the one fig sold was refunded"
    );
    assert!(
        !seen.inventory.contains_key("lime"),
        "limes only on a pending order"
    );

    system.stop().await;
}

/// A product of the random writers' catalogue.
fn product(rng: &mut fastrand::Rng) -> &'static str {
    const PRODUCTS: [&str; 6] = ["apple", "pear", "kiwi", "melon", "fig", "plum"];
    PRODUCTS[rng.usize(..PRODUCTS.len())]
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
) -> Model {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut m = Model::default();
    let mut mine: Vec<String> = vec![];
    let mut appended = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let pick = rng.u32(0..100);
        let cmd = if pick < 8 {
            Cmd::Receive(product(&mut rng).into(), rng.i64(1..40))
        } else if pick < 30 || mine.is_empty() {
            let lines = (0..rng.usize(1..4))
                .map(|_| item(product(&mut rng), rng.i64(1..5)))
                .collect();
            Cmd::Place {
                user: format!("u{}", rng.u32(0..6)),
                currency: rng.bool().then_some("EUR"),
                lines,
            }
        } else {
            // Mostly recent orders, so lifecycles get somewhere.
            let n = mine.len();
            let id = mine[n - 1 - rng.usize(0..n.min(8))].clone();
            match pick {
                30..=45 => Cmd::Add(id, item(product(&mut rng), rng.i64(1..3))),
                46..=53 => Cmd::Remove(id, product(&mut rng).into()),
                54..=73 => Cmd::Confirm(id),
                74..=81 => Cmd::Cancel(id, rng.bool().then(|| "changed my mind".into())),
                82..=91 => Cmd::Ship(id, "DHL".into(), format!("T{}", rng.u32(..))),
                _ => Cmd::Deliver(id),
            }
        };
        let placing = matches!(cmd, Cmd::Place { .. });
        if !m.run(&api, cmd).await {
            continue;
        }
        if placing {
            mine.push(m.placed.clone().unwrap());
        }
        appended += 1;
        let token = m.token.clone().unwrap();
        flow.send_modify(|f| {
            f.appended += 1;
            if f.newest < token {
                f.newest = token.clone();
            }
        });
        // Back-pressure: now and then wait until the views include this writer's writes,
        // so the projector's backlog stays bounded and the test fast.
        if appended.is_multiple_of(30) {
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
    let stop = Arc::new(AtomicBool::new(false));
    let flow = Arc::new(watch::Sender::new(Flow::default()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let writer = random_writer(api.clone(), 100 + w, flow.clone(), stop.clone());
            tokio::spawn(writer)
        })
        .collect();

    let mut rng = fastrand::Rng::with_seed(5);
    let mut m = Model::default();
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
    eprintln!(
        "{appended} commands appended by the writers, {} orders {by_status:?}; \
         {with_backlog} of {KILLS} kills left events unapplied",
        m.orders.len(),
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
