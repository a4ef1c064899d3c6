//! The PostgreSQL event store: gap-safe appends, stream loads with snapshots, and the
//! committed-prefix read the projector tails.
//!
//! See `migrations/` for the tables and `docs/ARCHITECTURE.md` for why events carry `tx_id`.

mod append;
mod read;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;

use domain::events::DomainEvent;
use domain::order::{self, OrderState};
use domain::product::{self, ProductState};

pub use append::{AppendOutcome, IdempotencyRecord, NewEvent, Snapshot, StreamAppend};
pub use read::{RecordedEvent, StoredResponse, TailRow, UnreadableEvent, Until};

/// Migrations of the event store, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Channel the write-service notifies after each commit; only a wake-up, never the data.
pub const EVENTS_CHANNEL: &str = "events_appended";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream `{stream_id}` is at version {actual}, expected {expected}")]
    WrongExpectedVersion {
        stream_id: String,
        expected: u64,
        actual: u64,
    },
    #[error("idempotency key `{0}` was recorded concurrently")]
    IdempotencyKeyTaken(String),
    #[error("stored event at position {global_position} of `{stream_id}` is unreadable: {message}")]
    Decode {
        global_position: i64,
        stream_id: String,
        message: String,
    },
    #[error("stored snapshot of `{stream_id}` is unreadable: {source}")]
    Snapshot {
        stream_id: String,
        #[source]
        source: serde_json::Error,
    },
    /// A value read from the database that the schema's meaning rules out (e.g. a negative
    /// version): the stored data is corrupt, and nothing is guessed in its place.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// An append would move a stream past the largest version a `bigint` column holds.
    #[error("stream `{stream_id}` at version {expected} cannot take {events} more events: versions end at {max}", max = i64::MAX)]
    VersionOverflow {
        stream_id: String,
        expected: u64,
        events: usize,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A version, position or xid read from a `bigint` column, as the unsigned number it is; a
/// negative value is corruption, reported with its column and row.
fn stored_u64(column: &str, value: i64, row: impl std::fmt::Display) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} = {value} ({row})")))
}

/// A position bound for a query (`stream_position <= bound`). Every stored position fits an
/// `i64`, so a larger bound saturates to `i64::MAX` and selects exactly the same rows.
fn query_bound(bound: u64) -> i64 {
    i64::try_from(bound).unwrap_or(i64::MAX)
}

impl StoreError {
    /// True when the database could not be reached or went away: worth a 503 and a retry,
    /// not a bug in the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Database(e) if is_unavailable(e))
    }
}

/// True when the error means PostgreSQL is unreachable or going away, not that the query was wrong.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                // 08: connection exception; 57P0x: shutdown / cannot connect now; 53300: too many connections
                c.starts_with("08") || c.starts_with("57P0") || c == "53300"
            }),
            _ => false,
        }
    }
}

/// What the store needs to know to load and snapshot one kind of aggregate.
pub trait Aggregate {
    const STREAM_TYPE: &'static str;
    const STATE_SCHEMA_VERSION: i32;
    type State: Default + Clone + Serialize + DeserializeOwned;

    fn apply(state: Self::State, event: &DomainEvent) -> Self::State;
}

pub struct OrderAggregate;

impl Aggregate for OrderAggregate {
    const STREAM_TYPE: &'static str = "order";
    const STATE_SCHEMA_VERSION: i32 = order::STATE_SCHEMA_VERSION;
    type State = OrderState;

    fn apply(state: OrderState, event: &DomainEvent) -> OrderState {
        match event {
            DomainEvent::Order(e) => state.apply(e),
            DomainEvent::Product(_) => state,
        }
    }
}

pub struct ProductAggregate;

impl Aggregate for ProductAggregate {
    const STREAM_TYPE: &'static str = "product";
    const STATE_SCHEMA_VERSION: i32 = product::STATE_SCHEMA_VERSION;
    type State = ProductState;

    fn apply(state: ProductState, event: &DomainEvent) -> ProductState {
        match event {
            DomainEvent::Product(e) => state.apply(e),
            DomainEvent::Order(_) => state,
        }
    }
}

/// An aggregate's state and the stream version it reflects.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<S> {
    pub state: S,
    pub version: u64,
}

#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    snapshot_every: u64,
}

impl EventStore {
    pub fn new(pool: PgPool, snapshot_every: u64) -> Self {
        Self {
            pool,
            snapshot_every: snapshot_every.max(1),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A snapshot is due when an append crosses a multiple of `snapshot_every`.
    pub fn snapshot_due(&self, old_version: u64, new_version: u64) -> bool {
        new_version / self.snapshot_every > old_version / self.snapshot_every
    }

    /// Wakes tailers. Sent after commit, outside the append's transaction: NOTIFY inside it
    /// would take a cluster-wide lock at commit. A lost notification costs one poll interval.
    pub async fn notify_appended(&self) -> Result<(), StoreError> {
        sqlx::query("select pg_notify($1, '')")
            .bind(EVENTS_CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl EventStore {
    /// Load, decide, append at the loaded version; a lost race reloads and decides again.
    /// The simple command path for tools, tests and benchmarks (the write-service adds
    /// `If-Match` and idempotency on top of the same steps).
    pub async fn decide_and_append<A: Aggregate, E>(
        &self,
        stream_id: &str,
        metadata: serde_json::Value,
        decide: impl Fn(&A::State) -> Result<Vec<DomainEvent>, E>,
    ) -> Result<Result<AppendOutcome, E>, StoreError> {
        let mut attempts = 0;
        loop {
            let loaded = self.load::<A>(stream_id).await?;
            let events = match decide(&loaded.state) {
                Ok(events) => events,
                Err(e) => return Ok(Err(e)),
            };
            let new_version = loaded.version + events.len() as u64;
            let snapshot = if self.snapshot_due(loaded.version, new_version) {
                let state = events.iter().fold(loaded.state, |s, e| A::apply(s, e));
                serde_json::to_value(&state).ok().map(|state| Snapshot {
                    state_schema: A::STATE_SCHEMA_VERSION,
                    state,
                })
            } else {
                None
            };
            let append = StreamAppend {
                stream_id: stream_id.to_owned(),
                stream_type: A::STREAM_TYPE,
                expected_version: loaded.version,
                events: events
                    .iter()
                    .map(|e| NewEvent {
                        event_id: uuid::Uuid::new_v4(),
                        event: e.encode(),
                        metadata: metadata.clone(),
                    })
                    .collect(),
                snapshot,
            };
            match self.append(std::slice::from_ref(&append), None).await {
                Err(StoreError::WrongExpectedVersion { .. }) if attempts < 50 => attempts += 1,
                other => return other.map(Ok),
            }
        }
    }
}
