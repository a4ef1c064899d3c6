//! `projector status`: where each projection stands against the head of the log.

use domain::Position;
use serde::Serialize;

use crate::Projector;
use read_model::View;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Standing {
    pub projection: &'static str,
    pub generation: i64,
    pub checkpoint: Position,
    pub head: Option<Position>,
    pub lag_events: i64,
    pub lag_seconds: f64,
}

pub async fn standings(projector: &Projector) -> anyhow::Result<Vec<Standing>> {
    let views = &projector.engine.views;
    let store = &projector.engine.store;
    let head = store.head().await?;
    let mut out = Vec::new();
    for &view in View::ALL {
        let generation = views.pointer(view).await?.map_or(0, |p| p.active);
        let checkpoint = views.checkpoint(view, generation).await?;
        let (lag_events, oldest) = store.lag_after(checkpoint).await?;
        // Lag in seconds is measured against now: how long the oldest unapplied event waits.
        let lag_seconds = oldest.map_or(0.0, |t| {
            (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
        });
        out.push(Standing {
            projection: view.name(),
            generation,
            checkpoint,
            head,
            lag_events,
            lag_seconds,
        });
    }
    Ok(out)
}

pub fn print(standings: &[Standing]) {
    println!(
        "{:<18} {:>10} {:<34} {:<34} {:>10} {:>9}",
        "projection", "generation", "checkpoint", "head", "lag", "lag (s)"
    );
    for s in standings {
        let head = s.head.map_or_else(|| "-".to_owned(), |h| h.to_string());
        println!(
            "{:<18} {:>10} {:<34} {:<34} {:>10} {:>9.1}",
            s.projection, s.generation, s.checkpoint, head, s.lag_events, s.lag_seconds
        );
    }
}
