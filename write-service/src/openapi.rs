//! The OpenAPI document, generated from the handlers' annotations and the request and
//! response types.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::{ContentBuilder, Object, Ref, RefOr, ResponseBuilder, Type};

use service_kit::auth::rules::AccessDoc;
use service_kit::ops::OpsDoc;

use crate::access::RULES;
use crate::model::Health;
use crate::routes::{orders, products};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "write-service",
        description = "Order commands and the product catalog, validated and appended to the \
            PostgreSQL event store. An order line takes its product's catalog price; \
            confirming an order reserves its stock in the same commit, or is refused with \
            409 `insufficient_stock`. \
            A command answers the stream's new `version` (also the `ETag`; send it back as \
            `If-Match` to make the next command conditional) and the `position` of its last \
            event: pass that to the read-service as `X-Consistency-Token` to read the write. \
            A command with an `Idempotency-Key` counts once however often it is sent. Bodies \
            are JSON objects of at most 64 KiB; unknown fields are refused. Errors are \
            `{\"error\": {\"code\", \"message\", \"field\"?, \"details\"?}}` (`details`: \
            one object per item the error is about, where an answer says so); every \
            response carries an `x-request-id` header."
    ),
    paths(
        orders::create,
        orders::add_item,
        orders::remove_item,
        orders::confirm,
        orders::cancel,
        orders::ship,
        orders::deliver,
        orders::events,
        orders::state,
        products::set_details,
        products::get,
        products::receive_stock,
        products::adjust_stock,
    ),
    // Named only by the `ref(...)` of optional request bodies, which does not register them;
    // `Health` by the ops paths `OpsDoc` adds.
    components(schemas(orders::NoFields, orders::Cancel, Health)),
    // The ops paths first, then the refusal of query parameters and the access rules (which
    // must see every path), so that `ResponseHeaders` documents the headers of every
    // response, the 401, 403 and 429 that `AccessDoc` adds included.
    modifiers(&OPS, &NoQueryParameters, &ACCESS, &ResponseHeaders),
    tags(
        (name = "orders", description = "Order commands and the event store's view of one order"),
        (name = "products", description = "The catalog (name, price) and the stock of each product"),
    )
)]
pub struct ApiDoc;

/// The shared ops routes, described with what this service's readiness checks.
const OPS: OpsDoc = OpsDoc {
    dependency: "PostgreSQL",
    ready_when: "answers",
};

/// Who may call each operation, from the access rules (`modifiers` takes only names).
const ACCESS: AccessDoc = AccessDoc(RULES);

/// The routes that take no query parameters refuse any (`no_query_parameters` in the
/// router): their 422 says so, added to what the handler documents. The ops routes, which
/// ignore them, are left alone.
struct NoQueryParameters;

/// What a 422 for a query parameter on a route that takes none says.
const QUERY_PARAMETER_GIVEN: &str =
    "a query parameter was given (`invalid_parameter`, named in `field`): this endpoint takes none";

impl Modify for NoQueryParameters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let takes_query = operation.parameters.iter().flatten().any(|p| match p {
                    RefOr::T(p) => p.parameter_in == ParameterIn::Query,
                    // Cannot tell without resolving it: leave the operation alone.
                    RefOr::Ref(_) => true,
                });
                let is_ops = operation.tags.iter().flatten().any(|t| t == "ops");
                if takes_query || is_ops {
                    continue;
                }
                let responses = &mut operation.responses.responses;
                match responses.get_mut("422") {
                    Some(RefOr::T(response)) => {
                        response.description =
                            format!("{}, or {QUERY_PARAMETER_GIVEN}", response.description);
                    }
                    // A shared response is not this operation's to amend (none is, today).
                    Some(RefOr::Ref(_)) => {}
                    None => {
                        let mut first = QUERY_PARAMETER_GIVEN.to_owned();
                        first[..1].make_ascii_uppercase();
                        responses.insert(
                            "422".into(),
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(first)
                                    .content(
                                        "application/json",
                                        ContentBuilder::new()
                                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                                            .build(),
                                    )
                                    .build(),
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Headers the middleware and the error type add to responses, documented once for all:
/// `x-request-id` on every response, `Retry-After` on every 503 and 429 with the error body,
/// `WWW-Authenticate` on every 401.
struct ResponseHeaders;

impl Modify for ResponseHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let string = || Some(Object::with_type(Type::String));
        let request_id = HeaderBuilder::new()
            .schema(string())
            .description(Some(
                "The request's id: the client's `x-request-id` if it sent a usable one (1 to \
                 128 visible ASCII characters), else generated",
            ))
            .build();
        let retry_after = HeaderBuilder::new()
            .schema(Some(Object::with_type(Type::Integer)))
            .description(Some("Seconds to wait before retrying"))
            .build();
        let www_authenticate = HeaderBuilder::new()
            .schema(string())
            .description(Some("`Bearer error=\"invalid_token\"`"))
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    response
                        .headers
                        .insert("x-request-id".into(), RefOr::T(request_id.clone()));
                    if (status == "503" || status == "429") && is_error_body(response) {
                        response
                            .headers
                            .insert("Retry-After".into(), RefOr::T(retry_after.clone()));
                    }
                    if status == "401" {
                        response.headers.insert(
                            "WWW-Authenticate".into(),
                            RefOr::T(www_authenticate.clone()),
                        );
                    }
                }
            }
        }
    }
}

fn is_error_body(response: &utoipa::openapi::Response) -> bool {
    response.content.values().any(|content| match content {
        RefOr::T(c) => matches!(
            &c.schema,
            Some(RefOr::Ref(r)) if r.ref_location == "#/components/schemas/ErrorBody"
        ),
        RefOr::Ref(_) => false,
    })
}
