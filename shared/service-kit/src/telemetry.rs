//! Logs, request spans and Prometheus metrics.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

pub fn init_tracing() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // A second call (tests build several apps) keeps the first subscriber.
    // Logs go to stderr so command output (`projector status`) stays clean on stdout;
    // colour only for people: log files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // By default a failed log write is reported with `eprintln!`, which panics when
        // stderr is a closed pipe: the logging task would die (found with `| head`).
        .log_internal_errors(false)
        .with_ansi(ansi)
        .try_init();
}

/// The process-wide Prometheus recorder; installed once, shared by every app in the process.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours just stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Counts and times requests by matched route (not raw path, so ids don't explode labels).
pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

/// The longest client-chosen id (`x-request-id`, `X-Causation-Id`) kept: it is stored in
/// every event's metadata and echoed, so it must not be a way to store kilobytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// Whether a client-chosen id is kept as is: 1 to [`MAX_CLIENT_ID_LEN`] visible ASCII
/// characters (no spaces or control characters).
pub fn is_usable_client_id(value: &[u8]) -> bool {
    (1..=MAX_CLIENT_ID_LEN).contains(&value.len()) && value.iter().all(u8::is_ascii_graphic)
}

/// Drops an `x-request-id` that is not usable, so that one is generated in its place: a
/// request id is a courtesy, not worth refusing a request over.
async fn replace_unusable_request_id(mut req: Request) -> Request {
    let headers = req.headers_mut();
    let kept = headers
        .get(X_REQUEST_ID)
        .filter(|v| is_usable_client_id(v.as_bytes()))
        .cloned();
    headers.remove(X_REQUEST_ID);
    if let Some(value) = kept {
        headers.insert(X_REQUEST_ID, value);
    }
    req
}

const X_REQUEST_ID: &str = "x-request-id";

/// The layers both HTTP services share: request ids (checked, set, logged, echoed), a
/// request span with the matched route, request metrics, and API-shaped 404/405 answers.
pub fn http_layers<S: Clone + Send + Sync + 'static>(router: axum::Router<S>) -> axum::Router<S> {
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    use tower_http::trace::TraceLayer;
    router
        .route_layer(axum::middleware::from_fn(track_http))
        .fallback(crate::api_error::no_route)
        .method_not_allowed_fallback(crate::api_error::method_not_allowed)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str);
            let request_id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok());
            tracing::info_span!("request", method = %req.method(), route, request_id)
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // Outermost, so the id every inner layer sees is one worth keeping.
        .layer(axum::middleware::map_request(replace_unusable_request_id))
}
