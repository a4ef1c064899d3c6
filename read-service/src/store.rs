//! The MongoDB side: which generation of each view is active, how far it has applied the
//! event log, and plain finds on it.
//!
//! Pointers and checkpoints are read on every request, so a rebuild's switch is followed at
//! once and a dropped generation is never remembered. A generation's checkpoint is a document
//! of its own collection (`read_model::CHECKPOINT_ID`), so every find and count here leaves it
//! out (`read_model::without_checkpoint`). Only operations pinned by the
//! projector's store-contract test are used: find with filter/sort/limit and count (no
//! aggregation, no `$slice`, see `docs/nx-27017-probe.md`).
//!
//! Every driver operation runs in a task of its own and is never cancelled half-way: a
//! dropped operation leaves its connection checkout in the driver pool's wait queue, which
//! the pool drains one request per wake-up (every 500 ms when idle), so a burst of dropped
//! reads once froze every later read for minutes. Requests that wait for a consistency token
//! share one poller instead of each polling MongoDB, and their number is bounded.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use domain::Position;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::error::ErrorKind;
use mongodb::{Cursor, Database};
use serde::de::DeserializeOwned;
use service_kit::api_error::ApiError;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tracing::instrument;

pub use read_model::View;
use read_model::{CHECKPOINT_ID, CHECKPOINTS, Checkpoint, LOG_HEAD, LogHead, POINTERS, Pointer};

use crate::reply::ReadError;
/// How far past the recorded head a token may lie and still be one a write issued since the
/// projector recorded it (it does so every poll interval). Far beyond what one interval can
/// add, and far below what a forged token picks.
pub const LOG_HEAD_SLACK: i64 = 1_000_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ViewStoreError {
    #[error("mongodb: {0}")]
    Driver(#[from] mongodb::error::Error),
    #[error("view document: {0}")]
    Shape(String),
    #[error("view store task failed: {0}")]
    Task(String),
}

impl ViewStoreError {
    /// MongoDB is away or failing over: worth a retry, so 503 rather than 500.
    pub fn is_unavailable(&self) -> bool {
        let ViewStoreError::Driver(e) = self else {
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

impl From<ViewStoreError> for ReadError {
    fn from(e: ViewStoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<ViewStoreError> for ApiError {
    fn from(e: ViewStoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "view store unavailable");
            return ApiError::unavailable("the view store");
        }
        ApiError::internal("view store error", &e)
    }
}

/// One view as a request sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewState {
    pub view: View,
    pub generation: i64,
    /// The checkpoint: everything up to here is applied. Zero when nothing is.
    pub position: Position,
    /// The checkpoint's watermark: the latest recorded time of the events applied (the
    /// log's event time, which decides when a window is final); `None` before any event.
    pub watermark: Option<bson::DateTime>,
}

/// Whether a write could have returned `token`: one beyond the head by more than
/// [`LOG_HEAD_SLACK`] was not issued by this deployment's write-service.
pub fn could_have_issued(head: &LogHead, token: Position) -> bool {
    let tx_limit = head.next_tx_id.saturating_add(LOG_HEAD_SLACK);
    u64::try_from(tx_limit).is_ok_and(|limit| token.tx_id <= limit)
        && token.global_position <= head.max_global_position.saturating_add(LOG_HEAD_SLACK)
}

/// The views behind one request, read before its data so the data is at least this fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewPositions {
    pub views: Vec<ViewState>,
    /// The log's head as the projector last recorded it; `None` before it first did.
    pub log_head: Option<LogHead>,
}

impl ViewPositions {
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
        view.collection(generation)
    }

    /// The state of `view` in this snapshot, if it covers it.
    pub fn view(&self, view: View) -> Option<&ViewState> {
        self.views.iter().find(|v| v.view == view)
    }

    /// The watermark of `view`'s checkpoint (`None` before its first event, or when the
    /// snapshot does not cover it).
    pub fn watermark(&self, view: View) -> Option<bson::DateTime> {
        self.view(view).and_then(|v| v.watermark)
    }

    /// The part of this snapshot that covers `views`, if it covers them all.
    fn of(&self, views: &[View]) -> Option<ViewPositions> {
        let states = views
            .iter()
            .map(|v| self.views.iter().find(|s| s.view == *v).copied())
            .collect::<Option<Vec<_>>>()?;
        Some(ViewPositions {
            views: states,
            log_head: self.log_head,
        })
    }
}

/// Longest pause between two looks at the checkpoints while requests wait.
const MAX_POLL: Duration = Duration::from_millis(100);

/// What the shared poller saw last; `seq` counts its looks.
#[derive(Debug, Clone, Default)]
struct Polled {
    seq: u64,
    snapshot: Option<Result<Arc<ViewPositions>, ViewStoreError>>,
}

#[derive(Clone)]
pub struct Views {
    db: Database,
    consistency_timeout: Duration,
    /// Requests waiting for a consistency token right now; the poller runs while it is > 0.
    waiting: Arc<watch::Sender<usize>>,
    /// Places for waiting requests: a request that finds none is answered 503 at once.
    places: Arc<Semaphore>,
    polled: watch::Receiver<Polled>,
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

async fn drain<T: DeserializeOwned>(mut cursor: Cursor<T>) -> Result<Vec<T>, ViewStoreError> {
    let mut out = Vec::new();
    while cursor.advance().await? {
        out.push(cursor.deserialize_current()?);
    }
    Ok(out)
}

/// Runs a driver operation to completion in a task of its own, whatever becomes of the
/// caller (see the module documentation for why it must not be dropped half-way).
async fn detached<T: Send + 'static>(
    operation: impl Future<Output = Result<T, ViewStoreError>> + Send + 'static,
) -> Result<T, ViewStoreError> {
    tokio::spawn(operation)
        .await
        .map_err(|e| ViewStoreError::Task(e.to_string()))?
}

/// Looks at every view's checkpoint while any request waits, and publishes what it saw.
/// One look at a time whatever the number of waiters; ends when the `Views` are dropped.
async fn poll_while_waited(
    db: Database,
    mut waiting: watch::Receiver<usize>,
    polled: watch::Sender<Polled>,
) {
    loop {
        if waiting.wait_for(|n| *n > 0).await.is_err() {
            return;
        }
        let mut pause = Duration::from_millis(5);
        while *waiting.borrow_and_update() > 0 {
            let seen = snapshot_of(&db, View::ALL).await.map(Arc::new);
            polled.send_modify(|p| {
                p.seq += 1;
                p.snapshot = Some(seen);
            });
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                // A new waiter is looked for soon, not after the longest pause.
                changed = waiting.changed() => if changed.is_err() { return },
            }
            pause = (pause * 2).min(MAX_POLL);
        }
    }
}

/// The documents of `collection` whose `field` is one of `values`.
async fn find_in(
    db: &Database,
    collection: &str,
    field: &str,
    values: &[&str],
) -> Result<Vec<Document>, ViewStoreError> {
    let found = db.collection::<Document>(collection);
    let filter = doc! {field: {"$in": values}};
    detached(async move { drain(found.find(filter).await?).await }).await
}

/// The checkpoint of `generation` of `view`, kept in the generation's own collection.
async fn checkpoint_in(
    db: &Database,
    view: View,
    generation: i64,
) -> Result<Option<Document>, ViewStoreError> {
    let found = db.collection::<Document>(&view.collection(generation));
    detached(async move { Ok(found.find_one(doc! {"_id": CHECKPOINT_ID}).await?) }).await
}

/// Active generation and checkpoint of each view, and the log head: the pointers, then each
/// view's checkpoint in its active collection (concurrent finds; the checkpoint lives there
/// so the projector writes it with the batch). A generation without one yet falls back to the
/// old layout's [`CHECKPOINTS`] (one more find, only then), so an upgrade keeps its place.
async fn snapshot_of(db: &Database, views: &[View]) -> Result<ViewPositions, ViewStoreError> {
    let mut ids: Vec<&str> = views.iter().map(|v| v.name()).collect();
    ids.push(LOG_HEAD);
    let pointers = find_in(db, POINTERS, "_id", &ids).await?;

    let shape = |what: &str, e: bson::de::Error| ViewStoreError::Shape(format!("{what}: {e}"));
    let mut active: HashMap<String, i64> = HashMap::new();
    let mut log_head = None;
    for p in pointers {
        let id = p.get_str("_id").unwrap_or_default().to_owned();
        if id == LOG_HEAD {
            log_head = Some(bson::from_document::<LogHead>(p).map_err(|e| shape(LOG_HEAD, e))?);
        } else {
            let pointer = bson::from_document::<Pointer>(p).map_err(|e| shape(&id, e))?;
            active.insert(id, pointer.active);
        }
    }
    // No pointer yet means the projector's first generation.
    let generations: Vec<(View, i64)> = views
        .iter()
        .map(|&view| {
            let generation = active.get(view.name()).copied().unwrap_or(1).max(1);
            (view, generation)
        })
        .collect();
    let found = futures_util::future::try_join_all(
        generations
            .iter()
            .map(|&(view, generation)| checkpoint_in(db, view, generation)),
    )
    .await?;
    let missing: Vec<String> = generations
        .iter()
        .zip(&found)
        .filter(|(_, c)| c.is_none())
        .map(|((view, generation), _)| view.checkpoint_id(*generation))
        .collect();
    let legacy = if missing.is_empty() {
        vec![]
    } else {
        let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
        find_in(db, CHECKPOINTS, "_id", &missing).await?
    };
    let mut legacy: HashMap<String, Document> = legacy
        .into_iter()
        .filter_map(|c| Some((c.get_str("_id").ok()?.to_owned(), c)))
        .collect();

    let mut states = Vec::with_capacity(views.len());
    for ((view, generation), checkpoint) in generations.into_iter().zip(found) {
        let checkpoint = checkpoint.or_else(|| legacy.remove(&view.checkpoint_id(generation)));
        let (position, watermark) = match checkpoint {
            Some(c) => {
                let c = bson::from_document::<Checkpoint>(c)
                    .map_err(|e| shape(&view.collection(generation), e))?;
                (c.position, c.watermark)
            }
            None => (Position::ZERO, None),
        };
        states.push(ViewState {
            view,
            generation,
            position,
            watermark,
        });
    }
    Ok(ViewPositions {
        views: states,
        log_head,
    })
}

impl Views {
    /// Must be called inside a Tokio runtime: it starts the shared poller.
    pub fn new(db: Database, consistency_timeout: Duration, max_waiting: usize) -> Self {
        let waiting = Arc::new(watch::channel(0).0);
        let (polled_tx, polled) = watch::channel(Polled::default());
        tokio::spawn(poll_while_waited(
            db.clone(),
            waiting.subscribe(),
            polled_tx,
        ));
        Self {
            db,
            consistency_timeout,
            waiting,
            places: Arc::new(Semaphore::new(max_waiting)),
            polled,
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
    pub async fn ping(&self) -> Result<(), ViewStoreError> {
        let db = self.db.clone();
        detached(async move {
            db.run_command(doc! {"ping": 1}).await?;
            Ok(())
        })
        .await
    }

    /// Active generation and checkpoint of each view, and the log head.
    #[instrument(skip_all, err)]
    pub async fn snapshot(&self, views: &[View]) -> Result<ViewPositions, ViewStoreError> {
        snapshot_of(&self.db, views).await
    }

    /// A snapshot of `views` that has applied `token`; without a token, the current one.
    ///
    /// A token beyond the log's head is refused at once (400). Otherwise the request waits,
    /// up to the consistency timeout, for the shared poller to see the views apply it; 503
    /// `not_caught_up` if they stay behind, 503 `too_many_waiting` at once if all places for
    /// waiting requests are taken.
    #[instrument(skip_all)]
    pub async fn at_least(
        &self,
        views: &[View],
        token: Option<Position>,
    ) -> Result<ViewPositions, ReadError> {
        let snapshot = self.snapshot(views).await?;
        let Some(token) = token else {
            return Ok(snapshot);
        };
        if snapshot.position() >= token {
            return Ok(snapshot);
        }
        if let Some(head) = snapshot.log_head
            && !could_have_issued(&head, token)
        {
            metrics::counter!("read_consistency_refused_total", "reason" => "beyond_head")
                .increment(1);
            return Err(ReadError::at(
                snapshot.position(),
                ApiError::bad_request(
                    "invalid_consistency_token",
                    format!(
                        "X-Consistency-Token {token} lies beyond the head of the event log: no \
                         write has returned it"
                    ),
                )
                .with_field("X-Consistency-Token"),
            ));
        }
        let Ok(_place) = self.places.clone().try_acquire_owned() else {
            metrics::counter!("read_consistency_refused_total", "reason" => "too_many_waiting")
                .increment(1);
            return Err(ReadError::at(
                snapshot.position(),
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_waiting",
                    "too many requests are waiting for the views to catch up; retry shortly",
                ),
            ));
        };
        let started = Instant::now();
        let mut polled = self.polled.clone();
        let since = polled.borrow_and_update().seq;
        let _waiting = Waiting::start(&self.waiting);
        // Only waiting on a channel is cancelled here, never a driver operation.
        let seen = tokio::time::timeout(
            self.consistency_timeout,
            polled.wait_for(|p| {
                p.seq > since
                    && p.snapshot.as_ref().is_some_and(|s| match s {
                        Ok(s) => s.of(views).is_some_and(|s| s.position() >= token),
                        Err(_) => true,
                    })
            }),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|p| p.snapshot.clone());
        let outcome = match seen {
            Some(Ok(s)) => s.of(views).ok_or(snapshot.position()),
            Some(Err(e)) => return Err(e.into()),
            // The time is up (or the poller ended: the service is shutting down).
            None => {
                let latest = polled.borrow();
                let position = match latest.snapshot.as_ref() {
                    Some(Ok(s)) if latest.seq > since => {
                        s.of(views).map_or(snapshot.position(), |s| s.position())
                    }
                    _ => snapshot.position(),
                };
                Err(position)
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

    pub async fn find_one<T>(&self, collection: &str, id: &str) -> Result<Option<T>, ViewStoreError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        self.find_first(collection, doc! {"_id": id}).await
    }

    /// The document matching `filter` (e.g. an id and its owner), if any.
    #[instrument(skip_all, fields(collection = %collection), err)]
    pub async fn find_first<T>(
        &self,
        collection: &str,
        filter: Document,
    ) -> Result<Option<T>, ViewStoreError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let found = self.db.collection::<T>(collection);
        let filter = read_model::without_checkpoint(filter);
        detached(async move { Ok(found.find_one(filter).await?) }).await
    }

    #[instrument(skip_all, fields(collection = %collection), err)]
    pub async fn find_many<T>(
        &self,
        collection: &str,
        filter: Document,
        sort: Document,
        limit: i64,
    ) -> Result<Vec<T>, ViewStoreError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let found = self.db.collection::<T>(collection);
        let filter = read_model::without_checkpoint(filter);
        detached(async move { drain(found.find(filter).sort(sort).limit(limit).await?).await })
            .await
    }

    /// The `count` command, not `count_documents`: the driver sends the latter as an
    /// aggregation, which nx-27017 runs in Python about 50x slower (a dashboard at 100k orders
    /// timed out). `count` with a query is exact on a standalone server or a replica set; only
    /// a sharded cluster could count orphaned documents.
    #[instrument(skip_all, fields(collection = %collection), err)]
    pub async fn count(&self, collection: &str, filter: Document) -> Result<u64, ViewStoreError> {
        let db = self.db.clone();
        let command = doc! {"count": collection, "query": read_model::without_checkpoint(filter)};
        let reply = detached(async move { Ok(db.run_command(command).await?) }).await?;
        let n = match reply.get("n") {
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Double(n)) if n.fract() == 0.0 => *n as i64,
            other => {
                return Err(ViewStoreError::Shape(format!(
                    "count replied n = {other:?}"
                )));
            }
        };
        u64::try_from(n).map_err(|_| ViewStoreError::Shape(format!("count replied n = {n}")))
    }
}
