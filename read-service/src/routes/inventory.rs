//! Stock per product from `inventory_view` (received, reserved, shipped, available), and the
//! low-stock list by available units.

use axum::extract::State;
use domain::ProductId;
use mongodb::bson::{Bson, Document, doc};
use service_kit::api_error::{ApiError, AppPath, AppQuery};

use super::Consistency;
use crate::AppState;
use crate::model::{ErrorBody, InventoryItem, InventoryPage};
use crate::query::{LowStockQuery, Params, after};
use crate::reply::{ReadError, Reply, Viewed};
use crate::store::View;
use read_model::ProductDoc;

const VIEWS: [View; 1] = [View::Inventory];

/// One product's stock: received, reserved by confirmed orders, shipped, and available
/// (received minus reserved minus shipped).
#[utoipa::path(
    get,
    path = "/inventory/{productId}",
    tag = "inventory",
    params(("productId" = String, Path, pattern = "^[A-Za-z0-9_.:-]{1,64}$", description = "The product's id"), Consistency),
    responses(
        (status = 200, description = "The product's stock", body = InventoryItem,
            headers(("X-Projection-Position" = String, description = "Checkpoint of inventory_view"))),
        (status = 400, description = "Malformed product id or consistency token, or a token beyond the head of the event log (`invalid_consistency_token`)", body = ErrorBody),
        (status = 404, description = "Nothing recorded on the product's stream (`product_not_found`)", body = ErrorBody),
        (status = 422, description = "A query parameter was given", body = ErrorBody),
        (status = 503, description = "`not_caught_up` (the views did not apply the consistency token in time), `too_many_waiting` (too many requests wait for tokens) or MongoDB `unavailable`; see Retry-After", body = ErrorBody),
    )
)]
pub async fn product(
    State(app): State<AppState>,
    AppPath(product_id): AppPath<ProductId>,
    consistency: Consistency,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Reply<InventoryItem> {
    Params::new(query, &[])?;
    let snapshot = app.views.at_least(&VIEWS, consistency.token).await?;
    let position = snapshot.position();
    let found: Option<ProductDoc> = app
        .views
        .find_one(&snapshot.collection(View::Inventory), product_id.as_str())
        .await?;
    match found {
        Some(p) => Ok(Viewed {
            position,
            body: p.into(),
        }),
        None => Err(ReadError::at(
            position,
            ApiError::not_found("product_not_found", format!("no product {product_id}")),
        )),
    }
}

/// Products with the fewest units available first (ties by product id), one page at a time.
#[utoipa::path(
    get,
    path = "/inventory",
    tag = "inventory",
    params(LowStockQuery, Consistency),
    responses(
        (status = 200, description = "A page of products", body = InventoryPage,
            headers(("X-Projection-Position" = String, description = "Checkpoint of inventory_view"))),
        (status = 400, description = "`invalid_cursor` (not issued by this service: start again without it) or malformed consistency token, or a token beyond the head of the event log (`invalid_consistency_token`)", body = ErrorBody),
        (status = 422, description = "Invalid or unknown parameter, named in `field`", body = ErrorBody),
        (status = 503, description = "`not_caught_up` (the views did not apply the consistency token in time), `too_many_waiting` (too many requests wait for tokens) or MongoDB `unavailable`; see Retry-After", body = ErrorBody),
    )
)]
pub async fn low_stock(
    State(app): State<AppState>,
    consistency: Consistency,
    AppQuery(query): AppQuery<Vec<(String, String)>>,
) -> Reply<InventoryPage> {
    let q = LowStockQuery::parse(&Params::new(query, &LowStockQuery::PARAMS)?, &app.cursors)?;
    let snapshot = app.views.at_least(&VIEWS, consistency.token).await?;
    let mut filter = Document::new();
    if let Some(max) = q.max_available {
        filter.insert("availableUnits", doc! {"$lte": max});
    }
    if let Some(c) = &q.cursor {
        filter.insert(
            "$or",
            after("availableUnits", false, Bson::Int64(c.key), &c.id),
        );
    }
    let mut found: Vec<ProductDoc> = app
        .views
        .find_many(
            &snapshot.collection(View::Inventory),
            filter,
            doc! {"availableUnits": 1, "_id": 1},
            q.limit + 1,
        )
        .await?;
    let more = found.len() as i64 > q.limit;
    found.truncate(usize::try_from(q.limit).unwrap_or(0));
    let next_cursor = match found.last() {
        Some(last) if more => Some(app.cursors.encode(
            LowStockQuery::SCOPE,
            last.available_units,
            &last.product_id,
        )),
        _ => None,
    };
    Ok(Viewed {
        position: snapshot.position(),
        body: InventoryPage {
            products: found.into_iter().map(InventoryItem::from).collect(),
            next_cursor,
        },
    })
}
