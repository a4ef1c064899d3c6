//! `GET /dashboard/stream`: the dashboard's state as Server-Sent Events, from the shared
//! poller in `crate::hub`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use service_kit::api_error::{ApiError, AppQuery};

use crate::AppState;
use crate::hub::FrameId;
use crate::model::{DashboardEvent, ErrorBody};
use crate::query::Params;

/// A comment line this often keeps idle proxies from cutting the stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The live dashboard: today's figures, orders by status, top products, low stock, the last
/// 60 minutes, open alerts and the projection's lag, pushed as they change.
///
/// Server-Sent Events (`text/event-stream`). The first event is a `snapshot` (the whole
/// state, `DashboardState` as JSON); each later one a `delta` holding only the sections that
/// changed since the previous event, each section whole. Every event's `id` is the lowest
/// checkpoint of the views it was read from (as `X-Projection-Position` shows); when the
/// data changed but that position did not advance, the previous id's position followed by
/// `.` and an 8-hex-digit counter (`<position>.00000001`). Ids strictly increase and compare
/// as strings. At most four events a second; a comment line (`:`) every 15 s when idle.
///
/// Send `Last-Event-ID` when reconnecting: if it is among the last 256 events, the stream
/// resumes with exactly the events after it; otherwise (older, unknown or malformed) it
/// starts with one `snapshot`. One poller reads the views for every client, only while a
/// client is connected. Streams end when the service shuts down: reconnect.
#[utoipa::path(
    get,
    path = "/dashboard/stream",
    tag = "dashboard",
    params(("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received: resume after it")),
    responses(
        (status = 200, description = "An endless stream of `snapshot` and `delta` events whose `data` is JSON (see `DashboardState`)",
            content_type = "text/event-stream", body = DashboardEvent),
        (status = 422, description = "A query parameter was given", body = ErrorBody),
    )
)]
pub async fn stream(
    State(app): State<AppState>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    Params::new(query, &[])?;
    // Anything that is not one of our ids just means "start over".
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<FrameId>().ok());
    let events = app.hub.subscribe(last);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // nginx and the like buffer responses unless told not to.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}
