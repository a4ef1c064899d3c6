//! The documents beside the views: which generation of each view readers see, how far each
//! generation has applied the event log, and how far the log reaches.

use domain::Position;
use serde::{Deserialize, Serialize};

/// Collection of [`Pointer`]s, one per view, and of the [`LogHead`].
pub const POINTERS: &str = "projections";
/// Collection of the [`Checkpoint`]s of the old layout, one per view generation. Checkpoints
/// now live in the view's own collection ([`CHECKPOINT_ID`]); readers fall back to this one
/// while a generation has no checkpoint of the new layout yet, so an upgrade keeps its place.
pub const CHECKPOINTS: &str = "projection_checkpoints";
/// `_id` of a generation's [`Checkpoint`] inside the generation's own collection, so a batch's
/// view writes and its checkpoint are one `update` command. Sorts after every view document's
/// `_id` (ids are ASCII below `~`), so `_id` ranges never include it; filters that could match
/// it go through [`without_checkpoint`].
pub const CHECKPOINT_ID: &str = "~checkpoint";
/// Collection of events a projection could not apply, parked for an operator.
pub const DEAD_LETTERS: &str = "projection_dead_letters";
/// `_id` of the [`LogHead`] document in [`POINTERS`].
pub const LOG_HEAD: &str = "log_head";

/// `{_id: view, active, latest}`: readers use `active`; a rebuild builds `latest` and then
/// makes it active with one single-document write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    pub active: i64,
    pub latest: i64,
}

/// `{_id: "<view>_g<N>", projection, generation, position, watermark}`: everything up to
/// `position` is applied to that generation, and `watermark` is the latest recorded time of
/// those events: the log's event time, which decides when an event-time window is final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(rename = "_id")]
    pub id: String,
    pub projection: String,
    pub generation: i64,
    pub position: Position,
    /// Absent in checkpoints written before it existed, and before the first event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<bson::DateTime>,
}

/// `filter` restricted to the view's own documents: it never matches the generation's
/// checkpoint, which shares the collection. Adds `$ne` to the filter's own `_id` condition
/// (no `$and`, which a server may plan worse), so `_id` ranges stay on the primary index.
pub fn without_checkpoint(mut filter: bson::Document) -> bson::Document {
    let not_checkpoint = bson::Bson::String(CHECKPOINT_ID.to_owned());
    match filter.get_mut("_id") {
        None => {
            filter.insert("_id", bson::doc! {"$ne": not_checkpoint});
        }
        Some(bson::Bson::Document(ops))
            if ops.keys().all(|k| k.starts_with('$')) && !ops.contains_key("$ne") =>
        {
            ops.insert("$ne", not_checkpoint);
        }
        // Equality with another id cannot match the checkpoint.
        Some(bson::Bson::String(id)) if id != CHECKPOINT_ID => {}
        Some(_) => return bson::doc! {"$and": [filter, {"_id": {"$ne": not_checkpoint}}]},
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn filters_leave_the_checkpoint_out() {
        assert_eq!(
            without_checkpoint(doc! {"status": "x"}),
            doc! {"status": "x", "_id": {"$ne": CHECKPOINT_ID}}
        );
        assert_eq!(
            without_checkpoint(doc! {"_id": {"$gte": "a", "$lte": "b"}}),
            doc! {"_id": {"$gte": "a", "$lte": "b", "$ne": CHECKPOINT_ID}}
        );
        assert_eq!(without_checkpoint(doc! {"_id": "a"}), doc! {"_id": "a"});
        assert_eq!(
            without_checkpoint(doc! {"_id": CHECKPOINT_ID}),
            doc! {"$and": [{"_id": CHECKPOINT_ID}, {"_id": {"$ne": CHECKPOINT_ID}}]}
        );
    }
}

/// `{_id: "log_head", maxGlobalPosition, nextTxId}`: how far the event log reached when the
/// projector last looked, so readers can tell a token no write has returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogHead {
    pub max_global_position: i64,
    /// PostgreSQL's next transaction id then: every event written since has one at least as
    /// high.
    pub next_tx_id: i64,
}
