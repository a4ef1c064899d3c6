//! The PostgreSQL event store: gap-safe appends (pooled, or inside the caller's transaction),
//! stream loads with snapshots, the one command path ([`EventStore::execute`]: load, decide,
//! append, retry a lost race, with expected versions and idempotency records), and the
//! committed-prefix read the projector tails. It knows nothing of HTTP: an idempotency record
//! keeps whatever outcome the caller gives it.
//!
//! See `migrations/` for the tables and `docs/ARCHITECTURE.md` for why events carry `tx_id`.

mod append;
mod command;
pub mod connect;
pub mod lease;
pub mod listen;
mod read;

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use tokio::sync::Notify;

use domain::events::DomainEvent;
use domain::order::{self, OrderState};
use domain::product::{self, ProductState};

pub use append::{AppendOutcome, IdempotencyRecord, NewEvent, Snapshot, StreamAppend};
pub use command::{Command, CommandError, Decide, Decision, Executed, Retries};
pub use read::{RecordedEvent, StoredOutcome, TailRow, UnreadableEvent, Until};

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
    /// [`EventStore::append_in`] was given a transaction that had already written: the
    /// append must take its stream locks as the transaction's first write.
    #[error("an append inside a transaction must be its first write")]
    AppendNotFirst,
    /// A decision appended to (or named as its primary) a stream it had not loaded, or
    /// loaded it as another aggregate: a bug in the caller.
    #[error("stream `{stream_id}` was not loaded as `{stream_type}` before the decision used it")]
    NotLoaded {
        stream_id: String,
        stream_type: &'static str,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

async fn notify(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query!("select pg_notify($1, '')", EVENTS_CHANNEL)
        .execute(pool)
        .await?;
    Ok(())
}

/// The task of [`EventStore::wake_tailers`], until the pool closes.
async fn send_notifications(pool: PgPool, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = notify(&pool).await {
            // Tailers fall back to polling; the commits themselves succeeded.
            tracing::warn!(error = %e, "could not notify tailers");
        }
    }
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
    type State: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static;

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
    /// The task behind [`EventStore::wake_tailers`], started by its first call.
    waker: Arc<OnceLock<Arc<Notify>>>,
}

impl EventStore {
    pub fn new(pool: PgPool, snapshot_every: u64) -> Self {
        Self {
            pool,
            snapshot_every: snapshot_every.max(1),
            waker: Arc::default(),
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
        notify(&self.pool).await
    }

    /// [`notify_appended`](Self::notify_appended) without waiting for it, and without a
    /// round trip of each caller's own: a task of this store sends one NOTIFY at once, and
    /// every call made while it is in flight is answered by one more after it. Tailers only
    /// need to wake after the last commit, not once per commit. Outside a Tokio runtime it
    /// does nothing (tailers poll).
    pub fn wake_tailers(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let wake = self.waker.get_or_init(|| {
            let wake = Arc::new(Notify::new());
            runtime.spawn(send_notifications(self.pool.clone(), wake.clone()));
            wake
        });
        // Stores a permit when the task is busy: calls meanwhile make one NOTIFY more.
        wake.notify_one();
    }
}
