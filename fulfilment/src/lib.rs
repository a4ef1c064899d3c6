//! The fulfilment process: a process manager driven by the event log. It follows the log
//! (gap-safe, from its own checkpoint), and for each order checked out with a payment
//! method charges it through the payment provider, records the outcome (paid; or declined,
//! cancelled and its stock released), cancels it at the payment timeout, refunds a paid
//! order that is cancelled, and emails the customer at each step.
//!
//! Exactly once inside: every step commits its events, the process's state, the outside
//! work it queues and the deadlines it sets (and, for a step driven by the log, the inbox
//! and the checkpoint) in one PostgreSQL transaction. At least once outside: the dispatcher
//! performs charges, refunds and emails with the provider's idempotency keys and stable
//! `Message-ID`s, so a repeat after a crash charges nobody twice. One instance acts at a
//! time (a lease); a standby takes over when the leader dies.

pub mod dispatch;
pub mod emails;
pub mod mailer;
pub mod orders;
pub mod provider;
pub mod settings;
pub mod steps;
pub mod store;
pub mod tail;

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_store::EventStore;
use event_store::lease::Lease;
use service_kit::ops::{Details, Ops, PING_TIMEOUT, Readiness};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatcher;
use crate::mailer::Mailer;
use crate::provider::Provider;
pub use crate::settings::Settings;
use crate::steps::Steps;
use crate::tail::Tail;

/// The lease only one running instance holds.
const LEASE: &str = "fulfilment";

/// `fulfilment run`: the process, plus health and metrics over HTTP.
pub struct Application {
    settings: Settings,
    pool: PgPool,
    pg_options: PgConnectOptions,
    store: EventStore,
    provider: Provider,
    mailer: Mailer,
    /// Taken by `run_until`.
    listener: Option<TcpListener>,
    leader: watch::Sender<bool>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = settings.pool()?;
        let pg_options = settings.pg_options()?;
        let key = settings.payment_api_key.clone().ok_or_else(|| {
            anyhow::anyhow!("PAYMENT_API_KEY is not set: the payment provider's secret key (the sandbox takes any `sk_test_...`)")
        })?;
        let provider = Provider::new(
            &settings.payment_provider_url,
            key,
            settings.payment_request_timeout,
        )?;
        let mailer = Mailer::new(&settings.smtp_url, &settings.mail_from)?;
        let listener = TcpListener::bind(settings.addr).await?;
        Ok(Self {
            store: EventStore::new(pool.clone(), 100),
            pool,
            pg_options,
            provider,
            mailer,
            listener: Some(listener),
            leader: watch::channel(false).0,
            settings,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port())
    }

    pub async fn run_until(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        let listener = self
            .listener
            .take()
            .ok_or_else(|| anyhow::anyhow!("the application runs once"))?;
        let mut tasks = tokio::task::JoinSet::new();
        let (wake_tx, wake_rx) = watch::channel(0u64);
        tasks.spawn(event_store::listen::listen_for_appends(
            self.pg_options.clone(),
            wake_tx,
            cancel.clone(),
        ));
        let me = Arc::new(self);
        tasks.spawn(me.clone().lead(wake_rx, cancel.clone()));
        tasks.spawn(report_backlog(me.pool.clone(), cancel.clone()));

        let ready_state = me.clone();
        let app = service_kit::ops::router(Ops {
            ready: Arc::new(move || ready(ready_state.clone())),
            metrics: service_kit::telemetry::metrics_handle(),
            openapi: None,
        });
        let app = service_kit::telemetry::http_layers(app);
        let shutdown = cancel.clone();
        axum::serve(service_kit::serve::JsonErrors(listener), app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await?;
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// Waits for the lease, then runs the tail, the dispatcher and the deadlines until the
    /// lease is lost (then stands by again) or `cancel`.
    async fn lead(self: Arc<Self>, wake: watch::Receiver<u64>, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let Some(mut lease) = Lease::acquire(&self.pg_options, LEASE, &cancel).await else {
                return;
            };
            tracing::info!("holding the fulfilment lease; running");
            self.leader.send_replace(true);
            let term = cancel.child_token();
            let mut parts = tokio::task::JoinSet::new();
            let appended = Arc::new(Notify::new());
            let work_queued = Arc::new(Notify::new());
            let steps = Steps {
                store: self.store.clone(),
                payment_timeout: self.settings.payment_timeout,
                customer_email_domain: self.settings.customer_email_domain.clone(),
            };
            parts.spawn(
                Tail {
                    pool: self.pool.clone(),
                    store: self.store.clone(),
                    steps: steps.clone(),
                    batch_size: 500,
                    poll_interval: self.settings.poll_interval(),
                    wake: wake.clone(),
                    appended: appended.clone(),
                    work_queued: work_queued.clone(),
                }
                .run(term.clone()),
            );
            parts.spawn(
                Dispatcher {
                    pool: self.pool.clone(),
                    steps: steps.clone(),
                    provider: self.provider.clone(),
                    mailer: self.mailer.clone(),
                    poll_interval: self.settings.poll_interval(),
                    max_retry_delay: self.settings.max_retry_delay,
                    work_queued,
                    appended: appended.clone(),
                }
                .run(term.clone()),
            );
            parts.spawn(deadlines(
                self.pool.clone(),
                steps,
                self.store.clone(),
                self.settings.poll_interval(),
                appended,
                term.clone(),
            ));
            let mut last_check = Instant::now();
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                if last_check.elapsed() >= Duration::from_secs(1) {
                    last_check = Instant::now();
                    if !lease.is_held().await {
                        tracing::warn!("lost the lease connection; standing by");
                        break;
                    }
                }
            }
            term.cancel();
            while parts.join_next().await.is_some() {}
            self.leader.send_replace(false);
            lease.release().await;
        }
    }
}

/// Fires due deadlines, each in its own step: one that fails is retried at the next poll
/// and never holds up the others.
async fn deadlines(
    pool: PgPool,
    steps: Steps,
    store: EventStore,
    poll: Duration,
    appended: Arc<Notify>,
    cancel: CancellationToken,
) {
    while !cancel.is_cancelled() {
        match store::due_deadlines(&pool, 100).await {
            Ok(due) => {
                for d in due {
                    match steps.timeout(&pool, &d).await {
                        Ok(true) => {
                            tracing::info!(order = %d.order_id, "payment timed out; order cancelled");
                            appended.notify_one();
                            if let Err(e) = store.notify_appended().await {
                                tracing::debug!(error = %e, "no notification sent");
                            }
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(deadline = %d.id, error = %e, "cannot fire a deadline; will retry")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the deadlines; retrying"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Publishes the outbox backlog as `fulfilment_work_waiting` (every kind, 0 included) and
/// the work that needs a person as `fulfilment_work_failed`.
async fn report_backlog(pool: PgPool, cancel: CancellationToken) {
    while !cancel.is_cancelled() {
        if let Ok(s) = store::summary(&pool).await {
            for kind in ["charge", "refund", "email"] {
                let n = s
                    .work_waiting
                    .iter()
                    .find(|(k, _)| k == kind)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("fulfilment_work_waiting", "kind" => kind).set(n as f64);
            }
            metrics::gauge!("fulfilment_work_failed").set(s.work_failed as f64);
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Ready when PostgreSQL answers; says whether this instance leads or stands by.
async fn ready(app: Arc<Application>) -> Readiness {
    let pg = tokio::time::timeout(PING_TIMEOUT, sqlx::query("select 1").execute(&app.pool))
        .await
        .is_ok_and(|r| r.is_ok());
    let details = Details::from_iter([
        ("postgres".to_owned(), pg.into()),
        ("leader".to_owned(), (*app.leader.borrow()).into()),
    ]);
    if pg { Ok(details) } else { Err(details) }
}

/// `fulfilment status`: processes by state, outside work waiting, the oldest due
/// deadline, and how far the process lags the log.
pub async fn status(settings: &Settings) -> anyhow::Result<serde_json::Value> {
    let pool = settings.pool()?;
    let summary = store::summary(&pool).await?;
    let store = EventStore::new(pool, 100);
    let (lag, oldest) = store.lag_after(summary.checkpoint).await?;
    Ok(serde_json::json!({
        "checkpoint": summary.checkpoint,
        "lagEvents": lag,
        "oldestUnprocessedEventAt": oldest,
        "processes": counts(summary.processes),
        "workWaiting": counts(summary.work_waiting),
        "workFailed": summary.work_failed,
        "pendingDeadlines": summary.pending_deadlines,
        "oldestDueDeadline": summary.oldest_due_deadline,
    }))
}

fn counts(rows: Vec<(String, i64)>) -> serde_json::Value {
    rows.into_iter()
        .map(|(k, n)| (k, n.into()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}
