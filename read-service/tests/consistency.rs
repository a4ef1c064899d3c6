//! Consistency-token waits under attack: a burst of waiting reads must not leave the service
//! unable to answer, and forged tokens must cost next to nothing.

mod common;

use std::time::{Duration, Instant};

use common::Mongo;
use domain::Position;
use mongodb::bson::doc;
use read_model::{LogHead, View};
use read_service::Application;
use reqwest::StatusCode;
use serde_json::Value;

struct Server {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(settings: read_service::Settings) -> Self {
        let server = Application::build(settings).await.unwrap();
        let base = format!("http://127.0.0.1:{}", server.port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            base,
            stop,
            serving,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.serving.await.unwrap().unwrap();
    }
}

/// Readiness and a plain read, each required to answer; a hang shows as the client's
/// timeout. Returns the slowest round (printed by the burst test, not asserted: machines
/// here are shared and noisy).
async fn answers_promptly(client: &reqwest::Client, base: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let ready = client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/health/ready after {:?}: {e}", started.elapsed()));
        let status = ready.status();
        let body = ready.text().await.unwrap_or_default();
        assert_eq!(
            status,
            StatusCode::OK,
            "/health/ready after {:?}: {body}",
            started.elapsed()
        );
        let read = client
            .get(format!("{base}/orders/{}", uuid::Uuid::new_v4()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /orders/{{id}} after {:?}: {e}", started.elapsed()));
        assert_eq!(read.status(), StatusCode::NOT_FOUND);
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

async fn get(client: reqwest::Client, url: String, token: &str) -> (StatusCode, String, Value) {
    let r = client
        .get(url)
        .header("x-consistency-token", token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, retry_after, r.json().await.unwrap())
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Once, 200 reads waiting at the same moment left every later MongoDB read stuck for
/// minutes (the driver pool's wait queue held their dropped checkouts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_waits_leaves_the_service_answering() {
    let mongo = Mongo::new().await;
    let mut settings = mongo.settings();
    settings.consistency_timeout_ms = 1000;
    let server = Server::start(settings).await;
    // Far more than the service ever needs: the old failure was a hang of 20 s and more.
    // As staff: the reads here are of orders nobody owns.
    let staff = test_support::auth::bearer(&test_support::auth::staff());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            staff.parse().unwrap(),
        )]))
        .build()
        .unwrap();
    answers_promptly(&client, &server.base).await;
    for round in 0..3 {
        // No log head is recorded here, so no token can be refused: every one waits or
        // finds no place to wait.
        let burst: Vec<_> = (0..200)
            .map(|_| {
                let url = format!("{}/orders/{}", server.base, uuid::Uuid::new_v4());
                tokio::spawn(get(
                    client.clone(),
                    url,
                    "7000000000000000-7000000000000000",
                ))
            })
            .collect();
        for b in burst {
            let (status, retry_after, body) = b.await.unwrap();
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "round {round}: {body}"
            );
            assert!(
                ["not_caught_up", "too_many_waiting"].contains(&code(&body)),
                "round {round}: {body}"
            );
            assert_eq!(retry_after, "1");
        }
        let slowest = answers_promptly(&client, &server.base).await;
        eprintln!("round {round}: slowest readiness + read after the burst: {slowest:?}");
    }
    server.stop().await;
    mongo.drop().await;
}

/// The waiters share one poll, and there are never more of them than the setting allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_places_are_bounded_and_waiters_share_one_poll() {
    let mongo = Mongo::new().await;
    let mut settings = mongo.settings();
    settings.consistency_timeout_ms = 30_000;
    settings.max_waiting = 2;
    let app = common::app(settings.clone()).await;
    let mut waiting = app.state.views.waiting();
    let token: Position = "0000000000000100-0000000000000100".parse().unwrap();
    let id = uuid::Uuid::new_v4();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.get_at(&format!("/orders/{id}"), token).await })
        })
        .collect();
    waiting.wait_for(|n| *n == 2).await.unwrap();

    // No place left: refused at once, not after the 30 s timeout.
    let third = app.get_at(&format!("/orders/{id}"), token).await;
    assert_eq!(
        (third.status, third.code()),
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_waiting"
        ),
        "{:?}",
        third.body
    );
    assert_eq!(third.headers["retry-after"], "1");

    // The view applies the token: both waiters see it through the shared poll.
    mongo.checkpoint(View::Orders, token).await;
    for w in waiters {
        let r = w.await.unwrap();
        assert_eq!(
            (r.status, r.code()),
            (axum::http::StatusCode::NOT_FOUND, "order_not_found"),
            "{:?}",
            r.body
        );
        assert!(r.position() >= token);
    }
    waiting.wait_for(|n| *n == 0).await.unwrap();
    // The places are free again.
    let r = app.get_at(&format!("/orders/{id}"), token).await;
    assert_eq!(r.status, axum::http::StatusCode::NOT_FOUND, "{:?}", r.body);
    mongo.drop().await;
}

/// A token beyond the log head the projector recorded is refused at once; one a write
/// could just have returned still waits.
#[tokio::test]
async fn a_token_beyond_the_log_head_is_refused_at_once() {
    let mongo = Mongo::new().await;
    mongo
        .log_head(LogHead {
            max_global_position: 10,
            next_tx_id: 1000,
        })
        .await;
    let mut settings = mongo.settings();
    // Long enough that a wait shows as a hang, not as a quick 503.
    settings.consistency_timeout_ms = 60_000;
    let app = common::app(settings.clone()).await;
    let id = uuid::Uuid::new_v4();
    for forged in [
        "7fffffffffffffff-7fffffffffffffff",
        "00000000000003e8-00000000001e8495", // 1000, 2,000,021: past the position slack
        "00000000001e8495-000000000000000b", // 2,000,021, 11: past the transaction slack
        "ffffffffffffffff-0000000000000001",
    ] {
        let r = app
            .get_with(&format!("/orders/{id}"), &[("x-consistency-token", forged)])
            .await;
        assert_eq!(
            (r.status, r.code(), r.field()),
            (
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_consistency_token",
                "X-Consistency-Token"
            ),
            "{forged}: {:?}",
            r.body
        );
    }
    // Just ahead of the head: a write may have returned it since; it waits (and here times
    // out, as nothing applies it).
    settings.consistency_timeout_ms = 50;
    let app = common::app(settings).await;
    let r = app
        .get_with(
            &format!("/orders/{id}"),
            &[("x-consistency-token", "00000000000003e9-000000000000000b")],
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not_caught_up"),
        "{:?}",
        r.body
    );
    mongo.drop().await;
}
