//! The HTTP endpoints. Each one validates everything before it touches MongoDB, then takes
//! a snapshot of the views behind it (waiting for a consistency token if asked), then reads
//! the documents from the generations that snapshot names.

pub mod alerts;
pub mod dashboard;
pub mod inventory;
pub mod ops;
pub mod orders;
pub mod page;
pub mod sales;
pub mod stream;
pub mod users;
pub mod windows;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use domain::Position;
use service_kit::api_error::ApiError;
use utoipa::IntoParams;

use crate::cursor;
use crate::model::Order;
use crate::query::OrderListing;
use crate::reply::CONSISTENCY_TOKEN;
use crate::store::{ViewStoreError, Views};
use read_model::OrderDoc;

/// `X-Consistency-Token`: wait until the views behind the endpoint have applied it.
#[derive(Debug, Clone, Copy, Default, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct Consistency {
    /// The `position` a write-service command returned: the answer includes that write
    /// (waits up to `READ_CONSISTENCY_TIMEOUT_MS`, then 503 `not_caught_up`; 503
    /// `too_many_waiting` at once when `READ_MAX_WAITING` requests already wait). A token
    /// beyond the head of the event log is refused at once: 400 `invalid_consistency_token`.
    // Optional but never null: a client generator must not offer to send `null`.
    #[param(rename = "X-Consistency-Token", value_type = String, required = false, pattern = "^[0-9a-f]{16}-[0-9a-f]{16}$")]
    pub token: Option<Position>,
}

impl<S: Send + Sync> FromRequestParts<S> for Consistency {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(CONSISTENCY_TOKEN) else {
            return Ok(Self { token: None });
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<Position>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_consistency_token",
                    "X-Consistency-Token must be a `position` returned by the write-service",
                )
                .with_field("X-Consistency-Token")
            })?;
        Ok(Self { token: Some(token) })
    }
}

/// One page of `listing` (at most `limit` orders) and the cursor of the next page.
///
/// The server returns a superset (see [`OrderListing`]): besides the page, at most the
/// orders of the boundary seconds, which `keeps` drops. A page reads more until it is full
/// or the listing ends, so every page but the last is full and the cursor is exact.
pub async fn order_page(
    views: &Views,
    cursors: &cursor::Signer,
    collection: &str,
    listing: &OrderListing<'_>,
    limit: i64,
    scope: &str,
) -> Result<(Vec<Order>, Option<String>), ViewStoreError> {
    let filter = listing.server_filter();
    let sort = listing.sort;
    // One more than the page tells whether another follows; a little slack covers the
    // usual boundary second in one round trip.
    let mut want = limit + 1 + 16;
    loop {
        let found: Vec<OrderDoc> = views
            .find_many(collection, filter.clone(), sort.sort(), want)
            .await?;
        let ended = (found.len() as i64) < want;
        let mut page: Vec<OrderDoc> = found.into_iter().filter(|o| listing.keeps(o)).collect();
        let full = page.len() as i64 > limit;
        if full || ended {
            page.truncate(usize::try_from(limit).unwrap_or(0));
            let next = match page.last() {
                Some(last) if full => {
                    Some(cursors.encode(scope, sort.key_of(last), &last.order_id))
                }
                _ => None,
            };
            return Ok((page.into_iter().map(Order::from).collect(), next));
        }
        want = want.saturating_mul(4);
    }
}
