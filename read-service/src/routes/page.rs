//! `GET /dashboard`: the live operations page, and its scripts and styles. Static files
//! built into the binary (no build step, nothing fetched from elsewhere); the page holds no
//! data and asks for a staff token, which it sends to `/dashboard/stream`.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use service_kit::api_error::{ApiError, AppPath};

use crate::model::ErrorBody;

const PAGE: &str = include_str!("../../static/dashboard.html");

/// `(file, content type, body)` of each asset.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("../../static/dashboard.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/vendor/uplot-1.6.32/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../../static/vendor/uplot-1.6.32/uPlot.min.css"),
    ),
];

/// Scripts and styles from this origin only; the stream is fetched from it too.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Revalidated each time, so a new release is picked up at once.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
        ],
        body,
    )
        .into_response()
}

/// The live dashboard page (HTML). It holds no data: it asks for a staff token (or takes
/// one from `#token=...` in its address, once), keeps it in the tab's sessionStorage and
/// reads `/dashboard/stream` with it.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "dashboard",
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
    )
)]
pub async fn dashboard() -> Response {
    file("text/html; charset=utf-8", PAGE)
}

/// A script or style of the dashboard page: `dashboard.js`, `dashboard.css`, and the
/// vendored chart library uPlot 1.6.32 (MIT): `uPlot.iife.min.js`, `uPlot.min.css`.
#[utoipa::path(
    get,
    path = "/dashboard/assets/{file}",
    tag = "dashboard",
    params(("file" = String, Path, description = "The file's name")),
    responses(
        (status = 200, description = "The file (`text/javascript` or `text/css`)", content_type = "text/javascript", body = String),
        (status = 404, description = "No such asset (`asset_not_found`)", body = ErrorBody),
    )
)]
pub async fn asset(AppPath(name): AppPath<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(file, _, _)| *file == name)
        .map(|(_, content_type, body)| file(content_type, body))
        .ok_or_else(|| {
            ApiError::not_found(
                "asset_not_found",
                format!("no asset {}", name.chars().take(64).collect::<String>()),
            )
        })
}
