//! The projector as a real process: killed with SIGKILL at random moments while events
//! stream in, restarted each time; and a standby taking over from a killed leader.

mod common;

use secrecy::ExposeSecret;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestEnv, create, line};
use domain::order::OrderCommand;
use domain::{OrderId, Position};
use projector::projections::View;
use projector::{Projector, for_view};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

fn spawn_projector(env: &TestEnv, batch_size: u32) -> Child {
    Command::new(env!("CARGO_BIN_EXE_projector"))
        .arg("run")
        .env("DATABASE_URL", env.settings.database_url.expose_secret())
        .env("MONGODB_URI", env.settings.mongodb_uri.expose_secret())
        .env("MONGODB_DATABASE", &env.settings.mongodb_database)
        .env("PROJECTOR_ADDR", "127.0.0.1:0")
        .env("PROJECTOR_BATCH_SIZE", batch_size.to_string())
        .env("PROJECTOR_POLL_INTERVAL_MS", "50")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the projector binary")
}

/// Reads the child's log until it says which port it serves health on.
async fn health_port(child: &mut Child) -> u16 {
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.contains("listening")
                && let Some(p) = l.split("port=").nth(1)
            {
                return p.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
        panic!("projector exited before listening");
    })
    .await
    .expect("projector did not start listening");
    // Keep draining the pipe so the child never blocks on a full one.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    port
}

/// Random commands over a few users, orders and products, until `stop`: deliveries, counts,
/// catalog changes, and orders whose confirmation, cancellation and shipping move stock in
/// the same commit, and the payment provider's answers (a few are confirmed the old way,
/// without reservations or payments, as in a log written before they existed).
async fn stream_commands(env: Arc<TestEnv>, stop: Arc<AtomicBool>) -> usize {
    let events = env.events();
    let mut orders: Vec<OrderId> = vec![];
    let mut appended = 0;
    let mut rng = fastrand::Rng::with_seed(7);
    let products = ["p1", "p2", "p3", "x0", "x1", "x2", "x3"];
    while !stop.load(Ordering::SeqCst) {
        let product = ["p1", "p2", "p3"][rng.usize(0..3)];
        let pick = rng.u32(0..100);
        if pick < 8 {
            env.stock(products[rng.usize(0..products.len())], rng.i64(1..50))
                .await;
            appended += 1;
            continue;
        }
        if pick < 10 {
            let delta = [-1, 1][rng.usize(0..2)] * rng.i64(1..10);
            // Refused when it would go below what is reserved and shipped.
            if events.try_adjust(product, delta).await.is_some() {
                appended += 1;
            }
            continue;
        }
        if pick < 12 {
            events
                .details(product, &format!("{product} v{}", rng.u32(0..3)), 100)
                .await;
            appended += 1;
            continue;
        }
        if pick < 35 || orders.is_empty() {
            let id = OrderId::new();
            let user = format!("u{}", rng.u32(0..5));
            env.order(
                id,
                create(
                    id,
                    &user,
                    vec![line(product, rng.i64(1..5), 100 * rng.i64(1..9))],
                ),
            )
            .await;
            orders.push(id);
            appended += 1;
            continue;
        }
        let id = orders[rng.usize(0..orders.len())];
        // Commands the domain refuses (e.g. confirming twice, or beyond the stock) are part
        // of real traffic.
        let done = match pick {
            35..=50 => {
                let add = line(&format!("x{}", rng.u32(0..4)), rng.i64(1..3), 50);
                env.try_order(id, OrderCommand::AddItem(add)).await
            }
            51..=58 => {
                let product = format!("x{}", rng.u32(0..4)).parse().unwrap();
                env.try_order(id, OrderCommand::RemoveItem(product)).await
            }
            59..=62 => events.try_confirm_legacy(id).await.is_some(),
            63..=78 => events.try_confirm(id).await.is_some(),
            79..=84 => events.try_cancel(id, None).await.is_some(),
            // The payment provider's answers, as the fulfilment process records them.
            85..=88 => {
                // Paid orders often ship soon after, so shipments are not left to chance.
                let paid = events.try_pay(id).await.is_some();
                if paid && rng.bool() && events.try_ship(id, "c", "t").await.is_some() {
                    appended += 1;
                }
                paid
            }
            89 => events.try_decline(id).await.is_some(),
            90 => events.try_refund(id).await.is_some(),
            91..=95 => events.try_ship(id, "c", "t").await.is_some(),
            _ => env.try_order(id, OrderCommand::Deliver).await,
        };
        if done {
            appended += 1;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    appended
}

async fn wait_caught_up(env: &TestEnv, limit: Duration) {
    let head = env.store.head().await.unwrap().unwrap_or(Position::ZERO);
    let views = &env.projector.engine.views;
    let deadline = Instant::now() + limit;
    for &name in View::ALL {
        loop {
            let g = views.active_generation(name).await.unwrap();
            if views.checkpoint(name, g).await.unwrap() >= head {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not catch up within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The views a clean replay of the whole log produces, in a scratch generation.
async fn clean_replay(env: &TestEnv, generation: i64) -> Vec<Vec<mongodb::bson::Document>> {
    let head = env.store.head().await.unwrap().unwrap_or(Position::ZERO);
    let cancel = CancellationToken::new();
    async fn one<V: projector::projections::Projection>(
        p: &Projector,
        g: i64,
        head: Position,
        cancel: &CancellationToken,
    ) {
        projector::rebuild::catch_up::<V>(&p.engine, g, Position::ZERO, head, 50, cancel, |_| {})
            .await
            .unwrap();
    }
    let mut all = vec![];
    for &name in View::ALL {
        for_view!(name, one(&env.projector, generation, head, &cancel));
        all.push(env.docs(name, generation).await);
    }
    all
}

#[sqlx::test(migrations = "../migrations")]
async fn sigkill_at_random_moments_neither_loses_nor_double_counts(pool: PgPool) {
    let env = Arc::new(TestEnv::new(pool).await);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(stream_commands(env.clone(), stop.clone()));
    let mut rng = fastrand::Rng::with_seed(42);
    for _ in 0..20 {
        let mut child = spawn_projector(&env, rng.u32(1..40));
        tokio::time::sleep(Duration::from_millis(rng.u64(150..700))).await;
        child.start_kill().unwrap(); // SIGKILL: no cleanup, no graceful checkpoint
        child.wait().await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let appended = writer.await.unwrap();
    assert!(appended > 100, "only {appended} events streamed");
    // The killed processes did project (so kills landed mid-work), but not everything.
    let mid = env
        .projector
        .engine
        .views
        .checkpoint(View::Orders, 1)
        .await
        .unwrap();
    let head = env.store.head().await.unwrap().unwrap();
    assert!(mid > Position::ZERO, "no killed projector ever got to work");
    eprintln!("{appended} events streamed; killed projectors reached {mid} of {head}");

    let mut child = spawn_projector(&env, 100);
    wait_caught_up(&env, Duration::from_secs(120)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    // The stream carried every kind of product event, not only deliveries.
    let types: Vec<String> = sqlx::query_scalar("select distinct event_type from events")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    for t in [
        "ProductDetailsSet",
        "StockReceived",
        "StockAdjusted",
        "StockReserved",
        "StockReleased",
        "StockShipped",
    ] {
        assert!(types.iter().any(|x| x == t), "no {t} in {types:?}");
    }
    let mut survived = vec![];
    for &name in View::ALL {
        survived.push(env.docs(name, 1).await);
    }
    for product in &survived[View::ALL
        .iter()
        .position(|&v| v == View::Inventory)
        .unwrap()]
    {
        assert!(
            common::int(product, "availableUnits") >= 0,
            "oversold: {product}"
        );
    }
    assert_eq!(
        survived,
        clean_replay(&env, 99).await,
        "views after 20 SIGKILLs differ from a clean replay"
    );
    Arc::try_unwrap(env).ok().unwrap().cleanup().await;
}

async fn projection_states(port: u16) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{port}/health/ready");
    reqwest::get(url)
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["projections"]
        .clone()
}

async fn wait_for_state(port: u16, state: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let states = projection_states(port).await;
        if View::ALL.iter().all(|n| states[n.name()]["state"] == state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not all {state} within {limit:?}: {states}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_standby_takes_over_when_the_leader_is_killed(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let mut leader = spawn_projector(&env, 50);
    let leader_port = health_port(&mut leader).await;
    wait_for_state(leader_port, "running", Duration::from_secs(20)).await;
    let mut standby = spawn_projector(&env, 50);
    let standby_port = health_port(&mut standby).await;
    wait_for_state(standby_port, "standby", Duration::from_secs(20)).await;

    let a = OrderId::new();
    env.order(a, create(a, "lee", vec![line("p", 1, 100)]))
        .await;
    wait_caught_up(&env, Duration::from_secs(20)).await;

    leader.start_kill().unwrap();
    leader.wait().await.unwrap();
    let killed_at = Instant::now();
    let b = OrderId::new();
    env.order(b, create(b, "lee", vec![line("p", 2, 100)]))
        .await;
    wait_for_state(standby_port, "running", Duration::from_secs(10)).await;
    wait_caught_up(&env, Duration::from_secs(20)).await;
    let took_over = killed_at.elapsed();
    assert!(took_over < Duration::from_secs(20));
    let user = env.doc(View::Users, "lee").await;
    assert_eq!(common::int(&user, "orderCount"), 2);
    standby.start_kill().unwrap();
    standby.wait().await.unwrap();
    env.cleanup().await;
}
