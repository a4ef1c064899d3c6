//! The live dashboard in a real browser: the three services run as processes, a headless
//! Chromium opens `/dashboard` with a staff token, orders are placed through the write API, and
//! the figures on the page become the ones `GET /dashboard/summary` reports, pushed over the
//! stream without a reload. The page is read through its stable ids and `data-value`
//! attributes (raw integers), never its formatted text.
//!
//! Skipped where Chromium is not installed, unless CI is set (`make test` installs it).
//! Needs DATABASE_URL and MONGODB_URI and the binaries, as the other end-to-end tests.

use std::time::Duration;

use domain::OrderId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_support::browser::Browser;
use test_support::events::Events;

mod common;
use common::*;

/// How long the page may take to show what the API shows: the projector polls every 50 ms and
/// the stream sends a few frames a second, so seconds are plenty; this is for slow CI machines.
const PAGE_WAIT: Duration = Duration::from_secs(30);
const CONSISTENCY_TIMEOUT_MS: u64 = 20_000;

/// The statuses the page shows, as `#status-<name>`, and `ordersByStatus` names them.
const STATUSES: [&str; 6] = [
    "pending",
    "confirmed",
    "paid",
    "cancelled",
    "shipped",
    "delivered",
];

/// The three services on the test's own databases, driven as staff.
struct Shop {
    http: reqwest::Client,
    write: Service,
    read: Service,
    projector: Service,
    /// Payments are recorded by the fulfilment process, not over HTTP: the tests append them
    /// to the event store as it does.
    events: Events,
    /// The newest consistency token any write returned.
    token: Option<String>,
    /// Last, so it is dropped after the processes are told to die.
    _mongodb_database: MongoDatabase,
}

impl Shop {
    async fn start(pool: &PgPool) -> Shop {
        let database = pool
            .connect_options()
            .get_database()
            .unwrap_or("postgres")
            .to_owned();
        let http = staff_http();
        let (mut write, mut read, database_url, mongodb_database) =
            write_and_read(&database, CONSISTENCY_TIMEOUT_MS).await;
        let mut projector = Service::start(
            "projector",
            &[
                ("DATABASE_URL", database_url),
                ("MONGODB_URI", mongodb_uri()),
                ("MONGODB_DATABASE", mongodb_database.name.clone()),
                ("PROJECTOR_ADDR", "127.0.0.1:0".into()),
                ("PROJECTOR_POLL_INTERVAL_MS", "50".into()),
            ],
        )
        .await;
        write.wait_ready(&http).await;
        read.wait_ready(&http).await;
        projector.wait_ready(&http).await;
        Shop {
            http,
            write,
            read,
            projector,
            events: Events::new(pool.clone()),
            token: None,
            _mongodb_database: mongodb_database,
        }
    }

    /// Keeps the newest consistency token (fixed-width hex: the strings sort like positions).
    fn saw(&mut self, token: String) {
        if self.token.as_ref().is_none_or(|t| *t < token) {
            self.token = Some(token);
        }
    }

    /// A write-service command that must succeed; returns its body.
    async fn command(&mut self, method: Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.write.url());
        let what = format!("{method} {path} {body}");
        let r = answer(self.http.request(method, &url).json(&body), &what).await;
        assert!(
            matches!(r.status, StatusCode::OK | StatusCode::CREATED),
            "{what}: {:?} {}",
            r.status,
            r.body
        );
        let token = r.body["position"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no position in {}", r.body))
            .to_owned();
        self.saw(token);
        r.body
    }

    async fn open_shop(&mut self, products: &[(&str, &str, i64, i64)]) {
        for &(id, name, price, stock) in products {
            self.command(
                Method::PUT,
                &format!("/products/{id}"),
                json!({"name": name, "unitPriceCents": price, "currency": "USD"}),
            )
            .await;
            self.command(
                Method::POST,
                &format!("/products/{id}/stock"),
                json!({"quantity": stock}),
            )
            .await;
        }
    }

    /// Places an order at the catalogue's prices; returns its id.
    async fn place(&mut self, user: &str, items: &[(&str, i64)]) -> String {
        let items: Vec<Value> = items
            .iter()
            .map(|(p, q)| json!({"productId": p, "quantity": q}))
            .collect();
        let body = self
            .command(
                Method::POST,
                "/orders",
                json!({"userId": user, "items": items}),
            )
            .await;
        body["orderId"]
            .as_str()
            .unwrap_or_else(|| panic!("no orderId in {body}"))
            .to_owned()
    }

    async fn confirm(&mut self, order: &str) {
        self.command(
            Method::POST,
            &format!("/orders/{order}/confirm"),
            json!({"paymentMethod": "pm_card_visa"}),
        )
        .await;
    }

    async fn cancel(&mut self, order: &str) {
        self.command(
            Method::POST,
            &format!("/orders/{order}/cancel"),
            json!({"reason": "changed my mind"}),
        )
        .await;
    }

    /// The payment captured, recorded as the fulfilment process records it.
    async fn pay(&mut self, order: &str) {
        let id = OrderId(order.parse().expect("an order id"));
        let token = self.events.pay(id).await.to_string();
        self.saw(token);
    }

    /// A read-service `GET` as staff, including every write so far; its body.
    async fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.read.url());
        let mut request = self.http.get(&url);
        if let Some(token) = &self.token {
            request = request.header("x-consistency-token", token);
        }
        let r = answer(request, &format!("GET {path}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    /// `GET /dashboard/summary` including every write so far.
    async fn summary(&self) -> Value {
        self.get("/dashboard/summary").await
    }

    async fn stop(self) {
        self.projector.kill().await;
        self.write.kill().await;
        self.read.kill().await;
    }
}

/// What the page shows, from its `data-value`s (strings, `null` when absent) and its top
/// products list.
const SHOWN: &str = r#"(() => {
  const value = (id) => document.getElementById(id)?.dataset.value ?? null;
  return {
    ordersToday: value('orders-today'),
    revenueToday: value('revenue-today'),
    paidToday: value('paid-today'),
    status: Object.fromEntries(
      ['pending', 'confirmed', 'paid', 'cancelled', 'shipped', 'delivered']
        .map((s) => [s, value('status-' + s)])),
    topProducts: [...document.querySelectorAll('#top-products li[data-product-id]')]
      .map((li) => li.dataset.productId),
  };
})()"#;

/// What the page should show for `summary`, in [`SHOWN`]'s shape.
fn expected(summary: &Value) -> Value {
    let number = |v: &Value| {
        json!(
            v.as_i64()
                .unwrap_or_else(|| panic!("not an integer: {v} in {summary}"))
                .to_string()
        )
    };
    let today = &summary["today"];
    let status: serde_json::Map<String, Value> = STATUSES
        .iter()
        .map(|s| ((*s).to_owned(), number(&summary["ordersByStatus"][s])))
        .collect();
    let top: Vec<Value> = summary["topProducts"]
        .as_array()
        .unwrap_or_else(|| panic!("no topProducts in {summary}"))
        .iter()
        .map(|p| p["productId"].clone())
        .collect();
    json!({
        "ordersToday": number(&today["ordersPlaced"]),
        "revenueToday": number(&today["netRevenueCents"]),
        "paidToday": number(&today["ordersPaid"]),
        "status": status,
        "topProducts": top,
    })
}

/// Waits until the page shows what the API reports now, and returns the summary. A run
/// across midnight UTC could see two different todays; the window is too small to matter.
async fn page_agrees_with_the_api(browser: &mut Browser, shop: &Shop) -> Value {
    let summary = shop.summary().await;
    let want = expected(&summary);
    let shown = browser
        .wait_until(SHOWN, PAGE_WAIT, |shown| *shown == want)
        .await;
    if let Err(e) = shown {
        panic!("the page never showed {want}:\n{e}\nsummary: {summary}");
    }
    summary
}

async fn frames(browser: &mut Browser) -> i64 {
    let frames = browser
        .eval("window.__dashboard?.frames ?? null")
        .await
        .unwrap();
    frames
        .as_i64()
        .unwrap_or_else(|| panic!("window.__dashboard.frames is {frames}"))
}

#[sqlx::test(migrations = "../migrations")]
async fn the_dashboard_shows_what_the_api_reports_as_orders_come_in(pool: PgPool) {
    let Some(mut browser) = Browser::launch_or_skip().await else {
        return;
    };
    let mut shop = Shop::start(&pool).await;

    // The token rides in the fragment, which never reaches the server; the page moves it to
    // sessionStorage and takes it out of the address bar.
    let staff = test_support::auth::staff();
    browser
        .goto(&format!("{}/dashboard#token={staff}", shop.read.url()))
        .await
        .unwrap();
    browser
        .wait_for(
            "document.querySelector('#conn')?.dataset.state === 'live'",
            PAGE_WAIT,
        )
        .await
        .unwrap();
    let location = browser.eval("location.href").await.unwrap();
    assert!(
        !location.as_str().unwrap_or_default().contains(&staff),
        "the token is still in the address bar: {location}"
    );

    // An empty shop first: every figure zero, as the API says.
    let empty = page_agrees_with_the_api(&mut browser, &shop).await;
    assert_eq!(empty["today"]["ordersPlaced"], 0, "{empty}");
    let frames_when_empty = frames(&mut browser).await;

    shop.open_shop(&[
        ("apple", "Apple", 250, 50),
        ("pear", "Pear", 120, 50),
        ("tv", "Television", 60_000, 5),
    ])
    .await;
    // alice pays, bob checks out and waits for his payment, carol leaves hers pending, dave
    // cancels.
    let alice = shop.place("alice", &[("apple", 2), ("pear", 1)]).await;
    shop.confirm(&alice).await;
    shop.pay(&alice).await;
    let bob = shop.place("bob", &[("pear", 3)]).await;
    shop.confirm(&bob).await;
    shop.place("carol", &[("apple", 1)]).await;
    let dave = shop.place("dave", &[("apple", 5)]).await;
    shop.cancel(&dave).await;

    let summary = page_agrees_with_the_api(&mut browser, &shop).await;
    assert_eq!(summary["today"]["ordersPlaced"], 4, "{summary}");
    assert_eq!(summary["today"]["ordersPaid"], 1, "{summary}");
    assert_eq!(
        summary["today"]["netRevenueCents"],
        2 * 250 + 120,
        "{summary}"
    );
    assert_eq!(
        summary["ordersByStatus"],
        json!({"pending": 1, "confirmed": 1, "paid": 1, "cancelled": 1, "shipped": 0, "delivered": 0}),
    );
    let frames_after_orders = frames(&mut browser).await;
    assert!(
        frames_after_orders > frames_when_empty,
        "the figures changed without new frames: {frames_when_empty} then {frames_after_orders}"
    );

    // And again, live: one more paid order moves the figures once more.
    let erin = shop.place("erin", &[("pear", 2)]).await;
    shop.confirm(&erin).await;
    shop.pay(&erin).await;
    let summary = page_agrees_with_the_api(&mut browser, &shop).await;
    assert_eq!(summary["today"]["ordersPaid"], 2, "{summary}");
    assert!(frames(&mut browser).await > frames_after_orders);

    // A first order of 600.00 opens a `large_first_order` alert (the default threshold is
    // 500.00): the page lists the open alerts the API lists.
    shop.place("whale", &[("tv", 1)]).await;
    let open = shop.get("/alerts?status=open").await;
    let ids: Vec<String> = open["alerts"]
        .as_array()
        .unwrap_or_else(|| panic!("no alerts in {open}"))
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{open}");
    assert!(
        ids[0].starts_with("large_first_order:customer:whale:"),
        "{open}"
    );
    let want = json!({"count": "1", "ids": ids});
    let shown = browser
        .wait_until(
            r#"({count: document.getElementById('alerts-open')?.dataset.value ?? null,
                ids: [...document.querySelectorAll('#alerts li[data-alert-id]')]
                  .map((li) => li.dataset.alertId)})"#,
            PAGE_WAIT,
            |shown| *shown == want,
        )
        .await;
    if let Err(e) = shown {
        panic!("the page never listed the open alert {want}:\n{e}");
    }

    // The page has applied a frame at least as fresh as the last write, and caught up.
    let token = shop.token.clone().expect("writes were made");
    browser
        .wait_until(
            "document.getElementById('position')?.dataset.value ?? null",
            PAGE_WAIT,
            |p| p.as_str().is_some_and(|p| p >= token.as_str()),
        )
        .await
        .unwrap();
    browser
        .wait_for(
            "document.getElementById('lag')?.dataset.value === '0'",
            PAGE_WAIT,
        )
        .await
        .unwrap();
    assert_eq!(
        browser.attribute("#conn", "data-state").await.unwrap(),
        Some("live".into())
    );

    let errors = browser.page_errors().to_vec();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
    browser
        .screenshot(test_support::target_dir().join("e2e/dashboard.png"))
        .await
        .unwrap();
    browser.close().await.unwrap();
    shop.stop().await;
}
