//! The write-service: order commands over HTTP, appended to the PostgreSQL event store.

pub mod access;
pub mod commands;
pub mod decisions;
pub mod extract;
pub mod model;
pub mod openapi;
pub mod routes;
pub mod settings;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post, put};
use backon::{ExponentialBuilder, Retryable};
use event_store::{EventStore, MIGRATOR};
use metrics_exporter_prometheus::PrometheusHandle;
use service_kit::auth::{Auth, authorize};
use service_kit::ops::Ops;
use service_kit::telemetry;
use sqlx::PgPool;
use sqlx::migrate::MigrateError;
use tokio::net::TcpListener;
use utoipa::OpenApi;

use crate::openapi::ApiDoc;

pub use settings::Settings;

use service_kit::api_error::{MAX_BODY_BYTES, no_query_parameters};

#[derive(Clone)]
pub struct AppState {
    pub store: EventStore,
    pub metrics: PrometheusHandle,
    pub max_retries: u32,
    /// Token checks, the access rules ([`access::RULES`]) and the per-caller rate limit.
    pub auth: Auth,
}

impl AppState {
    /// `auth` is made from `settings.auth` by the caller: [`Auth::new`] reads a JWKS, which
    /// is async and may fail ([`Application::with_pool`] does it; tests use
    /// [`Auth::without_jwks`]).
    pub fn new(pool: PgPool, settings: &Settings, auth: Auth) -> Self {
        Self {
            store: EventStore::new(pool, settings.snapshot_every),
            metrics: telemetry::metrics_handle(),
            max_retries: settings.command_max_retries,
            auth,
        }
    }
}

pub fn router(state: AppState) -> Router {
    use routes::{ops, orders, products};
    let pool = state.store.pool().clone();
    let auth = state.auth.clone();
    // Every route here but `state` takes no query parameters and refuses any (422), as the
    // read-service's routes do; the ops routes ignore them (probes and scrapers).
    let routes = Router::new()
        .route("/orders", post(orders::create))
        .route("/orders/{order_id}/items", post(orders::add_item))
        .route(
            "/orders/{order_id}/items/{product_id}",
            delete(orders::remove_item),
        )
        .route("/orders/{order_id}/confirm", post(orders::confirm))
        .route("/orders/{order_id}/cancel", post(orders::cancel))
        .route("/orders/{order_id}/ship", post(orders::ship))
        .route("/orders/{order_id}/deliver", post(orders::deliver))
        .route("/orders/{order_id}/events", get(orders::events))
        .route(
            "/products/{product_id}",
            put(products::set_details).get(products::get),
        )
        .route(
            "/products/{product_id}/stock",
            post(products::receive_stock),
        )
        .route(
            "/products/{product_id}/stock/adjustments",
            post(products::adjust_stock),
        )
        .route_layer(middleware::from_fn(no_query_parameters))
        .route("/orders/{order_id}/state", get(orders::state))
        .merge(service_kit::ops::router(Ops {
            ready: Arc::new(move || ops::ready(pool.clone(), auth.clone())),
            metrics: state.metrics.clone(),
            openapi: Some(ApiDoc::openapi()),
        }))
        // Outermost of the route layers, so every route (the ops routes too, as `anyone`)
        // is checked against its rule before anything else reads the request.
        .route_layer(middleware::from_fn_with_state(
            state.auth.clone(),
            authorize,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    telemetry::http_layers(routes).with_state(state)
}

/// Runs migrations, waiting up to `patience` for PostgreSQL to accept connections.
pub async fn migrate(pool: &PgPool, patience: Duration) -> anyhow::Result<()> {
    let waiting = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_total_delay(Some(patience))
        .without_max_times();
    (|| MIGRATOR.run(pool))
        .retry(waiting)
        .when(|e| matches!(e, MigrateError::Execute(e) if event_store::is_unavailable(e)))
        .notify(|e, _| tracing::warn!("waiting for PostgreSQL: {e}"))
        .await?;
    Ok(())
}

pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    /// Reads the token keys, connects, migrates and binds; the service is ready to
    /// `run_until`. Refuses to start without a key (unless `AUTH_DISABLED=true`), before
    /// waiting for PostgreSQL.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let auth = Auth::new(&settings.auth, access::RULES).await?;
        let pool = settings.pool()?;
        migrate(&pool, Duration::from_secs(30)).await?;
        Self::bind(&settings, pool, auth).await
    }

    /// Binds the service on an existing pool (tests give each app its own database).
    /// Refuses to start without a key to check tokens with (unless `AUTH_DISABLED=true`).
    pub async fn with_pool(settings: &Settings, pool: PgPool) -> anyhow::Result<Self> {
        let auth = Auth::new(&settings.auth, access::RULES).await?;
        Self::bind(settings, pool, auth).await
    }

    async fn bind(settings: &Settings, pool: PgPool, auth: Auth) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.addr).await?;
        Ok(Self {
            listener,
            router: router(AppState::new(pool, settings, auth)),
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
