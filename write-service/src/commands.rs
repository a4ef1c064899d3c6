//! Running a command: load, decide, append with the expected version; retry a lost race,
//! honour `If-Match`, and make retries with an `Idempotency-Key` count once.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::Position;
use domain::events::DomainEvent;
use event_store::{
    Aggregate, AppendOutcome, IdempotencyRecord, NewEvent, Snapshot, StoreError, StoredResponse,
    StreamAppend,
};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::Instrument;
use uuid::Uuid;

use crate::AppState;
use crate::extract::CommandContext;
use service_kit::api_error::ApiError;

/// A command's HTTP answer, fresh or replayed from its idempotency record.
#[derive(Debug)]
pub struct CommandOutcome {
    pub status: StatusCode,
    pub body: Value,
    pub replayed: bool,
}

impl IntoResponse for CommandOutcome {
    fn into_response(self) -> Response {
        let location = (self.status == StatusCode::CREATED)
            .then(|| {
                self.body
                    .get("orderId")
                    .and_then(Value::as_str)
                    .map(|id| format!("/orders/{id}"))
            })
            .flatten();
        let etag = self
            .body
            .get("version")
            .and_then(Value::as_u64)
            .map(|v| format!("\"{v}\""));
        let mut response = (self.status, axum::Json(self.body)).into_response();
        let headers = response.headers_mut();
        if let Some(value) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, value);
        }
        if let Some(value) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
            headers.insert(header::ETAG, value);
        }
        if self.replayed {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

/// One command against one aggregate's stream. It owns what it needs, because it runs in a
/// task of its own (see [`execute`]).
pub struct Command<F, R> {
    pub stream_id: String,
    pub success: StatusCode,
    pub ctx: CommandContext,
    pub body: Value,
    pub decide: F,
    /// The success body (a type of [`crate::model`]), from the stream's new version and the
    /// position of the last event written.
    pub accepted: R,
}

fn replay_or_reject(
    stored: StoredResponse,
    fingerprint: &Value,
) -> Result<CommandOutcome, ApiError> {
    if &stored.request != fingerprint {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different request",
        )
        .with_field("Idempotency-Key"));
    }
    Ok(CommandOutcome {
        status: StatusCode::from_u16(stored.response_status as u16).unwrap_or(StatusCode::OK),
        body: stored.response_body,
        replayed: true,
    })
}

/// Runs a command to its end in a task of its own, whatever happens to the request: a client
/// that disconnects drops its handler future, and database work dropped half-way can leave a
/// pooled connection inside a transaction (sqlx 0.9.0's `begin`, transact-rs/sqlx#4393).
/// The answer is then just not delivered; a retry with the same `Idempotency-Key` gets it.
pub async fn execute<A, F, R, B>(
    app: &AppState,
    cmd: Command<F, R>,
) -> Result<CommandOutcome, ApiError>
where
    A: Aggregate + 'static,
    A::State: Send,
    F: Fn(&A::State) -> Result<Vec<DomainEvent>, ApiError> + Send + 'static,
    R: Fn(u64, Position) -> B + Send + Sync + 'static,
    B: Serialize + 'static,
{
    let task = tokio::spawn(run::<A, F, R, B>(app.clone(), cmd).in_current_span());
    task.await
        .map_err(|e| ApiError::internal("command task failed", &e))?
}

async fn run<A, F, R, B>(app: AppState, cmd: Command<F, R>) -> Result<CommandOutcome, ApiError>
where
    A: Aggregate,
    F: Fn(&A::State) -> Result<Vec<DomainEvent>, ApiError>,
    R: Fn(u64, Position) -> B + Sync,
    B: Serialize,
{
    let store = &app.store;
    let ctx = &cmd.ctx;
    let fingerprint = json!({"method": ctx.method.as_str(), "path": ctx.path, "body": cmd.body});
    if let Some(key) = &ctx.idempotency_key
        && let Some(stored) = store.stored_response(key).await?
    {
        return replay_or_reject(stored, &fingerprint);
    }
    let metadata = json!({
        "requestId": ctx.request_id,
        "idempotencyKey": ctx.idempotency_key,
        "causationId": ctx.causation_id,
    });
    let success = cmd.success;
    let accepted = &cmd.accepted;
    let respond = |o: &AppendOutcome| {
        let version = o.versions.first().copied().unwrap_or(0);
        // The answer types hold only ids, numbers and positions: serialising cannot fail.
        (success.as_u16(), json!(accepted(version, o.position)))
    };

    let mut attempt = 0;
    loop {
        let loaded = store.load::<A>(&cmd.stream_id).await?;
        let events = (cmd.decide)(&loaded.state)?;
        // After the decision: a precondition counts only for a request that would otherwise
        // succeed (RFC 9110, 13.2.1), so an invalid command is its 4xx, not 412.
        if let Some(expected) = ctx.if_match
            && expected != loaded.version
        {
            return Err(precondition_failed(expected, loaded.version));
        }
        let new_state = events.iter().fold(loaded.state, |s, e| A::apply(s, e));
        let new_version = loaded.version + events.len() as u64;
        let snapshot = if store.snapshot_due(loaded.version, new_version) {
            serde_json::to_value(&new_state).ok().map(|state| Snapshot {
                state_schema: A::STATE_SCHEMA_VERSION,
                state,
            })
        } else {
            None
        };
        let append = StreamAppend {
            stream_id: cmd.stream_id.clone(),
            stream_type: A::STREAM_TYPE,
            expected_version: loaded.version,
            events: events
                .iter()
                .map(|e| NewEvent {
                    event_id: Uuid::new_v4(),
                    event: e.encode(),
                    metadata: metadata.clone(),
                })
                .collect(),
            snapshot,
        };
        let record = ctx.idempotency_key.as_deref().map(|key| IdempotencyRecord {
            key,
            request: &fingerprint,
            response: &respond,
        });
        match store.append(std::slice::from_ref(&append), record).await {
            Ok(outcome) => {
                metrics::counter!("write_events_appended_total").increment(events.len() as u64);
                if let Err(e) = store.notify_appended().await {
                    // Tailers fall back to polling; the command itself succeeded.
                    tracing::warn!(error = %e, "could not notify tailers");
                }
                let (status, body) = respond(&outcome);
                return Ok(CommandOutcome {
                    status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                    body,
                    replayed: false,
                });
            }
            Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                if let Some(expected) = ctx.if_match {
                    return Err(precondition_failed(expected, actual));
                }
                if attempt >= app.max_retries {
                    metrics::counter!("write_command_conflicts_total").increment(1);
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "concurrency_conflict",
                        "the stream kept changing under this command; retry it",
                    ));
                }
                attempt += 1;
                metrics::counter!("write_command_retries_total").increment(1);
                // Jittered, growing back-off so racing writers spread out.
                let cap = 2u64 << attempt.min(5);
                tokio::time::sleep(Duration::from_millis(fastrand::u64(1..=cap))).await;
            }
            Err(StoreError::IdempotencyKeyTaken(key)) => {
                // A concurrent request with the same key committed first.
                return match store.stored_response(&key).await? {
                    Some(stored) => replay_or_reject(stored, &fingerprint),
                    None => Err(ApiError::internal(
                        "idempotency record vanished",
                        &StoreError::IdempotencyKeyTaken(key),
                    )),
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn precondition_failed(expected: u64, actual: u64) -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        format!("If-Match expects version {expected} but the stream is at version {actual}"),
    )
}
