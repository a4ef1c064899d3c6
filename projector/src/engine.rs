//! Applying one batch of events to one view, exactly once.
//!
//! Each view document remembers the position of the last event applied to it
//! (`appliedPosition`). A batch reads the documents it touches (one `find`), applies only
//! events past each document's position, and writes every changed document back in one
//! `update` command, each statement guarded on the position it read. A replay after a crash
//! therefore changes nothing it already changed, whatever the batch boundaries were, and a
//! second writer is detected instead of double-counting. The checkpoint is the last
//! statement of that same ordered `update` (it lives in the view's collection), so it is
//! written exactly when every write before it was; with MongoDB transactions the whole batch
//! also commits together.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use domain::Position;
use event_store::{EventStore, StoreError, TailRow};
use mongodb::bson::{self, Bson, Document, doc};

use crate::context::{self, Poison};
use read_model::DEAD_LETTERS;

use crate::mongo::{GuardedWrite, MongoError, Progress, ViewStore};
use crate::projections::{Projection, Thresholds};
use crate::settings::OnPoison;

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mongo(#[from] MongoError),
    #[error("view document: {0}")]
    Document(String),
}

impl From<mongodb::error::Error> for ProjectorError {
    fn from(e: mongodb::error::Error) -> Self {
        ProjectorError::Mongo(MongoError::Driver(e))
    }
}

#[derive(Debug)]
pub enum BatchOutcome {
    Applied {
        checkpoint: Progress,
        events: usize,
        parked: usize,
        round_trips: usize,
    },
    /// Stopped at an event it cannot apply; everything before it was applied.
    Stopped {
        checkpoint: Option<Progress>,
        poison: Box<Poison>,
    },
}

#[derive(Clone)]
pub struct Engine {
    pub store: EventStore,
    pub views: ViewStore,
    pub on_poison: OnPoison,
    /// The event-time views' grace and alert thresholds.
    pub rules: Thresholds,
    /// Orders' facts between batches, shared by every view's runner.
    pub facts: Arc<context::FactsCache>,
}

struct Slot<D> {
    doc: D,
    read_position: Option<String>,
    applied: Option<Position>,
    dirty: bool,
}

fn dead_letter(view: &str, generation: i64, p: &Poison) -> Document {
    let e = &p.event;
    doc! {
        "_id": format!("{view}_g{generation}:{}", e.position),
        "projection": view,
        "generation": generation,
        "position": e.position.to_string(),
        "streamId": &e.stream_id,
        "streamPosition": i64::try_from(e.stream_position).unwrap_or(i64::MAX),
        "eventType": &e.event_type,
        "schemaVersion": e.schema_version,
        // As text: stored data may hold keys MongoDB refuses (`$…`, dots).
        "data": e.data.to_string(),
        "error": &e.error,
        "recordedAt": bson::DateTime::from_millis(e.recorded_at.timestamp_millis()),
    }
}

pub(crate) fn row_position(row: &TailRow) -> Position {
    match row {
        Ok(e) => e.position,
        Err(u) => u.position,
    }
}

impl Engine {
    /// Applies `rows`, the log after `from`, and records how far it got.
    pub async fn apply_batch<V: Projection>(
        &self,
        generation: i64,
        from: Progress,
        rows: Vec<TailRow>,
    ) -> Result<BatchOutcome, ProjectorError> {
        let Some(last) = rows.last().map(row_position) else {
            return Ok(BatchOutcome::Applied {
                checkpoint: from,
                events: 0,
                parked: 0,
                round_trips: 0,
            });
        };
        let count = rows.len();
        let mut watermark = from.watermark;
        let enriched = context::enrich(&self.store, &self.facts, rows, &mut watermark).await?;

        let mut good = Vec::with_capacity(enriched.len());
        let mut parked = Vec::new();
        let mut stopped = None;
        for item in enriched {
            match item {
                Ok(e) => good.push(e),
                Err(p) if self.on_poison == OnPoison::Park => parked.push(p),
                Err(p) => {
                    stopped = Some(p);
                    break;
                }
            }
        }
        let checkpoint = match &stopped {
            // Up to the last event applied: the watermark after it is the one before the
            // event it stopped at.
            Some(_) => good.last().map(|e| Progress {
                position: e.event.position,
                watermark: context::advance(e.watermark, e.event.recorded_at),
            }),
            None => Some(Progress {
                position: last,
                watermark,
            }),
        };

        let collection = V::VIEW.collection(generation);
        let mut session = self.views.start_session().await?;
        let mut round_trips = 0;

        let mut keys: BTreeMap<String, ()> = BTreeMap::new();
        let touched: Vec<Vec<String>> = good.iter().map(V::keys).collect();
        for k in touched.iter().flatten() {
            keys.insert(k.clone(), ());
        }
        let ids: Vec<String> = keys.into_keys().collect();
        if !ids.is_empty() {
            round_trips += 1;
        }
        let found = self
            .views
            .find_by_ids(&collection, ids, session.as_mut())
            .await?;
        let mut slots: HashMap<String, Slot<V::Doc>> = HashMap::with_capacity(found.len());
        for (id, d) in found {
            let read_position = d.get_str("appliedPosition").ok().map(str::to_owned);
            let applied = read_position.as_deref().and_then(|p| p.parse().ok());
            let doc: V::Doc =
                bson::from_document(d).map_err(|e| ProjectorError::Document(e.to_string()))?;
            slots.insert(
                id,
                Slot {
                    doc,
                    read_position,
                    applied,
                    dirty: false,
                },
            );
        }

        for (e, keys) in good.iter().zip(&touched) {
            for key in keys {
                let slot = slots.entry(key.clone()).or_insert_with(|| Slot {
                    doc: V::Doc::default(),
                    read_position: None,
                    applied: None,
                    dirty: false,
                });
                if slot.applied.is_some_and(|a| a >= e.event.position) {
                    continue; // applied before a crash or by an earlier run
                }
                V::apply(&mut slot.doc, key, e, &self.rules);
                slot.applied = Some(e.event.position);
                slot.dirty = true;
            }
        }

        let mut side = BTreeMap::new();
        for slot in slots.values_mut().filter(|s| s.dirty) {
            side.extend(V::side_documents(&mut slot.doc));
        }

        let mut writes = Vec::new();
        for (id, slot) in slots.into_iter().filter(|(_, s)| s.dirty) {
            let mut document = bson::to_document(&slot.doc)
                .map_err(|e| ProjectorError::Document(e.to_string()))?;
            document.insert("_id", id.clone());
            if let Some(p) = slot.applied {
                document.insert("appliedPosition", Bson::String(p.to_string()));
            }
            writes.push(GuardedWrite {
                id,
                expected: slot.read_position,
                document,
            });
        }

        // Dead letters live in a collection of their own, so they go first: the checkpoint
        // below moves past a parked event only once its letter is written (a replay after a
        // crash in between writes the same letter again).
        for p in &parked {
            tracing::warn!(
                projection = V::VIEW.name(),
                position = %p.event.position,
                stream = %p.event.stream_id,
                event_type = %p.event.event_type,
                error = %p.event.error,
                "parked an event the projection cannot apply in {DEAD_LETTERS}"
            );
            self.views
                .park(dead_letter(V::VIEW.name(), generation, p), session.as_mut())
                .await?;
            round_trips += 1;
            metrics::counter!("projector_dead_letters_total", "projection" => V::VIEW.name())
                .increment(1);
        }

        // Side documents, guarded writes and the checkpoint: one ordered request.
        if !side.is_empty() || !writes.is_empty() || checkpoint.is_some() {
            round_trips += 1;
        }
        self.views
            .write_batch(
                &collection,
                side,
                writes,
                checkpoint.map(|c| (V::VIEW, generation, c)),
                session.as_mut(),
            )
            .await?;
        if let Some(mut s) = session {
            s.commit_transaction().await?;
        }

        Ok(match stopped {
            Some(poison) => BatchOutcome::Stopped {
                checkpoint,
                poison: Box::new(poison),
            },
            None => BatchOutcome::Applied {
                checkpoint: Progress {
                    position: last,
                    watermark,
                },
                events: count,
                parked: parked.len(),
                round_trips,
            },
        })
    }
}
