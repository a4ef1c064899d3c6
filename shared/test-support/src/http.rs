//! A service's router called in-process, one request at a time, with the answer decoded.

use axum::Router;
use axum::body::Body;
use std::ops::Deref;

use axum::http::{HeaderMap, Method, Request, StatusCode};
use domain::Position;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// An answer: status, headers, and the body as JSON (a JSON string if it was not JSON,
/// `null` if it was empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The error body's `code`, or "" when there is none.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// The error body's `field`, or "" when there is none.
    pub fn field(&self) -> &str {
        self.body["error"]["field"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The read-service's `X-Projection-Position`: what the answer is at least as fresh as.
    pub fn position(&self) -> Position {
        self.header("x-projection-position")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no X-Projection-Position in {:?}", self.headers))
    }

    /// Asserts 200 and returns the body.
    pub fn ok(self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{:?}", self.body);
        self.body
    }
}

/// A router to call in-process, as staff unless told otherwise ([`InProcess::as_caller`]).
#[derive(Clone)]
pub struct InProcess {
    pub router: Router,
    /// The `Authorization` header sent when a request does not set its own.
    pub authorization: Option<String>,
}

impl InProcess {
    pub fn new(router: Router) -> Self {
        Self {
            router,
            authorization: Some(crate::auth::bearer(&crate::auth::staff())),
        }
    }

    /// The same router called with `token` (`None`: without a token).
    pub fn as_caller(&self, token: Option<&str>) -> Self {
        Self {
            router: self.router.clone(),
            authorization: token.map(crate::auth::bearer),
        }
    }

    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        let own = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        if let (false, Some(authorization)) = (own, &self.authorization) {
            req = req.header("authorization", authorization);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = self
            .router
            .clone()
            .oneshot(req.body(body).expect("a valid request"))
            .await
            .expect("routers are infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a readable body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request with an optional JSON body (sent as `application/json`).
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let mut all = headers.to_vec();
        let body = match body {
            Some(v) => {
                all.push(("content-type", "application/json"));
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.raw(method, uri, &all, body).await
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send(Method::GET, uri, &[], None).await
    }

    pub async fn get_with(&self, uri: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, uri, headers, None).await
    }

    /// A GET that waits for the views to apply `token` (a position a write returned).
    pub async fn get_at(&self, uri: &str, token: Position) -> Reply {
        self.get_with(uri, &[("x-consistency-token", &token.to_string())])
            .await
    }

    pub async fn post(&self, uri: &str, body: Value) -> Reply {
        self.send(Method::POST, uri, &[], Some(body)).await
    }
}

impl InProcess {
    /// Every page of a paged listing, following `nextCursor`; `items` names the array.
    pub async fn all_pages(&self, first: &str, items: &str) -> Vec<Vec<Value>> {
        let mut pages = vec![];
        let mut uri = first.to_owned();
        for _ in 0..100 {
            let body = self.get(&uri).await.ok();
            pages.push(body[items].as_array().cloned().unwrap_or_default());
            match body["nextCursor"].as_str() {
                Some(c) => {
                    let sep = if first.contains('?') { '&' } else { '?' };
                    uri = format!("{first}{sep}cursor={c}");
                }
                None => return pages,
            }
        }
        panic!("more than 100 pages from {first}");
    }
}

/// A service's router called in-process, with the state it was built from (for what a test
/// looks at behind the API).
#[derive(Clone)]
pub struct Service<S> {
    pub http: InProcess,
    pub state: S,
}

impl<S> Service<S> {
    pub fn new(router: Router, state: S) -> Self {
        Self {
            http: InProcess::new(router),
            state,
        }
    }
}

impl<S> Deref for Service<S> {
    type Target = InProcess;
    fn deref(&self) -> &InProcess {
        &self.http
    }
}
