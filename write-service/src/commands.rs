//! A command over HTTP: the event store's one command path ([`EventStore::execute_many`]:
//! load, decide, append every stream the decision touched in one transaction, retry a lost
//! race), with `If-Match` as the expected version of the command's own stream, an
//! `Idempotency-Key` (the caller's own: see [`CommandContext::scoped_idempotency_key`]) as
//! its idempotency record, and its outcome and errors as HTTP answers.
//!
//! [`EventStore::execute_many`]: event_store::EventStore::execute_many

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::Position;
use domain::events::DomainEvent;
use event_store::{
    AppendOutcome, CommandError, Decide, Executed, IdempotencyRecord, Retries, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument;

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

/// One command: its own stream (the one `If-Match` is about, and whose new version it
/// answers) and a decision that may touch others. It owns what it needs, because it runs in
/// a task of its own (see [`execute`]).
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

/// What the write-service records under an idempotency key, for the event store to keep
/// as it is: the answer a retry gets back, `{"status", "body"}`.
#[derive(Deserialize)]
struct Recorded {
    status: u16,
    body: Value,
}

impl CommandOutcome {
    fn from_recorded(recorded: Value, replayed: bool) -> Result<Self, ApiError> {
        let Recorded { status, body } = serde_json::from_value(recorded)
            .map_err(|e| ApiError::internal("unreadable idempotency record", &e))?;
        let status = StatusCode::from_u16(status)
            .map_err(|e| ApiError::internal("unreadable idempotency record", &e))?;
        Ok(Self {
            status,
            body,
            replayed,
        })
    }
}

/// Runs a command to its end in a task of its own, whatever happens to the request: a client
/// that disconnects drops its handler future, and database work dropped half-way can leave a
/// pooled connection inside a transaction (sqlx 0.9.0's `begin`, transact-rs/sqlx#4393).
/// The answer is then just not delivered; a retry with the same `Idempotency-Key` gets it.
pub async fn execute<F, R, B>(
    app: &AppState,
    cmd: Command<F, R>,
) -> Result<CommandOutcome, ApiError>
where
    F: Decide<ApiError> + Send + 'static,
    R: Fn(u64, Position) -> B + Send + Sync + 'static,
    B: Serialize + 'static,
{
    let task = tokio::spawn(run::<F, R, B>(app.clone(), cmd).in_current_span());
    task.await
        .map_err(|e| ApiError::internal("command task failed", &e))?
}

async fn run<F, R, B>(app: AppState, cmd: Command<F, R>) -> Result<CommandOutcome, ApiError>
where
    F: Decide<ApiError> + Send,
    R: Fn(u64, Position) -> B + Sync,
    B: Serialize,
{
    let ctx = &cmd.ctx;
    let fingerprint = json!({"method": ctx.method.as_str(), "path": ctx.path, "body": cmd.body});
    let metadata = json!({
        "requestId": ctx.request_id,
        "idempotencyKey": ctx.idempotency_key,
        "causationId": ctx.causation_id,
    });
    let success = cmd.success;
    let accepted = &cmd.accepted;
    let recorded = |o: &AppendOutcome| {
        let version = o.versions.first().copied().unwrap_or(0);
        // The answer types hold only ids, numbers and positions: serialising cannot fail.
        json!({"status": success.as_u16(), "body": accepted(version, o.position)})
    };
    let count_retry = || metrics::counter!("write_command_retries_total").increment(1);
    let idempotency_key = ctx.scoped_idempotency_key();
    let command = event_store::Command::new(&cmd.stream_id, cmd.decide)
        .metadata(metadata)
        .expected_version(ctx.if_match)
        .idempotency(idempotency_key.as_deref().map(|key| IdempotencyRecord {
            key,
            fingerprint: &fingerprint,
            outcome: &recorded,
            // Where `accepted`'s answers carry the position (`OrderAccepted`, `ProductAccepted`).
            position_path: &["body", "position"],
        }))
        .retries(Retries::new(app.max_retries))
        .on_retry(&count_retry);

    match app.store.execute_many(command).await {
        Ok(Executed::Appended {
            outcome, events, ..
        }) => {
            metrics::counter!("write_events_appended_total").increment(events as u64);
            if events > 0 {
                app.store.wake_tailers();
            }
            CommandOutcome::from_recorded(recorded(&outcome), false)
        }
        Ok(Executed::Replayed(stored)) => CommandOutcome::from_recorded(stored, true),
        Err(e) => Err(api_error(e)),
    }
}

fn api_error(e: CommandError<ApiError>) -> ApiError {
    match e {
        CommandError::Rejected(e) => e,
        CommandError::PreconditionFailed { expected, actual } => ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            format!("If-Match expects version {expected} but the stream is at version {actual}"),
        ),
        CommandError::Conflict { .. } => {
            metrics::counter!("write_command_conflicts_total").increment(1);
            ApiError::new(
                StatusCode::CONFLICT,
                "concurrency_conflict",
                "the stream kept changing under this command; retry it",
            )
        }
        CommandError::KeyReused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different request",
        )
        .with_field("Idempotency-Key"),
        // Taken by a concurrent request whose record then could not be read.
        CommandError::Store(e @ StoreError::IdempotencyKeyTaken(_)) => {
            ApiError::internal("idempotency record vanished", &e)
        }
        CommandError::Store(e) => e.into(),
    }
}

/// A command's decision on one stream: load it as `A`, decide, stage what `decide` returns.
pub struct OneStream<A, F> {
    pub stream_id: String,
    pub decide: F,
    pub aggregate: std::marker::PhantomData<fn() -> A>,
}

impl<A, F> OneStream<A, F> {
    pub fn new(stream_id: String, decide: F) -> Self {
        Self {
            stream_id,
            decide,
            aggregate: std::marker::PhantomData,
        }
    }
}

impl<A, F> Decide<ApiError> for OneStream<A, F>
where
    A: event_store::Aggregate,
    F: Fn(&A::State) -> Result<Vec<DomainEvent>, ApiError> + Send + Sync,
{
    async fn decide(
        &mut self,
        decision: &mut event_store::Decision<'_>,
    ) -> Result<(), CommandError<ApiError>> {
        let state = decision.load::<A>(&self.stream_id).await?;
        let events = (self.decide)(&state).map_err(CommandError::Rejected)?;
        decision.append::<A>(&self.stream_id, events)?;
        Ok(())
    }
}
