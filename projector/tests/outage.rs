//! PostgreSQL or MongoDB going away pauses the projector; it resumes when they return and
//! nothing is lost or counted twice.

mod common;

use std::time::{Duration, Instant};

use common::{TestEnv, create, line};
use domain::order::OrderCommand;
use domain::{OrderId, Position};
use projector::projections::View;
use projector::runner::State;
use projector::{Application, Settings};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use test_support::TcpSwitch;
use test_support::servers::host_port;
use tokio_util::sync::CancellationToken;

async fn wait_caught_up(env: &TestEnv) {
    let head = env.store.head().await.unwrap().unwrap_or(Position::ZERO);
    let deadline = Instant::now() + Duration::from_secs(60);
    for &name in View::ALL {
        while env
            .projector
            .engine
            .views
            .checkpoint(name, 1)
            .await
            .unwrap()
            < head
        {
            assert!(
                Instant::now() < deadline,
                "{name} did not catch up after the outage"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn some_orders(env: &TestEnv, n: usize) {
    for i in 0..n {
        let id = OrderId::new();
        env.order(
            id,
            create(
                id,
                &format!("u{}", i % 3),
                vec![line("p", 1 + i as i64, 100)],
            ),
        )
        .await;
        env.order(
            id,
            OrderCommand::Confirm {
                payment_method: "pm_card_visa".into(),
                email: None,
            },
        )
        .await;
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn outages_of_either_store_pause_and_lose_nothing(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let pg = TcpSwitch::start(host_port(env.settings.database_url.expose_secret(), 5432)).await;
    let mongo = TcpSwitch::start(host_port(env.settings.mongodb_uri.expose_secret(), 27017)).await;
    let db = env
        .settings
        .database_url
        .expose_secret()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let settings = Settings {
        database_url: format!("postgres://postgres@127.0.0.1:{}/{db}", pg.port).into(),
        mongodb_uri: format!(
            "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=1000",
            mongo.port
        )
        .into(),
        ..env.settings.clone()
    };
    let app = Application::build(settings).await.unwrap();
    let board = app.status_board();
    let cancel = CancellationToken::new();
    let running = tokio::spawn(app.run_until(cancel.clone()));

    some_orders(&env, 3).await;
    wait_caught_up(&env).await;

    for (name, switch) in [("PostgreSQL", &pg), ("MongoDB", &mongo)] {
        switch.cut();
        some_orders(&env, 3).await;
        // The projector notices and stops claiming to run.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let states: Vec<State> = board.lock().unwrap().values().map(|s| s.state).collect();
            if states.iter().any(|s| *s != State::Running) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "projector did not notice {name} going away"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        switch.restore();
        wait_caught_up(&env).await;
    }

    cancel.cancel();
    running.await.unwrap().unwrap();
    let survived: Vec<_> = all_docs(&env, 1).await;
    for &name in View::ALL {
        projector::for_view!(name, replay(&env));
    }
    assert_eq!(
        survived,
        all_docs(&env, 7).await,
        "views after outages differ from a clean replay"
    );
    let user = env.doc(View::Users, "u0").await;
    assert_eq!(common::int(&user, "orderCount"), 3);
    env.cleanup().await;
}

async fn replay<V: projector::projections::Projection>(env: &TestEnv) {
    env.catch_up::<V>(7).await;
}

async fn all_docs(env: &TestEnv, generation: i64) -> Vec<Vec<mongodb::bson::Document>> {
    let mut all = vec![];
    for &name in View::ALL {
        all.push(env.docs(name, generation).await);
    }
    all
}
