//! Appending events: one transaction, stream locks first, all rows in one statement.

use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::{EventStore, StoreError, stored_u64};
use domain::events::EncodedEvent;
use domain::position::Position;

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event: EncodedEvent,
    pub metadata: Value,
}

/// Aggregate state to store beside the append, written when a snapshot is due.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state_schema: i32,
    pub state: Value,
}

#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub stream_id: String,
    pub stream_type: &'static str,
    /// The version the caller decided on; 0 means "the stream must not exist yet".
    pub expected_version: u64,
    pub events: Vec<NewEvent>,
    pub snapshot: Option<Snapshot>,
}

/// An idempotency key, written in the same transaction as the events it produced, with the
/// fingerprint of the request that used it and what the caller wants a retry to get back.
/// The store keeps `outcome`'s value opaque; it is built from the append's outcome (the new
/// versions and the position), hence the function. The append records it in the same round
/// trip as the events, before the position is known: the function is then given the new
/// versions and [`Position::ZERO`], and the store writes the real position (in its text
/// form, as a consistency token) at `position_path` of the value. An empty path records the
/// value as it is.
#[derive(Clone, Copy)]
pub struct IdempotencyRecord<'a> {
    pub key: &'a str,
    pub fingerprint: &'a Value,
    pub outcome: &'a (dyn Fn(&AppendOutcome) -> Value + Send + Sync),
    pub position_path: &'a [&'a str],
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppendOutcome {
    /// New version of each stream, in the order given.
    pub versions: Vec<u64>,
    /// Position of the last event written: the consistency token.
    pub position: Position,
}

/// An append's versions as the `bigint`s they are stored as: where the stream must be and
/// where it moves to. Checked before anything is written, so no version is ever clamped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Versions {
    expected: i64,
    new: i64,
    /// `new`, as the caller counts versions.
    new_u64: u64,
}

impl Versions {
    fn of(a: &StreamAppend) -> Result<Self, StoreError> {
        let overflow = || StoreError::VersionOverflow {
            stream_id: a.stream_id.clone(),
            expected: a.expected_version,
            events: a.events.len(),
        };
        let new_u64 = u64::try_from(a.events.len())
            .ok()
            .and_then(|n| a.expected_version.checked_add(n))
            .ok_or_else(overflow)?;
        let new = i64::try_from(new_u64).map_err(|_| overflow())?;
        // expected <= new, so it fits as well.
        let expected = i64::try_from(a.expected_version).map_err(|_| overflow())?;
        Ok(Versions {
            expected,
            new,
            new_u64,
        })
    }
}

impl EventStore {
    /// Appends to one or more streams atomically. Each stream must be at its expected
    /// version, else nothing is written and `WrongExpectedVersion` names the first that moved.
    #[tracing::instrument(skip_all, err, fields(streams = appends.len()))]
    pub async fn append(
        &self,
        appends: &[StreamAppend],
        idempotency: Option<IdempotencyRecord<'_>>,
    ) -> Result<AppendOutcome, StoreError> {
        let stream_versions = versions_of(appends)?;
        // One statement, its own transaction. Dropped before it finishes, this future leaves
        // the statement's answer unread on the connection: then the connection is closed,
        // never pooled again.
        let mut guard = CloseUnlessFinished {
            conn: self.pool.acquire().await?,
            finished: false,
        };
        let outcome = write(&mut guard.conn, appends, &stream_versions, idempotency).await;
        guard.finished = true;
        outcome
    }

    /// [`append`](Self::append) inside the caller's transaction, so that the caller's own
    /// rows commit (or roll back) with the events. The caller commits, then calls
    /// [`notify_appended`](Self::notify_appended); on an error it rolls back.
    ///
    /// The append must be the transaction's first write (a `select ... for update` counts):
    /// its stream locks and its xid must come together, else a stream's events could sort
    /// out of stream order in the tail (docs/ARCHITECTURE.md). A transaction that already
    /// wrote is refused with [`StoreError::AppendNotFirst`], before anything is written.
    /// Unlike `append`, dropping this future half-way leaves the cleanup to the caller's
    /// transaction.
    #[tracing::instrument(skip_all, err, fields(streams = appends.len()))]
    pub async fn append_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        appends: &[StreamAppend],
        idempotency: Option<IdempotencyRecord<'_>>,
    ) -> Result<AppendOutcome, StoreError> {
        let stream_versions = versions_of(appends)?;
        // `es_append` refuses to run after the transaction wrote (AppendNotFirst).
        write(tx, appends, &stream_versions, idempotency).await
    }
}

pub(crate) fn versions_of(appends: &[StreamAppend]) -> Result<Vec<Versions>, StoreError> {
    appends.iter().map(Versions::of).collect()
}

/// A pooled connection that is closed, not returned to the pool, unless the work on it ran
/// to its end (success or error alike: an error leaves sqlx's own rollback queued).
pub(crate) struct CloseUnlessFinished {
    pub(crate) conn: PoolConnection<Postgres>,
    pub(crate) finished: bool,
}

impl Drop for CloseUnlessFinished {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

/// Writes the append on `conn` with one call of `es_append` (see its migration): stream
/// locks first, then every event in one statement, snapshots and the idempotency key. On a
/// connection outside a transaction that call is its own transaction; inside one, committing
/// is the caller's.
pub(crate) async fn write(
    conn: &mut PgConnection,
    appends: &[StreamAppend],
    stream_versions: &[Versions],
    idempotency: Option<IdempotencyRecord<'_>>,
) -> Result<AppendOutcome, StoreError> {
    let mut streams = StreamColumns::default();
    for (a, v) in appends.iter().zip(stream_versions) {
        streams.ids.push(a.stream_id.as_str());
        streams.types.push(a.stream_type);
        streams.expected.push(v.expected);
        streams.new.push(v.new);
    }
    let n: usize = appends.iter().map(|a| a.events.len()).sum();
    let mut events = EventColumns::with_capacity(n);
    let mut snapshots = SnapshotColumns::default();
    for (a, v) in appends.iter().zip(stream_versions) {
        for (position, e) in (v.expected + 1..=v.new).zip(&a.events) {
            events.stream_ids.push(a.stream_id.as_str());
            events.positions.push(position);
            events.ids.push(e.event_id);
            events.types.push(e.event.event_type);
            events.versions.push(e.event.schema_version);
            events.data.push(&e.event.data);
            events.metadata.push(&e.metadata);
        }
        if let Some(s) = &a.snapshot {
            snapshots.stream_ids.push(a.stream_id.as_str());
            snapshots.versions.push(v.new);
            snapshots.schemas.push(s.state_schema);
            snapshots.states.push(&s.state);
        }
    }
    // The outcome a retry gets back, but for the position, which only the append learns:
    // `es_append` writes it in at `position_path`.
    let provisional = AppendOutcome {
        versions: stream_versions.iter().map(|v| v.new_u64).collect(),
        position: Position::ZERO,
    };
    let (key, request, outcome, position_path) = match idempotency {
        Some(r) => (
            Some(r.key),
            Some(r.fingerprint),
            Some((r.outcome)(&provisional)),
            r.position_path.to_vec(),
        ),
        None => (None, None, None, Vec::new()),
    };
    let appended = sqlx::query!(
        r#"select tx_id as "tx_id!", global_position as "global_position!"
           from es_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                          $16, $17, $18, $19)"#,
        &streams.ids as &[&str],
        &streams.types as &[&str],
        &streams.expected,
        &streams.new,
        &events.stream_ids as &[&str],
        &events.positions,
        &events.ids,
        &events.types as &[&str],
        &events.versions,
        &events.data as &[&Value],
        &events.metadata as &[&Value],
        &snapshots.stream_ids as &[&str],
        &snapshots.versions,
        &snapshots.schemas,
        &snapshots.states as &[&Value],
        key,
        request,
        outcome,
        &position_path as &[&str],
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| refusal(e, appends, key))?;
    let (tx_id, global_position) = (appended.tx_id, appended.global_position);
    Ok(AppendOutcome {
        position: Position {
            tx_id: stored_u64(
                "events.tx_id",
                tx_id,
                format_args!("event at global position {global_position}"),
            )?,
            global_position,
        },
        ..provisional
    })
}

#[derive(Default)]
struct StreamColumns<'a> {
    ids: Vec<&'a str>,
    types: Vec<&'static str>,
    expected: Vec<i64>,
    new: Vec<i64>,
}

struct EventColumns<'a> {
    stream_ids: Vec<&'a str>,
    positions: Vec<i64>,
    ids: Vec<Uuid>,
    types: Vec<&'static str>,
    versions: Vec<i32>,
    data: Vec<&'a Value>,
    metadata: Vec<&'a Value>,
}

impl EventColumns<'_> {
    fn with_capacity(n: usize) -> Self {
        Self {
            stream_ids: Vec::with_capacity(n),
            positions: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        }
    }
}

#[derive(Default)]
struct SnapshotColumns<'a> {
    stream_ids: Vec<&'a str>,
    versions: Vec<i64>,
    schemas: Vec<i32>,
    states: Vec<&'a Value>,
}

/// What a refused `es_append` means: a stream not at its expected version (ES001), a key
/// another request recorded (ES002), an append after the transaction wrote (ES003), or a
/// position clash on the unique index (rows written around the stream lock: still a
/// conflict, not a 500).
fn refusal(e: sqlx::Error, appends: &[StreamAppend], key: Option<&str>) -> StoreError {
    let Some(db) = e.as_database_error() else {
        return StoreError::Database(e);
    };
    match db.code().as_deref() {
        Some("ES001") => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Moved {
                stream_id: String,
                actual: i64,
            }
            let detail = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|pg| pg.detail())
                .and_then(|d| serde_json::from_str::<Moved>(d).ok());
            let Some(moved) = detail else {
                return StoreError::Database(e);
            };
            let expected = appends
                .iter()
                .find(|a| a.stream_id == moved.stream_id)
                .map_or(0, |a| a.expected_version);
            match stored_u64(
                "streams.version",
                moved.actual,
                format_args!("stream `{}`", moved.stream_id),
            ) {
                Ok(actual) => StoreError::WrongExpectedVersion {
                    stream_id: moved.stream_id,
                    expected,
                    actual,
                },
                Err(corrupt) => corrupt,
            }
        }
        Some("ES002") => StoreError::IdempotencyKeyTaken(key.unwrap_or_default().to_owned()),
        Some("ES003") => StoreError::AppendNotFirst,
        Some("23505") if db.constraint() == Some("events_stream_id_stream_position_key") => {
            match appends.first() {
                Some(a) => StoreError::WrongExpectedVersion {
                    stream_id: a.stream_id.clone(),
                    expected: a.expected_version,
                    actual: a.expected_version + 1,
                },
                None => StoreError::Database(e),
            }
        }
        _ => StoreError::Database(e),
    }
}

/// Stores what an idempotent command answers; refused if another request recorded the key
/// first (committed, or still in its transaction: this waits for it).
pub(crate) async fn record_outcome(
    conn: &mut PgConnection,
    record: IdempotencyRecord<'_>,
    outcome: &AppendOutcome,
) -> Result<(), StoreError> {
    let recorded = (record.outcome)(outcome);
    let inserted = sqlx::query!(
        "insert into idempotency_keys (idempotency_key, request, outcome)
             values ($1, $2, $3)
             on conflict (idempotency_key) do nothing",
        record.key,
        record.fingerprint,
        recorded,
    )
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        // Another request with this key committed first; ours must not count.
        return Err(StoreError::IdempotencyKeyTaken(record.key.to_owned()));
    }
    Ok(())
}
