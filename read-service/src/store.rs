//! The MongoDB side: which generation of each view is active, how far it has applied the
//! event log, and plain finds on it.
//!
//! Pointers and checkpoints are read on every request, so a rebuild's switch is followed at
//! once and a dropped generation is never remembered. Only operations pinned by the
//! projector's store-contract test are used: find with filter/sort/limit and count (no
//! aggregation, no `$slice`, see `docs/nx-27017-probe.md`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::ErrorKind;
use mongodb::{Cursor, Database};
use serde::de::DeserializeOwned;
use shared::Position;
use shared::api_error::ApiError;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::instrument;

use crate::reply::ReadError;

/// Names the active generation of each view: `{_id: view, active, latest}`.
pub const POINTERS: &str = "projections";
/// `{_id: "<view>_g<N>", projection, generation, position}`.
pub const CHECKPOINTS: &str = "projection_checkpoints";

/// The views the projector maintains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    Orders,
    Users,
    DailySales,
    Inventory,
}

impl View {
    pub const ALL: [View; 4] = [View::Orders, View::Users, View::DailySales, View::Inventory];

    pub fn name(self) -> &'static str {
        match self {
            View::Orders => "orders_view",
            View::Users => "users_orders_view",
            View::DailySales => "daily_sales",
            View::Inventory => "inventory_view",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("mongodb: {0}")]
    Driver(#[from] mongodb::error::Error),
    #[error("view document: {0}")]
    Shape(String),
}

impl StoreError {
    /// MongoDB is away or failing over: worth a retry, so 503 rather than 500.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Driver(e) = self else {
            return false;
        };
        match e.kind.as_ref() {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. } => true,
            // Shutdown, step-down and network codes a server sends while it goes away.
            ErrorKind::Command(c) => matches!(
                c.code,
                6 | 7 | 89 | 91 | 189 | 9001 | 10107 | 11600 | 11602 | 13435 | 13436
            ),
            _ => false,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "view store unavailable");
            return ApiError::unavailable("the view store");
        }
        ApiError::internal("view store error", &e)
    }
}

/// Reads an integer however the server stored it (some return small Int64 as Int32).
fn get_int(doc: &Document, key: &str) -> Option<i64> {
    match doc.get(key)? {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) if v.fract() == 0.0 => Some(*v as i64),
        _ => None,
    }
}

/// One view as a request sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewState {
    pub view: View,
    pub generation: i64,
    /// The checkpoint: everything up to here is applied. Zero when nothing is.
    pub position: Position,
}

/// The views behind one request, read before its data so the data is at least this fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub views: Vec<ViewState>,
}

impl Snapshot {
    /// The lowest checkpoint: what the answer as a whole is guaranteed to include.
    pub fn position(&self) -> Position {
        self.views
            .iter()
            .map(|v| v.position)
            .min()
            .unwrap_or(Position::ZERO)
    }

    /// The collection of the view's generation in this snapshot (generation 1 if the
    /// snapshot does not cover the view).
    pub fn collection(&self, view: View) -> String {
        let generation = self
            .views
            .iter()
            .find(|v| v.view == view)
            .map_or(1, |v| v.generation);
        format!("{}_g{generation}", view.name())
    }
}

/// Longest pause between two looks at the checkpoints while a request waits.
const MAX_POLL: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Views {
    db: Database,
    consistency_timeout: Duration,
    /// Requests waiting for a consistency token right now.
    waiting: Arc<watch::Sender<usize>>,
}

/// Counts a waiting request for as long as it waits, even if the client goes away.
struct Waiting<'a>(&'a watch::Sender<usize>);

impl<'a> Waiting<'a> {
    fn start(counter: &'a watch::Sender<usize>) -> Self {
        counter.send_modify(|n| *n += 1);
        metrics::gauge!("read_consistency_waiting").increment(1.0);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
        metrics::gauge!("read_consistency_waiting").decrement(1.0);
    }
}

async fn drain<T: DeserializeOwned>(mut cursor: Cursor<T>) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    while cursor.advance().await? {
        out.push(cursor.deserialize_current()?);
    }
    Ok(out)
}

impl Views {
    pub fn new(db: Database, consistency_timeout: Duration) -> Self {
        Self {
            db,
            consistency_timeout,
            waiting: Arc::new(watch::channel(0).0),
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// How many requests are waiting for a consistency token (observability and tests).
    pub fn waiting(&self) -> watch::Receiver<usize> {
        self.waiting.subscribe()
    }

    #[instrument(skip_all, err)]
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }

    /// Active generation and checkpoint of each view, in two concurrent finds.
    #[instrument(skip_all, err)]
    pub async fn snapshot(&self, views: &[View]) -> Result<Snapshot, StoreError> {
        let names: Vec<&str> = views.iter().map(|v| v.name()).collect();
        let pointers = async {
            let found = self
                .db
                .collection::<Document>(POINTERS)
                .find(doc! {"_id": {"$in": names.clone()}})
                .await?;
            drain(found).await
        };
        // All generations' checkpoints of these views: a handful of tiny documents, and no
        // second round trip after the pointers.
        let checkpoints = async {
            let found = self
                .db
                .collection::<Document>(CHECKPOINTS)
                .find(doc! {"projection": {"$in": names.clone()}})
                .await?;
            drain(found).await
        };
        let (pointers, checkpoints) = tokio::try_join!(pointers, checkpoints)?;

        let active: HashMap<&str, i64> = pointers
            .iter()
            .filter_map(|p| Some((p.get_str("_id").ok()?, get_int(p, "active")?)))
            .collect();
        let applied: HashMap<&str, &str> = checkpoints
            .iter()
            .filter_map(|c| Some((c.get_str("_id").ok()?, c.get_str("position").ok()?)))
            .collect();
        views
            .iter()
            .map(|&view| {
                // No pointer yet means the projector's first generation.
                let generation = active.get(view.name()).copied().unwrap_or(1).max(1);
                let id = format!("{}_g{generation}", view.name());
                let position = match applied.get(id.as_str()) {
                    None => Position::ZERO,
                    Some(token) => token.parse().map_err(|_| {
                        StoreError::Shape(format!("checkpoint {id} holds `{token}`"))
                    })?,
                };
                Ok(ViewState {
                    view,
                    generation,
                    position,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|views| Snapshot { views })
    }

    /// A snapshot of `views` that has applied `token`; without a token, the current one.
    ///
    /// Waits up to the consistency timeout, looking again with a growing pause (there is no
    /// change stream on a standalone server); 503 `not_caught_up` if the views stay behind.
    #[instrument(skip_all)]
    pub async fn at_least(
        &self,
        views: &[View],
        token: Option<Position>,
    ) -> Result<Snapshot, ReadError> {
        let mut snapshot = self.snapshot(views).await?;
        let Some(token) = token else {
            return Ok(snapshot);
        };
        if snapshot.position() >= token {
            return Ok(snapshot);
        }
        let started = Instant::now();
        let deadline = started + self.consistency_timeout;
        let _waiting = Waiting::start(&self.waiting);
        let mut pause = Duration::from_millis(5);
        let outcome = loop {
            let now = Instant::now();
            if now >= deadline {
                break Err(snapshot.position());
            }
            tokio::time::sleep_until((now + pause).min(deadline)).await;
            pause = (pause * 2).min(MAX_POLL);
            // A slow MongoDB must not stretch the wait much past its deadline.
            let budget = deadline
                .saturating_duration_since(Instant::now())
                .max(MAX_POLL);
            match tokio::time::timeout(budget, self.snapshot(views)).await {
                Ok(Ok(s)) if s.position() >= token => break Ok(s),
                Ok(Ok(s)) => snapshot = s,
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => break Err(snapshot.position()),
            }
        };
        let outcome_label = if outcome.is_ok() {
            "caught_up"
        } else {
            "timed_out"
        };
        metrics::histogram!("read_consistency_wait_seconds", "outcome" => outcome_label)
            .record(started.elapsed().as_secs_f64());
        outcome.map_err(|position| {
            ReadError::at(
                position,
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_caught_up",
                    format!(
                        "the views behind this endpoint are at {position} and have not applied \
                         {token} yet; retry shortly"
                    ),
                ),
            )
        })
    }

    #[instrument(skip_all, fields(collection = %collection), err)]
    pub async fn find_one<T>(&self, collection: &str, id: &str) -> Result<Option<T>, StoreError>
    where
        T: DeserializeOwned + Send + Sync,
    {
        Ok(self
            .db
            .collection::<T>(collection)
            .find_one(doc! {"_id": id})
            .await?)
    }

    #[instrument(skip_all, fields(collection = %collection), err)]
    pub async fn find_many<T>(
        &self,
        collection: &str,
        filter: Document,
        sort: Document,
        limit: i64,
    ) -> Result<Vec<T>, StoreError>
    where
        T: DeserializeOwned + Send + Sync,
    {
        let found = self
            .db
            .collection::<T>(collection)
            .find(filter)
            .sort(sort)
            .limit(limit)
            .await?;
        drain(found).await
    }

    /// The `count` command, not `count_documents`: the driver sends the latter as an
    /// aggregation, which nx-27017 runs in Python about 50x slower (a dashboard at 100k orders
    /// timed out). `count` with a query is exact on a standalone server or a replica set; only
    /// a sharded cluster could count orphaned documents.
    #[instrument(skip_all, fields(collection = %collection), err)]
    pub async fn count(&self, collection: &str, filter: Document) -> Result<u64, StoreError> {
        let reply = self
            .db
            .run_command(doc! {"count": collection, "query": filter})
            .await?;
        let n = match reply.get("n") {
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Double(n)) if n.fract() == 0.0 => *n as i64,
            other => return Err(StoreError::Shape(format!("count replied n = {other:?}"))),
        };
        u64::try_from(n).map_err(|_| StoreError::Shape(format!("count replied n = {n}")))
    }
}
