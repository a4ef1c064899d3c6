//! The process's own tables (migrations/20261129000001_fulfilment.sql): its checkpoint,
//! the inbox of handled events, one row per order, the outbox and the deadlines. Every
//! write here runs inside the caller's transaction and checks what it expects to change
//! (compare-and-set), so two writers can never both commit the same step.

use chrono::{DateTime, Utc};
use domain::Position;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The process's name in `process_checkpoints` and `process_inbox`.
pub const PROCESS: &str = "fulfilment";

/// Where an order is in the fulfilment process.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum State {
    AwaitingPayment,
    Paid,
    Cancelled,
    Refunding,
    Refunded,
    Completed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum WorkKind {
    Charge,
    Refund,
    Email,
}

#[derive(Debug, Clone)]
pub struct OrderProcess {
    pub order_id: Uuid,
    pub state: State,
    pub version: i64,
    pub user_id: String,
    pub email: String,
    pub payment_method: String,
    pub amount_cents: i64,
    pub currency: String,
    pub payment_intent_id: Option<String>,
    pub confirmed_event_id: Uuid,
}

/// One piece of outside work.
#[derive(Debug, Clone)]
pub struct Work {
    pub id: Uuid,
    pub order_id: Uuid,
    pub kind: WorkKind,
    pub payload: Value,
    pub idempotency_key: String,
    pub cause_event_id: Uuid,
    pub attempts: i32,
    pub outcome_unknown: bool,
}

#[derive(Debug, Clone)]
pub struct Deadline {
    pub id: Uuid,
    pub order_id: Uuid,
    pub due_at: DateTime<Utc>,
}

/// Lost a compare-and-set: someone else changed the row first (another step of this
/// process, or a deposed leader). The transaction must roll back.
#[derive(Debug, thiserror::Error)]
#[error("{0} changed under this step")]
pub struct Moved(pub &'static str);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Moved(#[from] Moved),
    #[error("corrupt fulfilment row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

fn position_of(tx_id: i64, global_position: i64) -> Result<Position, StoreError> {
    Ok(Position {
        tx_id: u64::try_from(tx_id)
            .map_err(|_| StoreError::Corrupt(format!("checkpoint tx_id {tx_id}")))?,
        global_position,
    })
}

fn tx_id_of(p: Position) -> Result<i64, StoreError> {
    i64::try_from(p.tx_id).map_err(|_| StoreError::Corrupt(format!("position {p}")))
}

/// The checkpoint, created at zero the first time.
pub async fn checkpoint(pool: &PgPool) -> Result<Position, StoreError> {
    sqlx::query!(
        "insert into process_checkpoints (process, tx_id, global_position) values ($1, 0, 0)
         on conflict (process) do nothing",
        PROCESS
    )
    .execute(pool)
    .await?;
    let row = sqlx::query!(
        "select tx_id, global_position from process_checkpoints where process = $1",
        PROCESS
    )
    .fetch_one(pool)
    .await?;
    position_of(row.tx_id, row.global_position)
}

/// Moves the checkpoint from `from` to `to`, or fails with [`Moved`] if it is not at `from`.
pub async fn advance(
    conn: &mut PgConnection,
    from: Position,
    to: Position,
) -> Result<(), StoreError> {
    let done = sqlx::query!(
        "update process_checkpoints set tx_id = $2, global_position = $3, updated_at = now()
         where process = $1 and tx_id = $4 and global_position = $5",
        PROCESS,
        tx_id_of(to)?,
        to.global_position,
        tx_id_of(from)?,
        from.global_position,
    )
    .execute(conn)
    .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(Moved("the checkpoint").into())
    }
}

/// Records `event_id` as handled; false if it already was (a replay: do nothing).
pub async fn first_time(conn: &mut PgConnection, event_id: Uuid) -> Result<bool, StoreError> {
    let inserted = sqlx::query!(
        "insert into process_inbox (process, event_id) values ($1, $2) on conflict do nothing",
        PROCESS,
        event_id
    )
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

struct ProcessRow {
    order_id: Uuid,
    state: String,
    version: i64,
    user_id: String,
    email: String,
    payment_method: String,
    amount_cents: i64,
    currency: String,
    payment_intent_id: Option<String>,
    confirmed_event_id: Uuid,
}

impl TryFrom<ProcessRow> for OrderProcess {
    type Error = StoreError;
    fn try_from(r: ProcessRow) -> Result<Self, StoreError> {
        Ok(OrderProcess {
            state: r.state.parse().map_err(|_| {
                StoreError::Corrupt(format!("state `{}` of {}", r.state, r.order_id))
            })?,
            order_id: r.order_id,
            version: r.version,
            user_id: r.user_id,
            email: r.email,
            payment_method: r.payment_method,
            amount_cents: r.amount_cents,
            currency: r.currency,
            payment_intent_id: r.payment_intent_id,
            confirmed_event_id: r.confirmed_event_id,
        })
    }
}

pub async fn process(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<OrderProcess>, StoreError> {
    sqlx::query_as!(
        ProcessRow,
        "select order_id, state, version, user_id, email, payment_method, amount_cents, currency,
                payment_intent_id, confirmed_event_id
         from fulfilment_orders where order_id = $1",
        order_id
    )
    .fetch_optional(conn)
    .await?
    .map(OrderProcess::try_from)
    .transpose()
}

/// Starts following an order; false if it is followed already.
pub async fn start(conn: &mut PgConnection, p: &OrderProcess) -> Result<bool, StoreError> {
    let inserted = sqlx::query!(
        "insert into fulfilment_orders (order_id, state, user_id, email, payment_method,
                                        amount_cents, currency, confirmed_event_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict do nothing",
        p.order_id,
        p.state.as_str(),
        p.user_id,
        p.email,
        p.payment_method,
        p.amount_cents,
        p.currency,
        p.confirmed_event_id,
    )
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Moves the order to `state` (and records the payment intent, if given), if it is still at
/// the version `p` was read at.
pub async fn set_state(
    conn: &mut PgConnection,
    p: &OrderProcess,
    state: State,
    payment_intent_id: Option<&str>,
) -> Result<(), StoreError> {
    let done = sqlx::query!(
        "update fulfilment_orders
         set state = $3, version = version + 1, updated_at = now(),
             payment_intent_id = coalesce($4, payment_intent_id)
         where order_id = $1 and version = $2",
        p.order_id,
        p.version,
        state.as_str(),
        payment_intent_id,
    )
    .execute(conn)
    .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(Moved("the order's process").into())
    }
}

/// Queues outside work; its idempotency key makes queuing it twice a no-op.
pub async fn enqueue(
    conn: &mut PgConnection,
    order_id: Uuid,
    kind: WorkKind,
    payload: &Value,
    idempotency_key: &str,
    cause_event_id: Uuid,
) -> Result<(), StoreError> {
    let kind: &'static str = kind.into();
    sqlx::query!(
        "insert into fulfilment_outbox (id, order_id, kind, payload, idempotency_key, cause_event_id)
         values ($1, $2, $3, $4, $5, $6) on conflict (idempotency_key) do nothing",
        Uuid::new_v4(),
        order_id,
        kind,
        payload,
        idempotency_key,
        cause_event_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

struct WorkRow {
    id: Uuid,
    order_id: Uuid,
    kind: String,
    payload: Value,
    idempotency_key: String,
    cause_event_id: Uuid,
    attempts: i32,
    outcome_unknown: bool,
}

impl TryFrom<WorkRow> for Work {
    type Error = StoreError;
    fn try_from(r: WorkRow) -> Result<Self, StoreError> {
        Ok(Work {
            kind: r
                .kind
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("work kind `{}` of {}", r.kind, r.id)))?,
            id: r.id,
            order_id: r.order_id,
            payload: r.payload,
            idempotency_key: r.idempotency_key,
            cause_event_id: r.cause_event_id,
            attempts: r.attempts,
            outcome_unknown: r.outcome_unknown,
        })
    }
}

/// Pending work that is due, oldest first.
pub async fn due_work(pool: &PgPool, limit: i64) -> Result<Vec<Work>, StoreError> {
    sqlx::query_as!(
        WorkRow,
        "select id, order_id, kind, payload, idempotency_key, cause_event_id, attempts,
                outcome_unknown
         from fulfilment_outbox
         where status = 'pending' and next_attempt_at <= now()
         order by next_attempt_at limit $1",
        limit
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(Work::try_from)
    .collect()
}

/// The order's pending charge, if any.
pub async fn pending_charge(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<Work>, StoreError> {
    sqlx::query_as!(
        WorkRow,
        "select id, order_id, kind, payload, idempotency_key, cause_event_id, attempts,
                outcome_unknown
         from fulfilment_outbox
         where order_id = $1 and kind = 'charge' and status = 'pending'",
        order_id
    )
    .fetch_optional(conn)
    .await?
    .map(Work::try_from)
    .transpose()
}

/// Ends a piece of work (`done`, `cancelled`, or `failed`: refused for good, needs a person)
/// if nobody touched it since it was read at `attempts`.
pub async fn finish(
    conn: &mut PgConnection,
    w: &Work,
    status: &str,
    note: Option<&str>,
) -> Result<(), StoreError> {
    let done = sqlx::query!(
        "update fulfilment_outbox set status = $3, done_at = now(), last_error = coalesce($4, last_error)
         where id = $1 and status = 'pending' and attempts = $2",
        w.id,
        w.attempts,
        status,
        note,
    )
    .execute(conn)
    .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(Moved("the outbox entry").into())
    }
}

/// Counts an attempt before it is made, and marks its outcome unknown until it is
/// recorded: a crash mid-request leaves that mark, so a later instance never assumes a
/// charge it may have made was not made. `None`: someone else took the attempt.
pub async fn begin_attempt(pool: &PgPool, w: &Work) -> Result<Option<Work>, StoreError> {
    let done = sqlx::query!(
        "update fulfilment_outbox set attempts = attempts + 1, outcome_unknown = true
         where id = $1 and status = 'pending' and attempts = $2",
        w.id,
        w.attempts,
    )
    .execute(pool)
    .await?;
    Ok((done.rows_affected() == 1).then(|| Work {
        attempts: w.attempts + 1,
        outcome_unknown: true,
        ..w.clone()
    }))
}

/// Records why an attempt failed and when to try again. `outcome_unknown`: whether this or
/// an earlier attempt may have taken effect; false only when none can have.
pub async fn retry_later(
    pool: &PgPool,
    w: &Work,
    delay: std::time::Duration,
    outcome_unknown: bool,
    error: &str,
) -> Result<(), StoreError> {
    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    sqlx::query!(
        "update fulfilment_outbox
         set outcome_unknown = $3, last_error = $4,
             next_attempt_at = now() + make_interval(secs => $5::int8 / 1000.0)
         where id = $1 and status = 'pending' and attempts = $2",
        w.id,
        w.attempts,
        outcome_unknown,
        error,
        delay_ms,
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn add_deadline(
    conn: &mut PgConnection,
    order_id: Uuid,
    due_in: std::time::Duration,
) -> Result<(), StoreError> {
    let due_ms = i64::try_from(due_in.as_millis()).unwrap_or(i64::MAX);
    sqlx::query!(
        "insert into fulfilment_deadlines (id, order_id, kind, due_at)
         values ($1, $2, 'payment_timeout', now() + make_interval(secs => $3::int8 / 1000.0))",
        Uuid::new_v4(),
        order_id,
        due_ms,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Cancels the order's pending deadlines (its process moved on).
pub async fn cancel_deadlines(conn: &mut PgConnection, order_id: Uuid) -> Result<(), StoreError> {
    sqlx::query!(
        "update fulfilment_deadlines set status = 'cancelled'
         where order_id = $1 and status = 'pending'",
        order_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn due_deadlines(pool: &PgPool, limit: i64) -> Result<Vec<Deadline>, StoreError> {
    Ok(sqlx::query_as!(
        Deadline,
        "select id, order_id, due_at from fulfilment_deadlines
         where status = 'pending' and due_at <= now() order by due_at limit $1",
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// Ends a deadline (`fired` or `cancelled`) if it is still pending.
pub async fn end_deadline(
    conn: &mut PgConnection,
    id: Uuid,
    status: &str,
) -> Result<(), StoreError> {
    let done = sqlx::query!(
        "update fulfilment_deadlines set status = $2 where id = $1 and status = 'pending'",
        id,
        status
    )
    .execute(conn)
    .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(Moved("the deadline").into())
    }
}

/// What `fulfilment status` and the metrics report.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub checkpoint: Position,
    pub processes: Vec<(String, i64)>,
    pub work_waiting: Vec<(String, i64)>,
    pub work_failed: i64,
    pub oldest_due_deadline: Option<DateTime<Utc>>,
    pub pending_deadlines: i64,
}

pub async fn summary(pool: &PgPool) -> Result<Summary, StoreError> {
    let checkpoint = checkpoint(pool).await?;
    let processes = sqlx::query!(
        r#"select state, count(*) as "count!" from fulfilment_orders group by state order by state"#
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.state, r.count))
    .collect();
    let work_waiting = sqlx::query!(
        r#"select kind, count(*) as "count!" from fulfilment_outbox where status = 'pending'
           group by kind order by kind"#
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.kind, r.count))
    .collect();
    let work_failed = sqlx::query_scalar!(
        r#"select count(*) as "count!" from fulfilment_outbox where status = 'failed'"#
    )
    .fetch_one(pool)
    .await?;
    let deadlines = sqlx::query!(
        r#"select min(due_at) as oldest, count(*) as "count!" from fulfilment_deadlines
           where status = 'pending'"#
    )
    .fetch_one(pool)
    .await?;
    Ok(Summary {
        checkpoint,
        processes,
        work_waiting,
        work_failed,
        oldest_due_deadline: deadlines.oldest,
        pending_deadlines: deadlines.count,
    })
}
