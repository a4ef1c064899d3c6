//! # A sandbox of Stripe's test mode: NOT a payment provider
//!
//! This crate imitates, in memory, the small part of Stripe's API that the fulfilment process
//! uses, so that `make run`, the tests and `docker compose` work without a network and without
//! a Stripe account. It moves no money, talks to no card network and keeps nothing on disk.
//! Pointing `PAYMENT_PROVIDER_URL` at Stripe's test mode (with a real `sk_test_` key) must work
//! unchanged; that is the bar the behaviour here is held to.
//!
//! ## The Stripe subset
//! - `POST /v1/payment_intents` (form-encoded `amount`, `currency`, `payment_method`,
//!   `confirm=true`, `metadata[...]`): creates and confirms a PaymentIntent at once. Stripe's
//!   documented test payment methods decide the outcome: `pm_card_visa`, `pm_card_mastercard`,
//!   `pm_card_amex` and `pm_card_visa_debit` succeed; `pm_card_chargeDeclined`,
//!   `pm_card_chargeDeclinedInsufficientFunds`, `pm_card_chargeDeclinedFraudulent`,
//!   `pm_card_chargeDeclinedExpiredCard`, `pm_card_chargeDeclinedIncorrectCvc` and
//!   `pm_card_chargeDeclinedProcessingError` answer 402 `card_error` with the PaymentIntent left
//!   in `requires_payment_method`; any other `pm_...` is 400 `resource_missing`. Only
//!   `confirm=true` is supported. The parameters a real-Stripe client needs besides
//!   (`automatic_payment_methods[...]`, `payment_method_types[]`, `return_url`, `description`, ...)
//!   are accepted and ignored; unknown ones are 400 `parameter_unknown`, as on Stripe.
//! - `GET /v1/payment_intents/{id}` and `GET /v1/payment_intents/search?query=...` with
//!   `metadata['key']:'value'` and `status:'value'` clauses joined by `AND`. Unlike Stripe's
//!   search (eventually consistent, up to a minute behind), the sandbox finds an intent at once.
//! - `POST /v1/refunds` (`payment_intent`, optional `amount` defaulting to what is left,
//!   `metadata[...]`): 400 `charge_already_refunded` once nothing is left, `amount_too_large`
//!   when more than what is left is asked for.
//! - `Authorization: Bearer sk_test_...` (or Basic with the key as user name, as `curl -u
//!   sk_test_...:` sends it) on every `/v1` call (401 otherwise). All keys are the
//!   same account; idempotency keys are scoped per API key, as on Stripe.
//! - `Idempotency-Key` on POSTs, as Stripe honours it: the same key with the same parameters
//!   replays the first answer (status and body) with `Idempotent-Replayed: true`; with other
//!   parameters it is 400 `idempotency_error`; while a request with the key is still in
//!   flight, 409 `idempotency_error`. As on Stripe, an answer is kept only once the endpoint
//!   started executing: a request refused for its parameters (400 `parameter_*`,
//!   `resource_missing`), its key (401) or the sandbox's mode records nothing, so it can be
//!   retried with the same key. Keys never expire here (24 hours on Stripe).
//!
//! ## Sandbox controls (not Stripe; no auth)
//! - `POST /sandbox/mode` `{"mode": "normal" | "unavailable" | "hang"}`, `GET /sandbox/mode`:
//!   `unavailable` answers every `/v1` call 503 `api_error`; `hang` accepts every `/v1` call
//!   and never answers it, until the client gives up. Neither records anything, not even
//!   later: a request held in `hang` stays held after the mode changes back. While held, a
//!   POST with an `Idempotency-Key` counts as in flight (a second one with the key gets 409),
//!   until its client disconnects. The answer carries `hanging`, the number of requests held
//!   now, so a test can wait for its request to have arrived instead of sleeping.
//! - `GET /sandbox/ledger[?order_id=...]`: every charge attempt (succeeded or declined) and
//!   every refund, oldest first, with the order id from `metadata[order_id]` and the
//!   idempotency key used; the tests' evidence of "at most one charge per order".
//! - `GET /health` (and `/health/live`, `/health/ready`, as the other services): 200.
//!
//! [`router`] builds the app with fresh state (tests run it in-process); [`serve`] runs it on a
//! listener; the `payment-sandbox` binary runs it on `--addr` / `PAYMENT_SANDBOX_ADDR`.

mod stripe;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use stripe::{Failure, Params};

/// The app with fresh, empty in-memory state, in `normal` mode.
pub fn router() -> Router {
    let sandbox = Arc::new(Sandbox::default());
    Router::new()
        .route("/health", get(health))
        // The paths the other services' health checks use, so compose checks them alike.
        .route("/health/live", get(health))
        .route("/health/ready", get(health))
        .route("/v1/payment_intents", post(create_payment_intent))
        .route("/v1/payment_intents/search", get(search_payment_intents))
        .route("/v1/payment_intents/{id}", get(retrieve_payment_intent))
        .route("/v1/refunds", post(create_refund))
        .route("/sandbox/mode", get(get_mode).post(set_mode))
        .route("/sandbox/ledger", get(ledger))
        .fallback(unrecognized_url)
        .method_not_allowed_fallback(unrecognized_url)
        .with_state(sandbox)
}

/// Serves [`router`] on `listener` until the process ends (tests spawn this on port 0).
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router()).await
}

// ---- state ----------------------------------------------------------------------------------

/// What `/sandbox/mode` switches between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Normal,
    /// Every `/v1` call answers 503 `api_error` and records nothing.
    Unavailable,
    /// Every `/v1` call is accepted and never answered; nothing is recorded.
    Hang,
}

#[derive(Default)]
struct Sandbox {
    books: Mutex<Books>,
}

impl Sandbox {
    /// The state; a handler that panicked while holding the lock cannot leave it half-written
    /// (every change is a few inserts), so a poisoned lock is used as it is.
    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct Books {
    mode: Mode,
    /// Requests held in `hang` mode now.
    hanging: u64,
    intents: HashMap<String, Intent>,
    /// Intent ids in creation order, for search results and the ledger.
    intent_order: Vec<String>,
    charges: Vec<ChargeEntry>,
    refunds: Vec<RefundEntry>,
    /// (API key, Idempotency-Key) -> the request's state.
    idempotency: HashMap<(String, String), Idempotent>,
}

enum Idempotent {
    /// A request with this key is being handled (held in `hang` mode).
    InFlight,
    /// The first answer, to replay; `fingerprint` is the request it answered.
    Done {
        fingerprint: String,
        status: StatusCode,
        body: Value,
    },
}

struct Intent {
    id: String,
    amount: i64,
    currency: String,
    status: &'static str,
    payment_method: Option<String>,
    latest_charge: String,
    metadata: BTreeMap<String, String>,
    created: i64,
    last_payment_error: Option<Value>,
    refunded: i64,
}

impl Intent {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_received": if self.status == "succeeded" { self.amount } else { 0 },
            "capture_method": "automatic",
            "confirmation_method": "automatic",
            "created": self.created,
            "currency": self.currency,
            "last_payment_error": self.last_payment_error,
            "latest_charge": self.latest_charge,
            "livemode": false,
            "metadata": self.metadata,
            "payment_method": self.payment_method,
            "status": self.status,
        })
    }
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct ChargeEntry {
    id: String,
    order_id: Option<String>,
    amount: i64,
    currency: String,
    payment_method: String,
    /// `succeeded` or `declined`.
    status: &'static str,
    idempotency_key: Option<String>,
    created: i64,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct RefundEntry {
    id: String,
    payment_intent: String,
    order_id: Option<String>,
    amount: i64,
    currency: String,
    idempotency_key: Option<String>,
    created: i64,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A Stripe-style object id: prefix, underscore, 24 random alphanumerics.
fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 25);
    id.push_str(prefix);
    id.push('_');
    id.extend(std::iter::repeat_with(fastrand::alphanumeric).take(24));
    id
}

// ---- the /v1 pipeline: mode, auth, idempotency ----------------------------------------------

/// One authenticated `/v1` call, as the operations see it.
struct Call {
    params: Params,
    idempotency_key: Option<String>,
}

/// What an operation answers; `Err` answers are kept for replay only when `keep` says so.
type Outcome = Result<(StatusCode, Value), Failure>;

/// Mode, then the API key, then the idempotency key, then the operation under the lock.
async fn v1(
    sandbox: Arc<Sandbox>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    params: &[u8],
    operation: fn(&mut Books, &Call) -> Outcome,
) -> Response {
    // A provider that is down or hung answers nothing about the request, not even its key.
    // (Read into a variable: a guard in the scrutinee would live through the match's await.)
    let mode = sandbox.books().mode;
    match mode {
        Mode::Normal => {}
        Mode::Unavailable => return stripe::unavailable().into_response(),
        Mode::Hang => {
            let slot = match (stripe::api_key(headers), stripe::idempotency_key(headers)) {
                (Ok(api_key), Ok(Some(key))) if method == Method::POST => Some((api_key, key)),
                _ => None,
            };
            return hang(HangGuard::hold(&sandbox, slot)).await;
        }
    }
    let api_key = match stripe::api_key(headers) {
        Ok(key) => key,
        Err(failure) => return failure.into_response(),
    };
    // Stripe ignores the header on GETs, which are idempotent anyway.
    let idempotency_key = if method == Method::POST {
        match stripe::idempotency_key(headers) {
            Ok(key) => key,
            Err(failure) => return failure.into_response(),
        }
    } else {
        None
    };
    let params = match Params::parse(params) {
        Ok(params) => params,
        Err(failure) => return failure.into_response(),
    };
    let slot = idempotency_key.clone().map(|key| (api_key, key));
    // The locked part is synchronous, so no lock guard can live across the await below.
    match answer(
        &sandbox,
        method,
        path,
        params,
        slot,
        idempotency_key,
        operation,
    ) {
        Answer::Now(response) => response,
        Answer::Hang(guard) => hang(guard).await,
    }
}

enum Answer {
    Now(Response),
    Hang(HangGuard),
}

fn answer(
    sandbox: &Arc<Sandbox>,
    method: &Method,
    path: &str,
    params: Params,
    slot: Option<(String, String)>,
    idempotency_key: Option<String>,
    operation: fn(&mut Books, &Call) -> Outcome,
) -> Answer {
    let mut books = sandbox.books();
    match books.mode {
        Mode::Normal => {}
        Mode::Unavailable => return Answer::Now(stripe::unavailable().into_response()),
        Mode::Hang => {
            drop(books);
            return Answer::Hang(HangGuard::hold(sandbox, slot));
        }
    }
    let fingerprint = format!("{method} {path}?{}", params.canonical());
    if let Some(slot) = &slot {
        match books.idempotency.get(slot) {
            Some(Idempotent::InFlight) => {
                return Answer::Now(stripe::idempotency_in_flight(&slot.1).into_response());
            }
            Some(Idempotent::Done {
                fingerprint: first,
                status,
                body,
            }) => {
                if *first != fingerprint {
                    return Answer::Now(stripe::idempotency_mismatch(&slot.1).into_response());
                }
                let mut response = (*status, axum::Json(body.clone())).into_response();
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                add_idempotency_header(&mut response, &slot.1);
                return Answer::Now(response);
            }
            None => {}
        }
    }
    let call = Call {
        params,
        idempotency_key,
    };
    let (status, body, keep) = match operation(&mut books, &call) {
        Ok((status, body)) => (status, body, true),
        Err(failure) => {
            let keep = failure.keep;
            let (status, body) = failure.parts();
            (status, body, keep)
        }
    };
    if let (Some(slot), true) = (&slot, keep) {
        books.idempotency.insert(
            slot.clone(),
            Idempotent::Done {
                fingerprint,
                status,
                body: body.clone(),
            },
        );
    }
    drop(books);
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(slot) = &slot {
        add_idempotency_header(&mut response, &slot.1);
    }
    Answer::Now(response)
}

fn add_idempotency_header(response: &mut Response, key: &str) {
    // The key was a valid header value on the way in, so it is one on the way out.
    if let Ok(value) = HeaderValue::from_str(key) {
        response.headers_mut().insert("idempotency-key", value);
    }
}

/// A request held in `hang` mode: counted while held, and holding its idempotency key as in
/// flight; both are undone when the client gives up and the handler is dropped.
struct HangGuard {
    sandbox: Arc<Sandbox>,
    /// The key this request marked as in flight (not one another request already holds).
    slot: Option<(String, String)>,
}

impl HangGuard {
    fn hold(sandbox: &Arc<Sandbox>, slot: Option<(String, String)>) -> HangGuard {
        let mut books = sandbox.books();
        books.hanging += 1;
        let slot = slot.filter(|slot| {
            if books.idempotency.contains_key(slot) {
                false
            } else {
                books.idempotency.insert(slot.clone(), Idempotent::InFlight);
                true
            }
        });
        HangGuard {
            sandbox: Arc::clone(sandbox),
            slot,
        }
    }
}

impl Drop for HangGuard {
    fn drop(&mut self) {
        let mut books = self.sandbox.books();
        books.hanging = books.hanging.saturating_sub(1);
        if let Some(slot) = self.slot.take()
            && matches!(books.idempotency.get(&slot), Some(Idempotent::InFlight))
        {
            books.idempotency.remove(&slot);
        }
    }
}

/// Never answers: the future ends only when hyper drops it because the client went away.
async fn hang(guard: HangGuard) -> Response {
    std::future::pending::<()>().await;
    drop(guard);
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

// ---- handlers ---------------------------------------------------------------------------------

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn create_payment_intent(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    v1(
        sandbox,
        &Method::POST,
        "/v1/payment_intents",
        &headers,
        &body,
        stripe::create_payment_intent,
    )
    .await
}

async fn create_refund(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    v1(
        sandbox,
        &Method::POST,
        "/v1/refunds",
        &headers,
        &body,
        stripe::create_refund,
    )
    .await
}

async fn search_payment_intents(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    v1(
        sandbox,
        &Method::GET,
        "/v1/payment_intents/search",
        &headers,
        query.as_bytes(),
        stripe::search_payment_intents,
    )
    .await
}

async fn retrieve_payment_intent(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    // The id travels as a parameter so the operation stays a plain function of the call.
    let mut query = query.unwrap_or_default();
    if !query.is_empty() {
        query.push('&');
    }
    query.push_str(
        &form_urlencoded::Serializer::new(String::new())
            .append_pair(stripe::ID_PARAM, &id)
            .finish(),
    );
    v1(
        sandbox,
        &Method::GET,
        "/v1/payment_intents/{id}",
        &headers,
        query.as_bytes(),
        stripe::retrieve_payment_intent,
    )
    .await
}

async fn unrecognized_url(method: Method, OriginalUri(uri): OriginalUri) -> Response {
    stripe::unrecognized_url(&method, uri.path()).into_response()
}

#[derive(Deserialize)]
struct SetMode {
    mode: Mode,
}

fn mode_body(books: &Books) -> Value {
    json!({"mode": books.mode, "hanging": books.hanging})
}

async fn get_mode(State(sandbox): State<Arc<Sandbox>>) -> Response {
    axum::Json(mode_body(&sandbox.books())).into_response()
}

async fn set_mode(State(sandbox): State<Arc<Sandbox>>, body: Bytes) -> Response {
    match serde_json::from_slice::<SetMode>(&body) {
        Ok(SetMode { mode }) => {
            let mut books = sandbox.books();
            books.mode = mode;
            tracing::info!(?mode, "sandbox mode");
            axum::Json(mode_body(&books)).into_response()
        }
        Err(e) => Failure::invalid_request(
            None,
            Some("mode"),
            format!(
                "Expected a JSON body {{\"mode\": \"normal\" | \"unavailable\" | \"hang\"}}: {e}"
            ),
        )
        .into_response(),
    }
}

async fn ledger(State(sandbox): State<Arc<Sandbox>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let mut order_id = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name == "order_id" {
            order_id = Some(value.into_owned());
        } else {
            return Failure::invalid_request(
                Some("parameter_unknown"),
                Some(&name),
                format!("Received unknown parameter: {name}"),
            )
            .into_response();
        }
    }
    let books = sandbox.books();
    let wanted = |id: &Option<String>| order_id.is_none() || *id == order_id;
    let charges: Vec<&ChargeEntry> = books
        .charges
        .iter()
        .filter(|c| wanted(&c.order_id))
        .collect();
    let refunds: Vec<&RefundEntry> = books
        .refunds
        .iter()
        .filter(|r| wanted(&r.order_id))
        .collect();
    axum::Json(json!({"charges": charges, "refunds": refunds})).into_response()
}
