//! What kind of refusal a rule gives, shared by the aggregates.

/// How a refusal maps to the caller's world: the HTTP layer turns these into 404/409/422.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Conflict,
    Invalid,
}
