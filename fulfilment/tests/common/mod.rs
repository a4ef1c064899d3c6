//! A shop for the fulfilment tests, every part real: PostgreSQL (a fresh database per
//! test), the write-service's router in-process for the commands a customer sends, the
//! payment sandbox on a local port, an SMTP server keeping messages as files, and the
//! `fulfilment` binary as a child process that a test can kill with SIGKILL.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use test_support::http::{InProcess, Reply};
use test_support::mail::{Mail, MailCatcher};
use tokio::process::{Child, Command};
use write_service::{AppState, Settings, router};

pub const API_KEY: &str = "sk_test_fulfilment";

pub struct Shop {
    pub pool: PgPool,
    pub http: InProcess,
    pub sandbox: String,
    pub mail: MailCatcher,
    client: reqwest::Client,
    database_url: String,
}

/// How a fulfilment instance is configured beyond the shop's addresses.
#[derive(Clone)]
pub struct Tuning {
    pub payment_timeout: &'static str,
    pub request_timeout: &'static str,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            payment_timeout: "10m",
            request_timeout: "2s",
        }
    }
}

/// A running `fulfilment run`, killed (SIGKILL) when dropped.
pub struct Fulfilment {
    pub child: Child,
    pub port: u16,
}

impl Fulfilment {
    /// SIGKILL, and wait until the process is gone.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill fulfilment");
    }

    /// Whether this instance holds the lease, from its `/health/ready`.
    pub async fn is_leader(&self) -> bool {
        let url = format!("http://127.0.0.1:{}/health/ready", self.port);
        match reqwest::get(url).await {
            Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["leader"] == true),
            Err(_) => false,
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `check` every 20 ms until it holds, or fails the test after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Shop {
    pub async fn open(pool: PgPool) -> Shop {
        let app_pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with((*pool.connect_options()).clone());
        let settings = Settings {
            database_url: "postgres://unused".into(),
            addr: "127.0.0.1:0".parse().expect("an address"),
            snapshot_every: 100,
            database_max_connections: 10,
            command_max_retries: 10,
            auth: test_support::auth::settings(),
        };
        let auth =
            service_kit::auth::Auth::without_jwks(&settings.auth, write_service::access::RULES)
                .expect("the tests' key");
        let http = InProcess::new(router(AppState::new(app_pool, &settings, auth)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the sandbox");
        let sandbox = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(payment_sandbox::serve(listener));
        let database = pool
            .connect_options()
            .get_database()
            .expect("sqlx::test names its database")
            .to_owned();
        Shop {
            database_url: test_support::servers::database_url(&database),
            pool,
            http,
            sandbox,
            mail: MailCatcher::start().await,
            client: reqwest::Client::new(),
        }
    }

    /// Starts a `fulfilment run` on this shop.
    pub fn fulfilment(&self, tuning: &Tuning) -> Fulfilment {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_fulfilment"))
            .arg("run")
            .env("DATABASE_URL", &self.database_url)
            .env("FULFILMENT_ADDR", format!("127.0.0.1:{port}"))
            .env("PAYMENT_PROVIDER_URL", &self.sandbox)
            .env("PAYMENT_API_KEY", API_KEY)
            .env("PAYMENT_TIMEOUT", tuning.payment_timeout)
            .env("PAYMENT_REQUEST_TIMEOUT", tuning.request_timeout)
            .env("SMTP_URL", self.mail.smtp_url())
            .env("FULFILMENT_POLL_INTERVAL_MS", "50")
            .env("FULFILMENT_MAX_RETRY_DELAY", "500ms")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the fulfilment binary");
        Fulfilment { child, port }
    }

    pub async fn product(&self, id: &str, cents: i64, stock: i64) {
        let r = self
            .http
            .send(
                Method::PUT,
                &format!("/products/{id}"),
                &[],
                Some(json!({"name": format!("Product {id}"), "unitPriceCents": cents})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let r = self
            .http
            .post(&format!("/products/{id}/stock"), json!({"quantity": stock}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }

    pub async fn available(&self, product: &str) -> i64 {
        let p = self.http.get(&format!("/products/{product}")).await.ok();
        p["availableUnits"].as_i64().expect("availableUnits")
    }

    /// Creates and checks out an order of `lines`, paying with `method`; returns its id.
    pub async fn checkout(&self, user: &str, lines: &[(&str, i64)], method: &str) -> String {
        let items: Vec<Value> = lines
            .iter()
            .map(|(p, q)| json!({"productId": p, "quantity": q}))
            .collect();
        let r = self
            .http
            .post("/orders", json!({"userId": user, "items": items}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let id = r.body["orderId"].as_str().expect("orderId").to_owned();
        let r = self
            .http
            .post(
                &format!("/orders/{id}/confirm"),
                json!({"paymentMethod": method, "email": format!("{user}@shop.example")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        id
    }

    pub async fn command(&self, order: &str, action: &str, body: Option<Value>) -> Reply {
        self.http
            .send(
                Method::POST,
                &format!("/orders/{order}/{action}"),
                &[],
                body,
            )
            .await
    }

    pub async fn order(&self, id: &str) -> Value {
        self.http.get(&format!("/orders/{id}/state")).await.ok()
    }

    pub async fn status(&self, id: &str) -> String {
        self.order(id).await["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the order reaches `status`.
    pub async fn reaches(&self, id: &str, status: &str, within: Duration) {
        eventually(within, &format!("order {id} {status}"), || async {
            self.status(id).await == status
        })
        .await;
    }

    pub async fn set_mode(&self, mode: &str) {
        let r = self
            .client
            .post(format!("{}/sandbox/mode", self.sandbox))
            .json(&json!({"mode": mode}))
            .send()
            .await
            .expect("the sandbox");
        assert!(r.status().is_success(), "set mode {mode}: {}", r.status());
    }

    /// The sandbox's ledger: `charges` and `refunds`.
    pub async fn ledger(&self) -> Value {
        self.client
            .get(format!("{}/sandbox/ledger", self.sandbox))
            .send()
            .await
            .expect("the sandbox")
            .json()
            .await
            .expect("a JSON ledger")
    }

    /// Per order: (succeeded charges, refunds) in the sandbox's ledger.
    pub async fn money_by_order(&self) -> BTreeMap<String, (usize, usize)> {
        let ledger = self.ledger().await;
        let mut by_order = BTreeMap::<String, (usize, usize)>::new();
        for c in ledger["charges"].as_array().into_iter().flatten() {
            if c["status"] == "succeeded" {
                let order = c["orderId"].as_str().unwrap_or_default().to_owned();
                by_order.entry(order).or_default().0 += 1;
            }
        }
        for r in ledger["refunds"].as_array().into_iter().flatten() {
            let order = r["orderId"].as_str().unwrap_or_default().to_owned();
            by_order.entry(order).or_default().1 += 1;
        }
        by_order
    }

    /// Messages received, per order id named in the subject.
    pub fn mail_about(&self, order: &str) -> Vec<Mail> {
        self.mail
            .messages()
            .into_iter()
            .filter(|m| m.subject.contains(order))
            .collect()
    }

    /// Outside work not yet done.
    pub async fn work_pending(&self) -> i64 {
        sqlx::query_scalar("select count(*) from fulfilment_outbox where status = 'pending'")
            .fetch_one(&self.pool)
            .await
            .expect("the outbox")
    }

    /// Nothing left to do: the process has read the whole log (so every email the log calls
    /// for is queued) and no outside work waits.
    pub async fn settled(&self) -> bool {
        let caught_up: bool = sqlx::query_scalar(
            "select coalesce((
                 select (c.tx_id, c.global_position) >= (e.tx_id::text::int8, e.global_position)
                 from process_checkpoints c,
                      (select tx_id, global_position from events
                       order by tx_id desc, global_position desc limit 1) e
                 where c.process = 'fulfilment'), false)",
        )
        .fetch_one(&self.pool)
        .await
        .expect("the checkpoint");
        caught_up && self.work_pending().await == 0
    }

    /// Event types of an order's stream, in order.
    pub async fn events_of(&self, order: &str) -> Vec<String> {
        sqlx::query_scalar(
            "select event_type from events where stream_id = $1 order by stream_position",
        )
        .bind(format!("order-{order}"))
        .fetch_all(&self.pool)
        .await
        .expect("the events")
    }
}
