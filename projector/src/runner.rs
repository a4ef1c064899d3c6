//! `projector run`: one task per projection tails the log into the active generation,
//! holding that generation's lease; it follows the pointer when a rebuild switches it. The
//! tasks share one reader of the tail (`tail.rs`), so a batch is read once for every view.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::Position;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::engine::{BatchOutcome, Engine};
use crate::lease::Lease;
use crate::tail::SharedTail;
use read_model::ViewDocument;

use crate::projections::Projection;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Standby,
    Running,
    Retrying,
    /// Halted on an event it cannot apply (PROJECTOR_ON_POISON=stop).
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionStatus {
    pub state: State,
    pub generation: i64,
    pub checkpoint: Position,
    pub detail: Option<String>,
}

pub type StatusBoard = Arc<Mutex<BTreeMap<&'static str, ProjectionStatus>>>;

#[derive(Clone)]
pub struct Runner {
    pub engine: Engine,
    pub pg_options: PgConnectOptions,
    pub batch_size: i64,
    pub poll_interval: Duration,
    pub wake: watch::Receiver<u64>,
    pub board: StatusBoard,
    /// The tail read once for every view (see `tail.rs`).
    pub tail: Arc<SharedTail>,
}

impl Runner {
    fn report(
        &self,
        name: &'static str,
        state: State,
        generation: i64,
        checkpoint: Position,
        detail: Option<String>,
    ) {
        if let Ok(mut board) = self.board.lock() {
            board.insert(
                name,
                ProjectionStatus {
                    state,
                    generation,
                    checkpoint,
                    detail,
                },
            );
        }
    }

    /// Runs one projection until `cancel`. Never returns early on errors: it reports,
    /// backs off and resumes from its checkpoint, so nothing is lost.
    pub async fn run<V: Projection>(self, cancel: CancellationToken) {
        let views = &self.engine.views;
        let mut backoff = Backoff::new();
        self.report(V::VIEW.name(), State::Starting, 0, Position::ZERO, None);
        'generation: while !cancel.is_cancelled() {
            let generation = match views.active_generation(V::VIEW).await {
                Ok(g) => g,
                Err(e) => {
                    self.report(
                        V::VIEW.name(),
                        State::Retrying,
                        0,
                        Position::ZERO,
                        Some(e.to_string()),
                    );
                    backoff.wait(&cancel, V::VIEW.name(), &e).await;
                    continue;
                }
            };
            self.report(
                V::VIEW.name(),
                State::Standby,
                generation,
                Position::ZERO,
                None,
            );
            let Some(mut lease) = Lease::acquire(
                &self.pg_options,
                &crate::lease::name_for(
                    self.engine.views.database().name(),
                    V::VIEW.name(),
                    generation,
                ),
                &cancel,
            )
            .await
            else {
                return;
            };
            let setup = async {
                views
                    .ensure_indexes(
                        &V::VIEW.collection(generation),
                        <V::Doc as ViewDocument>::indexes(),
                    )
                    .await?;
                views.progress(V::VIEW, generation).await
            };
            let mut checkpoint = match setup.await {
                Ok(c) => c,
                Err(e) => {
                    lease.release().await;
                    self.report(
                        V::VIEW.name(),
                        State::Retrying,
                        generation,
                        Position::ZERO,
                        Some(e.to_string()),
                    );
                    backoff.wait(&cancel, V::VIEW.name(), &e).await;
                    continue;
                }
            };
            tracing::info!(projection = V::VIEW.name(), generation, checkpoint = %checkpoint.position, "projecting");
            self.report(
                V::VIEW.name(),
                State::Running,
                generation,
                checkpoint.position,
                None,
            );
            let mut wake = self.wake.clone();
            let mut idle = Duration::from_millis(10);
            let mut last_check = Instant::now();
            loop {
                if cancel.is_cancelled() {
                    lease.release().await;
                    return;
                }
                if last_check.elapsed() > Duration::from_secs(1) {
                    last_check = Instant::now();
                    if !lease.is_held().await {
                        tracing::warn!(
                            projection = V::VIEW.name(),
                            "lost the lease connection; re-acquiring"
                        );
                        continue 'generation;
                    }
                    match views.active_generation(V::VIEW).await {
                        Ok(g) if g != generation => {
                            tracing::info!(
                                projection = V::VIEW.name(),
                                from = generation,
                                to = g,
                                "active generation switched"
                            );
                            lease.release().await;
                            continue 'generation;
                        }
                        _ => {}
                    }
                    self.record_lag(V::VIEW.name(), checkpoint.position).await;
                }
                let rows = match self
                    .tail
                    .read_after(&self.engine.store, checkpoint.position, self.batch_size)
                    .await
                {
                    Ok(rows) => rows,
                    Err(e) => {
                        self.report(
                            V::VIEW.name(),
                            State::Retrying,
                            generation,
                            checkpoint.position,
                            Some(e.to_string()),
                        );
                        backoff.wait(&cancel, V::VIEW.name(), &e).await;
                        continue;
                    }
                };
                if rows.is_empty() {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        _ = wake.changed() => {}
                        () = tokio::time::sleep(idle) => {}
                    }
                    idle = (idle * 2).min(self.poll_interval);
                    continue;
                }
                idle = Duration::from_millis(10);
                let started = Instant::now();
                match self
                    .engine
                    .apply_batch::<V>(generation, checkpoint, rows)
                    .await
                {
                    Ok(BatchOutcome::Applied {
                        checkpoint: c,
                        events,
                        round_trips,
                        ..
                    }) => {
                        checkpoint = c;
                        backoff.reset();
                        self.report(
                            V::VIEW.name(),
                            State::Running,
                            generation,
                            checkpoint.position,
                            None,
                        );
                        metrics::counter!("projector_events_total", "projection" => V::VIEW.name())
                            .increment(events as u64);
                        metrics::histogram!("projector_batch_duration_seconds", "projection" => V::VIEW.name())
                            .record(started.elapsed().as_secs_f64());
                        metrics::histogram!("projector_mongo_ops_per_batch", "projection" => V::VIEW.name())
                            .record(round_trips as f64);
                        metrics::gauge!("projector_checkpoint_global_position", "projection" => V::VIEW.name())
                            .set(checkpoint.position.global_position as f64);
                    }
                    Ok(BatchOutcome::Stopped {
                        checkpoint: c,
                        poison,
                    }) => {
                        if let Some(c) = c {
                            checkpoint = c;
                        }
                        let e = &poison.event;
                        tracing::error!(
                            projection = V::VIEW.name(),
                            position = %e.position,
                            stream = %e.stream_id,
                            event_type = %e.event_type,
                            error = %e.error,
                            "projection stopped at an event it cannot apply; fix the event or set PROJECTOR_ON_POISON=park"
                        );
                        let detail = format!(
                            "stopped at position {} of stream {} ({}): {}",
                            e.position, e.stream_id, e.event_type, e.error
                        );
                        self.report(
                            V::VIEW.name(),
                            State::Stopped,
                            generation,
                            checkpoint.position,
                            Some(detail),
                        );
                        // Keep the lease so a standby does not stop on the same event too.
                        cancel.cancelled().await;
                        lease.release().await;
                        return;
                    }
                    Err(e) => {
                        self.report(
                            V::VIEW.name(),
                            State::Retrying,
                            generation,
                            checkpoint.position,
                            Some(e.to_string()),
                        );
                        backoff.wait(&cancel, V::VIEW.name(), &e).await;
                        // Resume from what is durably recorded; guards make any replay harmless.
                        match views.progress(V::VIEW, generation).await {
                            Ok(c) => checkpoint = c,
                            Err(_) => continue 'generation,
                        }
                    }
                }
            }
        }
    }

    async fn record_lag(&self, name: &'static str, checkpoint: Position) {
        if let Ok((events, oldest)) = self.engine.store.lag_after(checkpoint).await {
            metrics::gauge!("projector_lag_events", "projection" => name).set(events as f64);
            if let Ok(Some(head)) = self.engine.store.head().await {
                metrics::gauge!("projector_head_global_position").set(head.global_position as f64);
            }
            let seconds = oldest.map_or(0.0, |t| {
                (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
            });
            metrics::gauge!("projector_lag_seconds", "projection" => name).set(seconds);
        }
    }
}

/// Exponential back-off with jitter, 100 ms to 30 s, for as long as the error lasts.
pub struct Backoff(ExponentialBackoff);

fn delays() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_jitter()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
        .build()
}

impl Backoff {
    pub fn new() -> Self {
        Backoff(delays())
    }

    pub fn reset(&mut self) {
        self.0 = delays();
    }

    pub async fn wait(
        &mut self,
        cancel: &CancellationToken,
        projection: &str,
        error: &(dyn std::fmt::Display + Sync),
    ) {
        // Without a cap on attempts the iterator never ends; 30 s is the fallback all the same.
        let delay = self.0.next().unwrap_or(Duration::from_secs(30));
        tracing::warn!(projection, error = %error, retry_in_ms = delay.as_millis() as u64, "projection paused");
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}
