//! The one error type the HTTP services return, and its stable body:
//! `{"error": {"code", "message", "field"?, "details"?}}`. Server-side details go to the log
//! only; `details` is for what the client needs to act on (e.g. each short line of an order).

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use domain::order::{DomainError, ErrorKind};
#[cfg(feature = "store")]
use event_store::StoreError;

/// The error body as the OpenAPI documents describe it (the services build it from
/// [`ApiError`]): `{"error": {"code", "message", "field"?, "details"?}}`, plus the
/// `x-request-id` header.
#[derive(Debug, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `validation_failed`, `invalid_parameter`,
    /// `malformed_json`, `invalid_path`, `invalid_header`, `order_not_found`,
    /// `concurrency_conflict`, `price_changed`, `insufficient_stock`, `below_committed`,
    /// `invalid_cursor`, `not_caught_up`, `unavailable`; each answer's
    /// description names the codes it may carry.
    pub code: String,
    pub message: String,
    /// The body field, parameter or header at fault, when there is one (e.g.
    /// `items[0].quantity`).
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// One object per item the error is about, when the answer's description names them
    /// (e.g. `insufficient_stock`: `{"productId", "askedUnits", "availableUnits"}` per short
    /// line; `price_changed`: `{"productId", "unitPriceCents"}` per line whose price
    /// differs). Absent otherwise.
    #[schema(nullable = false, value_type = Option<Vec<Object>>)]
    pub details: Option<Vec<serde_json::Value>>,
}

/// Largest request body the services accept; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Serialised as `error.details` when present.
    pub details: Option<Vec<serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            details: None,
        }
    }

    pub fn with_details(mut self, details: Vec<serde_json::Value>) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
        .with_field(field)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unavailable(what: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{what} is unavailable; retry shortly"),
        )
    }

    pub fn internal(context: &str, err: &dyn std::error::Error) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = self.field {
            error["field"] = field.into();
        }
        if let Some(details) = self.details {
            error["details"] = details.into();
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status = match e.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let mut api = ApiError::new(status, e.code(), e.to_string());
        api.field = e.field().map(str::to_owned);
        api
    }
}

#[cfg(feature = "store")]
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "event store unavailable");
            return ApiError::unavailable("the event store");
        }
        ApiError::internal("event store error", &e)
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_parameter",
            r.body_text(),
        )
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request bodies are limited to {} bytes", MAX_BODY_BYTES),
            ),
            status => ApiError::new(status, "bad_body", r.body_text()),
        }
    }
}

/// Path parameters; a malformed one is a 400 in the API's body.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct AppPath<T>(pub T);

/// Query parameters; an unknown, repeated, missing or malformed one is a 422
/// `invalid_parameter` naming it in `field`, in the API's body.
#[derive(Debug)]
pub struct AppQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(pairs)
            .map(AppQuery)
            .map_err(|e| query_error(&e.path().to_string(), &e.into_inner().to_string()))
    }
}

/// A parameter name as the client sent it, cut short for error bodies.
fn shown(name: &str) -> String {
    name.chars().take(64).collect()
}

/// The 422 for a query string that does not fit: the parameter at fault is where serde was
/// (`path`), or, for unknown, repeated and missing ones, the one its message names.
fn query_error(path: &str, message: &str) -> ApiError {
    let named = ["unknown field `", "duplicate field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let field = match (path, named) {
        (".", Some(name)) => Some(shown(name)),
        (".", None) => None,
        (path, _) => Some(shown(path)),
    };
    let message = match message.strip_prefix("unknown field") {
        Some(rest) => format!("unknown query parameter{rest}"),
        None => match &field {
            Some(field) => format!("{field}: {message}"),
            None => format!("query string: {message}"),
        },
    };
    let error = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_parameter",
        message,
    );
    match field {
        Some(field) => error.with_field(field),
        None => error,
    }
}

/// Middleware for routes that take no query parameters: any parameter is a 422
/// `invalid_parameter` naming it, as the read-service answers on its routes (a typo'd
/// parameter silently ignored would read as if it had been applied).
pub async fn no_query_parameters(req: Request, next: Next) -> Response {
    let first = req
        .uri()
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).next());
    match first {
        None => next.run(req).await,
        Some((name, _)) => {
            let name = shown(&name);
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_parameter",
                format!(
                    "unknown query parameter `{name}`: this endpoint takes no query parameters"
                ),
            )
            .with_field(name)
            .into_response()
        }
    }
}

/// The answer for routes that do not exist, in the API's body.
pub async fn no_route() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Q {
        #[allow(dead_code)]
        n: Option<u32>,
    }

    async fn ask(router: axum::Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let response = router
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn a_query_that_does_not_fit_is_422_naming_the_parameter() {
        let typed = axum::Router::new().route("/", get(|AppQuery(_): AppQuery<Q>| async { "" }));
        assert_eq!(ask(typed.clone(), "/?n=1").await.0, StatusCode::OK);
        for (query, field) in [("bogus=1", "bogus"), ("n=x", "n"), ("n=1&n=2", "n")] {
            let (status, body) = ask(typed.clone(), &format!("/?{query}")).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
            assert_eq!(body["error"]["code"], "invalid_parameter", "{query}");
            assert_eq!(body["error"]["field"], field, "{query}: {body}");
        }
        let (_, body) = ask(typed, "/?bogus=1").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("unknown query parameter `bogus`"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn routes_without_parameters_refuse_any() {
        let bare = axum::Router::new()
            .route("/", get(|| async { "" }))
            .route_layer(axum::middleware::from_fn(no_query_parameters));
        assert_eq!(ask(bare.clone(), "/").await.0, StatusCode::OK);
        assert_eq!(ask(bare.clone(), "/?").await.0, StatusCode::OK);
        let (status, body) = ask(bare, "/?x%20y=1").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            (&body["error"]["code"], &body["error"]["field"]),
            (&"invalid_parameter".into(), &"x y".into())
        );
    }
}
