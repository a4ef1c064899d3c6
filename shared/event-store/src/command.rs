//! The one command path: load (with snapshots), decide, append at the loaded versions, retry
//! a lost race after a growing, jittered delay; with an optional expected version (the
//! write-service's `If-Match`) and an optional idempotency key. A decision may span several
//! streams ([`EventStore::execute_many`]): it loads what it needs through a [`Decision`],
//! stages events per stream, and everything it staged is appended in one transaction, each
//! stream at the version the decision read. Nothing here knows HTTP.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Sleeper, TokioSleeper};
use serde_json::Value;
use sqlx::{Acquire, PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::append::{CloseUnlessFinished, record_outcome, versions_of, write};
use super::read::{StoredStream, load_from, load_on, read_streams};
use super::{
    Aggregate, AppendOutcome, EventStore, IdempotencyRecord, NewEvent, Snapshot, StoreError,
    StoredOutcome, StreamAppend, stored_u64,
};
use domain::events::DomainEvent;
use domain::position::Position;

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

/// What a multi-stream decision works on: the streams it loaded, each with the version it
/// was read at, and the events it staged for them. See [`EventStore::execute_many`].
pub struct Decision<'c> {
    /// A first attempt's own connection (outside any transaction: its append is one
    /// statement), or a retry's transaction, which holds the streams' command locks.
    conn: &'c mut PgConnection,
    streams: Vec<Tracked>,
    /// Streams read ahead by [`Decision::prefetch`], not yet loaded.
    prefetched: HashMap<String, StoredStream>,
}

type AnyState = Box<dyn Any + Send + Sync>;

struct Tracked {
    stream_id: String,
    stream_type: &'static str,
    version: u64,
    state: AnyState,
    events: Vec<DomainEvent>,
    /// The snapshot of `state` with `events` applied, for the aggregate it was loaded as.
    snapshot: fn(&AnyState, &[DomainEvent]) -> Option<Snapshot>,
}

fn snapshot_of<A: Aggregate>(state: &AnyState, events: &[DomainEvent]) -> Option<Snapshot> {
    let state = state.downcast_ref::<A::State>()?.clone();
    let state = events.iter().fold(state, |s, e| A::apply(s, e));
    // A state that does not serialise is not snapshotted; loads replay instead.
    serde_json::to_value(&state).ok().map(|state| Snapshot {
        state_schema: A::STATE_SCHEMA_VERSION,
        state,
    })
}

impl Decision<'_> {
    /// The stream's aggregate as `A`, loaded once per attempt: a second load gives the same
    /// state, at the same version (without the events staged since).
    pub async fn load<A: Aggregate>(&mut self, stream_id: &str) -> Result<A::State, StoreError> {
        if let Some(t) = self.streams.iter().find(|t| t.stream_id == stream_id) {
            return t
                .state
                .downcast_ref::<A::State>()
                .filter(|_| t.stream_type == A::STREAM_TYPE)
                .cloned()
                .ok_or_else(|| not_loaded::<A>(stream_id));
        }
        let loaded = match self.prefetched.remove(stream_id) {
            Some(stored) => load_from::<A>(self.conn, stream_id, stored).await?,
            None => load_on::<A>(self.conn, stream_id).await?,
        };
        self.streams.push(Tracked {
            stream_id: stream_id.to_owned(),
            stream_type: A::STREAM_TYPE,
            version: loaded.version,
            state: Box::new(loaded.state.clone()),
            events: Vec::new(),
            snapshot: snapshot_of::<A>,
        });
        Ok(loaded.state)
    }

    /// Reads the streams a decision is about to load (of any aggregate) in one round trip,
    /// so that loading each of them then costs none. Streams already loaded or read ahead
    /// are not read again.
    pub async fn prefetch(
        &mut self,
        stream_ids: impl IntoIterator<Item = String>,
    ) -> Result<(), StoreError> {
        let mut wanted: Vec<String> = stream_ids
            .into_iter()
            .filter(|id| {
                !self.prefetched.contains_key(id)
                    && !self.streams.iter().any(|t| &t.stream_id == id)
            })
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut read = read_streams(self.conn, &wanted).await?;
        for id in wanted {
            let stored = read.remove(&id).unwrap_or_default();
            self.prefetched.insert(id, stored);
        }
        Ok(())
    }

    /// The version a loaded stream was read at.
    pub fn version(&self, stream_id: &str) -> Option<u64> {
        self.streams
            .iter()
            .find(|t| t.stream_id == stream_id)
            .map(|t| t.version)
    }

    /// Stages events for a stream this decision loaded as `A`; they are appended at the
    /// version it was read at, with the other streams' events, if the decision succeeds.
    pub fn append<A: Aggregate>(
        &mut self,
        stream_id: &str,
        events: impl IntoIterator<Item = DomainEvent>,
    ) -> Result<(), StoreError> {
        let t = self
            .streams
            .iter_mut()
            .find(|t| t.stream_id == stream_id && t.stream_type == A::STREAM_TYPE)
            .ok_or_else(|| not_loaded::<A>(stream_id))?;
        t.events.extend(events);
        Ok(())
    }

    /// The appends the decision staged: the primary stream first (also without events, so
    /// that it is checked at its version and its new version comes first in the outcome),
    /// then every other stream with events, in the order they were loaded.
    fn plan(self, store: &EventStore, primary: &str, metadata: &Value) -> Result<Plan, StoreError> {
        let Some(first) = self.streams.iter().position(|t| t.stream_id == primary) else {
            return Err(StoreError::NotLoaded {
                stream_id: primary.to_owned(),
                stream_type: "primary",
            });
        };
        let primary_version = self.streams[first].version;
        let events = self.streams.iter().map(|t| t.events.len()).sum();
        let mut streams = self.streams;
        let primary_stream = streams.remove(first);
        let mut appends = Vec::new();
        // A stream that does not exist is not created without events.
        if primary_version > 0 || !primary_stream.events.is_empty() {
            appends.push(stream_append(store, primary_stream, metadata));
        }
        appends.extend(
            streams
                .into_iter()
                .filter(|t| !t.events.is_empty())
                .map(|t| stream_append(store, t, metadata)),
        );
        Ok(Plan {
            appends,
            events,
            primary_version,
        })
    }
}

impl<'c> Decision<'c> {
    fn on(conn: &'c mut PgConnection) -> Self {
        Self {
            conn,
            streams: Vec::new(),
            prefetched: HashMap::new(),
        }
    }
}

fn not_loaded<A: Aggregate>(stream_id: &str) -> StoreError {
    StoreError::NotLoaded {
        stream_id: stream_id.to_owned(),
        stream_type: A::STREAM_TYPE,
    }
}

/// The append of a tracked stream's events at its loaded version, with the new state's
/// snapshot when due.
fn stream_append(store: &EventStore, t: Tracked, metadata: &Value) -> StreamAppend {
    let new_version = t.version.saturating_add(t.events.len() as u64);
    let snapshot = if !t.events.is_empty() && store.snapshot_due(t.version, new_version) {
        (t.snapshot)(&t.state, &t.events)
    } else {
        None
    };
    StreamAppend {
        stream_id: t.stream_id,
        stream_type: t.stream_type,
        expected_version: t.version,
        events: t
            .events
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

struct Plan {
    appends: Vec<StreamAppend>,
    events: usize,
    primary_version: u64,
}

/// What one attempt is told by the command, besides its decision.
struct Attempt<'a> {
    primary: &'a str,
    metadata: &'a Value,
    expected_version: Option<u64>,
    idempotency: Option<IdempotencyRecord<'a>>,
}

/// A decision over several streams, for [`EventStore::execute_many`]. It may run more than
/// once (after each lost race), each time on a fresh [`Decision`].
pub trait Decide<E> {
    /// Loads what the command needs through `decision` (the command's own stream first),
    /// and stages the events to append, or refuses with [`CommandError::Rejected`].
    fn decide(
        &mut self,
        decision: &mut Decision<'_>,
    ) -> impl Future<Output = Result<(), CommandError<E>>> + Send;
}

/// [`EventStore::execute`]'s decision: one stream, one aggregate.
struct OneStream<'a, A, D> {
    stream_id: &'a str,
    decide: D,
    aggregate: PhantomData<fn() -> A>,
}

impl<A, D, E> Decide<E> for OneStream<'_, A, D>
where
    A: Aggregate,
    D: Fn(&A::State) -> Result<Vec<DomainEvent>, E> + Sync,
    E: Send,
{
    fn decide(
        &mut self,
        decision: &mut Decision<'_>,
    ) -> impl Future<Output = Result<(), CommandError<E>>> + Send {
        let (stream_id, decide) = (self.stream_id, &self.decide);
        async move {
            let state = decision.load::<A>(stream_id).await?;
            let events = decide(&state).map_err(CommandError::Rejected)?;
            decision.append::<A>(stream_id, events)?;
            Ok(())
        }
    }
}

impl<'a, D> Command<'a, D> {
    fn split<D2>(self, decide: impl FnOnce(D) -> D2) -> Command<'a, D2> {
        Command {
            stream_id: self.stream_id,
            decide: decide(self.decide),
            metadata: self.metadata,
            expected_version: self.expected_version,
            idempotency: self.idempotency,
            retries: self.retries,
            on_retry: self.on_retry,
        }
    }
}

impl EventStore {
    /// Runs a command on one aggregate's stream: [`execute_many`](Self::execute_many) with
    /// a decision that loads the command's stream as `A` and stages what `decide` returns.
    pub async fn execute<A, D, E>(&self, cmd: Command<'_, D>) -> Result<Executed, CommandError<E>>
    where
        A: Aggregate,
        D: Fn(&A::State) -> Result<Vec<DomainEvent>, E> + Sync,
        E: Send,
    {
        let stream_id = cmd.stream_id;
        let cmd = cmd.split(|decide| OneStream::<A, D> {
            stream_id,
            decide,
            aggregate: PhantomData,
        });
        self.execute_many(cmd).await
    }

    /// Runs a command whose decision may span several streams: runs `decide` on a [`Decision`] (which loads streams, with
    /// snapshots, and records the version each was read at), checks the expected version of
    /// the command's own stream (the primary, which `decide` must load), and appends every
    /// staged stream at the version it was read at, with snapshots when due and the
    /// idempotency record, in one transaction (stream locks in sorted order). A decision
    /// that stages nothing appends nothing and answers the primary's current version.
    ///
    /// An idempotency key is looked up only when the command fails: a retry of a command
    /// that committed is refused by the state it left, loses its race, or has its append
    /// (which records the key in the same statement) refused, and then gets the recorded
    /// outcome back ([`Executed::Replayed`]), or [`CommandError::KeyReused`] for another
    /// request. A first request, the common case, pays no round trip for its key.
    ///
    /// A lost race on any stream decides again, up to the command's [`Retries`]; a retry
    /// first takes a transaction-scoped advisory lock on each stream the last attempt
    /// appended to (in sorted order), so that retries of commands on one hot stream queue
    /// up once instead of losing again and again. Those locks only order retries: the
    /// append's expected versions alone keep the log right. A lost race on the primary
    /// stream of a command with an expected version is a precondition failure, never retried.
    ///
    /// The pooled append closes its connection if this future is dropped half-way, but the
    /// caller should still run a command it must not lose in a task of its own.
    #[tracing::instrument(skip_all, fields(stream_id = cmd.stream_id))]
    pub async fn execute_many<D, E>(&self, cmd: Command<'_, D>) -> Result<Executed, CommandError<E>>
    where
        D: Decide<E>,
    {
        let Command {
            stream_id,
            mut decide,
            metadata,
            expected_version,
            idempotency,
            retries: max_retries,
            on_retry,
        } = cmd;
        let attempt = Attempt {
            primary: stream_id,
            metadata: &metadata,
            expected_version,
            idempotency,
        };
        let result = self
            .attempts(&mut decide, &attempt, max_retries, on_retry)
            .await;
        match (result, idempotency) {
            (Err(e), Some(record)) if !matches!(&e, CommandError::Store(s) if s.is_unavailable()) => {
                match self.stored_outcome(record.key).await? {
                    Some(stored) => replay(stored, record.fingerprint),
                    None => Err(e),
                }
            }
            (result, _) => result,
        }
    }

    /// The attempts of [`execute_many`](Self::execute_many), up to its retries.
    async fn attempts<D, E>(
        &self,
        decide: &mut D,
        attempt: &Attempt<'_>,
        max_retries: Retries,
        on_retry: Option<&(dyn Fn() + Send + Sync)>,
    ) -> Result<Executed, CommandError<E>>
    where
        D: Decide<E>,
    {
        let (stream_id, expected_version) = (attempt.primary, attempt.expected_version);
        let mut delays = max_retries.delays();
        let mut retries = 0;
        // The streams the last attempt appended to: what a retry locks first.
        let mut locks: Vec<String> = Vec::new();
        loop {
            let result = if retries == 0 {
                self.attempt_optimistic(decide, attempt, &mut locks).await
            } else {
                self.attempt_locked(decide, attempt, &mut locks).await
            };
            match result {
                Ok((outcome, events)) => {
                    return Ok(Executed::Appended {
                        outcome,
                        events,
                        retries,
                    });
                }
                Err(CommandError::Store(e)) if is_lost_race(&e) => {
                    if let Some(expected) = expected_version
                        && let StoreError::WrongExpectedVersion {
                            stream_id: moved,
                            actual,
                            ..
                        } = &e
                        && moved == stream_id
                    {
                        return Err(CommandError::PreconditionFailed {
                            expected,
                            actual: *actual,
                        });
                    }
                    let Some(delay) = delays.next() else {
                        return Err(CommandError::Conflict {
                            attempts: retries + 1,
                        });
                    };
                    retries += 1;
                    if let Some(on_retry) = on_retry {
                        on_retry();
                    }
                    TokioSleeper.sleep(delay).await;
                }
                // Among them a key another request recorded first: the caller looks it up.
                Err(e) => return Err(e),
            }
        }
    }

    /// One decision inside the caller's transaction, for processes that commit their own
    /// rows (state, outbox, checkpoint) with the events they append: loads through `tx`,
    /// decides, and appends what was staged at the versions read, every event with
    /// `metadata`. The append must be the transaction's first write
    /// ([`StoreError::AppendNotFirst`] otherwise, before anything is written), so the
    /// caller writes its own rows after this returns. `None`: the decision staged nothing.
    /// No retry here: a lost race ([`StoreError::WrongExpectedVersion`]) is the caller's to
    /// roll back and decide again.
    pub async fn execute_in<D, E>(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        primary: &str,
        metadata: &Value,
        decide: &mut D,
    ) -> Result<Option<AppendOutcome>, CommandError<E>>
    where
        D: Decide<E>,
    {
        let mut decision = Decision::on(tx);
        decide.decide(&mut decision).await?;
        let plan = decision.plan(self, primary, metadata)?;
        if plan.events == 0 {
            return Ok(None);
        }
        Ok(Some(self.append_in(tx, &plan.appends, None).await?))
    }

    /// A first attempt: loads, decides, and appends on one pooled connection, outside any
    /// transaction (the append is one statement, its own transaction); a stream that moved
    /// meanwhile fails the append. Dropped half-way, its connection is closed, not pooled.
    async fn attempt_optimistic<D, E>(
        &self,
        decide: &mut D,
        attempt: &Attempt<'_>,
        locks: &mut Vec<String>,
    ) -> Result<(AppendOutcome, usize), CommandError<E>>
    where
        D: Decide<E>,
    {
        let mut guard = CloseUnlessFinished {
            conn: self.pool.acquire().await.map_err(StoreError::from)?,
            finished: false,
        };
        let result = async {
            let mut decision = Decision::on(&mut guard.conn);
            decide.decide(&mut decision).await?;
            let plan = self.checked_plan(decision, attempt, locks)?;
            if plan.events == 0 {
                return Ok((unchanged(&mut guard.conn, &plan, attempt).await?, 0));
            }
            let versions = versions_of(&plan.appends)?;
            let outcome = write(
                &mut guard.conn,
                &plan.appends,
                &versions,
                attempt.idempotency,
            )
            .await?;
            Ok((outcome, plan.events))
        }
        .await;
        guard.finished = true;
        result
    }

    /// A retry: in one transaction, takes the advisory locks of `locks` (sorted), then
    /// loads, decides and appends. Dropped half-way, its connection is closed, not pooled.
    async fn attempt_locked<D, E>(
        &self,
        decide: &mut D,
        attempt: &Attempt<'_>,
        locks: &mut Vec<String>,
    ) -> Result<(AppendOutcome, usize), CommandError<E>>
    where
        D: Decide<E>,
    {
        let mut guard = CloseUnlessFinished {
            conn: self.pool.acquire().await.map_err(StoreError::from)?,
            finished: false,
        };
        let result = async {
            let mut tx = guard.conn.begin().await.map_err(StoreError::from)?;
            lock_commands(&mut tx, locks).await?;
            let mut decision = Decision::on(&mut tx);
            decide.decide(&mut decision).await?;
            let plan = self.checked_plan(decision, attempt, locks)?;
            let outcome = if plan.events == 0 {
                unchanged(&mut tx, &plan, attempt).await?
            } else {
                let versions = versions_of(&plan.appends)?;
                write(&mut tx, &plan.appends, &versions, attempt.idempotency).await?
            };
            tx.commit().await.map_err(StoreError::from)?;
            Ok((outcome, plan.events))
        }
        .await;
        guard.finished = true;
        result
    }

    /// The decision's appends, after checking the primary's expected version (after the
    /// decision: a precondition counts only for a command that would otherwise succeed,
    /// RFC 9110, 13.2.1, so a refused command is its own error). Records what a retry locks.
    fn checked_plan<E>(
        &self,
        decision: Decision<'_>,
        attempt: &Attempt<'_>,
        locks: &mut Vec<String>,
    ) -> Result<Plan, CommandError<E>> {
        let plan = decision.plan(self, attempt.primary, attempt.metadata)?;
        *locks = plan.appends.iter().map(|a| a.stream_id.clone()).collect();
        if let Some(expected) = attempt.expected_version
            && expected != plan.primary_version
        {
            return Err(CommandError::PreconditionFailed {
                expected,
                actual: plan.primary_version,
            });
        }
        Ok(plan)
    }
}

/// A lost race: a stream moved under the decision. (No deadlock can come from the locks:
/// stream locks are taken in sorted order, advisory locks in sorted order before any.)
fn is_lost_race(e: &StoreError) -> bool {
    matches!(e, StoreError::WrongExpectedVersion { .. })
}

/// The outcome of a decision that staged nothing: the primary's version as read, and the
/// position of its last event (the token under which a reader sees that version). An
/// idempotency record is still kept, so a retry answers the same.
async fn unchanged(
    conn: &mut PgConnection,
    plan: &Plan,
    attempt: &Attempt<'_>,
) -> Result<AppendOutcome, StoreError> {
    let last = sqlx::query!(
        r#"select tx_id::text::int8 as "tx_id!", global_position from events
           where stream_id = $1 order by stream_position desc limit 1"#,
        attempt.primary,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let position = match last {
        Some(row) => Position {
            tx_id: stored_u64(
                "events.tx_id",
                row.tx_id,
                format_args!("event at global position {}", row.global_position),
            )?,
            global_position: row.global_position,
        },
        None => Position::ZERO,
    };
    let outcome = AppendOutcome {
        versions: vec![plan.primary_version],
        position,
    };
    if let Some(record) = attempt.idempotency {
        record_outcome(conn, record, &outcome).await?;
    }
    Ok(outcome)
}

/// Queues this transaction behind any other command retrying on the same streams:
/// transaction-scoped advisory locks, taken in sorted key order so that two retries cannot
/// wait on each other in a cycle. They need no transaction id, so holding them does not
/// hold back the tail; the stream locks and the xid still come with the append.
async fn lock_commands(conn: &mut PgConnection, streams: &[String]) -> Result<(), StoreError> {
    let mut keys: Vec<(i32, i32)> = streams.iter().map(|s| command_lock_key(s)).collect();
    keys.sort_unstable();
    keys.dedup();
    for (high, low) in keys {
        sqlx::query!(
            r#"select 1 as "locked!" from pg_advisory_xact_lock($1, $2)"#,
            high,
            low
        )
        .fetch_one(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A stream's advisory key: its id's 64-bit FNV-1a hash, as the two-`int4` key (a key
/// space of its own, apart from the single-`bigint` keys of the projector's leases). The
/// same on every instance and build; two streams sharing a key only queue together.
fn command_lock_key(stream_id: &str) -> (i32, i32) {
    let hash = stream_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let [a, b, c, d, e, f, g, h] = hash.to_be_bytes();
    (
        i32::from_be_bytes([a, b, c, d]),
        i32::from_be_bytes([e, f, g, h]),
    )
}

fn replay<E>(stored: StoredOutcome, fingerprint: &Value) -> Result<Executed, CommandError<E>> {
    if &stored.fingerprint == fingerprint {
        Ok(Executed::Replayed(stored.outcome))
    } else {
        Err(CommandError::KeyReused)
    }
}
