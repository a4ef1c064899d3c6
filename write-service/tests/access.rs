//! Who may do what on the write-service, against a real PostgreSQL: a customer places and
//! acts on their own orders only, another customer's order answers exactly as a missing one,
//! staff routes refuse customers, a request without a token is 401, and nothing refused
//! writes anything. (The full matrix over both services lives in e2e.)

use std::process::Command;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use domain::OrderId;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use service_kit::auth::{Auth, Caller};
use sqlx::PgPool;
use test_support::auth::{SECRET, bearer, customer};
use test_support::events::Events;
use test_support::http::{InProcess, Reply};
use tower::ServiceExt;
use uuid::Uuid;
use write_service::access::RULES;
use write_service::extract::MAX_IDEMPOTENCY_KEY_LEN;
use write_service::{AppState, router};

mod common;
use common::{auth, settings};

struct App {
    /// Calls as staff.
    staff: InProcess,
    pool: PgPool,
}

impl App {
    /// The service, with `sku-1` and `sku-2` in the catalog and in stock.
    async fn new(pool: PgPool) -> Self {
        let app = Self {
            staff: InProcess::new(router(AppState::new(pool.clone(), &settings(), auth()))),
            pool,
        };
        for sku in ["sku-1", "sku-2"] {
            let r = app
                .staff
                .send(
                    Method::PUT,
                    &format!("/products/{sku}"),
                    &[],
                    Some(json!({"name": sku, "unitPriceCents": 500})),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            let r = app
                .staff
                .post(&format!("/products/{sku}/stock"), json!({"quantity": 100}))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        }
        app
    }

    fn customer(&self, sub: &str) -> InProcess {
        self.staff.as_caller(Some(&customer(sub)))
    }

    /// Every event in the store, orders and products alike.
    async fn events(&self) -> i64 {
        sqlx::query_scalar("select count(*) from events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn idempotency_keys(&self) -> Vec<String> {
        sqlx::query_scalar("select idempotency_key from idempotency_keys order by 1")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// A request answered as bytes, to compare bodies exactly.
    async fn exact(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", bearer(token))
            // Fixed, so that it cannot be what differs between two answers.
            .header("x-request-id", "same-request-id");
        let body = match body {
            Some(b) => {
                request = request.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let response = self
            .staff
            .router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes.to_vec())
    }
}

fn created(r: &Reply) -> String {
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["orderId"].as_str().unwrap().to_owned()
}

fn one_line(sku: &str) -> Value {
    json!({"items": [{"productId": sku, "quantity": 1}]})
}

#[sqlx::test(migrations = "../migrations")]
async fn a_customer_places_orders_only_for_themself(pool: PgPool) {
    let app = App::new(pool).await;
    let alice = app.customer("alice");

    // `userId` omitted: the caller's order.
    let id = created(&alice.post("/orders", one_line("sku-1")).await);
    let state = alice.get(&format!("/orders/{id}/state")).await.ok();
    assert_eq!(state["userId"], "alice");
    // Naming themself is the same.
    let mut own = one_line("sku-1");
    own["userId"] = json!("alice");
    created(&alice.post("/orders", own).await);

    // Naming another customer: 403 before anything is read or written, the idempotency
    // record included.
    let (events, keys) = (app.events().await, app.idempotency_keys().await);
    let mut other = one_line("sku-1");
    other["userId"] = json!("bob");
    let r = alice
        .send(
            Method::POST,
            "/orders",
            &[("idempotency-key", "for-bob")],
            Some(other.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.code(), "forbidden");
    assert_eq!(app.events().await, events);
    assert_eq!(app.idempotency_keys().await, keys);

    // Staff may name anyone; naming nobody, they order for themselves, as everyone does.
    let own = created(&app.staff.post("/orders", one_line("sku-1")).await);
    let state = app.staff.get(&format!("/orders/{own}/state")).await.ok();
    assert_eq!(state["userId"], test_support::auth::STAFF_SUB);
    let id = created(&app.staff.post("/orders", other).await);
    let state = app.staff.get(&format!("/orders/{id}/state")).await.ok();
    assert_eq!(state["userId"], "bob");
}

#[sqlx::test(migrations = "../migrations")]
async fn another_customers_order_answers_exactly_as_a_missing_one(pool: PgPool) {
    let app = App::new(pool).await;
    let alice = app.customer("alice");
    let (alice_token, bob_token) = (customer("alice"), customer("bob"));
    let id = created(&alice.post("/orders", one_line("sku-1")).await);
    let missing = Uuid::new_v4().to_string();

    // Each step: bob (on alice's order and on a missing one: the same answer, byte for
    // byte, and nothing written), then alice, for whom the step succeeds, so bob's 404 is
    // not the order's state speaking.
    let steps: Vec<(Method, &str, Option<Value>)> = vec![
        (
            Method::POST,
            "/orders/{id}/items",
            Some(json!({"productId": "sku-2", "quantity": 1})),
        ),
        (Method::DELETE, "/orders/{id}/items/sku-2", None),
        (Method::GET, "/orders/{id}/events", None),
        (Method::GET, "/orders/{id}/state", None),
        (Method::GET, "/orders/{id}/state?version=1", None),
        (
            Method::GET,
            "/orders/{id}/state?at=2100-01-01T00:00:00Z",
            None,
        ),
        (
            Method::POST,
            "/orders/{id}/confirm",
            Some(json!({"paymentMethod": "pm_card_visa"})),
        ),
        (Method::POST, "/orders/{id}/cancel", None),
    ];
    for (method, path, body) in steps {
        let events = app.events().await;
        let theirs = app
            .exact(
                &bob_token,
                method.clone(),
                &path.replace("{id}", &id),
                body.as_ref(),
            )
            .await;
        let absent = app
            .exact(
                &bob_token,
                method.clone(),
                &path.replace("{id}", &missing),
                body.as_ref(),
            )
            .await;
        assert_eq!(theirs.0, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(
            String::from_utf8_lossy(&theirs.2),
            String::from_utf8_lossy(&absent.2),
            "{method} {path}"
        );
        assert_eq!(theirs.1, absent.1, "{method} {path}");
        let error: Value = serde_json::from_slice(&theirs.2).unwrap();
        assert_eq!(error["error"]["code"], "order_not_found", "{method} {path}");
        assert_eq!(app.events().await, events, "{method} {path}");

        let mine = app
            .exact(
                &alice_token,
                method.clone(),
                &path.replace("{id}", &id),
                body.as_ref(),
            )
            .await;
        assert_eq!(
            mine.0,
            StatusCode::OK,
            "{method} {path}: {}",
            String::from_utf8_lossy(&mine.2)
        );
    }
    // Nor can a version past the end (alice gets `version_not_found`, bob the missing
    // order's answer), or bob's `If-Match`.
    let past_end = |id: &str| format!("/orders/{id}/state?version=99");
    let theirs = app
        .exact(&bob_token, Method::GET, &past_end(&id), None)
        .await;
    let absent = app
        .exact(&bob_token, Method::GET, &past_end(&missing), None)
        .await;
    assert_eq!(theirs.0, StatusCode::NOT_FOUND);
    assert_eq!(theirs.2, absent.2);
    let r = alice.get(&past_end(&id)).await;
    assert_eq!(r.code(), "version_not_found", "{:?}", r.body);
    let r = app
        .customer("bob")
        .send(
            Method::POST,
            &format!("/orders/{id}/cancel"),
            &[("if-match", "\"99\"")],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    assert_eq!(r.code(), "order_not_found");

    // Staff see and act on any order.
    app.staff.get(&format!("/orders/{id}/events")).await.ok();
    app.staff.get(&format!("/orders/{id}/state")).await.ok();
}

#[sqlx::test(migrations = "../migrations")]
async fn staff_routes_refuse_customers_and_write_nothing(pool: PgPool) {
    let app = App::new(pool.clone()).await;
    let alice = app.customer("alice");
    let id = created(&alice.post("/orders", one_line("sku-1")).await);
    let r = alice
        .post(
            &format!("/orders/{id}/confirm"),
            json!({"paymentMethod": "pm_card_visa"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    Events::new(pool).pay(OrderId(id.parse().unwrap())).await;

    let events = app.events().await;
    let ship = json!({"carrier": "DHL", "trackingNumber": "1"});
    let refused: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            format!("/orders/{id}/ship"),
            Some(ship.clone()),
        ),
        (Method::POST, format!("/orders/{id}/deliver"), None),
        (
            Method::PUT,
            "/products/sku-1".into(),
            Some(json!({"name": "free", "unitPriceCents": 0})),
        ),
        (
            Method::POST,
            "/products/sku-1/stock".into(),
            Some(json!({"quantity": 5})),
        ),
        (
            Method::POST,
            "/products/sku-1/stock/adjustments".into(),
            Some(json!({"quantity": -5})),
        ),
    ];
    for (method, uri, body) in refused {
        let r = alice.send(method.clone(), &uri, &[], body).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {uri}: {:?}",
            r.body
        );
        assert_eq!(r.code(), "forbidden", "{method} {uri}");
        assert_eq!(app.events().await, events, "{method} {uri}");
    }
    // A customer reads any product; staff ship.
    let product = alice.get("/products/sku-1").await.ok();
    assert_eq!(product["unitPriceCents"], 500);
    let r = app.staff.post(&format!("/orders/{id}/ship"), ship).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[sqlx::test(migrations = "../migrations")]
async fn no_token_is_401_with_www_authenticate(pool: PgPool) {
    let app = App::new(pool).await;
    let events = app.events().await;
    let anonymous = app.staff.as_caller(None);
    let mut body = one_line("sku-1");
    body["userId"] = json!("alice");
    let r = anonymous.post("/orders", body).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert_eq!(r.code(), "invalid_token");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    assert_eq!(app.events().await, events);
    // The ops routes need none.
    for path in ["/health/live", "/health/ready", "/metrics", "/openapi.json"] {
        let r = anonymous.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn idempotency_keys_are_per_caller(pool: PgPool) {
    let app = App::new(pool).await;
    let (alice, bob) = (app.customer("alice"), app.customer("bob"));
    let key = [("idempotency-key", "checkout-1")];
    let body = Some(one_line("sku-1"));

    let first = alice
        .send(Method::POST, "/orders", &key, body.clone())
        .await;
    let alices = created(&first);
    // Bob's equal key and body: his own order, not alice's answer replayed.
    let second = bob.send(Method::POST, "/orders", &key, body.clone()).await;
    let bobs = created(&second);
    assert_ne!(alices, bobs);
    assert_eq!(second.header("idempotent-replayed"), None);
    let state = bob.get(&format!("/orders/{bobs}/state")).await.ok();
    assert_eq!(state["userId"], "bob");
    // Each caller's retry replays their own answer.
    for (caller, id) in [(&alice, &alices), (&bob, &bobs)] {
        let again = caller
            .send(Method::POST, "/orders", &key, body.clone())
            .await;
        assert_eq!(&created(&again), id);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
    }
    assert_eq!(
        app.idempotency_keys().await,
        ["alice/checkout-1", "bob/checkout-1"]
    );

    // The longest key a client may send still fits beside the longest caller id.
    let longest = "u".repeat(64);
    let key = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN);
    let r = app
        .customer(&longest)
        .send(
            Method::POST,
            "/orders",
            &[("idempotency-key", &key)],
            body.clone(),
        )
        .await;
    created(&r);
    assert!(
        app.idempotency_keys()
            .await
            .contains(&format!("{longest}/{key}"))
    );
}

/// The `token` command, as a developer runs it: nothing configured but the secret.
fn token_command(args: &[&str], secret: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_write-service"));
    command.env_clear().arg("token").args(args);
    if let Some(secret) = secret {
        command.env("AUTH_HS256_SECRET", secret);
    }
    command.output().expect("the write-service binary runs")
}

#[tokio::test]
async fn the_token_command_mints_tokens_the_services_accept() {
    let auth = auth();
    let cases = [
        (&["--sub", "alice"][..], false),
        (&["--sub", "staff-7", "--staff", "--ttl", "2h"][..], true),
    ];
    for (args, is_staff) in cases {
        let out = token_command(args, Some(SECRET));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap();
        let caller = auth
            .verify(token.trim())
            .await
            .expect("a token the service accepts");
        assert_eq!(
            caller,
            Caller {
                sub: args[1].parse().unwrap(),
                staff: is_staff,
            }
        );
    }

    // No secret, or one the services would refuse: a clear error and no token.
    let out = token_command(&["--sub", "alice"], None);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AUTH_HS256_SECRET"), "{stderr}");
    let out = token_command(&["--sub", "alice"], Some("short"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("32 bytes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a customer id the services would take.
    let out = token_command(&["--sub", "a/b"], Some(SECRET));
    assert!(!out.status.success());
}

/// The one test that turns authentication off: it is loud about it, and serves as staff.
#[sqlx::test(migrations = "../migrations")]
async fn auth_disabled_serves_everyone_as_staff_and_says_so(pool: PgPool) {
    let mut settings = settings();
    settings.auth.disabled = true;
    let auth = Auth::without_jwks(&settings.auth, RULES).unwrap();
    let open = InProcess::new(router(AppState::new(pool, &settings, auth))).as_caller(None);
    let ready = open.get("/health/ready").await.ok();
    assert_eq!(ready["auth"], "disabled");
    let r = open
        .send(
            Method::PUT,
            "/products/sku-1",
            &[],
            Some(json!({"name": "sku-1", "unitPriceCents": 500})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}
