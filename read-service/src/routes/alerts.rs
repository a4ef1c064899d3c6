//! The alerts the projector's rules raised, from the `alerts` view, open or closed at the
//! view's watermark.
//!
//! The view holds one document per subject with its alerts in an array. nx-27017 cannot
//! compare or sort on fields inside arrays of subdocuments, nor aggregate reliably (see
//! `docs/nx-27017-probe.md`), so the subjects that have any alert are read whole and their
//! alerts flattened, ordered and paged here. That is bounded by the subjects with alerts,
//! not by the customers; [`MAX_SUBJECTS`] caps it.

use std::cmp::Reverse;

use axum::extract::State;
use mongodb::bson::{self, doc};
use service_kit::api_error::AppQuery;

use super::Consistency;
use crate::AppState;
use crate::model::{AlertItem, AlertPage, AlertStatus, ErrorBody, time};
use crate::query::{AlertsQuery, MIN_MILLIS, Params};
use crate::reply::{Reply, Viewed};
use crate::store::{View, ViewPositions, ViewStoreError, Views};
use read_model::AlertsDoc;

const VIEWS: [View; 1] = [View::Alerts];

/// Most subjects with alerts read at once; beyond it the oldest subjects' alerts are left
/// out (and a warning logged).
pub const MAX_SUBJECTS: i64 = 10_000;

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

/// Every alert of the view, newest `openedAt` first, ties by id (descending), each with
/// its status at the view's watermark.
pub async fn all_alerts(
    views: &Views,
    snapshot: &ViewPositions,
) -> Result<Vec<AlertItem>, ViewStoreError> {
    let watermark = snapshot.watermark(View::Alerts);
    // `$elemMatch` with `$exists`: the subjects with at least one alert, on both servers.
    let found: Vec<AlertsDoc> = views
        .find_many(
            &snapshot.collection(View::Alerts),
            doc! {"alerts": {"$elemMatch": {"id": {"$exists": true}}}},
            doc! {"_id": -1},
            MAX_SUBJECTS,
        )
        .await?;
    if found.len() as i64 >= MAX_SUBJECTS {
        tracing::warn!(
            subjects = found.len(),
            "alerts: more subjects with alerts than read at once; some are left out"
        );
    }
    let mut alerts: Vec<AlertItem> = found
        .into_iter()
        .flat_map(|d| d.alerts)
        .map(|a| AlertItem {
            status: status_at(a.closed_at, watermark),
            id: a.id,
            rule: a.rule,
            subject: a.subject,
            opened_at: time(a.opened_at),
            closed_at: time(a.closed_at),
            figures: a.figures,
        })
        .collect();
    alerts.sort_by_cached_key(|a| Reverse((opened_ms(a), a.id.clone())));
    Ok(alerts)
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
    let mut page: Vec<AlertItem> = all_alerts(&app.views, &snapshot)
        .await?
        .into_iter()
        .filter(|a| q.status.is_none_or(|s| a.status == s))
        .filter(|a| match &q.cursor {
            None => true,
            Some(c) => (opened_ms(a), a.id.as_str()) < (c.key, c.id.as_str()),
        })
        .take(limit + 1)
        .collect();
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
