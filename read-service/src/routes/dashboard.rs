//! One call for an operations dashboard: reads the four order views concurrently. The
//! sections here are shared with the live stream (`routes::stream`).

use axum::extract::State;
use chrono::{Days, NaiveDate, Utc};
use domain::Position;
use mongodb::bson::doc;
use service_kit::api_error::AppQuery;

use super::Consistency;
use super::sales::days;
use crate::AppState;
use crate::model::{
    DashboardSummary, DaySales, ErrorBody, InventoryItem, OrderStatus, OrdersByStatus, PeriodSales,
    ProjectionProgress, SalesFigures, TopProduct, ViewProgress,
};
use crate::query::Params;
use crate::reply::{Reply, Viewed};
use crate::store::{View, ViewPositions, ViewStoreError, Views};
use read_model::ProductDoc;

/// The views the summary reads (users_orders_view too, for its progress).
const SUMMARY_VIEWS: [View; 4] = [View::Orders, View::Users, View::DailySales, View::Inventory];

/// Products with at most this many units available are low on stock.
pub const LOW_STOCK_UNITS: i64 = 5;
/// Most products the dashboard lists as low on stock.
const LOW_STOCK_LIMIT: i64 = 10;

/// Orders per status in `orders_view`, counted concurrently.
pub async fn orders_by_status(
    views: &Views,
    snapshot: &ViewPositions,
) -> Result<OrdersByStatus, ViewStoreError> {
    let orders = snapshot.collection(View::Orders);
    let count = |status: OrderStatus| views.count(&orders, doc! {"status": status.as_str()});
    let (pending, confirmed, paid, cancelled, shipped, delivered) = tokio::try_join!(
        count(OrderStatus::Pending),
        count(OrderStatus::Confirmed),
        count(OrderStatus::Paid),
        count(OrderStatus::Cancelled),
        count(OrderStatus::Shipped),
        count(OrderStatus::Delivered),
    )?;
    Ok(OrdersByStatus {
        pending,
        confirmed,
        paid,
        cancelled,
        shipped,
        delivered,
    })
}

/// The ten products with the most units sold (reserved plus shipped), ties by id.
pub async fn top_products(
    views: &Views,
    snapshot: &ViewPositions,
) -> Result<Vec<TopProduct>, ViewStoreError> {
    let top: Vec<ProductDoc> = views
        .find_many(
            &snapshot.collection(View::Inventory),
            doc! {"soldUnits": {"$gt": 0_i64}},
            doc! {"soldUnits": -1, "_id": 1},
            10,
        )
        .await?;
    Ok(top
        .into_iter()
        .map(|p| TopProduct {
            product_id: p.product_id,
            sold_units: p.sold_units,
        })
        .collect())
}

/// Up to ten products with at most [`LOW_STOCK_UNITS`] available, fewest first.
pub async fn low_stock(
    views: &Views,
    snapshot: &ViewPositions,
) -> Result<Vec<InventoryItem>, ViewStoreError> {
    let low: Vec<ProductDoc> = views
        .find_many(
            &snapshot.collection(View::Inventory),
            doc! {"availableUnits": {"$lte": LOW_STOCK_UNITS}},
            doc! {"availableUnits": 1, "_id": 1},
            LOW_STOCK_LIMIT,
        )
        .await?;
    Ok(low.into_iter().map(InventoryItem::from).collect())
}

/// The figures of one UTC day (zeros without sales).
pub async fn day_sales(
    views: &Views,
    snapshot: &ViewPositions,
    day: NaiveDate,
) -> Result<DaySales, ViewStoreError> {
    Ok(days(views, snapshot, day, day)
        .await?
        .pop()
        .unwrap_or(DaySales {
            date: day,
            figures: SalesFigures::default(),
        }))
}

/// Today's sales, the last seven days, orders by status, the top ten products by units
/// sold (reserved by confirmed orders plus shipped) and how far each view has applied the
/// event log.
#[utoipa::path(
    get,
    path = "/dashboard/summary",
    tag = "dashboard",
    params(Consistency),
    responses(
        (status = 200, description = "The summary", body = DashboardSummary,
            headers(("X-Projection-Position" = String, description = "Lowest checkpoint of the four views"))),
        (status = 400, description = "Malformed consistency token, or a token beyond the head of the event log (`invalid_consistency_token`)", body = ErrorBody),
        (status = 422, description = "A query parameter was given", body = ErrorBody),
        (status = 503, description = "`not_caught_up` (the views did not apply the consistency token in time), `too_many_waiting` (too many requests wait for tokens) or MongoDB `unavailable`; see Retry-After", body = ErrorBody),
    )
)]
pub async fn summary(
    State(app): State<AppState>,
    consistency: Consistency,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Reply<DashboardSummary> {
    Params::new(query, &[])?;
    let snapshot = app
        .views
        .at_least(&SUMMARY_VIEWS, consistency.token)
        .await?;
    let views = &app.views;
    let today = Utc::now().date_naive();
    let week_start = today.checked_sub_days(Days::new(6)).unwrap_or(today);

    let (week, orders_by_status, top_products) = tokio::try_join!(
        days(views, &snapshot, week_start, today),
        orders_by_status(views, &snapshot),
        top_products(views, &snapshot),
    )?;

    let mut last_7_days = SalesFigures::default();
    for d in &week {
        last_7_days += d.figures;
    }
    // The week ends today, so its last day is today.
    let today_sales = week.last().cloned().unwrap_or(DaySales {
        date: today,
        figures: SalesFigures::default(),
    });
    Ok(Viewed {
        position: snapshot.position(),
        body: DashboardSummary {
            today: today_sales,
            last_7_days: PeriodSales {
                from: week_start,
                to: today,
                orders_confirmed: last_7_days.orders_confirmed,
                orders_paid: last_7_days.orders_paid,
                net_revenue_cents: last_7_days.net_revenue_cents,
            },
            orders_by_status,
            top_products,
            projection: progress(&snapshot),
        },
    })
}

fn progress(snapshot: &ViewPositions) -> ProjectionProgress {
    let newest = snapshot
        .views
        .iter()
        .map(|v| v.position)
        .max()
        .unwrap_or(Position::ZERO);
    ProjectionProgress {
        position: snapshot.position().to_string(),
        newest_position: newest.to_string(),
        views: snapshot
            .views
            .iter()
            .map(|v| ViewProgress {
                view: v.view.name().to_owned(),
                generation: v.generation,
                position: v.position.to_string(),
                caught_up_with_newest: v.position == newest,
                lag_global_positions: newest
                    .global_position
                    .saturating_sub(v.position.global_position)
                    .max(0),
            })
            .collect(),
    }
}
