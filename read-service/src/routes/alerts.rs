//! The alerts the projector's rules raised, from the `alerts` view, open or closed at the
//! view's watermark.
//!
//! The view holds a document per alert (with a `rule` field) beside the rules' state per
//! subject; listing is one indexed query on the alert documents.

use axum::extract::State;
use mongodb::bson::{self, Document, doc};
use service_kit::api_error::AppQuery;

use super::Consistency;
use crate::AppState;
use crate::cursor::Cursor;
use crate::model::{AlertItem, AlertPage, AlertStatus, ErrorBody, time};
use crate::query::{AlertsQuery, MIN_MILLIS, Params};
use crate::reply::{Reply, Viewed};
use crate::store::{View, ViewPositions, ViewStoreError, Views};
use read_model::Alert;

const VIEWS: [View; 1] = [View::Alerts];

/// Open while `closed_at` is absent or after the watermark (before any event, everything
/// is open).
pub fn status_at(
    closed_at: Option<bson::DateTime>,
    watermark: Option<bson::DateTime>,
) -> AlertStatus {
    match (closed_at, watermark) {
        (Some(closed), Some(w)) if closed <= w => AlertStatus::Closed,
        _ => AlertStatus::Open,
    }
}

/// The sort key of an alert: its opening time in ms (year 1 when it has none).
pub fn opened_ms(a: &AlertItem) -> i64 {
    a.opened_at.map_or(MIN_MILLIS, |t| t.timestamp_millis())
}

/// The filter of the alert documents with `status` at `watermark`, after `cursor`.
fn filter(
    status: Option<AlertStatus>,
    watermark: Option<bson::DateTime>,
    cursor: Option<&Cursor>,
) -> Document {
    let mut all = vec![doc! {"rule": {"$exists": true}}];
    // On the ms fields: nx-27017 compares dates to the whole second (see `read_model::Alert`).
    let watermark = watermark.map(|w| w.timestamp_millis());
    match (status, watermark) {
        (None, _) => {}
        // Before any event nothing has closed.
        (Some(AlertStatus::Open), None) => {}
        (Some(AlertStatus::Closed), None) => all.push(doc! {"_id": {"$exists": false}}),
        (Some(AlertStatus::Open), Some(w)) => all.push(doc! {"closedMs": {"$gt": w}}),
        (Some(AlertStatus::Closed), Some(w)) => all.push(doc! {"closedMs": {"$lte": w}}),
    }
    if let Some(c) = cursor {
        all.push(doc! {"$or": [
            {"openedMs": {"$lt": c.key}},
            {"openedMs": c.key, "_id": {"$lt": &c.id}},
        ]});
    }
    doc! {"$and": all}
}

/// Up to `limit` alerts with `status`, newest `openedAt` first (ties by id, descending),
/// after `cursor`, each with its status at the view's watermark.
pub async fn alerts(
    views: &Views,
    snapshot: &ViewPositions,
    status: Option<AlertStatus>,
    cursor: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<AlertItem>, ViewStoreError> {
    let watermark = snapshot.watermark(View::Alerts);
    let found: Vec<Alert> = views
        .find_many(
            &snapshot.collection(View::Alerts),
            filter(status, watermark, cursor),
            doc! {"openedMs": -1, "_id": -1},
            limit,
        )
        .await?;
    Ok(found
        .into_iter()
        .map(|a| AlertItem {
            status: status_at(a.closed_at, watermark),
            id: a.id,
            rule: a.rule,
            subject: a.subject,
            opened_at: time(a.opened_at),
            closed_at: time(a.closed_at),
            figures: a.figures,
        })
        .collect())
}

/// How many alerts are open at the view's watermark.
pub async fn open_count(views: &Views, snapshot: &ViewPositions) -> Result<u64, ViewStoreError> {
    let watermark = snapshot.watermark(View::Alerts);
    views
        .count(
            &snapshot.collection(View::Alerts),
            filter(Some(AlertStatus::Open), watermark, None),
        )
        .await
}

/// Alerts, newest `openedAt` first (ties by id, descending), one page at a time.
///
/// An alert is `open` while its `closedAt` is null or after the `alerts` view's watermark
/// (the log's event time), else `closed`: a customer alert is opened with the time it
/// closes at, a shop alert gets it when its rule stops holding. So an alert moves from the
/// open listing to the closed one as the log's event time passes; a cursor stays valid
/// across that.
#[utoipa::path(
    get,
    path = "/alerts",
    tag = "alerts",
    params(AlertsQuery, Consistency),
    responses(
        (status = 200, description = "A page of alerts", body = AlertPage,
            headers(("X-Projection-Position" = String, description = "Checkpoint of alerts"))),
        (status = 400, description = "`invalid_cursor` (not issued by this service for this status: start again without it) or malformed consistency token, or a token beyond the head of the event log (`invalid_consistency_token`)", body = ErrorBody),
        (status = 422, description = "Invalid or unknown parameter, named in `field`", body = ErrorBody),
        (status = 503, description = "`not_caught_up` (the views did not apply the consistency token in time), `too_many_waiting` (too many requests wait for tokens) or MongoDB `unavailable`; see Retry-After", body = ErrorBody),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    consistency: Consistency,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Reply<AlertPage> {
    let q = AlertsQuery::parse(&Params::new(query, &AlertsQuery::PARAMS)?, &app.cursors)?;
    let snapshot = app.views.at_least(&VIEWS, consistency.token).await?;
    let limit = usize::try_from(q.limit).unwrap_or(0);
    let mut page = alerts(
        &app.views,
        &snapshot,
        q.status,
        q.cursor.as_ref(),
        q.limit.saturating_add(1),
    )
    .await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next_cursor = match page.last() {
        Some(last) if more => Some(app.cursors.encode(
            &AlertsQuery::scope(q.status),
            opened_ms(last),
            &last.id,
        )),
        _ => None,
    };
    Ok(Viewed {
        position: snapshot.position(),
        body: AlertPage {
            alerts: page,
            watermark: time(snapshot.watermark(View::Alerts)),
            next_cursor,
        },
    })
}
