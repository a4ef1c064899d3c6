//! Stripe's request parameters, error bodies and the operations of the subset, each a plain
//! function of the state and one call (the pipeline in `lib.rs` does mode, auth and
//! idempotency around them).

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::{Books, Call, ChargeEntry, Intent, Outcome, RefundEntry, new_id, now};

/// The parameter that carries a retrieved intent's id from the path (a name no form can use:
/// Stripe's parameters are lowercase).
pub(crate) const ID_PARAM: &str = "ID";

// ---- errors ---------------------------------------------------------------------------------

/// A Stripe error answer; `keep` says whether an idempotency key replays it (the endpoint had
/// started executing) or not (the request was refused before that).
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    error: Value,
    pub(crate) keep: bool,
}

impl Failure {
    fn new(status: StatusCode, error: Value, keep: bool) -> Failure {
        Failure {
            status,
            error,
            keep,
        }
    }

    /// 400 `invalid_request_error`, not kept for replay.
    pub(crate) fn invalid_request(
        code: Option<&str>,
        param: Option<&str>,
        message: impl Into<String>,
    ) -> Failure {
        let mut error = json!({"type": "invalid_request_error", "message": message.into()});
        if let Some(code) = code {
            error["code"] = json!(code);
        }
        if let Some(param) = param {
            error["param"] = json!(param);
        }
        Failure::new(StatusCode::BAD_REQUEST, error, false)
    }

    /// The same answer, kept for replay: the endpoint ran and found the request impossible.
    fn kept(mut self) -> Failure {
        self.keep = true;
        self
    }

    pub(crate) fn parts(self) -> (StatusCode, Value) {
        (self.status, json!({"error": self.error}))
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, body) = self.parts();
        (status, Json(body)).into_response()
    }
}

pub(crate) fn unavailable() -> Failure {
    Failure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({
            "type": "api_error",
            "message": "The payment sandbox is switched to 'unavailable' (POST /sandbox/mode); nothing was recorded.",
        }),
        false,
    )
}

pub(crate) fn unrecognized_url(method: &Method, path: &str) -> Failure {
    let mut failure = Failure::invalid_request(
        None,
        None,
        format!("Unrecognized request URL ({method}: {path})."),
    );
    failure.status = StatusCode::NOT_FOUND;
    failure
}

fn unauthorized(message: String) -> Failure {
    Failure::new(
        StatusCode::UNAUTHORIZED,
        json!({"type": "invalid_request_error", "message": message}),
        false,
    )
}

pub(crate) fn idempotency_in_flight(key: &str) -> Failure {
    Failure::new(
        StatusCode::CONFLICT,
        json!({
            "type": "idempotency_error",
            "message": format!("There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): {key}. Please try again later."),
        }),
        false,
    )
}

pub(crate) fn idempotency_mismatch(key: &str) -> Failure {
    Failure::new(
        StatusCode::BAD_REQUEST,
        json!({
            "type": "idempotency_error",
            "message": format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."),
        }),
        false,
    )
}

// ---- headers --------------------------------------------------------------------------------

/// The secret key of `Authorization: Bearer sk_test_...`; test-mode keys only, of any value.
pub(crate) fn api_key(headers: &HeaderMap) -> Result<String, Failure> {
    let missing = || {
        unauthorized(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').".to_owned(),
        )
    };
    let Some(value) = headers.get("authorization") else {
        return Err(missing());
    };
    let value = value.to_str().map_err(|_| missing())?;
    // Bearer, or Basic with the key as the user name: what `curl -u sk_test_...:` sends, as
    // in Stripe's own examples.
    let basic;
    let key = if let Some(token) = value.strip_prefix("Bearer ") {
        token.trim()
    } else if let Some(encoded) = value.strip_prefix("Basic ") {
        basic = base64_decode(encoded.trim())
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(missing)?;
        basic.split(':').next().unwrap_or_default()
    } else {
        return Err(missing());
    };
    let valid = key.strip_prefix("sk_test_").is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    if !valid {
        // Like Stripe, show only the end of what was given.
        let tail: String = key
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(unauthorized(format!(
            "Invalid API Key provided: ****{tail}. The payment sandbox accepts test-mode secret keys (sk_test_...) only."
        )));
    }
    Ok(key.to_owned())
}

/// Standard base64 (padding optional); `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The `Idempotency-Key` header, if any: at most 255 characters, as on Stripe.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Failure> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| {
        Failure::invalid_request(None, None, "The Idempotency-Key header must be ASCII text.")
    })?;
    if key.is_empty() || key.len() > 255 {
        return Err(Failure::invalid_request(
            None,
            None,
            format!(
                "Idempotency-Key must be 1 to 255 characters long, not {}.",
                key.len()
            ),
        ));
    }
    Ok(Some(key.to_owned()))
}

// ---- parameters -----------------------------------------------------------------------------

/// Form-encoded parameters (`a=1&metadata[order_id]=x`); a name given twice is refused
/// rather than guessed at.
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Params, Failure> {
        let mut map = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(bytes) {
            let name = name.into_owned();
            // Lists (`expand[]`, `payment_method_types[]`) are the one place Stripe takes a
            // name again; keep every value.
            if let Some(previous) = map.get_mut(&name) {
                if name.ends_with("[]") {
                    let previous: &mut String = previous;
                    previous.push('\u{0}');
                    previous.push_str(&value);
                    continue;
                }
                return Err(Failure::invalid_request(
                    Some("parameter_invalid_string"),
                    Some(&name),
                    format!("The parameter {name} was given more than once."),
                ));
            }
            map.insert(name, value.into_owned());
        }
        Ok(Params(map))
    }

    /// The parameters in one canonical string, order-independent: what an idempotency key is
    /// compared on.
    pub(crate) fn canonical(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.0 {
            out.append_pair(name, value);
        }
        out.finish()
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str, Failure> {
        match self.get(name) {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(Failure::invalid_request(
                Some("parameter_missing"),
                Some(name),
                format!("Missing required param: {name}."),
            )),
        }
    }

    fn integer(&self, name: &str) -> Result<Option<i64>, Failure> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        value.parse::<i64>().map(Some).map_err(|_| {
            Failure::invalid_request(
                Some("parameter_invalid_integer"),
                Some(name),
                format!("Invalid integer: {value}"),
            )
        })
    }

    /// Refuses any parameter not in `allowed` and not `metadata[...]`.
    fn only(&self, allowed: &[&str]) -> Result<(), Failure> {
        for name in self.0.keys() {
            if !(allowed.contains(&name.as_str()) || metadata_key(name).is_some()) {
                return Err(Failure::invalid_request(
                    Some("parameter_unknown"),
                    Some(name),
                    format!("Received unknown parameter: {name}"),
                ));
            }
        }
        Ok(())
    }

    /// `metadata[key]=value` pairs, within Stripe's limits (50 keys, key 40 and value 500
    /// characters).
    fn metadata(&self) -> Result<BTreeMap<String, String>, Failure> {
        let mut metadata = BTreeMap::new();
        for (name, value) in &self.0 {
            let Some(key) = metadata_key(name) else {
                continue;
            };
            if key.is_empty() || key.chars().count() > 40 || value.chars().count() > 500 {
                return Err(Failure::invalid_request(
                    Some("parameter_invalid_string"),
                    Some(name),
                    "Metadata keys must be 1 to 40 characters and values at most 500.",
                ));
            }
            // Stripe unsets a key given an empty value; on a new object that means absent.
            if !value.is_empty() {
                metadata.insert(key.to_owned(), value.clone());
            }
        }
        if metadata.len() > 50 {
            return Err(Failure::invalid_request(
                Some("parameter_invalid_string"),
                Some("metadata"),
                "An object can have at most 50 metadata keys.",
            ));
        }
        Ok(metadata)
    }
}

fn metadata_key(name: &str) -> Option<&str> {
    name.strip_prefix("metadata[")?.strip_suffix(']')
}

// ---- the test payment methods ---------------------------------------------------------------

enum Card {
    Succeeds,
    Declined {
        code: &'static str,
        decline_code: &'static str,
        message: &'static str,
    },
}

/// Stripe's documented test PaymentMethods (docs: Testing, "Declined payments").
fn card(payment_method: &str) -> Option<Card> {
    let declined = |code, decline_code, message| {
        Some(Card::Declined {
            code,
            decline_code,
            message,
        })
    };
    match payment_method {
        "pm_card_visa" | "pm_card_visa_debit" | "pm_card_mastercard" | "pm_card_amex" => {
            Some(Card::Succeeds)
        }
        "pm_card_chargeDeclined" => declined(
            "card_declined",
            "generic_decline",
            "Your card was declined.",
        ),
        "pm_card_chargeDeclinedInsufficientFunds" => declined(
            "card_declined",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
        "pm_card_chargeDeclinedFraudulent" => {
            declined("card_declined", "fraudulent", "Your card was declined.")
        }
        "pm_card_chargeDeclinedExpiredCard" => {
            declined("expired_card", "expired_card", "Your card has expired.")
        }
        "pm_card_chargeDeclinedIncorrectCvc" => declined(
            "incorrect_cvc",
            "incorrect_cvc",
            "Your card's security code is incorrect.",
        ),
        "pm_card_chargeDeclinedProcessingError" => declined(
            "processing_error",
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
        _ => None,
    }
}

// ---- operations -----------------------------------------------------------------------------

/// Stripe's largest charge in most currencies (eight digits of minor units).
const MAX_AMOUNT: i64 = 99_999_999;

pub(crate) fn create_payment_intent(books: &mut Books, call: &Call) -> Outcome {
    let params = &call.params;
    // The parameters a client written for real Stripe may send besides (e.g. to refuse
    // redirecting methods without a return_url); accepted and ignored.
    params.only(&[
        "amount",
        "currency",
        "payment_method",
        "confirm",
        "automatic_payment_methods[enabled]",
        "automatic_payment_methods[allow_redirects]",
        "payment_method_types[]",
        "return_url",
        "description",
        "receipt_email",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "off_session",
        "error_on_requires_action",
        "expand[]",
    ])?;
    let amount = params.integer("amount")?.ok_or_else(|| {
        Failure::invalid_request(
            Some("parameter_missing"),
            Some("amount"),
            "Missing required param: amount.",
        )
    })?;
    if amount < 1 {
        return Err(Failure::invalid_request(
            Some("amount_too_small"),
            Some("amount"),
            "Amount must be at least 1 minor unit.",
        ));
    }
    if amount > MAX_AMOUNT {
        return Err(Failure::invalid_request(
            Some("amount_too_large"),
            Some("amount"),
            format!("Amount must be no more than {MAX_AMOUNT} minor units."),
        ));
    }
    let currency = currency(params.required("currency")?)?;
    match params.get("confirm") {
        Some("true") => {}
        _ => {
            return Err(Failure::invalid_request(
                Some("parameter_invalid_string"),
                Some("confirm"),
                "The payment sandbox supports only confirm=true: create and confirm in one call.",
            ));
        }
    }
    let payment_method = params.required("payment_method")?.to_owned();
    let Some(card) = card(&payment_method) else {
        return Err(Failure::invalid_request(
            Some("resource_missing"),
            Some("payment_method"),
            format!("No such PaymentMethod: '{payment_method}'"),
        ));
    };
    let metadata = params.metadata()?;

    let charge_id = new_id("ch");
    let mut intent = Intent {
        id: new_id("pi"),
        amount,
        currency: currency.clone(),
        status: "succeeded",
        payment_method: Some(payment_method.clone()),
        latest_charge: charge_id.clone(),
        metadata,
        created: now(),
        last_payment_error: None,
        refunded: 0,
    };
    let mut declined = None;
    if let Card::Declined {
        code,
        decline_code,
        message,
    } = card
    {
        // As on Stripe: the intent goes back to requires_payment_method, the failed method
        // is detached from it and described in last_payment_error.
        let error = json!({
            "type": "card_error",
            "code": code,
            "decline_code": decline_code,
            "message": message,
            "charge": charge_id,
            "payment_method": {"id": payment_method, "object": "payment_method", "type": "card"},
        });
        intent.status = "requires_payment_method";
        intent.payment_method = None;
        intent.last_payment_error = Some(error.clone());
        declined = Some(error);
    }
    books.charges.push(ChargeEntry {
        id: intent.id.clone(),
        order_id: intent.metadata.get("order_id").cloned(),
        amount,
        currency,
        payment_method,
        status: if declined.is_some() {
            "declined"
        } else {
            "succeeded"
        },
        idempotency_key: call.idempotency_key.clone(),
        created: intent.created,
    });
    let body = intent.json();
    books.intent_order.push(intent.id.clone());
    books.intents.insert(intent.id.clone(), intent);
    match declined {
        None => Ok((StatusCode::OK, body)),
        Some(mut error) => {
            if let Some(fields) = error.as_object_mut() {
                fields.remove("payment_method");
                fields.insert("payment_intent".to_owned(), body);
            }
            Err(Failure::new(StatusCode::PAYMENT_REQUIRED, error, true))
        }
    }
}

/// A three-letter ISO currency code, lowercased as Stripe returns it.
fn currency(value: &str) -> Result<String, Failure> {
    if value.len() == 3 && value.chars().all(|c| c.is_ascii_alphabetic()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(Failure::invalid_request(
            Some("parameter_invalid_string"),
            Some("currency"),
            format!("Invalid currency: {value}. Use a three-letter ISO code such as usd."),
        ))
    }
}

pub(crate) fn retrieve_payment_intent(books: &mut Books, call: &Call) -> Outcome {
    let params = &call.params;
    params.only(&[ID_PARAM, "expand[]"])?;
    let id = params.get(ID_PARAM).unwrap_or_default();
    match books.intents.get(id) {
        Some(intent) => Ok((StatusCode::OK, intent.json())),
        None => {
            let mut failure = Failure::invalid_request(
                Some("resource_missing"),
                Some("intent"),
                format!("No such payment_intent: '{id}'"),
            );
            failure.status = StatusCode::NOT_FOUND;
            Err(failure)
        }
    }
}

pub(crate) fn create_refund(books: &mut Books, call: &Call) -> Outcome {
    let params = &call.params;
    params.only(&["payment_intent", "amount", "reason", "expand[]"])?;
    let intent_id = params.required("payment_intent")?.to_owned();
    let amount = params.integer("amount")?;
    if amount.is_some_and(|a| a < 1) {
        return Err(Failure::invalid_request(
            Some("parameter_invalid_integer"),
            Some("amount"),
            "Invalid positive integer",
        ));
    }
    if let Some(reason) = params.get("reason")
        && !matches!(reason, "duplicate" | "fraudulent" | "requested_by_customer")
    {
        return Err(Failure::invalid_request(
            Some("parameter_invalid_string"),
            Some("reason"),
            format!("Invalid reason: {reason}"),
        ));
    }
    let metadata = params.metadata()?;
    let Some(intent) = books.intents.get_mut(&intent_id) else {
        return Err(Failure::invalid_request(
            Some("resource_missing"),
            Some("payment_intent"),
            format!("No such payment_intent: '{intent_id}'"),
        ));
    };
    if intent.status != "succeeded" {
        return Err(Failure::invalid_request(
            Some("payment_intent_unexpected_state"),
            Some("payment_intent"),
            format!(
                "This PaymentIntent ({intent_id}) does not have a successful charge to refund."
            ),
        )
        .kept());
    }
    let left = intent.amount - intent.refunded;
    if left <= 0 {
        return Err(Failure::invalid_request(
            Some("charge_already_refunded"),
            None,
            format!("Charge {} has already been refunded.", intent.latest_charge),
        )
        .kept());
    }
    let amount = amount.unwrap_or(left);
    if amount > left {
        return Err(Failure::invalid_request(
            Some("amount_too_large"),
            Some("amount"),
            format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge ({left})."
            ),
        )
        .kept());
    }
    intent.refunded += amount;
    let refund = RefundEntry {
        id: new_id("re"),
        payment_intent: intent_id,
        order_id: metadata
            .get("order_id")
            .or_else(|| intent.metadata.get("order_id"))
            .cloned(),
        amount,
        currency: intent.currency.clone(),
        idempotency_key: call.idempotency_key.clone(),
        created: now(),
    };
    let body = json!({
        "id": refund.id,
        "object": "refund",
        "amount": amount,
        "charge": intent.latest_charge,
        "created": refund.created,
        "currency": refund.currency,
        "metadata": metadata,
        "payment_intent": refund.payment_intent,
        "reason": params.get("reason"),
        "status": "succeeded",
    });
    books.refunds.push(refund);
    Ok((StatusCode::OK, body))
}

/// One clause of a search query: `metadata['key']:'value'` or `status:'value'`.
enum Clause {
    Metadata(String, String),
    Status(String),
}

pub(crate) fn search_payment_intents(books: &mut Books, call: &Call) -> Outcome {
    let params = &call.params;
    params.only(&["query", "limit", "page", "expand[]"])?;
    let query = params.required("query")?;
    let clauses = parse_query(query).ok_or_else(|| {
        Failure::invalid_request(
            Some("parameter_invalid_string"),
            Some("query"),
            format!(
                "The payment sandbox understands only metadata['key']:'value' and status:'value' clauses joined by AND, not: {query}"
            ),
        )
    })?;
    let limit = params.integer("limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(Failure::invalid_request(
            Some("parameter_invalid_integer"),
            Some("limit"),
            "limit must be between 1 and 100.",
        ));
    }
    let limit = usize::try_from(limit).unwrap_or(100);
    if params.get("page").is_some() {
        // Every answer says has_more=false unless it is cut at limit, and then gives no
        // next_page: a further page is never needed for one order's intents.
        return Err(Failure::invalid_request(
            Some("parameter_invalid_string"),
            Some("page"),
            "The payment sandbox does not page search results.",
        ));
    }
    // Newest first, as Stripe lists.
    let matching: Vec<Value> = books
        .intent_order
        .iter()
        .rev()
        .filter_map(|id| books.intents.get(id))
        .filter(|intent| {
            clauses.iter().all(|clause| match clause {
                Clause::Metadata(key, value) => intent.metadata.get(key) == Some(value),
                Clause::Status(status) => intent.status == status,
            })
        })
        .map(Intent::json)
        .collect();
    let has_more = matching.len() > limit;
    let data: Vec<Value> = matching.into_iter().take(limit).collect();
    Ok((
        StatusCode::OK,
        json!({
            "object": "search_result",
            "url": "/v1/payment_intents/search",
            "data": data,
            "has_more": has_more,
            "next_page": null,
        }),
    ))
}

fn parse_query(query: &str) -> Option<Vec<Clause>> {
    let mut clauses = Vec::new();
    for clause in query.split(" AND ") {
        let clause = clause.trim();
        let (field, value) = clause.split_once(':')?;
        let value = quoted(value.trim())?;
        let field = field.trim();
        if field == "status" {
            clauses.push(Clause::Status(value));
        } else {
            let key = field
                .strip_prefix("metadata[")?
                .strip_suffix(']')
                .and_then(quoted)?;
            clauses.push(Clause::Metadata(key, value));
        }
    }
    Some(clauses)
}

/// `'text'` or `"text"`, with `\'` / `\"` escapes, unquoted.
fn quoted(text: &str) -> Option<String> {
    let mut chars = text.chars();
    let quote = chars.next().filter(|c| matches!(c, '\'' | '"'))?;
    let mut out = String::new();
    let mut escaped = false;
    let mut closed = false;
    for c in chars {
        if closed {
            return None; // text after the closing quote
        }
        match c {
            _ if escaped => {
                out.push(c);
                escaped = false;
            }
            '\\' => escaped = true,
            c if c == quote => closed = true,
            c => out.push(c),
        }
    }
    closed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_queries() {
        let clauses = parse_query("metadata['order_id']:'a b' AND status:\"succeeded\"").unwrap();
        assert!(matches!(&clauses[0], Clause::Metadata(k, v) if k == "order_id" && v == "a b"));
        assert!(matches!(&clauses[1], Clause::Status(s) if s == "succeeded"));
        assert!(parse_query("metadata['o']:'it\\'s'").is_some());
        for bad in [
            "",
            "amount>5",
            "metadata['o']:x",
            "metadata[o]:'x'",
            "metadata['o']:'x' OR status:'y'",
            "metadata['o']:'x'y'",
            "status:'",
        ] {
            assert!(parse_query(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn basic_auth_is_base64() {
        assert_eq!(base64_decode("c2tfdGVzdF94Og==").unwrap(), b"sk_test_x:");
        assert_eq!(base64_decode("c2tfdGVzdF94Og").unwrap(), b"sk_test_x:");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a b").is_none());
    }

    #[test]
    fn params_refuse_repeats_but_keep_lists() {
        assert!(Params::parse(b"a=1&a=2").is_err());
        let params = Params::parse(b"expand[]=x&expand[]=y&amount=3").unwrap();
        assert_eq!(params.integer("amount").unwrap(), Some(3));
        assert_eq!(
            Params::parse(b"b=2&a=1").unwrap().canonical(),
            Params::parse(b"a=1&b=2").unwrap().canonical()
        );
    }
}
