//! The sandbox over real HTTP, as the fulfilment process and its tests call it: each test runs
//! its own sandbox on port 0.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "sk_test_sandbox";

struct Sandbox {
    base: String,
    client: reqwest::Client,
}

async fn start() -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(payment_sandbox::serve(listener));
    Sandbox {
        base,
        client: reqwest::Client::new(),
    }
}

struct Answer {
    status: StatusCode,
    replayed: bool,
    body: Value,
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&encode(name));
        out.push('=');
        out.push_str(&encode(value));
    }
    out
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Sandbox {
    async fn answer(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let body = response.json().await.unwrap();
        Answer {
            status,
            replayed,
            body,
        }
    }

    fn post_request(
        &self,
        path: &str,
        key: Option<&str>,
        pairs: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(pairs));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request
    }

    async fn post(&self, path: &str, key: Option<&str>, pairs: &[(&str, &str)]) -> Answer {
        self.answer(self.post_request(path, key, pairs)).await
    }

    async fn charge(&self, order: &str, method: &str, amount: &str, key: Option<&str>) -> Answer {
        self.post(
            "/v1/payment_intents",
            key,
            &[
                ("amount", amount),
                ("currency", "usd"),
                ("payment_method", method),
                ("confirm", "true"),
                ("metadata[order_id]", order),
            ],
        )
        .await
    }

    async fn get(&self, path_and_query: &str) -> Answer {
        self.answer(
            self.client
                .get(format!("{}{path_and_query}", self.base))
                .bearer_auth(KEY),
        )
        .await
    }

    async fn ledger(&self, order: Option<&str>) -> Value {
        let query = order
            .map(|o| format!("?order_id={}", encode(o)))
            .unwrap_or_default();
        self.get(&format!("/sandbox/ledger{query}")).await.body
    }

    async fn set_mode(&self, mode: &str) {
        let answer = self
            .answer(
                self.client
                    .post(format!("{}/sandbox/mode", self.base))
                    .json(&json!({ "mode": mode })),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body["mode"], mode);
    }
}

fn error_code(answer: &Answer) -> (&str, &str) {
    (
        answer.body["error"]["type"].as_str().unwrap_or_default(),
        answer.body["error"]["code"].as_str().unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_visa_payment_succeeds_and_is_in_the_ledger() {
    let sandbox = start().await;
    let answer = sandbox
        .charge("order-1", "pm_card_visa", "2599", Some("charge-order-1"))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let intent = &answer.body;
    assert!(intent["id"].as_str().unwrap().starts_with("pi_"));
    assert_eq!(intent["object"], "payment_intent");
    assert_eq!(intent["amount"], 2599);
    assert_eq!(intent["currency"], "usd");
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["payment_method"], "pm_card_visa");
    assert!(intent["latest_charge"].as_str().unwrap().starts_with("ch_"));
    assert_eq!(intent["metadata"], json!({"order_id": "order-1"}));
    assert!(intent["created"].as_i64().unwrap() > 1_600_000_000);

    let ledger = sandbox.ledger(None).await;
    assert_eq!(
        ledger["charges"],
        json!([{
            "id": intent["id"],
            "orderId": "order-1",
            "amount": 2599,
            "currency": "usd",
            "paymentMethod": "pm_card_visa",
            "status": "succeeded",
            "idempotencyKey": "charge-order-1",
            "created": intent["created"],
        }])
    );
    assert_eq!(ledger["refunds"], json!([]));

    let got = sandbox
        .get(&format!(
            "/v1/payment_intents/{}",
            intent["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, *intent);
}

#[tokio::test]
async fn declined_cards_answer_402_card_errors() {
    let sandbox = start().await;
    for (method, decline_code) in [
        ("pm_card_chargeDeclined", "generic_decline"),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
        ),
    ] {
        let order = format!("order-{method}");
        let answer = sandbox.charge(&order, method, "1000", None).await;
        assert_eq!(
            answer.status,
            StatusCode::PAYMENT_REQUIRED,
            "{}",
            answer.body
        );
        let error = &answer.body["error"];
        assert_eq!(error["type"], "card_error");
        assert_eq!(error["code"], "card_declined");
        assert_eq!(error["decline_code"], decline_code);
        assert!(error["message"].as_str().unwrap().starts_with("Your card"));
        assert_eq!(error["payment_intent"]["status"], "requires_payment_method");
        assert_eq!(
            error["payment_intent"]["metadata"]["order_id"],
            order.as_str()
        );

        let ledger = sandbox.ledger(Some(&order)).await;
        let charges = ledger["charges"].as_array().unwrap();
        assert_eq!(charges.len(), 1);
        assert_eq!(charges[0]["status"], "declined");
        assert_eq!(charges[0]["paymentMethod"], method);
        assert_eq!(charges[0]["id"], error["payment_intent"]["id"]);
    }
}

#[tokio::test]
async fn unknown_payment_methods_and_bad_parameters_are_400_and_record_nothing() {
    let sandbox = start().await;
    let answer = sandbox.charge("o", "pm_card_nope", "1000", None).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.body,
        json!({"error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "param": "payment_method",
            "message": "No such PaymentMethod: 'pm_card_nope'",
        }})
    );

    let answer = sandbox.charge("o", "pm_card_visa", "12.5", None).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_code(&answer),
        ("invalid_request_error", "parameter_invalid_integer")
    );
    assert_eq!(answer.body["error"]["param"], "amount");

    let answer = sandbox.charge("o", "pm_card_visa", "0", None).await;
    assert_eq!(error_code(&answer).1, "amount_too_small");

    let answer = sandbox
        .post(
            "/v1/payment_intents",
            None,
            &[
                ("currency", "usd"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_code(&answer),
        ("invalid_request_error", "parameter_missing")
    );
    assert_eq!(answer.body["error"]["param"], "amount");

    let answer = sandbox
        .post(
            "/v1/payment_intents",
            None,
            &[("amount", "5"), ("currency", "usd"), ("confirm", "true")],
        )
        .await;
    assert_eq!(answer.body["error"]["param"], "payment_method");
    assert_eq!(error_code(&answer).1, "parameter_missing");

    let answer = sandbox
        .post(
            "/v1/payment_intents",
            None,
            &[
                ("amount", "5"),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method", "pm_card_visa"),
                ("colour", "blue"),
            ],
        )
        .await;
    assert_eq!(error_code(&answer).1, "parameter_unknown");
    assert_eq!(answer.body["error"]["param"], "colour");

    // Bytes that are not a form, and not UTF-8, are an answer too, never a crash.
    let answer = sandbox
        .answer(
            sandbox
                .client
                .post(format!("{}/v1/payment_intents", sandbox.base))
                .bearer_auth(KEY)
                .body(vec![0xff, b'=', 0xfe, b'&', b'&', b'=']),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);

    assert_eq!(
        sandbox.ledger(None).await,
        json!({"charges": [], "refunds": []})
    );
}

#[tokio::test]
async fn calls_without_a_test_secret_key_are_401() {
    let sandbox = start().await;
    let url = format!("{}/v1/payment_intents", sandbox.base);
    for request in [
        sandbox.client.post(&url),
        sandbox.client.post(&url).bearer_auth("sk_live_1234"),
        sandbox.client.post(&url).bearer_auth("pk_test_1234"),
        sandbox
            .client
            .post(&url)
            .header("authorization", "Basic abc"),
    ] {
        let answer = sandbox.answer(request.body(form(&[("amount", "1")]))).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
        assert_eq!(answer.body["error"]["type"], "invalid_request_error");
        assert!(
            !answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("1234x")
        );
    }
    let search = format!(
        "{}/v1/payment_intents/search?query=status:'succeeded'",
        sandbox.base
    );
    let answer = sandbox.answer(sandbox.client.get(&search)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    // What `curl -u sk_test_abc:` sends, as Stripe's examples do.
    let answer = sandbox
        .answer(
            sandbox
                .client
                .get(&search)
                .basic_auth("sk_test_abc", Some("")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_other_parameters() {
    let sandbox = start().await;
    let first = sandbox
        .charge("o1", "pm_card_visa", "500", Some("k1"))
        .await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(!first.replayed);
    let again = sandbox
        .charge("o1", "pm_card_visa", "500", Some("k1"))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.replayed, "the replay says so");
    assert_eq!(again.body, first.body, "the same intent, not a second one");

    // Parameters in another order are the same parameters.
    let reordered = sandbox
        .post(
            "/v1/payment_intents",
            Some("k1"),
            &[
                ("metadata[order_id]", "o1"),
                ("confirm", "true"),
                ("payment_method", "pm_card_visa"),
                ("currency", "usd"),
                ("amount", "500"),
            ],
        )
        .await;
    assert!(reordered.replayed);
    assert_eq!(reordered.body, first.body);

    let other = sandbox
        .charge("o1", "pm_card_visa", "501", Some("k1"))
        .await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&other).0, "idempotency_error");
    // The same key on another endpoint is another request too.
    let refund = sandbox
        .post("/v1/refunds", Some("k1"), &[("payment_intent", "pi_x")])
        .await;
    assert_eq!(error_code(&refund).0, "idempotency_error");

    // A decline is replayed as a decline, with its status.
    let declined = sandbox
        .charge("o2", "pm_card_chargeDeclined", "500", Some("k2"))
        .await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED);
    let replayed = sandbox
        .charge("o2", "pm_card_chargeDeclined", "500", Some("k2"))
        .await;
    assert_eq!(replayed.status, StatusCode::PAYMENT_REQUIRED);
    assert!(replayed.replayed);
    assert_eq!(replayed.body, declined.body);

    // A request refused for its parameters is not kept: fixed, it runs under the same key.
    let refused = sandbox
        .charge("o3", "pm_card_visa", "abc", Some("k3"))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let fixed = sandbox
        .charge("o3", "pm_card_visa", "300", Some("k3"))
        .await;
    assert_eq!(fixed.status, StatusCode::OK);
    assert!(!fixed.replayed);

    // Keys belong to an API key: another account's key of the same name is another request.
    let other_account = sandbox
        .answer(
            sandbox
                .client
                .post(format!("{}/v1/payment_intents", sandbox.base))
                .bearer_auth("sk_test_other")
                .header("idempotency-key", "k1")
                .body(form(&[
                    ("amount", "999"),
                    ("currency", "usd"),
                    ("payment_method", "pm_card_visa"),
                    ("confirm", "true"),
                    ("metadata[order_id]", "o4"),
                ])),
        )
        .await;
    assert_eq!(other_account.status, StatusCode::OK);
    assert!(!other_account.replayed);

    let ledger = sandbox.ledger(None).await;
    let charges = ledger["charges"].as_array().unwrap();
    let orders: Vec<&str> = charges
        .iter()
        .map(|c| c["orderId"].as_str().unwrap())
        .collect();
    assert_eq!(
        orders,
        ["o1", "o2", "o3", "o4"],
        "one charge per request that ran"
    );
}

#[tokio::test]
async fn refunds_take_what_is_left_and_refuse_more() {
    let sandbox = start().await;
    let intent = sandbox
        .charge("o1", "pm_card_visa", "1000", None)
        .await
        .body;
    let pi = intent["id"].as_str().unwrap();

    let part = sandbox
        .post(
            "/v1/refunds",
            Some("r1"),
            &[
                ("payment_intent", pi),
                ("amount", "300"),
                ("metadata[order_id]", "o1"),
            ],
        )
        .await;
    assert_eq!(part.status, StatusCode::OK, "{}", part.body);
    assert!(part.body["id"].as_str().unwrap().starts_with("re_"));
    assert_eq!(part.body["object"], "refund");
    assert_eq!(part.body["amount"], 300);
    assert_eq!(part.body["payment_intent"], pi);
    assert_eq!(part.body["status"], "succeeded");

    let too_much = sandbox
        .post(
            "/v1/refunds",
            None,
            &[("payment_intent", pi), ("amount", "701")],
        )
        .await;
    assert_eq!(too_much.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&too_much).1, "amount_too_large");

    // No amount: the rest.
    let rest = sandbox
        .post("/v1/refunds", Some("r2"), &[("payment_intent", pi)])
        .await;
    assert_eq!(rest.status, StatusCode::OK);
    assert_eq!(rest.body["amount"], 700);
    assert_eq!(rest.body["currency"], "usd");
    // Retried with its key: the same refund, not an error and not another one.
    let retried = sandbox
        .post("/v1/refunds", Some("r2"), &[("payment_intent", pi)])
        .await;
    assert!(retried.replayed);
    assert_eq!(retried.body, rest.body);

    let over = sandbox
        .post("/v1/refunds", Some("r3"), &[("payment_intent", pi)])
        .await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_code(&over),
        ("invalid_request_error", "charge_already_refunded")
    );

    let missing = sandbox
        .post("/v1/refunds", None, &[("payment_intent", "pi_nope")])
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&missing).1, "resource_missing");

    let declined = sandbox
        .charge("o2", "pm_card_chargeDeclined", "1000", None)
        .await;
    let declined_pi = declined.body["error"]["payment_intent"]["id"]
        .as_str()
        .unwrap();
    let nothing = sandbox
        .post("/v1/refunds", None, &[("payment_intent", declined_pi)])
        .await;
    assert_eq!(nothing.status, StatusCode::BAD_REQUEST);

    let ledger = sandbox.ledger(Some("o1")).await;
    let refunds = ledger["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 2);
    assert_eq!(refunds[0]["amount"], 300);
    assert_eq!(refunds[0]["idempotencyKey"], "r1");
    assert_eq!(refunds[1]["amount"], 700);
    assert_eq!(refunds[1]["paymentIntent"], pi);
    // The order comes from the intent when the refund does not name it.
    assert_eq!(refunds[1]["orderId"], "o1");
    assert_eq!(refunds[1]["currency"], "usd");
}

#[tokio::test]
async fn search_finds_an_orders_intents_by_metadata() {
    let sandbox = start().await;
    let first = sandbox
        .charge("o-1", "pm_card_chargeDeclined", "100", None)
        .await;
    let second = sandbox.charge("o-1", "pm_card_visa", "100", None).await;
    sandbox.charge("o-2", "pm_card_visa", "100", None).await;

    let query = |q: &str| format!("/v1/payment_intents/search?query={}", encode(q));
    let found = sandbox.get(&query("metadata['order_id']:'o-1'")).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.body["object"], "search_result");
    assert_eq!(found.body["has_more"], false);
    let ids: Vec<&Value> = found.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert_eq!(
        ids,
        [
            &second.body["id"],
            &first.body["error"]["payment_intent"]["id"]
        ],
        "newest first"
    );

    let paid = sandbox
        .get(&query("metadata['order_id']:'o-1' AND status:'succeeded'"))
        .await;
    assert_eq!(paid.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(paid.body["data"][0], second.body);

    let none = sandbox.get(&query("metadata['order_id']:'o-3'")).await;
    assert_eq!(none.body["data"], json!([]));

    let bad = sandbox.get(&query("amount>5")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["error"]["param"], "query");
}

#[tokio::test]
async fn unavailable_answers_503_and_records_nothing() {
    let sandbox = start().await;
    sandbox.set_mode("unavailable").await;
    let answer = sandbox.charge("o1", "pm_card_visa", "100", Some("k")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&answer).0, "api_error");
    for path in ["/health", "/health/live", "/health/ready"] {
        let health = sandbox.get(path).await;
        assert_eq!(
            health.status,
            StatusCode::OK,
            "{path} is not part of the outage"
        );
    }

    sandbox.set_mode("normal").await;
    assert_eq!(
        sandbox.ledger(None).await,
        json!({"charges": [], "refunds": []})
    );
    // The key was not used up by the 503.
    let answer = sandbox.charge("o1", "pm_card_visa", "100", Some("k")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(!answer.replayed);
}

/// Polls the sandbox until it holds `n` requests: the held request has arrived.
async fn wait_until_hanging(sandbox: &Sandbox, n: u64) {
    for _ in 0..500 {
        let mode = sandbox.get("/sandbox/mode").await.body;
        if mode["hanging"] == n {
            return;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the sandbox never held {n} requests");
}

#[tokio::test]
async fn hang_never_answers_and_records_nothing_even_later() {
    let sandbox = start().await;
    sandbox.set_mode("hang").await;
    let timeout = Duration::from_millis(300);
    let error = sandbox
        .post_request(
            "/v1/payment_intents",
            Some("k"),
            &[
                ("amount", "100"),
                ("currency", "usd"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
                ("metadata[order_id]", "o1"),
            ],
        )
        .timeout(timeout)
        .send()
        .await
        .expect_err("a hung sandbox answers nothing");
    assert!(error.is_timeout(), "{error:?}");
    let error = sandbox
        .client
        .get(format!(
            "{}/v1/payment_intents/search?query=status:'succeeded'",
            sandbox.base
        ))
        .bearer_auth(KEY)
        .timeout(timeout)
        .send()
        .await
        .expect_err("reads hang too");
    assert!(error.is_timeout());

    // The clients gave up; the held requests end with them, and never run, even back in normal.
    wait_until_hanging(&sandbox, 0).await;
    sandbox.set_mode("normal").await;
    assert_eq!(
        sandbox.ledger(None).await,
        json!({"charges": [], "refunds": []})
    );
    // The key is free again: the retry runs.
    let answer = sandbox.charge("o1", "pm_card_visa", "100", Some("k")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(!answer.replayed);
    assert_eq!(
        sandbox.ledger(None).await["charges"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_key_still_in_flight_is_409() {
    let sandbox = start().await;
    sandbox.set_mode("hang").await;
    let held = sandbox.post_request(
        "/v1/payment_intents",
        Some("slow"),
        &[
            ("amount", "100"),
            ("currency", "usd"),
            ("payment_method", "pm_card_visa"),
            ("confirm", "true"),
        ],
    );
    let held = tokio::spawn(held.send());
    wait_until_hanging(&sandbox, 1).await;

    // The provider recovers while the first request is still held: its retry is refused.
    sandbox.set_mode("normal").await;
    let retry = sandbox
        .charge("o", "pm_card_visa", "100", Some("slow"))
        .await;
    assert_eq!(retry.status, StatusCode::CONFLICT);
    assert_eq!(error_code(&retry).0, "idempotency_error");

    held.abort();
    wait_until_hanging(&sandbox, 0).await;
    let retry = sandbox
        .charge("o", "pm_card_visa", "100", Some("slow"))
        .await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(
        sandbox.ledger(None).await["charges"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn the_ledger_filters_by_order_and_the_mode_is_validated() {
    let sandbox = start().await;
    let a = sandbox.charge("a", "pm_card_visa", "100", None).await.body;
    sandbox.charge("b", "pm_card_visa", "200", None).await;
    sandbox
        .post(
            "/v1/refunds",
            None,
            &[("payment_intent", a["id"].as_str().unwrap())],
        )
        .await;
    // An intent without metadata[order_id] belongs to no order.
    sandbox
        .post(
            "/v1/payment_intents",
            None,
            &[
                ("amount", "5"),
                ("currency", "EUR"),
                ("payment_method", "pm_card_amex"),
                ("confirm", "true"),
            ],
        )
        .await;

    let ledger = sandbox.ledger(Some("a")).await;
    assert_eq!(ledger["charges"].as_array().unwrap().len(), 1);
    assert_eq!(ledger["charges"][0]["id"], a["id"]);
    assert_eq!(ledger["refunds"].as_array().unwrap().len(), 1);
    let ledger = sandbox.ledger(Some("b")).await;
    assert_eq!(ledger["charges"][0]["amount"], 200);
    assert_eq!(ledger["refunds"], json!([]));
    let all = sandbox.ledger(None).await;
    assert_eq!(all["charges"].as_array().unwrap().len(), 3);
    assert_eq!(all["charges"][2]["orderId"], Value::Null);
    assert_eq!(all["charges"][2]["currency"], "eur");

    let bad = sandbox
        .answer(
            sandbox
                .client
                .post(format!("{}/sandbox/mode", sandbox.base))
                .json(&json!({"mode": "sideways"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(sandbox.get("/sandbox/mode").await.body["mode"], "normal");

    let unknown = sandbox.get("/v1/customers").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&unknown).0, "invalid_request_error");
}
