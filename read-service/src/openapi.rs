//! The OpenAPI document, generated from the handlers' annotations and the response types.

use utoipa::OpenApi;

use crate::access::RULES;
use crate::query::OrderSort;
use service_kit::auth::rules::AccessDoc;
use service_kit::ops::OpsDoc;

use crate::model::{DashboardState, Health};
use crate::routes::{alerts, dashboard, inventory, orders, page, sales, stream, users, windows};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "read-service",
        description = "Queries over the MongoDB views the projector maintains. Every view \
            response carries `X-Projection-Position`, the checkpoint of the views it was read \
            from (the lowest, if several). Send `X-Consistency-Token: <position>` (from a \
            write-service command) to wait until those views have applied that write. Errors \
            are `{\"error\": {\"code\", \"message\", \"field\"?}}` with an `x-request-id` header."
    ),
    paths(
        orders::get_order,
        orders::search,
        users::orders,
        sales::range,
        sales::day,
        windows::minutely,
        windows::hourly,
        alerts::list,
        inventory::product,
        inventory::low_stock,
        dashboard::summary,
        stream::stream,
        page::dashboard,
        page::asset,
    ),
    // Named only by a parameter's `value_type`, which does not register it; `Health` by the
    // ops paths `OpsDoc` adds; `DashboardState` by the event stream's description.
    components(schemas(OrderSort, Health, DashboardState)),
    // ACCESS last: it annotates every path the others add (the ops routes too).
    modifiers(&OPS, &ACCESS),
    tags(
        (name = "orders", description = "Orders from orders_view"),
        (name = "users", description = "A user's counters and order history"),
        (name = "sales", description = "Sales per day from daily_sales, per event-time minute and hour from sales_by_minute"),
        (name = "alerts", description = "Spike, drop and fraud alerts from the alerts view"),
        (name = "inventory", description = "Stock from inventory_view"),
        (name = "dashboard", description = "A summary across the views, the live stream and its page"),
    )
)]
pub struct ApiDoc;

/// The shared ops routes, described with what this service's readiness checks.
const OPS: OpsDoc = OpsDoc {
    dependency: "MongoDB",
    ready_when: "answers a ping",
};

/// Security scheme, per-operation security and who may call, from the rule table.
const ACCESS: AccessDoc = AccessDoc(RULES);

#[cfg(test)]
mod tests {
    use super::*;
    use service_kit::auth::rules;

    #[test]
    fn every_documented_operation_has_exactly_one_rule() {
        assert_eq!(
            rules::mismatches(&ApiDoc::openapi(), RULES),
            Vec::<String>::new()
        );
    }
}
