//! Who calls, and what they may do: bearer tokens (JWT) checked on every API route, one
//! access rule per route from a table the service declares, and a per-caller rate limit.
//!
//! A route's rule is looked up by its matched path and method ([`rules`]); a route with no
//! rule is refused (fail closed). The verified caller reaches handlers as [`Caller`], which
//! they use for ownership (a customer's own orders).

mod caller;
mod keys;
pub mod rules;
mod settings;
pub mod token;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::api_error::ApiError;
pub use caller::{Caller, Unauthorized};
pub use keys::KeyError;
use keys::Keys;
pub use rules::{Access, Rule};
pub use settings::AuthSettings;
pub use token::Claims;

/// The authentication and authorization of one service: its keys, its rule table and its
/// rate limiter. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` when `AUTH_DISABLED=true`.
    keys: Option<Keys>,
    rules: &'static [Rule],
    limiter: DefaultKeyedRateLimiter<String>,
}

impl Auth {
    /// Reads the keys (a JWKS file or URL is fetched once here); refuses to start with no key
    /// unless authentication is explicitly disabled.
    pub async fn new(settings: &AuthSettings, rules: &'static [Rule]) -> Result<Self, KeyError> {
        let keys = if settings.disabled {
            None
        } else {
            Some(Keys::load(settings).await?)
        };
        Ok(Self::with_keys(settings, rules, keys))
    }

    /// [`Auth::new`] without a JWKS, so without waiting for one (tests, the HS256 secret).
    pub fn without_jwks(settings: &AuthSettings, rules: &'static [Rule]) -> Result<Self, KeyError> {
        let keys = if settings.disabled {
            None
        } else {
            Some(Keys::from_secret(settings)?)
        };
        Ok(Self::with_keys(settings, rules, keys))
    }

    fn with_keys(settings: &AuthSettings, rules: &'static [Rule], keys: Option<Keys>) -> Self {
        if keys.is_none() {
            tracing::warn!(
                "AUTH_DISABLED=true: every request is served as staff without a token; never do this where the service can be reached"
            );
        }
        let per_second = NonZeroU32::new(settings.rate_limit_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(settings.rate_limit_burst).unwrap_or(per_second);
        let auth = Self {
            inner: Arc::new(Inner {
                keys,
                rules,
                limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            }),
        };
        auth.forget_idle_callers();
        auth
    }

    pub fn disabled(&self) -> bool {
        self.inner.keys.is_none()
    }

    pub fn rules(&self) -> &'static [Rule] {
        self.inner.rules
    }

    /// What `/health/ready` adds: `{"auth": "disabled"}` (and a warning in the log) when
    /// authentication is off, nothing otherwise.
    pub fn readiness_note(&self, details: &mut crate::ops::Details) {
        if self.disabled() {
            tracing::warn!("AUTH_DISABLED=true: the API is open to anyone");
            details.insert("auth".into(), "disabled".into());
        }
    }

    /// Verifies a bearer token (the part after `Bearer `).
    pub async fn verify(&self, token: &str) -> Result<Caller, Unauthorized> {
        match &self.inner.keys {
            Some(keys) => keys.verify(token).await,
            None => Ok(Caller::anonymous_staff()),
        }
    }

    /// Drops the rate limiter's state of callers idle long enough to be back at a full
    /// burst, so memory follows the active callers, not every caller ever seen.
    fn forget_idle_callers(&self) {
        let weak = Arc::downgrade(&self.inner);
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.limiter.retain_recent();
                inner.limiter.shrink_to_fit();
            }
        });
    }

    /// How long `caller` must wait before another request, or `None` when it may go on.
    fn rate_limit(&self, caller: &Caller) -> Option<Duration> {
        if self.disabled() {
            return None;
        }
        let not_until = self
            .inner
            .limiter
            .check_key(&caller.sub.to_string())
            .err()?;
        Some(not_until.wait_time_from(DefaultClock::default().now()))
    }
}

fn unauthorized(e: Unauthorized) -> Response {
    let mut response = ApiError::from(e).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// 429 with `Retry-After` in whole seconds, rounded up (at least 1).
fn rate_limited(wait: Duration) -> Response {
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests from this caller; retry in {seconds} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The bearer token of a request, or why there is none.
fn bearer(request: &Request) -> Result<&str, Unauthorized> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            Unauthorized("no bearer token: send `Authorization: Bearer <token>`".into())
        })?;
    let value = value
        .to_str()
        .map_err(|_| Unauthorized("the Authorization header is not text".into()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Unauthorized("the Authorization header is not `Bearer <token>`".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Unauthorized(
            "the Authorization header is not `Bearer <token>`".into(),
        ));
    }
    Ok(token.trim())
}

/// The middleware (a `route_layer`, so the matched path is known): the route's rule, the
/// caller's token and role, the caller's rate; the verified [`Caller`] goes on to the handler.
pub async fn authorize(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let rule = path
        .as_deref()
        .and_then(|p| rules::find(auth.inner.rules, request.method(), p));
    let Some(rule) = rule else {
        // Fail closed: a route someone added without deciding who may call it.
        tracing::error!(path = ?path, method = %request.method(), "route without an access rule");
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_access_rule",
            "this route has no access rule",
        )
        .into_response();
    };
    if rule.access == Access::Anyone {
        return next.run(request).await;
    }
    let caller = if auth.disabled() {
        Caller::anonymous_staff()
    } else {
        let token = match bearer(&request) {
            Ok(token) => token,
            Err(e) => return unauthorized(e),
        };
        match auth.verify(token).await {
            Ok(caller) => caller,
            Err(e) => return unauthorized(e),
        }
    };
    if rule.access == Access::Staff && !caller.staff {
        return forbidden("this needs the `staff` role").into_response();
    }
    if let Some(wait) = auth.rate_limit(&caller) {
        return rate_limited(wait);
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}
