//! Request extractors whose failures come back in the API's error body.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::{HeaderMap, Method, header, request::Parts};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::IntoParams;

use service_kit::api_error::ApiError;
pub use service_kit::api_error::{AppPath, AppQuery};
use service_kit::auth::Caller;
use service_kit::telemetry::{MAX_CLIENT_ID_LEN, is_usable_client_id};

/// A JSON body, typed, plus the raw JSON it came from (for idempotency fingerprints).
///
/// An empty body reads as `{}`, so commands whose fields are all optional need none.
/// Malformed JSON is 400, a body that is not JSON 415, too large 413, and a body that
/// does not fit the type 422 naming the field.
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Value,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_content = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await?;
        let raw = if bytes.is_empty() {
            json!({})
        } else if !json_content {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a body with `Content-Type: application/json`",
            ));
        } else {
            serde_json::from_slice::<Value>(&bytes).map_err(|e| {
                ApiError::bad_request("malformed_json", format!("malformed JSON: {e}"))
            })?
        };
        // serde would read an array positionally into a struct; every body here is an object.
        if !raw.is_object() {
            return Err(ApiError::invalid("body", "the body must be a JSON object"));
        }
        let value = serde_path_to_error::deserialize(&raw).map_err(|e| {
            let message = e.inner().to_string();
            let mut field = match e.path().to_string() {
                root if root == "." => String::new(),
                path => path,
            };
            // serde reports a missing field at its parent; name the field itself.
            if let Some(missing) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                field = if field.is_empty() {
                    missing.to_owned()
                } else {
                    format!("{field}.{missing}")
                };
            }
            if field.is_empty() {
                ApiError::invalid("body", message)
            } else {
                ApiError::invalid(&field, format!("{field}: {message}"))
            }
        })?;
        Ok(JsonBody { value, raw })
    }
}

/// What every command carries besides its body: who asked, how to retry, what it expects.
///
/// Its fields but `caller`, `method` and `path` are the request headers the OpenAPI
/// document lists for every command.
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct CommandContext {
    /// Your id for this request, kept in the events' metadata and echoed in the
    /// `x-request-id` response header: 1 to 128 visible ASCII characters (`!` to `~`). One is
    /// generated when it is absent or anything else (then the response carries that one).
    #[param(rename = "x-request-id", nullable = false)]
    pub request_id: Option<String>,
    /// `X-Causation-Id`: the id of the message that caused this command, for callers that
    /// are processes; kept in the events' metadata. 1 to 128 visible ASCII characters (`!`
    /// to `~`), else 400 `invalid_header`.
    #[param(
        rename = "X-Causation-Id",
        nullable = false,
        min_length = 1,
        max_length = 128,
        pattern = "^[!-~]{1,128}$"
    )]
    pub causation_id: Option<String>,
    /// Makes a retry safe: a request repeating an earlier one's key gets the earlier answer
    /// (with `Idempotent-Replayed: true`) and writes nothing; the key with another method,
    /// path or body is 422 `idempotency_key_reused`. Keys are per caller (token `sub`): two
    /// callers' equal keys are independent.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[\t -~]{1,255}$"
    )]
    pub idempotency_key: Option<String>,
    /// `If-Match: "<version>"`: the stream must be at exactly this version (the `ETag` or
    /// `version` of an earlier answer), else 412 `precondition_failed`.
    /// A string, not an integer: send the `ETag` back as it came (a quoted entity tag); at
    /// most 19 digits.
    #[param(rename = "If-Match", value_type = Option<String>, nullable = false, pattern = "^(W/)?(\"[0-9]{1,19}\"|[0-9]{1,19})$", example = "\"3\"")]
    pub if_match: Option<u64>,
    #[param(ignore)]
    pub method: Method,
    #[param(ignore)]
    pub path: String,
    /// The verified caller, whom the command acts for.
    #[param(ignore)]
    pub caller: Caller,
}

impl CommandContext {
    /// The key the idempotency record is stored under: the client's key scoped to the caller
    /// (`{sub}/{key}`; `/` cannot occur in a user id), so equal keys of two callers never
    /// meet and nobody is replayed another caller's answer.
    pub fn scoped_idempotency_key(&self) -> Option<String> {
        self.idempotency_key
            .as_deref()
            .map(|key| format!("{}/{key}", self.caller.sub))
    }
}

pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Digits of a version in `If-Match`: 19 at most, so every string the documented pattern
/// allows fits a `u64`.
const MAX_IF_MATCH_DIGITS: usize = 19;

/// Exactly the documented `^(W/)?("[0-9]{1,19}"|[0-9]{1,19})$`.
fn parse_if_match(value: &str) -> Option<u64> {
    let v = value.strip_prefix("W/").unwrap_or(value);
    let digits = match v.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => v,
    };
    // `u64::from_str` alone would also take a leading `+`.
    if digits.is_empty()
        || digits.len() > MAX_IF_MATCH_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok()
}

impl<S: Send + Sync> FromRequestParts<S> for CommandContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let uri = OriginalUri::from_request_parts(parts, state)
            .await
            .map(|u| u.0)
            .unwrap_or_else(|_| parts.uri.clone());
        let header_str = |name: &str| -> Result<Option<String>, ApiError> {
            parts
                .headers
                .get(name)
                .map(|v| {
                    v.to_str().map(str::to_owned).map_err(|_| {
                        ApiError::bad_request(
                            "invalid_header",
                            format!("{name} must be visible ASCII"),
                        )
                    })
                })
                .transpose()
        };
        let idempotency_key = header_str("idempotency-key")?;
        if let Some(k) = &idempotency_key
            && (k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_LEN)
        {
            return Err(ApiError::bad_request(
                "invalid_header",
                format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"),
            ));
        }
        let if_match = match header_str("if-match")? {
            None => None,
            Some(v) => Some(parse_if_match(&v).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_header",
                    "If-Match must be a version number in quotes, e.g. \"3\"",
                )
            })?),
        };
        let causation_id = header_str("x-causation-id")?;
        if let Some(c) = &causation_id
            && !is_usable_client_id(c.as_bytes())
        {
            return Err(ApiError::bad_request(
                "invalid_header",
                format!("X-Causation-Id must be 1 to {MAX_CLIENT_ID_LEN} visible ASCII characters"),
            )
            .with_field("X-Causation-Id"));
        }
        Ok(CommandContext {
            // The request-id layer has replaced an unusable one by then.
            request_id: header_str("x-request-id")?,
            causation_id,
            idempotency_key,
            if_match,
            method: parts.method.clone(),
            path: uri.path().to_owned(),
            caller,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_if_match;

    #[test]
    fn if_match_accepts_quoted_weak_and_bare_versions() {
        assert_eq!(parse_if_match("\"3\""), Some(3));
        assert_eq!(parse_if_match("W/\"3\""), Some(3));
        assert_eq!(parse_if_match("3"), Some(3));
        assert_eq!(parse_if_match("\"x\""), None);
        assert_eq!(parse_if_match("*"), None);
        assert_eq!(parse_if_match("+3"), None);
        assert_eq!(parse_if_match("\"3"), None);
        assert_eq!(parse_if_match(" 3"), None);
        assert_eq!(
            parse_if_match("9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(parse_if_match("18446744073709551615"), None);
    }
}
