//! The read-service's part of the shared ops routes (`service_kit::ops`): its readiness.

use service_kit::auth::Auth;
use service_kit::ops::{self, Readiness};

use crate::store::Views;

/// Ready when MongoDB answers a ping within two seconds; the body names it `mongodb`.
///
/// `Views::ping` runs the driver's operation in a task of its own, so the timeout that drops
/// it leaves no checkout queued in the driver's pool (see the store module). With
/// authentication off the body says so (`"auth": "disabled"`), ready or not.
pub async fn ready(views: Views, auth: Auth) -> Readiness {
    let mut readiness = ops::ping("mongodb", views.ping()).await;
    let (Ok(details) | Err(details)) = &mut readiness;
    auth.readiness_note(details);
    readiness
}
