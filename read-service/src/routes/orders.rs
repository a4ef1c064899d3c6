//! One order, and the order search. Both read `orders_view` only.

use axum::extract::State;
use domain::OrderId;
use mongodb::bson::{Document, doc};
use service_kit::api_error::{ApiError, AppPath, AppQuery};
use service_kit::auth::Caller;

use super::{Consistency, order_page};
use crate::AppState;
use crate::model::{ErrorBody, Order, OrderPage};
use crate::query::{self, OrderSearch, Params};
use crate::reply::{ReadError, Reply, Viewed};
use crate::store::View;
use read_model::OrderDoc;

const VIEWS: [View; 1] = [View::Orders];

/// The find filter of one order: a customer's also names them as the owner, so MongoDB
/// does not find another customer's order, exactly as it does not find a missing one.
pub fn order_filter(order_id: &OrderId, caller: &Caller) -> Document {
    let mut filter = doc! {"_id": order_id.to_string()};
    if let Some(own) = caller.only_own() {
        filter.insert("userId", own.as_str());
    }
    filter
}

/// The order document.
///
/// A customer gets their own orders only: another customer's order answers 404
/// `order_not_found`, exactly as a missing one, so order ids cannot be probed. Staff get any.
#[utoipa::path(
    get,
    path = "/orders/{orderId}",
    tag = "orders",
    params(("orderId" = String, Path, format = Uuid, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "The order's id, a UUID"), Consistency),
    responses(
        (status = 200, description = "The order", body = Order,
            headers(("X-Projection-Position" = String, description = "Checkpoint of orders_view"))),
        (status = 400, description = "Malformed order id or consistency token, or a token beyond the head of the event log (`invalid_consistency_token`)", body = ErrorBody),
        (status = 404, description = "No such order, or (to a customer) another customer's order, answered alike (`order_not_found`)", body = ErrorBody),
        (status = 422, description = "A query parameter was given", body = ErrorBody),
        (status = 503, description = "`not_caught_up` (the views did not apply the consistency token in time), `too_many_waiting` (too many requests wait for tokens) or MongoDB `unavailable`; see Retry-After", body = ErrorBody),
    )
)]
pub async fn get_order(
    State(app): State<AppState>,
    caller: Caller,
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
        .find_first(
            &snapshot.collection(View::Orders),
            order_filter(&order_id, &caller),
        )
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
///
/// A customer searches their own orders only: `userId` is set to them inside the MongoDB
/// filter whether they give it or not, and naming another customer is 403 `forbidden`.
/// Staff search across customers.
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
        (status = 403, description = "A customer named another customer in `userId` (`forbidden`, field `userId`)", body = ErrorBody),
        (status = 503, description = "`not_caught_up` (the views did not apply the consistency token in time), `too_many_waiting` (too many requests wait for tokens) or MongoDB `unavailable`; see Retry-After", body = ErrorBody),
    )
)]
pub async fn search(
    State(app): State<AppState>,
    caller: Caller,
    consistency: Consistency,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Reply<OrderPage> {
    let search = OrderSearch::parse(&Params::new(query, &OrderSearch::PARAMS)?, &app.cursors)?
        .for_caller(&caller)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customers_order_is_found_by_id_and_owner_staffs_by_id() {
        let id: OrderId = "00000000-0000-4000-8000-000000000001".parse().unwrap();
        let alice = Caller {
            sub: "alice".parse().unwrap(),
            staff: false,
        };
        assert_eq!(
            order_filter(&id, &alice),
            doc! {"_id": id.to_string(), "userId": "alice"}
        );
        let staff = Caller {
            staff: true,
            ..alice
        };
        assert_eq!(order_filter(&id, &staff), doc! {"_id": id.to_string()});
    }
}
