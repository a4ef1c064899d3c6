//! Appending events: one transaction, stream locks first, all rows in one statement.

use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::{Acquire, PgConnection, Postgres, Transaction};
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
/// version and position), hence the function.
#[derive(Clone, Copy)]
pub struct IdempotencyRecord<'a> {
    pub key: &'a str,
    pub fingerprint: &'a Value,
    pub outcome: &'a (dyn Fn(&AppendOutcome) -> Value + Send + Sync),
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
        // Dropped before it finishes, this future may have left the connection inside a
        // transaction, or with `BEGIN` in flight (sqlx 0.9.0's `begin` is not cancel-safe,
        // transact-rs/sqlx#4393): then the connection is closed, never pooled again.
        let mut guard = CloseUnlessFinished {
            conn: self.pool.acquire().await?,
            finished: false,
        };
        let outcome = async {
            let mut tx = guard.conn.begin().await?;
            let outcome = write(&mut tx, appends, &stream_versions, idempotency).await?;
            tx.commit().await?;
            Ok(outcome)
        }
        .await;
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
        let wrote = sqlx::query_scalar!(
            r#"select pg_current_xact_id_if_assigned() is not null as "wrote!""#
        )
        .fetch_one(&mut **tx)
        .await?;
        if wrote {
            return Err(StoreError::AppendNotFirst);
        }
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

/// Writes the append inside `tx`: stream locks first, then every event in one statement,
/// snapshots and the idempotency key. Committing is the caller's.
pub(crate) async fn write(
    tx: &mut PgConnection,
    appends: &[StreamAppend],
    stream_versions: &[Versions],
    idempotency: Option<IdempotencyRecord<'_>>,
) -> Result<AppendOutcome, StoreError> {
    // Locks in a fixed order so two multi-stream appends cannot deadlock.
    let mut order: Vec<usize> = (0..appends.len()).collect();
    order.sort_by(|&a, &b| appends[a].stream_id.cmp(&appends[b].stream_id));
    for &i in &order {
        lock_stream(tx, &appends[i], stream_versions[i]).await?;
    }

    let n: usize = appends.iter().map(|a| a.events.len()).sum();
    let mut stream_ids = Vec::with_capacity(n);
    let mut stream_positions = Vec::with_capacity(n);
    let mut event_ids = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut data = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    for (a, v) in appends.iter().zip(stream_versions) {
        for (position, e) in (v.expected + 1..=v.new).zip(&a.events) {
            stream_ids.push(a.stream_id.clone());
            stream_positions.push(position);
            event_ids.push(e.event_id);
            types.push(e.event.event_type.to_owned());
            versions.push(e.event.schema_version);
            data.push(&e.event.data);
            metadata.push(&e.metadata);
        }
    }
    // One statement for every event of the command.
    let inserted = sqlx::query!(
        r#"with inserted as (
             insert into events
                 (stream_id, stream_position, event_id, event_type, schema_version, data, metadata)
             select * from unnest($1::text[], $2::int8[], $3::uuid[], $4::text[], $5::int4[], $6::jsonb[], $7::jsonb[])
             returning tx_id, global_position
         )
         select max(tx_id)::text::int8 as "tx_id!", max(global_position) as "global_position!"
         from inserted"#,
        &stream_ids,
        &stream_positions,
        &event_ids,
        &types,
        &versions,
        &data as &[&Value],
        &metadata as &[&Value],
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| conflict_from_unique_violation(e, appends))?;
    let (tx_id, global_position) = (inserted.tx_id, inserted.global_position);

    for (a, v) in appends.iter().zip(stream_versions) {
        if let Some(s) = &a.snapshot {
            sqlx::query!(
                "insert into snapshots (stream_id, stream_version, state_schema, state)
                 values ($1, $2, $3, $4)
                 on conflict (stream_id) do update
                     set stream_version = excluded.stream_version,
                         state_schema = excluded.state_schema,
                         state = excluded.state,
                         taken_at = now()
                     where snapshots.stream_version < excluded.stream_version",
                a.stream_id,
                v.new,
                s.state_schema,
                s.state,
            )
            .execute(&mut *tx)
            .await?;
        }
    }

    let outcome = AppendOutcome {
        versions: stream_versions.iter().map(|v| v.new_u64).collect(),
        position: Position {
            tx_id: stored_u64(
                "events.tx_id",
                tx_id,
                format_args!("event at global position {global_position}"),
            )?,
            global_position,
        },
    };

    if let Some(record) = idempotency {
        record_outcome(tx, record, &outcome).await?;
    }

    Ok(outcome)
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

/// Takes the stream's row lock and moves its version, as the transaction's first write.
///
/// Every append names an exact expected version, so a writer that had to wait for another's
/// lock always fails its check (the holder moved the version) and writes nothing. Hence a
/// stream's events are in the same order by `(tx_id, global_position)` as by stream
/// position, which the projector relies on, even for multi-stream appends.
async fn lock_stream(
    tx: &mut PgConnection,
    a: &StreamAppend,
    v: Versions,
) -> Result<(), StoreError> {
    let moved = if a.expected_version == 0 {
        // A concurrent creator holding the key makes this wait, then do nothing.
        sqlx::query!(
            "insert into streams (stream_id, stream_type, version) values ($1, $2, $3)
             on conflict (stream_id) do nothing",
            a.stream_id,
            a.stream_type,
            v.new,
        )
        .execute(&mut *tx)
        .await?
    } else {
        // Waits for a concurrent appender's lock, then re-checks the version it left.
        sqlx::query!(
            "update streams set version = $3, updated_at = now()
             where stream_id = $1 and version = $2",
            a.stream_id,
            v.expected,
            v.new,
        )
        .execute(&mut *tx)
        .await?
    };
    if moved.rows_affected() == 1 {
        return Ok(());
    }
    let actual = sqlx::query_scalar!(
        "select version from streams where stream_id = $1",
        a.stream_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    Err(StoreError::WrongExpectedVersion {
        stream_id: a.stream_id.clone(),
        expected: a.expected_version,
        // No row: the stream does not exist, which is version 0.
        actual: actual
            .map(|v| {
                stored_u64(
                    "streams.version",
                    v,
                    format_args!("stream `{}`", a.stream_id),
                )
            })
            .transpose()?
            .unwrap_or(0),
    })
}

/// The stream lock makes a duplicate stream position unreachable; if the unique index
/// fires anyway (e.g. rows written around the lock), it is still a conflict, not a 500.
fn conflict_from_unique_violation(e: sqlx::Error, appends: &[StreamAppend]) -> StoreError {
    let is_position_clash = e.as_database_error().is_some_and(|d| {
        d.code().as_deref() == Some("23505")
            && d.constraint() == Some("events_stream_id_stream_position_key")
    });
    match (is_position_clash, appends.first()) {
        (true, Some(a)) => StoreError::WrongExpectedVersion {
            stream_id: a.stream_id.clone(),
            expected: a.expected_version,
            actual: a.expected_version + 1,
        },
        _ => StoreError::Database(e),
    }
}
