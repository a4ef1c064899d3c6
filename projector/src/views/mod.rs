//! The four read views. Each says which documents an event touches and how it changes
//! them; the engine (`crate::engine`) does the reading, guarding and writing.

pub mod daily_sales;
pub mod inventory;
pub mod orders;
pub mod users;

use chrono::{DateTime, Utc};
use mongodb::bson::{self, Document};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Enriched;

pub trait View: Send + Sync + 'static {
    /// Collection prefix and projection name, e.g. `orders_view`.
    const NAME: &'static str;
    type Doc: Default + Serialize + DeserializeOwned + Send;

    /// Ids of the documents this event changes.
    fn keys(e: &Enriched) -> Vec<String>;
    /// Applies the event to one of those documents.
    fn apply(doc: &mut Self::Doc, key: &str, e: &Enriched);
    /// Index keys the read-service's queries need.
    fn indexes() -> Vec<Document>;
}

/// All projections, by name, as `rebuild --projection` and `status` know them.
pub const ALL: [&str; 4] = [
    orders::NAME,
    users::NAME,
    daily_sales::NAME,
    inventory::NAME,
];

/// View times are event times, stored as BSON dates (millisecond precision).
pub fn date(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}
