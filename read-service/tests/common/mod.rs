//! Test support: a MongoDB database of the test's own (MONGODB_URI names the server) holding
//! read-model documents, and the read-service's router on top. Views as the projector fills
//! them from events are tested end to end in `e2e/tests/views.rs`.
#![allow(dead_code)]

use domain::Position;
use mongodb::bson::{self, Bson, Document, doc};
use read_model::{
    CHECKPOINT_ID, CHECKPOINTS, Checkpoint, LOG_HEAD, LogHead, POINTERS, Pointer, View,
};
use read_service::{AppState, Settings, router};
use test_support::http::Service;

pub use test_support::servers::mongodb_uri;

/// An `orders_view` document as the projector writes it.
pub fn order_doc(n: u64, user: &str, created_ms: i64) -> mongodb::bson::Document {
    let id = format!("00000000-0000-4000-8000-{n:012}");
    let at = mongodb::bson::DateTime::from_millis(created_ms);
    doc! {
        "_id": &id, "orderId": &id, "userId": user, "currency": "USD", "items": [],
        "itemCount": 0_i64, "totalCents": 100_i64, "status": "pending", "createdAt": at,
        "updatedAt": at, "confirmedAt": Bson::Null, "cancelledAt": Bson::Null,
        "cancelReason": Bson::Null, "shippedAt": Bson::Null, "carrier": Bson::Null,
        "trackingNumber": Bson::Null, "deliveredAt": Bson::Null, "version": 1_i64,
        "appliedPosition": "0000000000000001-0000000000000001",
    }
}

/// A MongoDB database of the test's own.
pub struct Mongo {
    pub name: String,
    pub client: mongodb::Client,
}

impl Mongo {
    pub async fn new() -> Self {
        let client = mongodb::Client::with_uri_str(mongodb_uri()).await.unwrap();
        Self {
            name: test_support::servers::fresh_database_name("r"),
            client,
        }
    }

    pub fn db(&self) -> mongodb::Database {
        self.client.database(&self.name)
    }

    pub fn settings(&self) -> Settings {
        settings(mongodb_uri(), &self.name)
    }

    pub async fn app(&self) -> App {
        app(self.settings()).await
    }

    /// The generation of `view` readers see: its pointer's, or the first.
    pub async fn active_generation(&self, view: View) -> i64 {
        let pointer = self
            .db()
            .collection::<Document>(POINTERS)
            .find_one(doc! {"_id": view.name()})
            .await
            .unwrap();
        pointer
            .map(|p| bson::from_document::<Pointer>(p).unwrap().active)
            .unwrap_or(1)
            .max(1)
    }

    /// Writes documents straight into the active generation of `view`.
    pub async fn insert(&self, view: View, docs: impl IntoIterator<Item = Document>) {
        let g = self.active_generation(view).await;
        self.db()
            .collection::<Document>(&view.collection(g))
            .insert_many(docs)
            .await
            .unwrap();
    }

    pub async fn put(&self, view: View, doc: Document) {
        self.insert(view, [doc]).await;
    }

    /// Records that the active generation of `view` has applied everything up to `position`.
    pub async fn checkpoint(&self, view: View, position: Position) {
        self.checkpoint_at(view, position, None).await;
    }

    /// [`Mongo::checkpoint`] with the log's event time then (`watermark`, ms since the epoch),
    /// where the projector keeps it: in the generation's own collection.
    pub async fn checkpoint_at(&self, view: View, position: Position, watermark: Option<i64>) {
        let generation = self.active_generation(view).await;
        let checkpoint = Checkpoint {
            id: CHECKPOINT_ID.to_owned(),
            projection: view.name().to_owned(),
            generation,
            position,
            watermark: watermark.map(bson::DateTime::from_millis),
        };
        self.db()
            .collection::<Document>(&view.collection(generation))
            .replace_one(
                doc! {"_id": CHECKPOINT_ID},
                bson::to_document(&checkpoint).unwrap(),
            )
            .upsert(true)
            .await
            .unwrap();
    }

    /// [`Mongo::checkpoint_at`] in the old layout (one collection of checkpoints), as a
    /// deployment wrote it before checkpoints moved into the views' collections.
    pub async fn legacy_checkpoint_at(
        &self,
        view: View,
        position: Position,
        watermark: Option<i64>,
    ) {
        let generation = self.active_generation(view).await;
        let checkpoint = Checkpoint {
            id: view.checkpoint_id(generation),
            projection: view.name().to_owned(),
            generation,
            position,
            watermark: watermark.map(bson::DateTime::from_millis),
        };
        self.db()
            .collection::<Document>(CHECKPOINTS)
            .replace_one(
                doc! {"_id": &checkpoint.id},
                bson::to_document(&checkpoint).unwrap(),
            )
            .upsert(true)
            .await
            .unwrap();
    }

    /// Records how far the event log reaches, as the projector does.
    pub async fn log_head(&self, head: LogHead) {
        let mut document = bson::to_document(&head).unwrap();
        document.insert("_id", LOG_HEAD);
        self.db()
            .collection::<Document>(POINTERS)
            .replace_one(doc! {"_id": LOG_HEAD}, document)
            .upsert(true)
            .await
            .unwrap();
    }

    pub async fn drop(&self) {
        let _ = self.db().drop().await;
    }
}

/// One event of a Server-Sent Events stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// A client of an event stream over real HTTP, parsing it as it arrives. Comments
/// (keep-alives) are skipped. Split on bytes: a chunk may end inside a UTF-8 character.
pub struct SseClient {
    pub response: reqwest::Response,
    buffer: Vec<u8>,
}

impl SseClient {
    /// `GET url` as staff, resuming after `last_event_id` if given; asserts 200.
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new().get(url).header(
            "authorization",
            test_support::auth::bearer(&test_support::auth::staff()),
        );
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        Self {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event, or `None` when the stream ends; panics after `wait` without one.
    pub async fn next_within(&mut self, wait: std::time::Duration) -> Option<SseEvent> {
        tokio::time::timeout(wait, self.next())
            .await
            .unwrap_or_else(|_| panic!("no event within {wait:?}"))
    }

    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("UTF-8 events");
                let mut event = SseEvent {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                };
                let mut data = vec![];
                for line in text.lines() {
                    if line.is_empty() || line.starts_with(':') {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => event.id = Some(value.to_owned()),
                        "event" => event.event = value.to_owned(),
                        "data" => data.push(value),
                        _ => {}
                    }
                }
                if !data.is_empty() {
                    event.data = data.join("\n");
                    return Some(event);
                }
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// `Settings::new` with the tests' token secret (it has no key of its own, so it would
/// refuse to start).
pub fn settings(mongodb_uri: impl Into<String>, database: impl Into<String>) -> Settings {
    Settings {
        auth: test_support::auth::settings(),
        ..Settings::new(mongodb_uri, database)
    }
}

/// The read-service's router, called in-process (as staff unless told otherwise).
pub type App = Service<AppState>;

pub async fn app(settings: Settings) -> App {
    let state = AppState::connect(&settings).await.unwrap();
    Service::new(router(state.clone()), state)
}
