//! The read model as a contract: what the projector writes and the read-service reads, declared
//! once. Each view has one document type, its collections are named by [`View`] and a
//! generation, and the bookkeeping documents (which generation is active, how far each has
//! applied the log, how far the log reaches) have one shape each. See `docs/ARCHITECTURE.md`.

mod bookkeeping;
mod documents;
mod views;

pub use bookkeeping::{
    CHECKPOINT_ID, CHECKPOINTS, Checkpoint, DEAD_LETTERS, LOG_HEAD, LogHead, POINTERS, Pointer,
    without_checkpoint,
};
pub use documents::{
    Alert, AlertsDoc, CustomerRules, DayDoc, OrderDoc, OrderItem, ProductDoc, RECENT_ORDERS,
    RecentOrder, RuleRun, SalesCounts, SalesWindowDoc, ShopRules, UserDoc, ViewDocument,
    WindowTally,
};
pub use views::View;

/// Field the projector stamps on every view document: the position of the last event applied
/// to it, and the guard of its next write (see `docs/ARCHITECTURE.md`, per-document guards).
pub const APPLIED_POSITION: &str = "appliedPosition";
