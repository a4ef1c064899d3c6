//! The documents beside the views: which generation of each view readers see, how far each
//! generation has applied the event log, and how far the log reaches.

use domain::Position;
use serde::{Deserialize, Serialize};

/// Collection of [`Pointer`]s, one per view, and of the [`LogHead`].
pub const POINTERS: &str = "projections";
/// Collection of [`Checkpoint`]s, one per view generation.
pub const CHECKPOINTS: &str = "projection_checkpoints";
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
