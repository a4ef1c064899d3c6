//! The read-service's part of the shared ops routes (`service_kit::ops`): its readiness.

use service_kit::ops::{self, Readiness};

use crate::store::Views;

/// Ready when MongoDB answers a ping within two seconds; the body names it `mongodb`.
///
/// `Views::ping` runs the driver's operation in a task of its own, so the timeout that drops
/// it leaves no checkout queued in the driver's pool (see the store module).
pub async fn ready(views: Views) -> Readiness {
    ops::ping("mongodb", views.ping()).await
}
