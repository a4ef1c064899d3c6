//! The projections. Each says which documents of its view an event touches and how it
//! changes them; the engine (`crate::engine`) does the reading, guarding and writing. The
//! documents themselves are the read model's (`read_model`), shared with the read-service.

pub mod alerts;
pub mod daily_sales;
pub mod inventory;
pub mod orders;
pub mod sales_windows;
mod thresholds;
pub mod users;

pub use thresholds::Thresholds;

use chrono::{DateTime, Utc};
use mongodb::bson::{self, Document};
pub use read_model::View;
use read_model::ViewDocument;

use crate::context::Enriched;

pub trait Projection: Send + Sync + 'static {
    /// The view's document type, which names the view.
    type Doc: ViewDocument;
    const VIEW: View = <Self::Doc as ViewDocument>::VIEW;

    /// Ids of the documents this event changes.
    fn keys(e: &Enriched) -> Vec<String>;
    /// Applies the event to one of those documents, under the event-time views' settings.
    fn apply(doc: &mut Self::Doc, key: &str, e: &Enriched, rules: &Thresholds);

    /// Documents derived from `doc` by what was just applied to it, as `(_id, document)`:
    /// written whole into the same collection before `doc` itself, so a replay (which
    /// recomputes them from the same state and events) writes the same ones again.
    fn side_documents(_doc: &mut Self::Doc) -> Vec<(String, Document)> {
        Vec::new()
    }
}

/// View times are event times, stored as BSON dates (millisecond precision).
pub fn date(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(t.timestamp_millis())
}
