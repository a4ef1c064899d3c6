//! A user's counters (`users_orders_view`) and full order history (`orders_view`).

use axum::extract::State;
use domain::UserId;
use mongodb::bson::doc;
use service_kit::api_error::{ApiError, AppPath, AppQuery};
use service_kit::auth::Caller;

use super::{Consistency, order_page};
use crate::AppState;
use crate::model::{ErrorBody, UserOrders};
use crate::query::{OrderListing, OrderSort, Paging, Params, is_time_and_order_id};
use crate::reply::{ReadError, Reply, Viewed};
use crate::store::View;
use read_model::UserDoc;

const VIEWS: [View; 2] = [View::Orders, View::Users];

/// The user's order count, total spent (payments captured minus refunds) and one page of
/// their orders, newest first.
///
/// The history is paged from `orders_view` by its `(userId, createdAt)` index, not from the
/// 50 recent orders `users_orders_view` keeps, so any number of orders can be paged through.
/// A user with no orders is 404.
///
/// A customer reads their own history only: another user's id answers 404 `user_not_found`,
/// exactly as a user without orders (that user's documents are never read). Staff read any.
#[utoipa::path(
    get,
    path = "/users/{userId}/orders",
    tag = "users",
    params(("userId" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,64}$", description = "The user's id"), Paging, Consistency),
    responses(
        (status = 200, description = "Counters and a page of orders", body = UserOrders,
            headers(("X-Projection-Position" = String, description = "Lower checkpoint of orders_view and users_orders_view"))),
        (status = 400, description = "Malformed user id or consistency token, a token beyond the head of the event log (`invalid_consistency_token`), or `invalid_cursor` (not issued by this service for this user: start again without it)", body = ErrorBody),
        (status = 404, description = "The user has no orders, or (to a customer) is another user, answered alike (`user_not_found`)", body = ErrorBody),
        (status = 422, description = "Invalid or unknown parameter, named in `field`", body = ErrorBody),
        (status = 503, description = "`not_caught_up` (the views did not apply the consistency token in time), `too_many_waiting` (too many requests wait for tokens) or MongoDB `unavailable`; see Retry-After", body = ErrorBody),
    )
)]
pub async fn orders(
    State(app): State<AppState>,
    caller: Caller,
    AppPath(user_id): AppPath<UserId>,
    consistency: Consistency,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Reply<UserOrders> {
    // A cursor pages one user's history; another user's cursor is refused.
    let scope = format!("user:{user_id}");
    let paging = Paging::parse(
        &Params::new(query, &Paging::PARAMS)?,
        &app.cursors,
        &scope,
        is_time_and_order_id,
    )?;
    let snapshot = app.views.at_least(&VIEWS, consistency.token).await?;
    let position = snapshot.position();
    let no_orders = || {
        ReadError::at(
            position,
            ApiError::not_found("user_not_found", format!("user {user_id} has no orders")),
        )
    };
    // After the snapshot, so the answer (its position header too) is the one a user without
    // orders gets: another customer's id tells the caller nothing.
    if !caller.may_act_for(&user_id) {
        return Err(no_orders());
    }
    let (users, orders) = (
        snapshot.collection(View::Users),
        snapshot.collection(View::Orders),
    );
    let counters = app.views.find_one::<UserDoc>(&users, user_id.as_str());
    let listing = OrderListing {
        criteria: doc! {"userId": user_id.as_str()},
        created_from: None,
        created_to: None,
        sort: OrderSort::CreatedAtDesc,
        cursor: paging.cursor.as_ref(),
    };
    let page = order_page(
        &app.views,
        &app.cursors,
        &orders,
        &listing,
        paging.limit,
        &scope,
    );
    let (counters, (orders, next_cursor)) = tokio::try_join!(counters, page)?;
    // The two views may stand at different checkpoints: orders without counters yet still
    // make a user (with zero counters) rather than a 404.
    if counters.is_none() && orders.is_empty() {
        return Err(no_orders());
    }
    let (order_count, total_spent_cents) = counters
        .map(|c| (c.order_count, c.total_spent_cents))
        .unwrap_or_default();
    Ok(Viewed {
        position,
        body: UserOrders {
            user_id: user_id.to_string(),
            order_count,
            total_spent_cents,
            orders,
            next_cursor,
        },
    })
}
