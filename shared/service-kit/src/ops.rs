//! The operations endpoints every service serves, once: `/health/live`, `/health/ready`,
//! `/metrics` and (for the HTTP APIs) `/openapi.json`, and their OpenAPI description.
//!
//! A service supplies what differs: its readiness check, and its OpenAPI document as a value
//! (so this crate never names a service's `ApiDoc`, and a service's `openapi` module lists
//! no handler that serves the document it describes).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Map, Value};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{ContentBuilder, Object, Ref, ResponseBuilder, Type};

use crate::api_error::ApiError;

/// What `/health/ready` says besides `status`, e.g. `{"postgres": "timeout"}`.
pub type Details = Map<String, Value>;

/// The outcome of a readiness check: `Ok` when the service can serve (200 `ready`), `Err`
/// when it cannot (503 `unavailable`); either way with the details its body carries.
pub type Readiness = Result<Details, Details>;

/// A service's readiness check. Any `Fn() -> impl Future<Output = Readiness>` is one.
pub trait ReadinessCheck: Send + Sync + 'static {
    fn check(&self) -> Pin<Box<dyn Future<Output = Readiness> + Send>>;
}

impl<F, Fut> ReadinessCheck for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Readiness> + Send + 'static,
{
    fn check(&self) -> Pin<Box<dyn Future<Output = Readiness> + Send>> {
        Box::pin(self())
    }
}

/// How long a dependency may take to answer a readiness ping.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The readiness of one dependency, named `name` in the body: ready when `ping` succeeds
/// within [`PING_TIMEOUT`], else `{name: "unreachable"}` or `{name: "timeout"}`.
///
/// `ping` is dropped when it takes too long: a driver that must not be cancelled half-way
/// (MongoDB) needs a ping that runs in a task of its own.
pub async fn ping<E: std::fmt::Display>(
    name: &str,
    ping: impl Future<Output = Result<(), E>>,
) -> Readiness {
    ping_within(PING_TIMEOUT, name, ping).await
}

async fn ping_within<E: std::fmt::Display>(
    timeout: Duration,
    name: &str,
    ping: impl Future<Output = Result<(), E>>,
) -> Readiness {
    let why = match tokio::time::timeout(timeout, ping).await {
        Ok(Ok(())) => return Ok(Details::new()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, dependency = name, "readiness check failed");
            "unreachable"
        }
        Err(_) => "timeout",
    };
    Err(Details::from_iter([(name.to_owned(), why.into())]))
}

/// What the ops router serves.
pub struct Ops {
    pub ready: Arc<dyn ReadinessCheck>,
    pub metrics: PrometheusHandle,
    /// The service's OpenAPI document, served at `/openapi.json`; `None`: no such route.
    pub openapi: Option<utoipa::openapi::OpenApi>,
}

#[derive(Clone)]
struct OpsState {
    ready: Arc<dyn ReadinessCheck>,
    metrics: PrometheusHandle,
}

/// The ops routes, to merge into the service's router (before its layers, so they get the
/// same request ids, metrics and JSON error answers as the rest of the API).
pub fn router<S: Clone + Send + Sync + 'static>(ops: Ops) -> Router<S> {
    let mut router = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics));
    if let Some(doc) = ops.openapi {
        // Serialised once: the document does not change while the process runs.
        let json = match serde_json::to_vec(&doc) {
            Ok(json) => Some(Bytes::from(json)),
            Err(e) => {
                tracing::error!(error = %e, "the OpenAPI document does not serialise");
                None
            }
        };
        router = router.route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move {
                    match json {
                        Some(json) => {
                            ([(header::CONTENT_TYPE, "application/json")], json).into_response()
                        }
                        None => ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            "internal error",
                        )
                        .into_response(),
                    }
                }
            }),
        );
    }
    router.with_state(OpsState {
        ready: ops.ready,
        metrics: ops.metrics,
    })
}

/// The body of both health endpoints: `status` first, then the check's details, as the
/// services' `Health` schemas list them (a JSON map alone would sort `status` among them).
#[derive(serde::Serialize)]
struct Health {
    status: &'static str,
    #[serde(flatten)]
    details: Details,
}

fn health(status: &'static str, details: Details) -> axum::Json<Health> {
    axum::Json(Health { status, details })
}

async fn live() -> axum::Json<Health> {
    health("ok", Details::new())
}

async fn ready(State(ops): State<OpsState>) -> (StatusCode, axum::Json<Health>) {
    match ops.ready.check().await {
        Ok(details) => (StatusCode::OK, health("ready", details)),
        Err(details) => (
            StatusCode::SERVICE_UNAVAILABLE,
            health("unavailable", details),
        ),
    }
}

async fn metrics(State(ops): State<OpsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ops.metrics.render(),
    )
}

/// The OpenAPI description of the ops routes, for a service's `#[openapi(modifiers(...))]`
/// (listed before any modifier that must see every path): adds the four paths and the
/// `ops` tag. The service registers the `Health` schema its readiness body follows.
pub struct OpsDoc {
    /// What readiness checks, as the descriptions name it: `PostgreSQL`, `MongoDB`.
    pub dependency: &'static str,
    /// What it must do to be ready, e.g. `answers` or `answers a ping`.
    pub ready_when: &'static str,
}

impl utoipa::Modify for OpsDoc {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let name = self.dependency;
        let health = |description: &str| {
            ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Health")))
                    .build(),
            )
        };
        let operation = |id: &str, summary: String| {
            OperationBuilder::new()
                .tag("ops")
                .summary(Some(summary))
                .operation_id(Some(id))
        };
        let paths = [
            (
                "/health/live",
                operation(
                    "live",
                    format!("The process is up (says nothing about {name})."),
                )
                .response("200", health("Alive")),
            ),
            (
                "/health/ready",
                operation(
                    "ready",
                    format!("Ready when {name} {} within two seconds.", self.ready_when),
                )
                .response("200", health(&format!("{name} answers")))
                .response("503", health(&format!("{name} is unreachable"))),
            ),
            (
                "/metrics",
                operation("metrics", "Prometheus text format.".into()).response(
                    "200",
                    ResponseBuilder::new().description("Metrics").content(
                        "text/plain",
                        ContentBuilder::new()
                            .schema(Some(Object::with_type(Type::String)))
                            .build(),
                    ),
                ),
            ),
            (
                "/openapi.json",
                operation("openapi", "This document.".into()).response(
                    "200",
                    ResponseBuilder::new()
                        .description("The OpenAPI document")
                        .content("application/json", ContentBuilder::new().build()),
                ),
            ),
        ];
        for (path, operation) in paths {
            openapi
                .paths
                .paths
                .insert(path.to_owned(), PathItem::new(HttpMethod::Get, operation));
        }
        let tags = openapi.tags.get_or_insert_with(Vec::new);
        if !tags.iter().any(|t| t.name == "ops") {
            tags.push(
                TagBuilder::new()
                    .name("ops")
                    .description(Some("Health, metrics and this document"))
                    .build(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(router: &Router, path: &str) -> (StatusCode, Option<String>, Bytes) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, content_type, body)
    }

    fn ops(ready: impl ReadinessCheck, openapi: Option<utoipa::openapi::OpenApi>) -> Router {
        router(Ops {
            ready: Arc::new(ready),
            metrics: crate::telemetry::metrics_handle(),
            openapi,
        })
    }

    #[tokio::test]
    async fn readiness_answers_with_the_checks_outcome_and_details() {
        let up = ops(|| async { Ok(Details::new()) }, None);
        let (status, content_type, body) = get(&up, "/health/ready").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some("application/json"));
        assert_eq!(&body[..], br#"{"status":"ready"}"#);
        assert_eq!(&get(&up, "/health/live").await.2[..], br#"{"status":"ok"}"#);

        let down = ops(
            || async { Err(Details::from_iter([("db".to_owned(), "timeout".into())])) },
            None,
        );
        let (status, _, body) = get(&down, "/health/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(&body[..], br#"{"status":"unavailable","db":"timeout"}"#);
        // Liveness says nothing about the dependencies.
        assert_eq!(get(&down, "/health/live").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text_and_the_document_is_served_as_given() {
        let doc = utoipa::openapi::OpenApiBuilder::new()
            .info(utoipa::openapi::Info::new("svc", "1"))
            .build();
        let with_doc = ops(|| async { Ok(Details::new()) }, Some(doc.clone()));
        let (status, content_type, _) = get(&with_doc, "/metrics").await;
        assert_eq!(
            (status, content_type.as_deref()),
            (StatusCode::OK, Some("text/plain; version=0.0.4"))
        );
        let (status, content_type, body) = get(&with_doc, "/openapi.json").await;
        assert_eq!(
            (status, content_type.as_deref()),
            (StatusCode::OK, Some("application/json"))
        );
        assert_eq!(body, serde_json::to_vec(&doc).unwrap());

        let without = ops(|| async { Ok(Details::new()) }, None);
        assert_eq!(
            get(&without, "/openapi.json").await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn a_ping_names_the_dependency_when_it_fails_or_hangs() {
        assert_eq!(
            ping("db", async { Ok::<_, String>(()) }).await,
            Ok(Details::new())
        );
        let failed = ping("db", async { Err::<(), _>("refused") }).await;
        assert_eq!(
            failed,
            Err(Details::from_iter([(
                "db".to_owned(),
                "unreachable".into()
            )]))
        );
        // A zero timeout elapses at once, without waiting two seconds.
        let hung = ping_within(
            Duration::ZERO,
            "db",
            std::future::pending::<Result<(), String>>(),
        )
        .await;
        assert_eq!(
            hung,
            Err(Details::from_iter([("db".to_owned(), "timeout".into())]))
        );
    }

    #[test]
    fn the_document_gets_the_four_paths_and_the_ops_tag_once() {
        use utoipa::Modify;
        let mut doc = utoipa::openapi::OpenApiBuilder::new().build();
        let described = OpsDoc {
            dependency: "PostgreSQL",
            ready_when: "answers",
        };
        described.modify(&mut doc);
        described.modify(&mut doc);
        let json = serde_json::to_value(&doc).unwrap();
        let paths: Vec<&String> = json["paths"].as_object().unwrap().keys().collect();
        assert_eq!(
            paths,
            ["/health/live", "/health/ready", "/metrics", "/openapi.json"]
        );
        assert_eq!(
            json["paths"]["/health/ready"]["get"]["summary"],
            "Ready when PostgreSQL answers within two seconds."
        );
        assert_eq!(json["tags"].as_array().unwrap().len(), 1);
    }
}
