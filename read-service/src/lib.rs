//! The read-service: answers queries from the MongoDB views the projector maintains.
//!
//! It never touches PostgreSQL. It follows the active generation of each view per request,
//! so a rebuild switches it over without a restart, and it can wait for a consistency token
//! so a client reads its own writes.

pub mod access;
pub mod cursor;
pub mod model;
pub mod openapi;
pub mod query;
pub mod reply;
pub mod routes;
pub mod settings;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::ExposeSecret;
use service_kit::auth::{Auth, authorize};
use service_kit::ops::Ops;
use service_kit::telemetry;
use tokio::net::TcpListener;
use utoipa::OpenApi;

use crate::access::RULES;
use crate::openapi::ApiDoc;

pub use settings::Settings;
pub use store::Views;

#[derive(Clone)]
pub struct AppState {
    pub views: Views,
    pub metrics: PrometheusHandle,
    /// Signs and checks pagination cursors (`READ_CURSOR_SECRET`, else a random key).
    pub cursors: cursor::Signer,
    /// Checks tokens against [`RULES`]; handlers scope customers by the `Caller` it sets.
    pub auth: Auth,
}

impl AppState {
    /// A lazily connecting client: nothing here waits for MongoDB.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let client = settings.client().await?;
        Ok(Self {
            views: Views::new(
                client.database(&settings.mongodb_database),
                settings.consistency_timeout(),
                usize::try_from(settings.max_waiting).unwrap_or(usize::MAX),
            ),
            metrics: telemetry::metrics_handle(),
            cursors: cursor::Signer::from_secret(
                settings.cursor_secret.as_ref().map(|s| s.expose_secret()),
            )
            .map_err(|e| anyhow::anyhow!("no random key for cursors: {e}"))?,
            // Refuses to start without a key, unless AUTH_DISABLED=true.
            auth: Auth::new(&settings.auth, RULES)
                .await
                .map_err(|e| anyhow::anyhow!("authentication: {e}"))?,
        })
    }
}

pub fn router(state: AppState) -> Router {
    use routes::{dashboard, inventory, ops, orders, sales, users};
    let (views, auth) = (state.views.clone(), state.auth.clone());
    let routes = Router::new()
        .route("/orders", get(orders::search))
        .route("/orders/{orderId}", get(orders::get_order))
        .route("/users/{userId}/orders", get(users::orders))
        .route("/sales/daily", get(sales::range))
        .route("/sales/daily/{date}", get(sales::day))
        .route("/inventory", get(inventory::low_stock))
        .route("/inventory/{productId}", get(inventory::product))
        .route("/dashboard/summary", get(dashboard::summary))
        .merge(service_kit::ops::router(Ops {
            ready: Arc::new(move || ops::ready(views.clone(), auth.clone())),
            metrics: state.metrics.clone(),
            openapi: Some(ApiDoc::openapi()),
        }))
        // Outermost route layer, after the merge: every route, ops included, has its rule
        // checked (a route without one is refused).
        .route_layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            authorize,
        ));
    telemetry::http_layers(routes).with_state(state)
}

pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    /// Creates the MongoDB client and binds; MongoDB may still be down (reads answer 503).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let state = AppState::connect(&settings).await?;
        let listener = TcpListener::bind(settings.addr).await?;
        Ok(Self {
            listener,
            router: router(state),
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(service_kit::serve::JsonErrors(self.listener), self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
