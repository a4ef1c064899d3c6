//! The projector: tails the PostgreSQL event log into exactly-once MongoDB views.
//!
//! `run` keeps every projection current; `rebuild` builds a new generation from scratch and
//! switches to it without downtime; `status` shows how far each one lags.

pub mod context;
pub mod engine;
pub mod http;
pub mod lease;
pub mod log_head;
pub mod mongo;
pub mod projections;
pub mod rebuild;
pub mod runner;
pub mod settings;
pub mod status;
pub mod tail;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use domain::Position;
use event_store::EventStore;
use secrecy::ExposeSecret;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::mongo::ViewStore;
use crate::projections::alerts::AlertsProjection;
use crate::projections::daily_sales::DailySalesProjection;
use crate::projections::inventory::InventoryProjection;
use crate::projections::orders::OrdersProjection;
use crate::projections::sales_windows::SalesWindowsProjection;
use crate::projections::users::UsersProjection;
use crate::projections::{Projection, View};
use crate::runner::{Runner, StatusBoard};
pub use crate::settings::Settings;

/// Calls `$f::<P>($args)` with `P` the projection that maintains `$view` (a `read_model::View`).
#[macro_export]
macro_rules! for_view {
    ($view:expr, $($f:ident)::+ ( $($arg:expr),* )) => {
        match $view {
            $crate::projections::View::Orders => $($f)::+::<$crate::projections::orders::OrdersProjection>($($arg),*).await,
            $crate::projections::View::Users => $($f)::+::<$crate::projections::users::UsersProjection>($($arg),*).await,
            $crate::projections::View::DailySales => $($f)::+::<$crate::projections::daily_sales::DailySalesProjection>($($arg),*).await,
            $crate::projections::View::Inventory => $($f)::+::<$crate::projections::inventory::InventoryProjection>($($arg),*).await,
            $crate::projections::View::SalesByMinute => $($f)::+::<$crate::projections::sales_windows::SalesWindowsProjection>($($arg),*).await,
            $crate::projections::View::Alerts => $($f)::+::<$crate::projections::alerts::AlertsProjection>($($arg),*).await,
        }
    };
}

/// Connections to both stores and the settings every command shares.
#[derive(Clone)]
pub struct Projector {
    pub engine: Engine,
    pub pg_options: PgConnectOptions,
    pub batch_size: i64,
    pub settings: Settings,
}

impl Projector {
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let views = ViewStore::connect(
            settings.mongodb_uri.expose_secret(),
            &settings.mongodb_database,
            settings.transactions,
        )
        .await?;
        tracing::info!(
            transactions = views.uses_transactions(),
            "MongoDB write mode: {}",
            if views.uses_transactions() {
                "transactions plus per-document guards"
            } else {
                "per-document guards (server has no transactions)"
            }
        );
        Ok(Self {
            engine: Engine {
                store: EventStore::new(settings.pool()?, 100),
                views,
                on_poison: settings.on_poison,
                rules: settings.thresholds,
                facts: Default::default(),
            },
            pg_options: settings.pg_options()?,
            batch_size: settings.batch_size,
            settings: settings.clone(),
        })
    }
}

impl Projector {
    /// Applies to `generation` of `view`, from its checkpoint, everything committed up to
    /// `until` (and whatever else is readable by then). For tools and tests: `run` keeps the
    /// active generations current by itself.
    pub async fn catch_up(
        &self,
        view: View,
        generation: i64,
        until: Position,
    ) -> Result<Position, rebuild::CatchUpError> {
        async fn one<P: Projection>(
            projector: &Projector,
            generation: i64,
            until: Position,
        ) -> Result<Position, rebuild::CatchUpError> {
            let from = projector
                .engine
                .views
                .progress(P::VIEW, generation)
                .await
                .map_err(engine::ProjectorError::from)?;
            rebuild::catch_up::<P>(
                &projector.engine,
                generation,
                from,
                until,
                projector.batch_size,
                &CancellationToken::new(),
                |_| {},
            )
            .await
        }
        for_view!(view, one(self, generation, until))
    }
}

/// `projector run`: every projection, plus health and metrics over HTTP.
pub struct Application {
    projector: Projector,
    listener: TcpListener,
    board: StatusBoard,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let projector = Projector::connect(&settings).await?;
        let listener = TcpListener::bind(settings.addr).await?;
        Ok(Self {
            projector,
            listener,
            board: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn status_board(&self) -> StatusBoard {
        self.board.clone()
    }

    pub async fn run_until(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let p = &self.projector;
        let (wake_tx, wake_rx) = watch::channel(0u64);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(event_store::listen::listen_for_appends(
            p.pg_options.clone(),
            wake_tx,
            cancel.clone(),
        ));
        let runner = Runner {
            engine: p.engine.clone(),
            pg_options: p.pg_options.clone(),
            batch_size: p.batch_size,
            poll_interval: p.settings.poll_interval(),
            wake: wake_rx,
            board: self.board.clone(),
            tail: Arc::new(tail::SharedTail::new()),
        };
        fn spawn<V: Projection>(
            tasks: &mut tokio::task::JoinSet<()>,
            runner: &Runner,
            cancel: &CancellationToken,
        ) {
            tasks.spawn(runner.clone().run::<V>(cancel.clone()));
        }
        spawn::<OrdersProjection>(&mut tasks, &runner, &cancel);
        spawn::<UsersProjection>(&mut tasks, &runner, &cancel);
        spawn::<DailySalesProjection>(&mut tasks, &runner, &cancel);
        spawn::<SalesWindowsProjection>(&mut tasks, &runner, &cancel);
        spawn::<AlertsProjection>(&mut tasks, &runner, &cancel);
        spawn::<InventoryProjection>(&mut tasks, &runner, &cancel);
        tasks.spawn(log_head::keep_recorded(
            p.engine.store.clone(),
            p.engine.views.clone(),
            p.settings.poll_interval(),
            cancel.clone(),
        ));

        let app = http::router(http::HttpState {
            engine: p.engine.clone(),
            board: self.board.clone(),
            metrics: service_kit::telemetry::metrics_handle(),
        });
        let shutdown = cancel.clone();
        axum::serve(service_kit::serve::JsonErrors(self.listener), app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await?;
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}
