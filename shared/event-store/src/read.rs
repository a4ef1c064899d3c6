//! Reading the store: one stream (with snapshots), idempotency records, and the committed
//! prefix of the whole log in the order the projector applies it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Aggregate, EventStore, Loaded, StoreError, query_bound, stored_u64};
use domain::events::{DomainEvent, current_schema_version, upcast};
use domain::position::Position;

/// An event as read back, upcast to its current schema version.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub position: Position,
    pub stream_id: String,
    pub stream_position: u64,
    pub event_id: Uuid,
    pub event_type: String,
    /// The version the data was written with.
    pub stored_schema_version: i32,
    /// The version of `data` after upcasting.
    pub schema_version: i32,
    pub data: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
    pub event: DomainEvent,
}

struct EventRow {
    global_position: i64,
    tx_id: i64,
    stream_id: String,
    stream_position: i64,
    event_id: Uuid,
    event_type: String,
    schema_version: i32,
    data: Value,
    metadata: Value,
    recorded_at: DateTime<Utc>,
}

/// A stored event that does not decode (unknown type or version, or data that does not
/// fit): the projector parks it or stops on it, but never skips it silently.
#[derive(Debug, Clone)]
pub struct UnreadableEvent {
    pub position: Position,
    pub stream_id: String,
    pub stream_position: u64,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    pub recorded_at: DateTime<Utc>,
    pub error: String,
}

/// One row of the tail: decoded, or kept as it was stored.
pub type TailRow = Result<RecordedEvent, UnreadableEvent>;

/// A row as the tail delivers it. An event that does not decode is kept as it was stored
/// (`Ok(Err(_))`); a position that no event can have is corruption of the log (`Err`).
fn decode_row(r: EventRow) -> Result<TailRow, StoreError> {
    let row = format_args!("event at global position {}", r.global_position);
    let position = Position {
        tx_id: stored_u64("events.tx_id", r.tx_id, row)?,
        global_position: r.global_position,
    };
    let stream_position = stored_u64("events.stream_position", r.stream_position, row)?;
    // Data at the current version (nearly all of it) is decoded in place; only an upcast
    // copies, because an event that fails to decode is kept as it was stored.
    let current = current_schema_version(&r.event_type) == Some(r.schema_version);
    let decoded = if current {
        DomainEvent::decode_current(&r.event_type, &r.data)
            .map(|event| (None, r.schema_version, event))
    } else {
        upcast(&r.event_type, r.schema_version, r.data.clone()).and_then(|(data, version)| {
            DomainEvent::decode_current(&r.event_type, &data)
                .map(|event| (Some(data), version, event))
        })
    };
    Ok(match decoded {
        Ok((upcast_data, schema_version, event)) => Ok(RecordedEvent {
            position,
            stream_position,
            stream_id: r.stream_id,
            event_id: r.event_id,
            event_type: r.event_type,
            stored_schema_version: r.schema_version,
            schema_version,
            data: upcast_data.unwrap_or(r.data),
            metadata: r.metadata,
            recorded_at: r.recorded_at,
            event,
        }),
        Err(e) => Err(UnreadableEvent {
            position,
            stream_position,
            stream_id: r.stream_id,
            event_type: r.event_type,
            schema_version: r.schema_version,
            data: r.data,
            recorded_at: r.recorded_at,
            error: e.to_string(),
        }),
    })
}

fn decode_strict(r: EventRow) -> Result<RecordedEvent, StoreError> {
    let global_position = r.global_position;
    decode_row(r)?.map_err(|u| StoreError::Decode {
        global_position,
        stream_id: u.stream_id,
        message: u.error,
    })
}

/// What a command recorded under an idempotency key, with the fingerprint of its request.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOutcome {
    pub fingerprint: Value,
    pub outcome: Value,
}

/// Where a stream read stops.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    End,
    Version(u64),
    Time(DateTime<Utc>),
}

/// The `stream_position` and `recorded_at` bounds of a stream read up to `until`.
fn until_bounds(until: Until) -> (i64, Option<DateTime<Utc>>) {
    match until {
        Until::End => (i64::MAX, None),
        Until::Version(v) => (query_bound(v), None),
        Until::Time(t) => (i64::MAX, Some(t)),
    }
}

// The event reads below repeat their column list: a checked query is one string literal.
// `tx_id` is an xid8, read as the int8 it fits in.

impl EventStore {
    /// Events of one stream after `after_version`, up to `until`, in stream order.
    #[tracing::instrument(skip_all, err, fields(stream_id))]
    pub async fn read_stream(
        &self,
        stream_id: &str,
        after_version: u64,
        until: Until,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let (max_version, max_time) = until_bounds(until);
        let rows = sqlx::query_as!(
            EventRow,
            r#"select global_position, tx_id::text::int8 as "tx_id!", stream_id, stream_position,
                      event_id, event_type, schema_version, data, metadata, recorded_at
               from events
               where stream_id = $1 and stream_position > $2 and stream_position <= $3
                 and ($4::timestamptz is null or recorded_at <= $4)
               order by stream_position"#,
            stream_id,
            query_bound(after_version),
            max_version,
            max_time,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(decode_strict).collect()
    }

    /// Current state: the latest snapshot of the current state schema plus the events after it.
    #[tracing::instrument(skip_all, err, fields(stream_id))]
    pub async fn load<A: Aggregate>(
        &self,
        stream_id: &str,
    ) -> Result<Loaded<A::State>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_on::<A>(&mut conn, stream_id).await
    }

    /// State from a full replay of the stream, ignoring snapshots, up to `until`.
    pub async fn replay<A: Aggregate>(
        &self,
        stream_id: &str,
        until: Until,
    ) -> Result<Loaded<A::State>, StoreError> {
        let start = Loaded {
            state: A::State::default(),
            version: 0,
        };
        let mut conn = self.pool.acquire().await?;
        fold::<A>(&mut conn, stream_id, start, until).await
    }

    /// What the command that used `key` recorded, if one did.
    pub async fn stored_outcome(&self, key: &str) -> Result<Option<StoredOutcome>, StoreError> {
        Ok(sqlx::query_as!(
            StoredOutcome,
            r#"select request as fingerprint, outcome from idempotency_keys
               where idempotency_key = $1"#,
            key
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Up to `limit` events after `after`, in `(tx_id, global_position)` order, from
    /// transactions that can no longer commit below them: everything below the oldest
    /// running xid is final, so a reader that advances past it never skips a late commit.
    /// One statement, so the snapshot bound and the rows come from the same snapshot.
    #[tracing::instrument(skip_all, err)]
    pub async fn read_committed_after(
        &self,
        after: Position,
        limit: i64,
    ) -> Result<Vec<TailRow>, StoreError> {
        let rows = sqlx::query_as!(
            EventRow,
            r#"select global_position, tx_id::text::int8 as "tx_id!", stream_id, stream_position,
                      event_id, event_type, schema_version, data, metadata, recorded_at
               from events
               where (tx_id, global_position) > ($1::text::xid8, $2)
                 and tx_id < pg_snapshot_xmin(pg_current_snapshot())
               order by tx_id, global_position
               limit $3"#,
            after.tx_id.to_string(),
            after.global_position,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(decode_row).collect()
    }

    /// For each `(stream, before)` whose stream is of `stream_type` (the `streams` column set
    /// by its first append), the stream's events with `stream_position < before`, in stream
    /// order: the history a projector needs to interpret a batch's events. Streams of another
    /// type, or unknown, give no rows.
    #[tracing::instrument(skip_all, err)]
    pub async fn read_stream_prefixes(
        &self,
        stream_type: &str,
        prefixes: &[(String, u64)],
    ) -> Result<Vec<TailRow>, StoreError> {
        // `< before` as `<= before - 1`, so that the bound saturates exactly.
        let (streams, lasts): (Vec<String>, Vec<i64>) = prefixes
            .iter()
            .map(|(s, before)| (s.clone(), query_bound(before.saturating_sub(1))))
            .unzip();
        let rows = sqlx::query_as!(
            EventRow,
            r#"select e.global_position, e.tx_id::text::int8 as "tx_id!",
                      e.stream_id, e.stream_position, e.event_id, e.event_type,
                      e.schema_version, e.data, e.metadata, e.recorded_at
               from unnest($1::text[], $2::int8[]) as p(stream_id, last_position)
               join streams s using (stream_id)
               join events e using (stream_id)
               where s.stream_type = $3 and e.stream_position <= p.last_position
               order by e.stream_id, e.stream_position"#,
            &streams,
            &lasts,
            stream_type,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(decode_row).collect()
    }

    /// Committed events after `after` (how far a reader at `after` lags, counting events
    /// still held back by an older open transaction) and when the oldest was recorded.
    pub async fn lag_after(
        &self,
        after: Position,
    ) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let row = sqlx::query!(
            r#"select count(*) as "count!", min(recorded_at) as oldest from events
               where (tx_id, global_position) > ($1::text::xid8, $2)"#,
            after.tx_id.to_string(),
            after.global_position,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.count, row.oldest))
    }

    /// The last committed event in read order, if any. It may not be readable by the tail
    /// yet (an older transaction still open); a reader that reaches it is caught up.
    pub async fn head(&self) -> Result<Option<Position>, StoreError> {
        let row = sqlx::query!(
            r#"select tx_id::text::int8 as "tx_id!", global_position from events
               order by tx_id desc, global_position desc limit 1"#,
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let (tx, gp) = (r.tx_id, r.global_position);
            Ok(Position {
                tx_id: stored_u64(
                    "events.tx_id",
                    tx,
                    format_args!("event at global position {gp}"),
                )?,
                global_position: gp,
            })
        })
        .transpose()
    }
}

/// [`EventStore::load`] on a given connection (a command's own transaction, for one).
pub(crate) async fn load_on<A: Aggregate>(
    conn: &mut PgConnection,
    stream_id: &str,
) -> Result<Loaded<A::State>, StoreError> {
    let mut read = read_streams(conn, &[stream_id.to_owned()]).await?;
    let stored = read.remove(stream_id).unwrap_or_default();
    load_from::<A>(conn, stream_id, stored).await
}

/// What one statement read of a stream: its latest snapshot (of whatever state schema) and
/// the events after it.
#[derive(Debug, Default)]
pub(crate) struct StoredStream {
    snapshot: Option<StoredSnapshot>,
    events: Vec<StoredEvent>,
}

#[derive(Debug)]
struct StoredSnapshot {
    version: i64,
    state_schema: i32,
    /// The state's JSON text, decoded straight into the aggregate's state: going through
    /// `Value` first doubled the allocations of every load (S1's profile of the
    /// write-service, when a product's state still listed every open reservation).
    state: String,
}

#[derive(Debug)]
struct StoredEvent {
    global_position: i64,
    stream_position: i64,
    event_type: String,
    schema_version: i32,
    data: Value,
}

/// Several streams in one round trip: each stream's latest snapshot and the events after it.
/// One statement, so every stream is read from the same snapshot of the database.
pub(crate) async fn read_streams(
    conn: &mut PgConnection,
    stream_ids: &[String],
) -> Result<HashMap<String, StoredStream>, StoreError> {
    // The snapshot row sorts before its stream's events: they all come after its version.
    // Both joins are lateral (the `limit` keeps the planner from flattening the first), so
    // each is an index lookup per stream whatever it estimates for the array: a hash join
    // scans every snapshot row, live and dead, and hot products' rows are rewritten often
    // (a perf profile of S1 showed PostgreSQL's time in that scan).
    let rows = sqlx::query!(
        r#"with wanted as (
             select w.stream_id, s.stream_version, s.state_schema, s.state
             from unnest($1::text[]) as w(stream_id)
             left join lateral (
               select stream_version, state_schema, state from snapshots
               where snapshots.stream_id = w.stream_id
               limit 1
             ) s on true
           )
           select stream_id as "stream_id!", stream_version as "position!",
                  state_schema as "state_schema?", state::text as "data!",
                  null::text as "event_type?", null::int4 as "schema_version?",
                  null::int8 as "global_position?"
           from wanted where stream_version is not null
           union all
           select w.stream_id, e.stream_position, null, e.data::text, e.event_type,
                  e.schema_version, e.global_position
           from wanted w cross join lateral (
             select stream_position, data, event_type, schema_version, global_position
             from events
             where events.stream_id = w.stream_id
               and events.stream_position > coalesce(w.stream_version, 0)
             order by stream_position
             offset 0
           ) e
           order by 1, 2"#,
        stream_ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut streams: HashMap<String, StoredStream> = HashMap::with_capacity(stream_ids.len());
    for row in rows {
        match (row.event_type, row.schema_version, row.global_position) {
            (Some(event_type), Some(schema_version), Some(global_position)) => {
                let data = serde_json::from_str(&row.data).map_err(|e| StoreError::Decode {
                    global_position,
                    stream_id: row.stream_id.clone(),
                    message: e.to_string(),
                })?;
                streams
                    .entry(row.stream_id)
                    .or_default()
                    .events
                    .push(StoredEvent {
                        global_position,
                        stream_position: row.position,
                        event_type,
                        schema_version,
                        data,
                    });
            }
            _ => {
                streams.entry(row.stream_id).or_default().snapshot = Some(StoredSnapshot {
                    version: row.position,
                    state_schema: row.state_schema.unwrap_or_default(),
                    state: row.data,
                });
            }
        }
    }
    Ok(streams)
}

/// The aggregate from what [`read_streams`] read of its stream. A snapshot of another state
/// schema version is no use: the stream is then replayed whole, in a second round trip.
pub(crate) async fn load_from<A: Aggregate>(
    conn: &mut PgConnection,
    stream_id: &str,
    stored: StoredStream,
) -> Result<Loaded<A::State>, StoreError> {
    let start = match stored.snapshot {
        None => Loaded {
            state: A::State::default(),
            version: 0,
        },
        Some(s) if s.state_schema == A::STATE_SCHEMA_VERSION => {
            let state = serde_json::from_str(&s.state).map_err(|source| StoreError::Snapshot {
                stream_id: stream_id.to_owned(),
                source,
            })?;
            let version = stored_u64(
                "snapshots.stream_version",
                s.version,
                format_args!("stream `{stream_id}`"),
            )?;
            Loaded { state, version }
        }
        Some(_) => {
            let start = Loaded {
                state: A::State::default(),
                version: 0,
            };
            return fold::<A>(conn, stream_id, start, Until::End).await;
        }
    };
    stored
        .events
        .into_iter()
        .try_fold(start, |acc, e| apply_stored::<A>(stream_id, acc, e))
}

fn apply_stored<A: Aggregate>(
    stream_id: &str,
    acc: Loaded<A::State>,
    e: StoredEvent,
) -> Result<Loaded<A::State>, StoreError> {
    let StoredEvent {
        global_position,
        stream_position,
        event_type,
        schema_version,
        data,
    } = e;
    let event =
        DomainEvent::decode(&event_type, schema_version, data).map_err(|e| StoreError::Decode {
            global_position,
            stream_id: stream_id.to_owned(),
            message: e.to_string(),
        })?;
    Ok(Loaded {
        state: A::apply(acc.state, &event),
        version: stored_u64(
            "events.stream_position",
            stream_position,
            format_args!("event at global position {global_position}"),
        )?,
    })
}

async fn fold<A: Aggregate>(
    conn: &mut PgConnection,
    stream_id: &str,
    start: Loaded<A::State>,
    until: Until,
) -> Result<Loaded<A::State>, StoreError> {
    // Only what a fold needs, by position: a long replay is dominated by moving and
    // decoding rows, and ids, metadata and times would be thrown away.
    let (max_version, max_time) = until_bounds(until);
    let rows = sqlx::query!(
        "select global_position, stream_position, event_type, schema_version, data
             from events
             where stream_id = $1 and stream_position > $2 and stream_position <= $3
               and ($4::timestamptz is null or recorded_at <= $4)
             order by stream_position",
        stream_id,
        query_bound(start.version),
        max_version,
        max_time,
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().try_fold(start, |acc, row| {
        let event = StoredEvent {
            global_position: row.global_position,
            stream_position: row.stream_position,
            event_type: row.event_type,
            schema_version: row.schema_version,
            data: row.data,
        };
        apply_stored::<A>(stream_id, acc, event)
    })
}
