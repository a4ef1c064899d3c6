//! The access rule of every route, in one table per service: the middleware checks it, the
//! OpenAPI document is annotated from it, the README's table is rendered from it, and a test
//! of each service fails when a documented operation has no rule (or a rule no operation).

use axum::http::Method;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: health, metrics, the OpenAPI document.
    Anyone,
    /// Any valid token; what a customer reaches is limited to their own (the rule's `own`
    /// says how), staff reach everything.
    Customer,
    /// A valid token with the `staff` role.
    Staff,
}

/// One route's rule. `path` is the route as the router and the OpenAPI document write it,
/// e.g. `/orders/{order_id}`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    /// What a customer may reach on this route, for [`Access::Customer`] (e.g. "own orders;
    /// another's order answers 404"); empty otherwise.
    pub own: &'static str,
}

impl Rule {
    pub const fn anyone(method: Method, path: &'static str) -> Self {
        Self {
            method,
            path,
            access: Access::Anyone,
            own: "",
        }
    }

    pub const fn customer(method: Method, path: &'static str, own: &'static str) -> Self {
        Self {
            method,
            path,
            access: Access::Customer,
            own,
        }
    }

    pub const fn staff(method: Method, path: &'static str) -> Self {
        Self {
            method,
            path,
            access: Access::Staff,
            own: "",
        }
    }

    /// How the README and the OpenAPI document say who may call.
    pub fn who(&self) -> String {
        match self.access {
            Access::Anyone => "anyone, no token".into(),
            Access::Staff => "staff".into(),
            Access::Customer => format!("customer: {}; staff: any", self.own),
        }
    }
}

/// The rule of a matched route.
pub fn find<'a>(rules: &'a [Rule], method: &Method, path: &str) -> Option<&'a Rule> {
    // HEAD is served by GET routes.
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    rules.iter().find(|r| r.method == *method && r.path == path)
}

/// The operations of `openapi` and the rules that do not match one to one: each entry names
/// `METHOD path` and what is missing. Empty when every operation has exactly one rule.
pub fn mismatches(openapi: &OpenApi, rules: &[Rule]) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut documented = Vec::new();
    for (path, item) in &openapi.paths.paths {
        for (method, _) in operations(item) {
            documented.push((method.clone(), path.clone()));
            let count = rules
                .iter()
                .filter(|r| r.method == method && r.path == path)
                .count();
            if count != 1 {
                wrong.push(format!("{method} {path}: {count} rules"));
            }
        }
    }
    for rule in rules {
        if !documented
            .iter()
            .any(|(m, p)| *m == rule.method && p == rule.path)
        {
            wrong.push(format!(
                "{} {}: a rule for no documented operation",
                rule.method, rule.path
            ));
        }
    }
    wrong
}

fn operations(item: &PathItem) -> Vec<(Method, &Operation)> {
    [
        (Method::GET, &item.get),
        (Method::PUT, &item.put),
        (Method::POST, &item.post),
        (Method::DELETE, &item.delete),
        (Method::PATCH, &item.patch),
        (Method::HEAD, &item.head),
        (Method::OPTIONS, &item.options),
    ]
    .into_iter()
    .filter_map(|(m, o)| o.as_ref().map(|o| (m, o)))
    .collect()
}

/// The README's table of `rules`: one row per endpoint, who may call it.
pub fn markdown(service: &str, rules: &[Rule]) -> String {
    let mut table = format!("| {service} endpoint | who may call |\n|---|---|\n");
    for rule in rules {
        table.push_str(&format!(
            "| `{} {}` | {} |\n",
            rule.method,
            rule.path,
            rule.who()
        ));
    }
    table
}

/// The name of the bearer scheme in the OpenAPI documents.
pub const BEARER: &str = "bearer";

/// A `utoipa` modifier (listed after every modifier that adds paths): the `bearer`
/// security scheme, each operation's security and who may call it, and the 401, 403 and 429
/// answers of the operations that need a token.
pub struct AccessDoc(pub &'static [Rule]);

impl utoipa::Modify for AccessDoc {
    fn modify(&self, openapi: &mut OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                BEARER,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some(
                            "A JWT signed with the service's HS256 secret or a key of its JWKS, \
                             with `iss`, `aud`, `exp` and `sub` (the customer id); the `staff` \
                             role in `roles` or `scope` runs the shop.",
                        ))
                        .build(),
                ),
            );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let slots = [
                (Method::GET, &mut item.get),
                (Method::PUT, &mut item.put),
                (Method::POST, &mut item.post),
                (Method::DELETE, &mut item.delete),
                (Method::PATCH, &mut item.patch),
            ];
            for (method, slot) in slots {
                let Some(operation) = slot.as_mut() else {
                    continue;
                };
                let Some(rule) = find(self.0, &method, path) else {
                    continue;
                };
                let access = format!("Access: {}.", rule.who());
                operation.description = Some(match operation.description.take() {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{access}"),
                    _ => access,
                });
                if rule.access == Access::Anyone {
                    operation.security = Some(vec![SecurityRequirement::default()]);
                    continue;
                }
                operation.security =
                    Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
                let responses = &mut operation.responses.responses;
                responses.entry("401".into()).or_insert_with(|| {
                    error("No token, or one that is malformed, expired, not yet valid, for another issuer or audience, or wrongly signed (`invalid_token`); see `WWW-Authenticate`").into()
                });
                if rule.access == Access::Staff {
                    responses.entry("403".into()).or_insert_with(|| {
                        error("The token has no `staff` role (`forbidden`)").into()
                    });
                }
                responses.entry("429".into()).or_insert_with(|| {
                    error("This caller sent too many requests (`rate_limited`); see Retry-After")
                        .into()
                });
            }
        }
    }
}
