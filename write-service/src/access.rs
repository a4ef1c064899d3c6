//! Who may call each route: the one table the `authorize` middleware checks, the OpenAPI
//! document is annotated from and the README's table is rendered from. A route missing
//! here is refused (500 `no_access_rule`), and the test below fails.
//!
//! What "own" means is enforced by the handlers, with [`service_kit::auth::Caller`]:
//! `POST /orders` names the caller as the customer, and an order command or read on
//! another customer's order answers 404 `order_not_found`, exactly as a missing order does.

use axum::http::Method;
use service_kit::auth::Rule;

/// What a customer reaches on an order route.
const OWN_ORDERS: &str = "own orders; another customer's order answers 404 as a missing one";

/// In the router's order.
pub const RULES: &[Rule] = &[
    Rule::customer(
        Method::POST,
        "/orders",
        "for themself (`userId` omitted or their own; another's is 403)",
    ),
    Rule::customer(Method::POST, "/orders/{order_id}/items", OWN_ORDERS),
    Rule::customer(
        Method::DELETE,
        "/orders/{order_id}/items/{product_id}",
        OWN_ORDERS,
    ),
    Rule::customer(Method::POST, "/orders/{order_id}/confirm", OWN_ORDERS),
    Rule::customer(Method::POST, "/orders/{order_id}/cancel", OWN_ORDERS),
    Rule::staff(Method::POST, "/orders/{order_id}/ship"),
    Rule::staff(Method::POST, "/orders/{order_id}/deliver"),
    Rule::customer(Method::GET, "/orders/{order_id}/events", OWN_ORDERS),
    Rule::staff(Method::PUT, "/products/{product_id}"),
    Rule::customer(Method::GET, "/products/{product_id}", "any product"),
    Rule::staff(Method::POST, "/products/{product_id}/stock"),
    Rule::staff(Method::POST, "/products/{product_id}/stock/adjustments"),
    Rule::customer(Method::GET, "/orders/{order_id}/state", OWN_ORDERS),
    Rule::anyone(Method::GET, "/health/live"),
    Rule::anyone(Method::GET, "/health/ready"),
    Rule::anyone(Method::GET, "/metrics"),
    Rule::anyone(Method::GET, "/openapi.json"),
];

#[cfg(test)]
mod tests {
    use service_kit::auth::rules::mismatches;
    use utoipa::OpenApi;

    use super::RULES;
    use crate::openapi::ApiDoc;

    #[test]
    fn every_documented_operation_has_exactly_one_rule() {
        let wrong = mismatches(&ApiDoc::openapi(), RULES);
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
