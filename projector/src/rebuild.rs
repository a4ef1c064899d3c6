//! `projector rebuild`: fill a new generation from position zero while the active one keeps
//! serving, catch up to the head, then switch the pointer. Ctrl-C leaves the active
//! generation untouched.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use domain::Position;
use event_store::TailRow;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use read_model::ViewDocument;

use crate::Projector;
use crate::engine::{BatchOutcome, Engine, ProjectorError, row_position};
use crate::lease::Lease;
use crate::mongo::Progress;
use crate::projections::Projection;

#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error(transparent)]
    Projector(#[from] ProjectorError),
    #[error("stopped at position {position} of stream {stream} ({event_type}): {error}")]
    Poisoned {
        position: Position,
        stream: String,
        event_type: String,
        error: String,
    },
    #[error("cancelled")]
    Cancelled,
}

/// Applies batches into `generation` from `from` until it has applied `until` (the head
/// when it started, say). Events committed but held back by an older open transaction are
/// waited for, not skipped. `progress` is called with the number of events of each batch.
pub async fn catch_up<V: Projection>(
    engine: &Engine,
    generation: i64,
    from: impl Into<Progress>,
    until: Position,
    batch_size: i64,
    cancel: &CancellationToken,
    mut progress: impl FnMut(usize),
) -> Result<Position, CatchUpError> {
    let mut checkpoint: Progress = from.into();
    let mut ahead: Option<Vec<TailRow>> = None;
    loop {
        if cancel.is_cancelled() {
            return Err(CatchUpError::Cancelled);
        }
        let rows = match ahead.take() {
            Some(rows) => rows,
            None => engine
                .store
                .read_committed_after(checkpoint.position, batch_size)
                .await
                .map_err(ProjectorError::from)?,
        };
        let Some(last) = rows.last().map(row_position) else {
            if checkpoint.position >= until {
                return Ok(checkpoint.position);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        // The next batch is read from PostgreSQL while this one is written to MongoDB: the
        // read only needs to know where this batch ends.
        let read_ahead = async {
            if last < until {
                engine
                    .store
                    .read_committed_after(last, batch_size)
                    .await
                    .ok()
            } else {
                None
            }
        };
        let (applied, next) = tokio::join!(
            engine.apply_batch::<V>(generation, checkpoint, rows),
            read_ahead
        );
        match applied? {
            BatchOutcome::Applied {
                checkpoint: c,
                events,
                ..
            } => {
                checkpoint = c;
                progress(events);
                // Only a read that starts where this batch ended continues it.
                ahead = next.filter(|_| c.position == last);
            }
            BatchOutcome::Stopped { poison, .. } => {
                let e = poison.event;
                return Err(CatchUpError::Poisoned {
                    position: e.position,
                    stream: e.stream_id,
                    event_type: e.event_type,
                    error: e.error,
                });
            }
        }
    }
}

#[derive(Debug)]
pub struct RebuildReport {
    pub projection: &'static str,
    pub previous: i64,
    pub generation: i64,
    pub events: u64,
    pub elapsed: Duration,
}

fn progress_bar(name: &str, total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{prefix:>18} [{bar:30}] {pos}/{len} events  {per_sec}  ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(name.to_owned());
    bar
}

pub async fn rebuild<V: Projection>(
    projector: &Projector,
    drop_old: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<RebuildReport> {
    let engine = &projector.engine;
    let views = &engine.views;
    let started = Instant::now();
    let previous = views.active_generation(V::VIEW).await?;
    let generation = views.reserve_generation(V::VIEW).await?;
    let Some(lease) = Lease::try_acquire(
        &projector.pg_options,
        &crate::lease::name_for(views.database().name(), V::VIEW.name(), generation),
    )
    .await?
    else {
        anyhow::bail!(
            "{} generation {generation} is being written by another process",
            V::VIEW.name()
        );
    };
    // Leftovers of an interrupted rebuild to this generation number.
    views.drop_generation(V::VIEW, generation).await?;
    views
        .ensure_indexes(
            &V::VIEW.collection(generation),
            <V::Doc as ViewDocument>::indexes(),
        )
        .await?;
    let head = engine.store.head().await?.unwrap_or(Position::ZERO);
    let (total, _) = engine.store.lag_after(Position::ZERO).await?;
    tracing::info!(
        projection = V::VIEW.name(),
        previous,
        generation,
        total,
        "rebuilding"
    );

    let bar = progress_bar(V::VIEW.name(), u64::try_from(total).unwrap_or(0));
    let mut done = 0u64;
    let mut last_log = Instant::now();
    let result = catch_up::<V>(
        engine,
        generation,
        Position::ZERO,
        head,
        projector.batch_size,
        cancel,
        |n| {
            done += n as u64;
            bar.inc(n as u64);
            if bar.is_hidden() && last_log.elapsed() > Duration::from_secs(2) {
                last_log = Instant::now();
                let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
                tracing::info!(
                    projection = V::VIEW.name(),
                    done,
                    total,
                    events_per_second = rate as u64,
                    "rebuild progress"
                );
            }
        },
    )
    .await;
    bar.finish_and_clear();
    if let Err(e) = result {
        // The active generation was never touched; remove the partial one.
        let _ = views.drop_generation(V::VIEW, generation).await;
        lease.release().await;
        anyhow::bail!(
            "{} rebuild abandoned ({e}); generation {previous} still serves",
            V::VIEW.name()
        );
    }

    views.activate(V::VIEW, generation).await?;
    lease.release().await;
    tracing::info!(
        projection = V::VIEW.name(),
        from = previous,
        to = generation,
        events = done,
        "switched"
    );

    if drop_old && previous != generation {
        // Wait until no runner writes the old generation (it follows the pointer within a
        // second), so nothing recreates what we drop.
        let old_lease = crate::lease::name_for(views.database().name(), V::VIEW.name(), previous);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = Lease::try_acquire(&projector.pg_options, &old_lease).await? {
                views.drop_generation(V::VIEW, previous).await?;
                l.release().await;
                tracing::info!(
                    projection = V::VIEW.name(),
                    generation = previous,
                    "dropped the previous generation"
                );
                break;
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    projection = V::VIEW.name(),
                    generation = previous,
                    "previous generation still in use; not dropped"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(RebuildReport {
        projection: V::VIEW.name(),
        previous,
        generation,
        events: done,
        elapsed: started.elapsed(),
    })
}
