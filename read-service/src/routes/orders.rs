//! One order, and the order search. Both read `orders_view` only.

use axum::extract::State;
use service_kit::api_error::{ApiError, AppPath, AppQuery};

use super::{Consistency, order_page};
use crate::AppState;
use crate::model::{ErrorBody, Order, OrderPage};
use crate::query::{self, OrderSearch, Params};
use crate::reply::{ReadError, Reply, Viewed};
use crate::store::View;
use read_model::OrderDoc;

const VIEWS: [View; 1] = [View::Orders];

/// The order document.
#[utoipa::path(
    get,
    path = "/orders/{orderId}",
    tag = "orders",
    params(("orderId" = String, Path, format = Uuid, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "The order's id, a UUID"), Consistency),
    responses(
        (status = 200, description = "The order", body = Order,
            headers(("X-Projection-Position" = String, description = "Checkpoint of orders_view"))),
        (status = 400, description = "Malformed order id or consistency token, or a token beyond the head of the event log (`invalid_consistency_token`)", body = ErrorBody),
        (status = 404, description = "No such order (`order_not_found`)", body = ErrorBody),
        (status = 422, description = "A query parameter was given", body = ErrorBody),
        (status = 503, description = "`not_caught_up` (the views did not apply the consistency token in time), `too_many_waiting` (too many requests wait for tokens) or MongoDB `unavailable`; see Retry-After", body = ErrorBody),
    )
)]
pub async fn get_order(
    State(app): State<AppState>,
    AppPath(order_id): AppPath<String>,
    consistency: Consistency,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Reply<Order> {
    let order_id = query::order_id(&order_id).map_err(|why| {
        ApiError::bad_request("invalid_path", format!("orderId: {why}")).with_field("orderId")
    })?;
    Params::new(query, &[])?;
    let snapshot = app.views.at_least(&VIEWS, consistency.token).await?;
    let position = snapshot.position();
    let found: Option<OrderDoc> = app
        .views
        .find_one(&snapshot.collection(View::Orders), &order_id.to_string())
        .await?;
    match found {
        Some(order) => Ok(Viewed {
            position,
            body: order.into(),
        }),
        None => Err(ReadError::at(
            position,
            ApiError::not_found("order_not_found", format!("no order {order_id}")),
        )),
    }
}

/// Orders matching every criterion given, one page at a time.
///
/// Paging is a keyset on the sort field and the order id: a page never repeats an order of
/// an earlier page nor skips one that existed when paging began, while orders keep arriving.
#[utoipa::path(
    get,
    path = "/orders",
    tag = "orders",
    params(OrderSearch, Consistency),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage,
            headers(("X-Projection-Position" = String, description = "Checkpoint of orders_view"))),
        (status = 400, description = "`invalid_cursor` (not issued by this service for this sort: start again without it) or malformed consistency token, or a token beyond the head of the event log (`invalid_consistency_token`)", body = ErrorBody),
        (status = 422, description = "Invalid or unknown parameter, named in `field`: a time outside years 0001 to 9999, `createdTo` before `createdFrom`, `maxTotalCents` below `minTotalCents`, ...", body = ErrorBody),
        (status = 503, description = "`not_caught_up` (the views did not apply the consistency token in time), `too_many_waiting` (too many requests wait for tokens) or MongoDB `unavailable`; see Retry-After", body = ErrorBody),
    )
)]
pub async fn search(
    State(app): State<AppState>,
    consistency: Consistency,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Reply<OrderPage> {
    let search = OrderSearch::parse(&Params::new(query, &OrderSearch::PARAMS)?, &app.cursors)?;
    let snapshot = app.views.at_least(&VIEWS, consistency.token).await?;
    let (orders, next_cursor) = order_page(
        &app.views,
        &app.cursors,
        &snapshot.collection(View::Orders),
        &search.listing(),
        search.limit,
        &search.sort.scope(),
    )
    .await?;
    Ok(Viewed {
        position: snapshot.position(),
        body: OrderPage {
            orders,
            next_cursor,
        },
    })
}
