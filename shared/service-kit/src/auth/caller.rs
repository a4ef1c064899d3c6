//! The verified caller of a request, as handlers see it, or why there is none.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use domain::UserId;

use crate::api_error::ApiError;

/// Who calls: the token's `sub` as a customer id, and whether it has the `staff` role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub sub: UserId,
    pub staff: bool,
}

impl Caller {
    /// The caller when `AUTH_DISABLED=true`.
    pub fn anonymous_staff() -> Self {
        Self {
            sub: "anonymous".parse().expect("a valid user id"),
            staff: true,
        }
    }

    /// Staff act for anyone; a customer only for themself.
    pub fn may_act_for(&self, user: &UserId) -> bool {
        self.staff || &self.sub == user
    }

    /// The customer whose data a query must be limited to: `None` for staff.
    pub fn only_own(&self) -> Option<&UserId> {
        (!self.staff).then_some(&self.sub)
    }
}

/// Set by [`super::authorize`]; a handler asking for it behind a route that has no
/// authenticated rule is a programming error, answered 500 rather than served open.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!(path = %parts.uri.path(), "a handler needs a caller but its route has no authenticated rule");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no_access_rule",
                "this route has no access rule",
            )
        })
    }
}

/// Why a request has no valid token: the message of its 401 (never the token itself).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unauthorized(pub String);

impl From<Unauthorized> for ApiError {
    fn from(e: Unauthorized) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", e.0)
    }
}
