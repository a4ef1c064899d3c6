//! The projector's lease names: one writer per projection generation, through the event
//! store's advisory-lock lease (`event_store::lease`).

pub use event_store::lease::Lease;

/// Named by view database too: two view databases fed from one event store must not share
/// leases.
pub fn name_for(database: &str, view: &str, generation: i64) -> String {
    format!("projector:{database}:{view}:g{generation}")
}
