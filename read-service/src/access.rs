//! Who may call each route: the one table the `authorize` middleware checks, the OpenAPI
//! document is annotated from and the README's table is rendered from. In the router's order.
//!
//! What a customer reaches on a `customer` route is enforced by its handler, inside the
//! MongoDB query (their own orders only); the `own` text here only says so.

use axum::http::Method;
use service_kit::auth::Rule;

pub const RULES: &[Rule] = &[
    Rule::customer(
        Method::GET,
        "/orders",
        "own orders only (the search is limited to the caller inside the query); `userId` naming another customer is 403",
    ),
    Rule::customer(
        Method::GET,
        "/orders/{orderId}",
        "own orders; another's order answers 404 `order_not_found`, as a missing one",
    ),
    Rule::customer(
        Method::GET,
        "/users/{userId}/orders",
        "own history; another user answers 404 `user_not_found`, as a user without orders",
    ),
    Rule::staff(Method::GET, "/sales/daily"),
    Rule::staff(Method::GET, "/sales/daily/{date}"),
    Rule::staff(Method::GET, "/sales/minutely"),
    Rule::staff(Method::GET, "/sales/hourly"),
    Rule::staff(Method::GET, "/alerts"),
    Rule::staff(Method::GET, "/inventory"),
    Rule::staff(Method::GET, "/inventory/{productId}"),
    Rule::staff(Method::GET, "/dashboard/summary"),
    Rule::staff(Method::GET, "/dashboard/stream"),
    // The page and its files hold no data; the page asks for a staff token for the stream.
    Rule::anyone(Method::GET, "/dashboard"),
    Rule::anyone(Method::GET, "/dashboard/assets/{file}"),
    Rule::anyone(Method::GET, "/health/live"),
    Rule::anyone(Method::GET, "/health/ready"),
    Rule::anyone(Method::GET, "/metrics"),
    Rule::anyone(Method::GET, "/openapi.json"),
];
