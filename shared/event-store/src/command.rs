//! The one command path: load (with snapshots), decide, append at the loaded version, retry
//! a lost race after a growing, jittered delay; with an optional expected version (the
//! write-service's `If-Match`) and an optional idempotency key. Nothing here knows HTTP.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Sleeper, TokioSleeper};
use serde_json::Value;
use uuid::Uuid;

use super::{
    Aggregate, AppendOutcome, EventStore, IdempotencyRecord, Loaded, NewEvent, Snapshot,
    StoreError, StoredOutcome, StreamAppend,
};
use domain::events::DomainEvent;

/// How a command retries a lost race: at most `max` times, each after a delay that starts
/// at `min_delay` and doubles up to `max_delay`, stretched by a random 0 to 100% so that
/// racing writers spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Retries after the first attempt; 0 gives up at the first lost race.
    pub max: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Retries {
    /// `max` retries, the first after 2 to 4 ms, later ones after at most 64 ms.
    pub const fn new(max: u32) -> Self {
        Self {
            max,
            min_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(32),
        }
    }

    fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::new()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(usize::try_from(self.max).unwrap_or(usize::MAX))
            .build()
    }
}

impl Default for Retries {
    /// The write-service's default (`COMMAND_MAX_RETRIES`).
    fn default() -> Self {
        Self::new(10)
    }
}

/// One command against one aggregate's stream, for [`EventStore::execute`]. `decide` may run
/// more than once (after each lost race), on the state as it is then.
pub struct Command<'a, D> {
    stream_id: &'a str,
    decide: D,
    metadata: Value,
    expected_version: Option<u64>,
    idempotency: Option<IdempotencyRecord<'a>>,
    retries: Retries,
    on_retry: Option<&'a (dyn Fn() + Send + Sync)>,
}

impl<'a, D> Command<'a, D> {
    /// A command with empty metadata, no expected version, no idempotency key and the
    /// default [`Retries`].
    pub fn new(stream_id: &'a str, decide: D) -> Self {
        Self {
            stream_id,
            decide,
            metadata: Value::Object(Default::default()),
            expected_version: None,
            idempotency: None,
            retries: Retries::default(),
            on_retry: None,
        }
    }

    /// Stored with each event the command appends (request id, causation id, ...).
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// The command applies only to the stream at this version: checked after `decide` (a
    /// command that fails on its own reports that), and a lost race is then a
    /// [`CommandError::PreconditionFailed`], never retried.
    pub fn expected_version(mut self, version: Option<u64>) -> Self {
        self.expected_version = version;
        self
    }

    /// The command counts once per key: a retry with the same fingerprint gets the recorded
    /// outcome back ([`Executed::Replayed`]), another request with the key is refused.
    pub fn idempotency(mut self, record: Option<IdempotencyRecord<'a>>) -> Self {
        self.idempotency = record;
        self
    }

    pub fn retries(mut self, retries: Retries) -> Self {
        self.retries = retries;
        self
    }

    /// Called before each retry (e.g. to count them).
    pub fn on_retry(mut self, on_retry: &'a (dyn Fn() + Send + Sync)) -> Self {
        self.on_retry = Some(on_retry);
        self
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
pub enum Executed {
    /// It appended `events` events, after `retries` lost races.
    Appended {
        outcome: AppendOutcome,
        events: usize,
        retries: u32,
    },
    /// An earlier command with the same idempotency key and fingerprint committed: the
    /// outcome it recorded. Nothing was appended now.
    Replayed(Value),
}

impl Executed {
    /// The append's outcome, unless this was a replay.
    pub fn appended(self) -> Option<AppendOutcome> {
        match self {
            Executed::Appended { outcome, .. } => Some(outcome),
            Executed::Replayed(_) => None,
        }
    }
}

/// Why a command appended nothing.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E> {
    /// `decide` refused the command.
    #[error("the command was refused: {0}")]
    Rejected(E),
    /// The stream is not at the expected version.
    #[error("expected the stream at version {expected}, it is at version {actual}")]
    PreconditionFailed { expected: u64, actual: u64 },
    /// Every attempt lost a race on the stream.
    #[error("the stream kept changing under the command ({attempts} attempts)")]
    Conflict { attempts: u32 },
    /// The idempotency key was recorded for a request with another fingerprint.
    #[error("the idempotency key was used for a different request")]
    KeyReused,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EventStore {
    /// Runs a command: replays its idempotency record if one exists, else loads the
    /// aggregate, decides, checks the expected version and appends at the loaded version
    /// (with a snapshot when due) and its idempotency record, in one transaction. A lost race
    /// loads and decides again, up to the command's [`Retries`].
    ///
    /// The pooled append closes its connection if this future is dropped half-way, but the
    /// caller should still run a command it must not lose in a task of its own.
    #[tracing::instrument(skip_all, fields(stream_id = cmd.stream_id))]
    pub async fn execute<A, D, E>(&self, cmd: Command<'_, D>) -> Result<Executed, CommandError<E>>
    where
        A: Aggregate,
        D: Fn(&A::State) -> Result<Vec<DomainEvent>, E>,
    {
        if let Some(record) = cmd.idempotency
            && let Some(stored) = self.stored_outcome(record.key).await?
        {
            return replay(stored, record.fingerprint);
        }
        let mut delays = cmd.retries.delays();
        let mut retries = 0;
        loop {
            let loaded = self.load::<A>(cmd.stream_id).await?;
            let events = (cmd.decide)(&loaded.state).map_err(CommandError::Rejected)?;
            // After the decision: a precondition counts only for a command that would
            // otherwise succeed (RFC 9110, 13.2.1), so a refused command is its own error.
            if let Some(expected) = cmd.expected_version
                && expected != loaded.version
            {
                return Err(CommandError::PreconditionFailed {
                    expected,
                    actual: loaded.version,
                });
            }
            let count = events.len();
            let append = self.stream_append::<A>(cmd.stream_id, loaded, events, &cmd.metadata);
            match self
                .append(std::slice::from_ref(&append), cmd.idempotency)
                .await
            {
                Ok(outcome) => {
                    return Ok(Executed::Appended {
                        outcome,
                        events: count,
                        retries,
                    });
                }
                Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                    if let Some(expected) = cmd.expected_version {
                        return Err(CommandError::PreconditionFailed { expected, actual });
                    }
                    let Some(delay) = delays.next() else {
                        return Err(CommandError::Conflict {
                            attempts: retries + 1,
                        });
                    };
                    retries += 1;
                    if let Some(on_retry) = cmd.on_retry {
                        on_retry();
                    }
                    TokioSleeper.sleep(delay).await;
                }
                Err(StoreError::IdempotencyKeyTaken(key)) => {
                    // A concurrent command with the same key committed first: its outcome
                    // is the answer, if it was the same request.
                    return match (self.stored_outcome(&key).await?, cmd.idempotency) {
                        (Some(stored), Some(record)) => replay(stored, record.fingerprint),
                        _ => Err(StoreError::IdempotencyKeyTaken(key).into()),
                    };
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The append of `events` at the loaded version, with the new state's snapshot when due.
    fn stream_append<A: Aggregate>(
        &self,
        stream_id: &str,
        loaded: Loaded<A::State>,
        events: Vec<DomainEvent>,
        metadata: &Value,
    ) -> StreamAppend {
        let new_version = loaded.version.saturating_add(events.len() as u64);
        let snapshot = if self.snapshot_due(loaded.version, new_version) {
            let state = events.iter().fold(loaded.state, |s, e| A::apply(s, e));
            // A state that does not serialise is not snapshotted; loads replay instead.
            serde_json::to_value(&state).ok().map(|state| Snapshot {
                state_schema: A::STATE_SCHEMA_VERSION,
                state,
            })
        } else {
            None
        };
        StreamAppend {
            stream_id: stream_id.to_owned(),
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
        }
    }
}

fn replay<E>(stored: StoredOutcome, fingerprint: &Value) -> Result<Executed, CommandError<E>> {
    if &stored.fingerprint == fingerprint {
        Ok(Executed::Replayed(stored.outcome))
    } else {
        Err(CommandError::KeyReused)
    }
}
