//! Who may do what, end to end: the write-service, the read-service and the projector as real
//! processes checking real tokens (HS256 with the tests' secret, RS256 and ES256 from a JWKS
//! file), over every endpoint both services document.
//!
//! The matrix: each endpoint of both rule tables is called with every kind of bad token and
//! as customer A on A's order, customer B on A's order and staff. Every cell's status is
//! asserted, and the event count shows that no refused cell wrote anything. An endpoint
//! without a request here fails the test, so a new endpoint cannot go unexamined. Then the
//! services' whole logs are searched for the tokens they were sent.
//!
//! Needs DATABASE_URL and MONGODB_URI and the built binaries (`make test`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use service_kit::auth::{Access, Claims, Rule};
use sqlx::PgPool;
use test_support::auth::{claims, jwk, pem, sign, sign_with_key, staff};
use test_support::events::Events;

mod common;
use common::*;

const ALICE: &str = "alice";
const BOB: &str = "bob";
const PRODUCT: &str = "lamp";
const OTHER_PRODUCT: &str = "desk";

/// Every kind of refused token, named, as the `Authorization` header (or its absence).
fn bad_tokens() -> Vec<(&'static str, Option<String>)> {
    let now = jsonwebtoken::get_current_timestamp();
    let with = |f: &dyn Fn(&mut Claims)| {
        let mut c = claims(ALICE, true);
        f(&mut c);
        format!("Bearer {}", sign(&c))
    };
    let good = sign(&claims(ALICE, true));
    let (head_payload, signature) = good.rsplit_once('.').unwrap();
    let (_, payload) = head_payload.split_once('.').unwrap();
    let mut bad_signature = signature.to_owned();
    let last = if bad_signature.ends_with('A') {
        "B"
    } else {
        "A"
    };
    bad_signature.replace_range(bad_signature.len() - 1.., last);
    let alg_none = format!(
        "{}.{payload}.",
        base64url(&json!({"alg": "none", "typ": "JWT"}).to_string())
    );
    // HS256 keyed with the bytes of the RSA public key the JWKS publishes, naming that key.
    let confused = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("test-rsa-1".into());
        let key = EncodingKey::from_secret(&pem("test-rsa-1.pub.pem")).unwrap();
        jsonwebtoken::encode(&header, &claims(ALICE, true), &key).unwrap()
    };
    vec![
        ("no token", None),
        ("malformed", Some("Bearer not.a.jwt".into())),
        ("expired", Some(with(&|c| c.exp = now - 3600))),
        ("not yet valid", Some(with(&|c| c.nbf = Some(now + 3600)))),
        ("wrong issuer", Some(with(&|c| c.iss = "elsewhere".into()))),
        (
            "wrong audience",
            Some(with(&|c| c.aud = "another-api".into())),
        ),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        ("HS/RS confusion", Some(format!("Bearer {confused}"))),
        (
            "bad signature",
            Some(format!("Bearer {head_payload}.{bad_signature}")),
        ),
        (
            "unknown kid",
            Some(format!(
                "Bearer {}",
                sign_with_key("test-rsa-2", &claims(ALICE, true))
            )),
        ),
    ]
}

fn base64url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// The three good callers of the matrix: A by an RS256 key of the JWKS, B by its ES256 key,
/// staff by the HS256 secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    AOnA,
    BOnA,
    Staff,
}

impl Who {
    fn authorization(self) -> String {
        let token = match self {
            Who::AOnA => sign_with_key("test-rsa-1", &claims(ALICE, false)),
            Who::BOnA => sign_with_key("test-ec-1", &claims(BOB, false)),
            Who::Staff => staff(),
        };
        format!("Bearer {token}")
    }
}

/// The three services, with a JWKS file beside the secret.
struct Shop {
    http: reqwest::Client,
    write: Service,
    read: Service,
    projector: Service,
    events: Events,
    pool: PgPool,
    jwks: tempfile::TempDir,
    /// The newest position a setup write answered: reads wait for it.
    last: std::sync::Mutex<String>,
    _mongo: MongoDatabase,
}

/// Our crates at debug, with tower-http's request and response lines: the most a log says.
const VERBOSE: &str =
    "debug,hyper=info,hyper_util=info,h2=info,mongodb=info,rustls=info,reqwest=info";

impl Shop {
    async fn start(pool: PgPool) -> Shop {
        let db = pool
            .connect_options()
            .get_database()
            .unwrap_or("postgres")
            .to_owned();
        let jwks = tempfile::tempdir().unwrap();
        let jwks_file = jwks.path().join("jwks.json");
        write_jwks(&jwks_file, &["test-rsa-1", "test-ec-1"]);
        let mongo = MongoDatabase {
            name: format!("access{}", uuid::Uuid::new_v4().simple()),
        };
        let auth = |addr_var: &'static str| {
            vec![
                (addr_var, "127.0.0.1:0".to_owned()),
                ("AUTH_JWKS", jwks_file.display().to_string()),
                ("AUTH_JWKS_MIN_REFRESH", "100ms".to_owned()),
                ("RUST_LOG", VERBOSE.to_owned()),
            ]
        };
        let mut write_env = auth("WRITE_SERVICE_ADDR");
        write_env.push(("DATABASE_URL", database_url(&db)));
        let mut read_env = auth("READ_SERVICE_ADDR");
        read_env.push(("MONGODB_URI", mongodb_uri()));
        read_env.push(("MONGODB_DATABASE", mongo.name.clone()));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut write = Service::start("write-service", &write_env).await;
        let mut read = Service::start("read-service", &read_env).await;
        let mut projector = Service::start(
            "projector",
            &[
                ("DATABASE_URL", database_url(&db)),
                ("MONGODB_URI", mongodb_uri()),
                ("MONGODB_DATABASE", mongo.name.clone()),
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
            pool,
            jwks,
            last: Default::default(),
            _mongo: mongo,
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        authorization: Option<&str>,
        headers: &[(&str, String)],
        body: Option<&Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.request(method.clone(), url);
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let Reply {
            status,
            headers,
            body,
        } = answer(request, &format!("{method} {url}")).await;
        (status, headers, body)
    }

    /// A write-service command as staff that must succeed; its body.
    async fn staff(&self, method: Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.write.url());
        let (status, _, answer) = self
            .send(
                method.clone(),
                &url,
                Some(&Who::Staff.authorization()),
                &[],
                Some(&body),
            )
            .await;
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        if let Some(p) = answer["position"].as_str() {
            self.seen(p.to_owned());
        }
        answer
    }

    fn seen(&self, position: String) {
        let mut last = self.last.lock().unwrap();
        // Fixed-width hex: the strings sort as the positions do.
        if position > *last {
            *last = position;
        }
    }

    async fn event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// A new order of alice's, placed by staff, with two lines; pending.
    async fn order(&self) -> String {
        let body = json!({"userId": ALICE, "items": [
            {"productId": PRODUCT, "quantity": 1}, {"productId": OTHER_PRODUCT, "quantity": 1}]});
        let answer = self.staff(Method::POST, "/orders", body).await;
        answer["orderId"].as_str().unwrap().to_owned()
    }

    async fn confirmed(&self) -> String {
        let id = self.order().await;
        self.staff(
            Method::POST,
            &format!("/orders/{id}/confirm"),
            json!({"paymentMethod": "pm_card_visa"}),
        )
        .await;
        id
    }

    async fn paid(&self) -> String {
        let id = self.confirmed().await;
        let position = self.events.pay(domain::OrderId(id.parse().unwrap())).await;
        self.seen(position.to_string());
        id
    }

    async fn shipped(&self) -> String {
        let id = self.paid().await;
        self.staff(
            Method::POST,
            &format!("/orders/{id}/ship"),
            json!({"carrier": "DHL", "trackingNumber": "JD1"}),
        )
        .await;
        id
    }

    fn logs(&self) -> String {
        [&self.write, &self.read, &self.projector]
            .iter()
            .map(|s| s.log.lock().unwrap().join("\n"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn stop(self) {
        self.projector.kill().await;
        self.write.kill().await;
        self.read.kill().await;
    }
}

fn write_jwks(path: &std::path::Path, names: &[&str]) {
    let keys: Vec<Value> = names.iter().map(|n| jwk(n)).collect();
    // Written beside and renamed over, so a reader never sees half a file.
    let part = path.with_extension("part");
    std::fs::write(&part, json!({"keys": keys}).to_string()).unwrap();
    std::fs::rename(&part, path).unwrap();
}

/// One cell's request: which service, the path, the body, and whether it may write.
struct Request {
    read: bool,
    path: String,
    body: Option<Value>,
}

/// What each good caller gets from an endpoint: A on A's, B on A's, staff.
fn expected(rule: &Rule) -> [u16; 3] {
    let m = rule.method.as_str();
    match (m, rule.path) {
        (_, "/health/live" | "/health/ready" | "/metrics" | "/openapi.json") => [200, 200, 200],
        ("POST", "/orders") => [201, 403, 201],
        ("POST", "/orders/{order_id}/items")
        | ("DELETE", "/orders/{order_id}/items/{product_id}")
        | ("POST", "/orders/{order_id}/confirm")
        | ("POST", "/orders/{order_id}/cancel")
        | ("GET", "/orders/{order_id}/events")
        | ("GET", "/orders/{order_id}/state") => [200, 404, 200],
        ("POST", "/orders/{order_id}/ship" | "/orders/{order_id}/deliver") => [403, 403, 200],
        ("PUT", "/products/{product_id}")
        | ("POST", "/products/{product_id}/stock" | "/products/{product_id}/stock/adjustments") => {
            [403, 403, 200]
        }
        ("GET", "/products/{product_id}") => [200, 200, 200],
        ("GET", "/orders") => [200, 403, 200],
        ("GET", "/orders/{orderId}") => [200, 404, 200],
        ("GET", "/users/{userId}/orders") => [200, 404, 200],
        (
            "GET",
            "/sales/daily"
            | "/sales/daily/{date}"
            | "/inventory"
            | "/inventory/{productId}"
            | "/dashboard/summary"
            | "/sales/minutely"
            | "/sales/hourly"
            | "/alerts"
            | "/dashboard/stream",
        ) => [403, 403, 200],
        // The page and its files hold no data: the page asks for a token.
        ("GET", "/dashboard" | "/dashboard/assets/{file}") => [200, 200, 200],
        _ => panic!(
            "no expected answers for {m} {}: add the endpoint to this matrix",
            rule.path
        ),
    }
}

/// The request a cell sends to an endpoint; `fresh` gives it an order of A's in the state
/// the command needs, so that a success is a real success.
async fn request(
    shop: &Shop,
    on_read: bool,
    rule: &Rule,
    who: Option<Who>,
    shared: &Shared,
) -> Request {
    let m = rule.method.as_str();
    let order = |state: &'static str| async move {
        // Refused cells get the shared order: nothing may happen to it.
        if !matches!(who, Some(Who::AOnA | Who::Staff)) {
            return shared.order.clone();
        }
        match state {
            "pending" => shop.order().await,
            "confirmed" => shop.confirmed().await,
            "paid" => shop.paid().await,
            "shipped" => shop.shipped().await,
            _ => unreachable!(),
        }
    };
    let write = |path: String, body: Option<Value>| Request {
        read: false,
        path,
        body,
    };
    let read = |path: String| Request {
        read: true,
        path,
        body: None,
    };
    match (m, rule.path) {
        (_, "/health/live" | "/health/ready" | "/metrics" | "/openapi.json") => Request {
            read: on_read,
            path: rule.path.to_owned(),
            body: None,
        },
        ("POST", "/orders") => {
            let items = json!([{"productId": PRODUCT, "quantity": 1}]);
            let body = match who {
                // A customer names nobody: the order is theirs.
                Some(Who::AOnA) => json!({"items": items}),
                _ => json!({"userId": ALICE, "items": items}),
            };
            write("/orders".into(), Some(body))
        }
        ("POST", "/orders/{order_id}/items") => write(
            format!("/orders/{}/items", order("pending").await),
            Some(json!({"productId": PRODUCT, "quantity": 2})),
        ),
        ("DELETE", "/orders/{order_id}/items/{product_id}") => write(
            format!("/orders/{}/items/{OTHER_PRODUCT}", order("pending").await),
            None,
        ),
        ("POST", "/orders/{order_id}/confirm") => write(
            format!("/orders/{}/confirm", order("pending").await),
            Some(json!({"paymentMethod": "pm_card_visa"})),
        ),
        ("POST", "/orders/{order_id}/cancel") => write(
            format!("/orders/{}/cancel", order("confirmed").await),
            Some(json!({})),
        ),
        ("POST", "/orders/{order_id}/ship") => write(
            format!("/orders/{}/ship", order("paid").await),
            Some(json!({"carrier": "DHL", "trackingNumber": "JD2"})),
        ),
        ("POST", "/orders/{order_id}/deliver") => {
            write(format!("/orders/{}/deliver", order("shipped").await), None)
        }
        ("GET", "/orders/{order_id}/events") => {
            write(format!("/orders/{}/events", shared.order), None)
        }
        ("GET", "/orders/{order_id}/state") => {
            write(format!("/orders/{}/state", shared.order), None)
        }
        ("PUT", "/products/{product_id}") => write(
            format!("/products/{PRODUCT}"),
            Some(json!({"name": "Desk lamp", "unitPriceCents": 3999})),
        ),
        ("GET", "/products/{product_id}") => write(format!("/products/{PRODUCT}"), None),
        ("POST", "/products/{product_id}/stock") => write(
            format!("/products/{PRODUCT}/stock"),
            Some(json!({"quantity": 5})),
        ),
        ("POST", "/products/{product_id}/stock/adjustments") => write(
            format!("/products/{PRODUCT}/stock/adjustments"),
            Some(json!({"quantity": -1, "reason": "damaged"})),
        ),
        ("GET", "/orders") => read(format!("/orders?userId={ALICE}")),
        ("GET", "/orders/{orderId}") => read(format!("/orders/{}", shared.order)),
        ("GET", "/users/{userId}/orders") => read(format!("/users/{ALICE}/orders")),
        ("GET", "/sales/daily") => read(format!("/sales/daily?from={0}&to={0}", shared.day)),
        ("GET", "/sales/daily/{date}") => read(format!("/sales/daily/{}", shared.day)),
        ("GET", "/inventory") => read("/inventory".into()),
        ("GET", "/inventory/{productId}") => read(format!("/inventory/{PRODUCT}")),
        ("GET", "/dashboard/summary") => read("/dashboard/summary".into()),
        ("GET", "/sales/minutely") => read("/sales/minutely".into()),
        ("GET", "/sales/hourly") => read("/sales/hourly".into()),
        ("GET", "/alerts") => read("/alerts?status=open".into()),
        ("GET", "/dashboard/stream") => read("/dashboard/stream".into()),
        ("GET", "/dashboard") => read("/dashboard".into()),
        ("GET", "/dashboard/assets/{file}") => read("/dashboard/assets/dashboard.js".into()),
        _ => panic!(
            "no request for {m} {}: add the endpoint to this matrix",
            rule.path
        ),
    }
}

/// What every cell shares: A's paid order, its day, the log head once it is projected.
struct Shared {
    order: String,
    day: String,
}

#[sqlx::test(migrations = "../migrations")]
async fn every_endpoint_answers_every_caller_as_its_rule_says_and_refusals_write_nothing(
    pool: PgPool,
) {
    let shop = Shop::start(pool).await;
    for (product, price) in [(PRODUCT, 3999), (OTHER_PRODUCT, 15000)] {
        shop.staff(
            Method::PUT,
            &format!("/products/{product}"),
            json!({"name": product, "unitPriceCents": price}),
        )
        .await;
        shop.staff(
            Method::POST,
            &format!("/products/{product}/stock"),
            json!({"quantity": 10000}),
        )
        .await;
    }
    let order = shop.paid().await;
    let (_, _, trail) = shop
        .send(
            Method::GET,
            &format!("{}/orders/{order}/events", shop.write.url()),
            Some(&Who::Staff.authorization()),
            &[],
            None,
        )
        .await;
    let day = trail["events"][0]["recordedAt"]
        .as_str()
        .expect("a recorded time")[..10]
        .to_owned();
    let shared = Shared { order, day };

    let tables: Vec<(&str, &[Rule])> = vec![
        ("write-service", write_service::access::RULES),
        ("read-service", read_service::access::RULES),
    ];
    let bad = bad_tokens();
    let mut cells = 0;
    let mut endpoints = BTreeSet::new();
    for (service, rules) in &tables {
        for rule in rules.iter() {
            endpoints.insert(format!("{service} {} {}", rule.method, rule.path));
            let good = expected(rule);
            let mut calls: Vec<(String, Option<String>, Option<Who>, u16)> = bad
                .iter()
                .map(|(why, auth)| {
                    let status = if rule.access == Access::Anyone {
                        200
                    } else {
                        401
                    };
                    ((*why).to_owned(), auth.clone(), None, status)
                })
                .collect();
            for (i, who) in [Who::AOnA, Who::BOnA, Who::Staff].into_iter().enumerate() {
                calls.push((
                    format!("{who:?}"),
                    Some(who.authorization()),
                    Some(who),
                    good[i],
                ));
            }
            for (cell, authorization, who, want) in calls {
                let req = request(&shop, *service == "read-service", rule, who, &shared).await;
                let base = if req.read {
                    shop.read.url()
                } else {
                    shop.write.url()
                };
                let last = shop.last.lock().unwrap().clone();
                let headers = if req.read {
                    vec![("x-consistency-token", last)]
                } else {
                    vec![]
                };
                let before = shop.event_count().await;
                let (status, answer_headers, body) = shop
                    .send(
                        rule.method.clone(),
                        &format!("{base}{}", req.path),
                        authorization.as_deref(),
                        &headers,
                        req.body.as_ref(),
                    )
                    .await;
                let after = shop.event_count().await;
                let what = format!("{service} {} {} as {cell}", rule.method, req.path);
                assert_eq!(status.as_u16(), want, "{what}: {body}");
                if status == StatusCode::UNAUTHORIZED {
                    assert_eq!(
                        answer_headers
                            .get("www-authenticate")
                            .and_then(|v| v.to_str().ok()),
                        Some("Bearer error=\"invalid_token\""),
                        "{what}"
                    );
                    assert_eq!(body["error"]["code"], "invalid_token", "{what}");
                }
                if status.is_success() && rule.method != Method::GET {
                    assert!(
                        after > before || rule.method == Method::PUT,
                        "{what} wrote nothing"
                    );
                } else {
                    assert_eq!(after, before, "{what} wrote {} events", after - before);
                }
                cells += 1;
            }
        }
    }
    // The ops routes of both services plus every API route: none left out.
    let documented = write_service::access::RULES.len() + read_service::access::RULES.len();
    assert_eq!(endpoints.len(), documented);
    eprintln!("{cells} cells over {} endpoints", endpoints.len());

    // No token reached a log, in any form a log might show it.
    let logs = shop.logs();
    assert!(
        logs.lines().count() > 100,
        "the services logged: {}",
        logs.lines().count()
    );
    let mut tokens: Vec<String> = bad.iter().filter_map(|(_, a)| a.clone()).collect();
    tokens.extend([Who::AOnA, Who::BOnA, Who::Staff].map(Who::authorization));
    for authorization in tokens {
        let token = authorization.trim_start_matches("Bearer ");
        for part in token.split('.').filter(|p| p.len() > 8) {
            assert!(!logs.contains(part), "a token's part {part} is in the log");
        }
    }
    assert!(
        !logs.contains(test_support::auth::SECRET),
        "the secret is in the log"
    );
    shop.stop().await;
}

/// A key added to the JWKS file while a customer keeps ordering: the customer switches to the
/// new key once it is published, and not one request fails; no restart.
#[sqlx::test(migrations = "../migrations")]
async fn a_key_rotation_in_the_jwks_fails_no_request(pool: PgPool) {
    let shop = Shop::start(pool).await;
    shop.staff(
        Method::PUT,
        &format!("/products/{PRODUCT}"),
        json!({"name": "Lamp", "unitPriceCents": 100}),
    )
    .await;
    let jwks_file = shop.jwks.path().join("jwks.json");
    let old = format!(
        "Bearer {}",
        sign_with_key("test-rsa-1", &claims(ALICE, false))
    );
    let new = format!(
        "Bearer {}",
        sign_with_key("test-rsa-2", &claims(ALICE, false))
    );
    let mut statuses = Vec::new();
    let started = Instant::now();
    for i in 0..300 {
        if i == 100 {
            write_jwks(&jwks_file, &["test-rsa-1", "test-ec-1", "test-rsa-2"]);
        }
        let authorization = if i < 100 { &old } else { &new };
        let (method, path, body) = if i % 2 == 0 {
            (Method::GET, format!("/products/{PRODUCT}"), None)
        } else {
            (
                Method::POST,
                "/orders".to_owned(),
                Some(json!({"items": [{"productId": PRODUCT, "quantity": 1}]})),
            )
        };
        let url = format!("{}{path}", shop.write.url());
        let (status, _, body) = shop
            .send(method, &url, Some(authorization), &[], body.as_ref())
            .await;
        statuses.push((i, status, body));
    }
    let failed: Vec<_> = statuses
        .iter()
        .filter(|(_, s, _)| !s.is_success())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 300 failed: {failed:?}",
        failed.len()
    );
    eprintln!(
        "300 requests across a key rotation in {:?}, none failed",
        started.elapsed()
    );
    shop.stop().await;
}

/// The README's rule tables are the services' own, rendered; both OpenAPI documents say the
/// same per operation (each service's tests check its document has no operation without a rule).
#[test]
fn the_readme_lists_every_rule_as_the_services_check_it() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let (start, end) = ("<!-- access rules -->\n", "<!-- /access rules -->");
    let from = readme
        .find(start)
        .expect("the README marks its rule tables")
        + start.len();
    let to = readme
        .find(end)
        .expect("the README marks the end of its rule tables");
    let want = format!(
        "{}\n{}",
        service_kit::auth::rules::markdown("write-service", write_service::access::RULES),
        service_kit::auth::rules::markdown("read-service", read_service::access::RULES),
    );
    assert!(
        readme[from..to] == want,
        "the README's rule tables differ from the code; they should read:\n{want}"
    );
}
