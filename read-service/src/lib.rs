//! The read-service: answers queries from the MongoDB views the projector maintains.
//!
//! It never touches PostgreSQL. It follows the active generation of each view per request,
//! so a rebuild switches it over without a restart, and it can wait for a consistency token
//! so a client reads its own writes.

pub mod access;
pub mod cursor;
pub mod hub;
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
use tokio_util::sync::CancellationToken;
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
    /// The dashboard stream's shared poller and frames.
    pub hub: hub::Hub,
    /// Cancelled when the service shuts down: open event streams end on it, since graceful
    /// shutdown otherwise waits for them forever (tokio-rs/axum#2673).
    pub shutdown: CancellationToken,
}

impl AppState {
    /// A lazily connecting client: nothing here waits for MongoDB.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let client = settings.client().await?;
        let views = Views::new(
            client.database(&settings.mongodb_database),
            settings.consistency_timeout(),
            usize::try_from(settings.max_waiting).unwrap_or(usize::MAX),
        );
        let shutdown = CancellationToken::new();
        Ok(Self {
            hub: hub::Hub::new(views.clone(), shutdown.clone()),
            shutdown,
            views,
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
    use routes::{alerts, dashboard, inventory, ops, orders, page, sales, stream, users, windows};
    let (views, auth) = (state.views.clone(), state.auth.clone());
    let routes = Router::new()
        .route("/orders", get(orders::search))
        .route("/orders/{orderId}", get(orders::get_order))
        .route("/users/{userId}/orders", get(users::orders))
        .route("/sales/daily", get(sales::range))
        .route("/sales/daily/{date}", get(sales::day))
        .route("/sales/minutely", get(windows::minutely))
        .route("/sales/hourly", get(windows::hourly))
        .route("/alerts", get(alerts::list))
        .route("/inventory", get(inventory::low_stock))
        .route("/inventory/{productId}", get(inventory::product))
        .route("/dashboard/summary", get(dashboard::summary))
        .route("/dashboard/stream", get(stream::stream))
        .route("/dashboard", get(page::dashboard))
        .route("/dashboard/assets/{file}", get(page::asset))
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
    shutdown: CancellationToken,
}

impl Application {
    /// Creates the MongoDB client and binds; MongoDB may still be down (reads answer 503).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let state = AppState::connect(&settings).await?;
        let listener = TcpListener::bind(settings.addr).await?;
        Ok(Self {
            listener,
            shutdown: state.shutdown.clone(),
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
        let streams = self.shutdown;
        axum::serve(service_kit::serve::JsonErrors(self.listener), self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Ends the event streams, which graceful shutdown would wait for forever.
                streams.cancel();
            })
            .await
    }
}
