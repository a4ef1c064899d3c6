//! What view endpoints answer: a JSON body or an error, each stamped with the checkpoint of
//! the views it was read from (`X-Projection-Position`).

use axum::Json;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use domain::Position;
use serde::Serialize;
use service_kit::api_error::ApiError;

/// Response header: the lowest checkpoint of the views behind the answer. The data is at
/// least that fresh (the checkpoint is read before the data).
pub const PROJECTION_POSITION: HeaderName = HeaderName::from_static("x-projection-position");
/// Request header: the `position` a write-service command returned; the read waits for it.
pub const CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("x-consistency-token");

fn stamp(mut response: Response, position: Position) -> Response {
    if let Ok(v) = HeaderValue::from_str(&position.to_string()) {
        response.headers_mut().insert(PROJECTION_POSITION, v);
    }
    response
}

/// A body read from the views at `position`.
pub struct Viewed<T> {
    pub position: Position,
    pub body: T,
}

impl<T: Serialize> IntoResponse for Viewed<T> {
    fn into_response(self) -> Response {
        stamp(Json(self.body).into_response(), self.position)
    }
}

/// An API error; stamped when the views had been read before it arose (404, not caught up).
#[derive(Debug)]
pub struct ReadError {
    pub error: ApiError,
    pub position: Option<Position>,
}

impl ReadError {
    pub fn at(position: Position, error: ApiError) -> Self {
        Self {
            error,
            position: Some(position),
        }
    }
}

impl From<ApiError> for ReadError {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            position: None,
        }
    }
}

impl IntoResponse for ReadError {
    fn into_response(self) -> Response {
        let response = self.error.into_response();
        match self.position {
            Some(p) => stamp(response, p),
            None => response,
        }
    }
}

pub type Reply<T> = Result<Viewed<T>, ReadError>;
