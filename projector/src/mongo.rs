//! The MongoDB side: generations, checkpoints, guarded batch writes, dead letters.
//!
//! Every write is an `update` command carrying many statements (one round trip), because
//! round trips, not CPU, bound the projector. A batch's side documents, guarded writes and
//! checkpoint are one ordered `update` on the view's collection ([`ViewStore::write_batch`]),
//! the checkpoint last, so it moves only if every write before it happened. Only operations pinned by the store-contract
//! test are used (see `tests/store_contract.rs` and `docs/nx-27017-probe.md`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::Position;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, ClientSession, Database, IndexModel};

use read_model::{CHECKPOINT_ID, CHECKPOINTS, Checkpoint, DEAD_LETTERS, POINTERS, Pointer, View};

use crate::settings::Transactions;

#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    #[error("mongodb: {0}")]
    Driver(#[from] mongodb::error::Error),
    #[error("mongodb document: {0}")]
    Shape(String),
    #[error("{0} documents changed under this batch (another writer?)")]
    Conflict(usize),
}

/// Reads an integer however the server stored it (some return small Int64 as Int32).
pub fn get_int(doc: &Document, key: &str) -> Option<i64> {
    match doc.get(key)? {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) if v.fract() == 0.0 => Some(*v as i64),
        _ => None,
    }
}

/// How far a view generation has applied the log: the position, and the log's event time
/// there (the latest recorded time up to it), which event-time windows are judged by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub position: Position,
    pub watermark: Option<DateTime<Utc>>,
}

impl From<Position> for Progress {
    /// A position with no event time: the start of the log, or a test's checkpoint.
    fn from(position: Position) -> Self {
        Progress {
            position,
            watermark: None,
        }
    }
}

/// The statement that records `progress` in the generation's own collection.
fn checkpoint_statement(
    view: View,
    generation: i64,
    progress: Progress,
) -> Result<Document, MongoError> {
    let checkpoint = Checkpoint {
        id: CHECKPOINT_ID.to_owned(),
        projection: view.name().to_owned(),
        generation,
        position: progress.position,
        watermark: progress
            .watermark
            .map(|w| bson::DateTime::from_millis(w.timestamp_millis())),
    };
    let replacement =
        bson::to_document(&checkpoint).map_err(|e| MongoError::Shape(e.to_string()))?;
    Ok(doc! {"q": {"_id": CHECKPOINT_ID}, "u": replacement, "upsert": true})
}

/// One guarded write: replace (or insert) `_id` only if it is still at `expected`.
pub struct GuardedWrite {
    pub id: String,
    pub expected: Option<String>,
    pub document: Document,
}

#[derive(Clone)]
pub struct ViewStore {
    client: Client,
    db: Database,
    transactions: bool,
}

impl ViewStore {
    pub async fn connect(
        uri: &str,
        database: &str,
        transactions: Transactions,
    ) -> Result<Self, MongoError> {
        let mut options = ClientOptions::parse(uri).await?;
        options
            .app_name
            .get_or_insert_with(|| "projector".to_owned());
        // Fail an operation after a few seconds without a server, so the projector reports
        // and backs off instead of hanging for the driver's default 30 s.
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        let client = Client::with_options(options)?;
        let db = client.database(database);
        let transactions = match transactions {
            Transactions::On => true,
            Transactions::Off => false,
            Transactions::Auto => {
                // A standalone mongod rejects transactions; a replica set names itself in
                // `hello`, a mongos says `isdbgrid`.
                let hello = db.run_command(doc! {"hello": 1}).await?;
                hello.contains_key("setName") || hello.get_str("msg").ok() == Some("isdbgrid")
            }
        };
        Ok(Self {
            client,
            db,
            transactions,
        })
    }

    pub fn uses_transactions(&self) -> bool {
        self.transactions
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub async fn ping(&self) -> Result<(), MongoError> {
        self.db.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }

    pub async fn start_session(&self) -> Result<Option<ClientSession>, MongoError> {
        if !self.transactions {
            return Ok(None);
        }
        let mut session = self.client.start_session().await?;
        session.start_transaction().await?;
        Ok(Some(session))
    }

    async fn command(
        &self,
        command: Document,
        session: Option<&mut ClientSession>,
    ) -> Result<Document, MongoError> {
        Ok(match session {
            Some(s) => self.db.run_command(command).session(s).await?,
            None => self.db.run_command(command).await?,
        })
    }

    pub async fn pointer(&self, view: View) -> Result<Option<Pointer>, MongoError> {
        let found = self
            .db
            .collection::<Document>(POINTERS)
            .find_one(doc! {"_id": view.name()})
            .await?;
        found
            .map(|d| {
                bson::from_document(d)
                    .map_err(|e| MongoError::Shape(format!("pointer of {view}: {e}")))
            })
            .transpose()
    }

    /// The active generation, creating generation 1 on first use.
    pub async fn active_generation(&self, view: View) -> Result<i64, MongoError> {
        if let Some(p) = self.pointer(view).await?
            && p.active > 0
        {
            return Ok(p.active);
        }
        let pointers = self.db.collection::<Document>(POINTERS);
        // Insert-if-absent; a concurrent first start may win, then we read theirs.
        let _ = pointers
            .update_one(
                doc! {"_id": view.name()},
                doc! {"$setOnInsert": {"active": 1_i64, "latest": 1_i64}},
            )
            .upsert(true)
            .await;
        Ok(self.pointer(view).await?.map_or(1, |p| p.active.max(1)))
    }

    /// Reserves the next generation number for a rebuild.
    pub async fn reserve_generation(&self, view: View) -> Result<i64, MongoError> {
        let current = self.active_generation(view).await?;
        let pointer = self.pointer(view).await?.unwrap_or(Pointer {
            active: current,
            latest: current,
        });
        let next = pointer.latest.max(pointer.active) + 1;
        self.db
            .collection::<Document>(POINTERS)
            .update_one(doc! {"_id": view.name()}, doc! {"$set": {"latest": next}})
            .await?;
        Ok(next)
    }

    /// Makes `generation` the one readers see: one single-document write, atomic.
    pub async fn activate(&self, view: View, generation: i64) -> Result<(), MongoError> {
        self.db
            .collection::<Document>(POINTERS)
            .update_one(
                doc! {"_id": view.name()},
                doc! {"$set": {"active": generation}},
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    pub async fn checkpoint(&self, view: View, generation: i64) -> Result<Position, MongoError> {
        Ok(self.progress(view, generation).await?.position)
    }

    /// The checkpoint in the generation's collection, else the one the old layout kept in
    /// [`CHECKPOINTS`] (a deployment upgraded from it resumes there), else the start.
    pub async fn progress(&self, view: View, generation: i64) -> Result<Progress, MongoError> {
        let found = self
            .db
            .collection::<Document>(&view.collection(generation))
            .find_one(doc! {"_id": CHECKPOINT_ID})
            .await?;
        let found = match found {
            Some(d) => Some(d),
            None => {
                self.db
                    .collection::<Document>(CHECKPOINTS)
                    .find_one(doc! {"_id": view.checkpoint_id(generation)})
                    .await?
            }
        };
        match found {
            None => Ok(Progress::default()),
            Some(d) => bson::from_document::<Checkpoint>(d)
                .map(|c| Progress {
                    position: c.position,
                    watermark: c
                        .watermark
                        .and_then(|w| DateTime::from_timestamp_millis(w.timestamp_millis())),
                })
                .map_err(|e| {
                    MongoError::Shape(format!(
                        "checkpoint of {}: {e}",
                        view.collection(generation)
                    ))
                }),
        }
    }

    /// Finds the documents with these ids.
    pub async fn find_by_ids(
        &self,
        collection: &str,
        ids: Vec<String>,
        session: Option<&mut ClientSession>,
    ) -> Result<HashMap<String, Document>, MongoError> {
        let mut found = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(found);
        }
        let coll = self.db.collection::<Document>(collection);
        // Every match in the first reply: the default first batch (101 documents) would cost a
        // getMore round trip per further 101 documents of a batch.
        let batch = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        let filter = doc! {"_id": {"$in": ids}};
        let mut cursor = match session {
            Some(s) => {
                let mut cursor = coll.find(filter).batch_size(batch).session(&mut *s).await?;
                let mut docs = vec![];
                while let Some(d) = cursor.next(&mut *s).await {
                    docs.push(d?);
                }
                for d in docs {
                    if let Ok(id) = d.get_str("_id").map(str::to_owned) {
                        found.insert(id, d);
                    }
                }
                return Ok(found);
            }
            None => coll.find(filter).batch_size(batch).await?,
        };
        while cursor.advance().await? {
            let d = Document::try_from(cursor.current())
                .map_err(|e| MongoError::Shape(e.to_string()))?;
            if let Ok(id) = d.get_str("_id") {
                found.insert(id.to_owned(), d);
            }
        }
        Ok(found)
    }

    /// Writes all documents in one `update` command. A document that moved since it was read
    /// makes its guarded upsert collide on `_id` (E11000): reported as a conflict.
    pub async fn write_guarded(
        &self,
        collection: &str,
        writes: Vec<GuardedWrite>,
        session: Option<&mut ClientSession>,
    ) -> Result<(), MongoError> {
        self.write_batch(collection, BTreeMap::new(), writes, None, session)
            .await
    }

    /// Replaces (or inserts) each document by `_id`, unguarded, in one `update` command.
    pub async fn replace_all(
        &self,
        collection: &str,
        documents: BTreeMap<String, Document>,
        session: Option<&mut ClientSession>,
    ) -> Result<(), MongoError> {
        self.write_batch(collection, documents, vec![], None, session)
            .await
    }

    /// One batch's writes to one view generation as ONE ordered `update` command: the side
    /// documents (unguarded, before the documents they come from), the guarded writes, then
    /// the checkpoint. Ordered execution stops at the first failing statement, so a conflict
    /// (E11000 on a guarded upsert) leaves the checkpoint where it was: it never moves past a
    /// write that did not happen, and the retry from it replays harmlessly.
    pub async fn write_batch(
        &self,
        collection: &str,
        side: BTreeMap<String, Document>,
        writes: Vec<GuardedWrite>,
        checkpoint: Option<(View, i64, Progress)>,
        session: Option<&mut ClientSession>,
    ) -> Result<(), MongoError> {
        let mut updates: Vec<Document> = side
            .into_iter()
            .map(|(id, mut d)| {
                d.insert("_id", id.clone());
                doc! {"q": {"_id": id}, "u": d, "upsert": true}
            })
            .collect();
        updates.extend(writes.into_iter().map(|w| {
            let guard = match w.expected {
                Some(p) => Bson::String(p),
                None => Bson::Document(doc! {"$exists": false}),
            };
            doc! {"q": {"_id": w.id, "appliedPosition": guard}, "u": w.document, "upsert": true}
        }));
        if let Some((view, generation, progress)) = checkpoint {
            updates.push(checkpoint_statement(view, generation, progress)?);
        }
        if updates.is_empty() {
            return Ok(());
        }
        let reply = self
            .command(
                doc! {"update": collection, "updates": updates, "ordered": true},
                session,
            )
            .await?;
        let errors = reply
            .get_array("writeErrors")
            .map(|a| a.as_slice())
            .unwrap_or(&[]);
        let conflicts = errors
            .iter()
            .filter(|e| e.as_document().and_then(|d| get_int(d, "code")) == Some(11000))
            .count();
        if conflicts < errors.len() {
            return Err(MongoError::Shape(format!("update failed: {:?}", errors)));
        }
        if conflicts > 0 {
            return Err(MongoError::Conflict(conflicts));
        }
        Ok(())
    }

    /// Records `progress` for `generation` of `view` on its own (tools, tests, benchmarks);
    /// the engine sends it with the batch instead.
    pub async fn save_checkpoint(
        &self,
        view: View,
        generation: i64,
        progress: impl Into<Progress>,
        session: Option<&mut ClientSession>,
    ) -> Result<(), MongoError> {
        let progress = progress.into();
        self.write_batch(
            &view.collection(generation),
            BTreeMap::new(),
            vec![],
            Some((view, generation, progress)),
            session,
        )
        .await
    }

    pub async fn park(
        &self,
        letter: Document,
        session: Option<&mut ClientSession>,
    ) -> Result<(), MongoError> {
        let id = letter.get_str("_id").unwrap_or_default().to_owned();
        let update = doc! {"q": {"_id": id}, "u": letter, "upsert": true};
        self.command(doc! {"update": DEAD_LETTERS, "updates": [update]}, session)
            .await?;
        Ok(())
    }

    pub async fn ensure_indexes(
        &self,
        collection: &str,
        indexes: Vec<Document>,
    ) -> Result<(), MongoError> {
        let coll = self.db.collection::<Document>(collection);
        for keys in indexes {
            coll.create_index(
                IndexModel::builder()
                    .keys(keys)
                    .options(IndexOptions::default())
                    .build(),
            )
            .await?;
        }
        Ok(())
    }

    /// Removes a generation's collection (its checkpoint with it) and any checkpoint of the
    /// old layout.
    pub async fn drop_generation(&self, view: View, generation: i64) -> Result<(), MongoError> {
        self.db
            .collection::<Document>(&view.collection(generation))
            .drop()
            .await?;
        self.db
            .collection::<Document>(CHECKPOINTS)
            .delete_one(doc! {"_id": view.checkpoint_id(generation)})
            .await?;
        Ok(())
    }
}
