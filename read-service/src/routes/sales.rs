//! Daily sales from `daily_sales`; days without sales are zeros, not gaps.

use std::collections::HashMap;

use axum::extract::State;
use chrono::NaiveDate;
use mongodb::bson::doc;
use service_kit::api_error::{ApiError, AppPath, AppQuery};

use super::Consistency;
use crate::AppState;
use crate::model::{DaySales, ErrorBody, SalesFigures, SalesRange};
use crate::query::{BadDate, MAX_DAYS, Params, SalesRangeQuery, day as parse_day};
use crate::reply::{Reply, Viewed};
use crate::store::{View, ViewPositions, ViewStoreError, Views};
use read_model::DayDoc;

const VIEWS: [View; 1] = [View::DailySales];

/// Every day of `from..=to`, zeros where `daily_sales` has no document.
pub async fn days(
    views: &Views,
    snapshot: &ViewPositions,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DaySales>, ViewStoreError> {
    let key = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
    // `_id` is the day as `YYYY-MM-DD`: a string range on the primary index.
    let found: Vec<DayDoc> = views
        .find_many(
            &snapshot.collection(View::DailySales),
            doc! {"_id": {"$gte": key(from), "$lte": key(to)}},
            doc! {"_id": 1},
            MAX_DAYS + 1,
        )
        .await?;
    let by_day: HashMap<&str, &DayDoc> = found.iter().map(|d| (d.date.as_str(), d)).collect();
    Ok(from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(|d| DaySales {
            date: d,
            figures: by_day
                .get(key(d).as_str())
                .map(|r| SalesFigures::from(*r))
                .unwrap_or_default(),
        })
        .collect())
}

/// Sales per UTC day over a range of at most 366 days, and their totals.
///
/// Revenue is recognised on the day a payment is captured and refunds on the day they are
/// made; orders confirmed before payments existed count on the day they were confirmed,
/// reversed on the day they were cancelled.
#[utoipa::path(
    get,
    path = "/sales/daily",
    tag = "sales",
    params(SalesRangeQuery, Consistency),
    responses(
        (status = 200, description = "Every day of the range, in order", body = SalesRange,
            headers(("X-Projection-Position" = String, description = "Checkpoint of daily_sales"))),
        (status = 400, description = "Malformed consistency token, or a token beyond the head of the event log (`invalid_consistency_token`)", body = ErrorBody),
        (status = 422, description = "Missing or bad `from`/`to`, a day outside years 0001 to 9999, `from` after `to`, more than 366 days, or an unknown parameter", body = ErrorBody),
        (status = 503, description = "`not_caught_up` (the views did not apply the consistency token in time), `too_many_waiting` (too many requests wait for tokens) or MongoDB `unavailable`; see Retry-After", body = ErrorBody),
    )
)]
pub async fn range(
    State(app): State<AppState>,
    consistency: Consistency,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Reply<SalesRange> {
    let SalesRangeQuery { from, to } =
        SalesRangeQuery::parse(&Params::new(query, &SalesRangeQuery::PARAMS)?)?;
    let snapshot = app.views.at_least(&VIEWS, consistency.token).await?;
    let days = days(&app.views, &snapshot, from, to).await?;
    let mut totals = SalesFigures::default();
    for d in &days {
        totals += d.figures;
    }
    Ok(Viewed {
        position: snapshot.position(),
        body: SalesRange {
            from,
            to,
            days,
            totals,
        },
    })
}

/// Sales of one UTC day (zeros for a day without sales), by the rules of `/sales/daily`.
#[utoipa::path(
    get,
    path = "/sales/daily/{date}",
    tag = "sales",
    params(("date" = String, Path, format = Date, pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description = "The UTC day, `YYYY-MM-DD`, from 0001-01-01 to 9999-12-31"), Consistency),
    responses(
        (status = 200, description = "The day's figures", body = DaySales,
            headers(("X-Projection-Position" = String, description = "Checkpoint of daily_sales"))),
        (status = 400, description = "Malformed date or consistency token, or a token beyond the head of the event log (`invalid_consistency_token`)", body = ErrorBody),
        (status = 422, description = "A day outside years 0001 to 9999, or a query parameter was given", body = ErrorBody),
        (status = 503, description = "`not_caught_up` (the views did not apply the consistency token in time), `too_many_waiting` (too many requests wait for tokens) or MongoDB `unavailable`; see Retry-After", body = ErrorBody),
    )
)]
pub async fn day(
    State(app): State<AppState>,
    AppPath(day): AppPath<String>,
    consistency: Consistency,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Reply<DaySales> {
    let day = parse_day(&day).map_err(|e| match e {
        BadDate::Malformed(why) => {
            ApiError::bad_request("invalid_path", format!("date: {why}")).with_field("date")
        }
        BadDate::OutOfRange(why) => ApiError::invalid("date", format!("date: {why}")),
    })?;
    Params::new(query, &[])?;
    let snapshot = app.views.at_least(&VIEWS, consistency.token).await?;
    let mut days = days(&app.views, &snapshot, day, day).await?;
    let body = days.pop().unwrap_or(DaySales {
        date: day,
        figures: SalesFigures::default(),
    });
    Ok(Viewed {
        position: snapshot.position(),
        body,
    })
}
