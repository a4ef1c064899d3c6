//! Sales per event-time minute and hour from `sales_by_minute`; windows without events are
//! zeros, not gaps, and each says whether it is final at the view's watermark.

use std::collections::HashMap;

use axum::extract::State;
use chrono::{DateTime, Utc};
use mongodb::bson::doc;
use service_kit::api_error::AppQuery;

use super::Consistency;
use crate::AppState;
use crate::model::{ErrorBody, SalesFigures, SalesWindow, SalesWindows, WindowKind, time};
use crate::query::{Params, WindowRange, WindowRangeQuery};
use crate::reply::{Reply, Viewed};
use crate::store::{View, ViewPositions, ViewStoreError, Views};
use read_model::SalesWindowDoc;

const VIEWS: [View; 1] = [View::SalesByMinute];

fn at(ms: i64) -> DateTime<Utc> {
    // Ranges are kept within years 1 to 9999, where every millisecond is a time.
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn millis(t: Option<mongodb::bson::DateTime>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

/// The projector's grace (`finalAt - end`) as a window document of `kind` records it; 0
/// when the view has none, so a window without events is final once the watermark passes
/// its end.
async fn grace(
    views: &Views,
    collection: &str,
    kind: WindowKind,
    found: &[SalesWindowDoc],
) -> Result<i64, ViewStoreError> {
    let of = |d: &SalesWindowDoc| Some(millis(d.final_at)? - millis(d.end)?);
    if let Some(g) = found.iter().find_map(of) {
        return Ok(g);
    }
    // `;` follows `:`: every id with the prefix, on the primary index.
    let prefix = kind.prefix();
    let after = format!("{};", prefix.trim_end_matches(':'));
    let any: Vec<SalesWindowDoc> = views
        .find_many(
            collection,
            doc! {"_id": {"$gte": prefix, "$lt": after}},
            doc! {"_id": -1},
            1,
        )
        .await?;
    Ok(any.iter().find_map(of).unwrap_or(0).max(0))
}

/// Every window of `range`, oldest first, final or not by the view's watermark.
pub async fn windows(
    views: &Views,
    snapshot: &ViewPositions,
    range: WindowRange,
) -> Result<Vec<SalesWindow>, ViewStoreError> {
    let kind = range.kind;
    let Some(last) = range.starts().last() else {
        return Ok(vec![]);
    };
    let collection = snapshot.collection(View::SalesByMinute);
    // `_id` is the kind and the start, `YYYY-MM-DDTHH:MM`: a string range on the primary
    // index (with `$lte` the last start, since the range's end may be year 10000).
    let found: Vec<SalesWindowDoc> = views
        .find_many(
            &collection,
            doc! {"_id": {"$gte": kind.id(at(range.from)), "$lte": kind.id(at(last))}},
            doc! {"_id": 1},
            range.count + 1,
        )
        .await?;
    let grace = grace(views, &collection, kind, &found).await?;
    let watermark = millis(snapshot.watermark(View::SalesByMinute));
    let by_start: HashMap<i64, &SalesWindowDoc> = found
        .iter()
        .filter_map(|d| Some((millis(d.start)?, d)))
        .collect();
    Ok(range
        .starts()
        .map(|start| {
            let end = start + kind.millis();
            let doc = by_start.get(&start);
            let final_at = doc
                .and_then(|d| millis(d.final_at))
                .unwrap_or(end.saturating_add(grace));
            let mut window = SalesWindow {
                start: at(start),
                end: at(end),
                is_final: watermark.is_some_and(|w| w >= final_at),
                figures: SalesFigures::default(),
                distinct_customers: 0,
                events: 0,
                out_of_order_events: 0,
                late_events: 0,
            };
            if let Some(d) = doc {
                window.figures = SalesFigures::from(&d.sales);
                window.distinct_customers = d.distinct_customers;
                window.events = d.events;
                window.out_of_order_events = d.out_of_order_events;
                window.late_events = d.late_events;
            }
            window
        })
        .collect())
}

/// The range's end when the client gives none: the window holding the view's watermark,
/// or the current one before the first event.
pub fn default_range(snapshot: &ViewPositions, kind: WindowKind) -> WindowRange {
    let at = millis(snapshot.watermark(View::SalesByMinute))
        .unwrap_or_else(|| Utc::now().timestamp_millis());
    WindowRange::ending_at(kind, at, kind.default_windows())
}

async fn answer(
    app: AppState,
    consistency: Consistency,
    query: Vec<(String, String)>,
    kind: WindowKind,
) -> Reply<SalesWindows> {
    let given =
        WindowRangeQuery::parse(&Params::new(query, &WindowRangeQuery::PARAMS)?)?.given(kind)?;
    let snapshot = app.views.at_least(&VIEWS, consistency.token).await?;
    let range = given.unwrap_or_else(|| default_range(&snapshot, kind));
    let windows = windows(&app.views, &snapshot, range).await?;
    let mut totals = SalesFigures::default();
    for w in &windows {
        totals += w.figures;
    }
    Ok(Viewed {
        position: snapshot.position(),
        body: SalesWindows {
            window: kind,
            from: at(range.from),
            to: at(range.to()),
            watermark: time(snapshot.watermark(View::SalesByMinute)),
            windows,
            totals,
        },
    })
}

/// Sales per event-time minute `[start, end)` (UTC) over at most 1,440 minutes.
///
/// An event counts in the minute of its recorded time, however late it reaches the log. A
/// window is `final` once the view's watermark (the log's event time) reaches its end plus
/// the projector's grace, as its document records it in `finalAt`; a minute without
/// events has no document and takes the grace of the view's other minutes (none: its end).
/// Events still arriving for a final window are counted, in `lateEvents` too.
#[utoipa::path(
    get,
    path = "/sales/minutely",
    tag = "sales",
    params(WindowRangeQuery, Consistency),
    responses(
        (status = 200, description = "Every minute of the range, oldest first", body = SalesWindows,
            headers(("X-Projection-Position" = String, description = "Checkpoint of sales_by_minute"))),
        (status = 400, description = "Malformed consistency token, or a token beyond the head of the event log (`invalid_consistency_token`)", body = ErrorBody),
        (status = 422, description = "A bad `from`/`to`, `to` not after `from`, more than 1,440 minutes, or an unknown parameter", body = ErrorBody),
        (status = 503, description = "`not_caught_up` (the views did not apply the consistency token in time), `too_many_waiting` (too many requests wait for tokens) or MongoDB `unavailable`; see Retry-After", body = ErrorBody),
    )
)]
pub async fn minutely(
    State(app): State<AppState>,
    consistency: Consistency,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Reply<SalesWindows> {
    answer(app, consistency, query, WindowKind::Minute).await
}

/// Sales per event-time hour `[start, end)` (UTC) over at most 744 hours, by the rules of
/// `/sales/minutely`.
#[utoipa::path(
    get,
    path = "/sales/hourly",
    tag = "sales",
    params(WindowRangeQuery, Consistency),
    responses(
        (status = 200, description = "Every hour of the range, oldest first", body = SalesWindows,
            headers(("X-Projection-Position" = String, description = "Checkpoint of sales_by_minute"))),
        (status = 400, description = "Malformed consistency token, or a token beyond the head of the event log (`invalid_consistency_token`)", body = ErrorBody),
        (status = 422, description = "A bad `from`/`to`, `to` not after `from`, more than 744 hours, or an unknown parameter", body = ErrorBody),
        (status = 503, description = "`not_caught_up` (the views did not apply the consistency token in time), `too_many_waiting` (too many requests wait for tokens) or MongoDB `unavailable`; see Retry-After", body = ErrorBody),
    )
)]
pub async fn hourly(
    State(app): State<AppState>,
    consistency: Consistency,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Reply<SalesWindows> {
    answer(app, consistency, query, WindowKind::Hour).await
}
