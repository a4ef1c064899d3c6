//! Event store tests against a real PostgreSQL: each test gets its own database
//! (`#[sqlx::test]`, DATABASE_URL names the server).

use domain::events::{DomainEvent, LineItem, OrderEvent};
use domain::order::{self, OrderCommand, OrderState};
use domain::product::{self, ProductCommand, ProductState};
use domain::{Currency, OrderId, Position, Quantity, StockQuantity, UnitPriceCents};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use event_store::{
    Aggregate, Command, CommandError, EventStore, Executed, IdempotencyRecord, NewEvent,
    OrderAggregate, ProductAggregate, Retries, Snapshot, StoreError, StreamAppend, Until,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

fn line(product: &str, qty: i64, price: i64) -> LineItem {
    LineItem {
        product_id: product.parse().unwrap(),
        quantity: Quantity::try_from(qty).unwrap(),
        unit_price_cents: UnitPriceCents::try_from(price).unwrap(),
    }
}

fn create(order_id: OrderId) -> OrderCommand {
    OrderCommand::Create {
        order_id,
        user_id: "alice".parse().unwrap(),
        currency: Currency::USD,
        items: vec![line("a", 1, 100)],
    }
}

fn confirm() -> OrderCommand {
    OrderCommand::Confirm {
        payment_method: "pm_card_visa".into(),
        email: None,
    }
}

fn confirmed() -> OrderEvent {
    OrderEvent::OrderConfirmed(domain::events::OrderConfirmed::default())
}

fn new_events(events: Vec<OrderEvent>) -> Vec<NewEvent> {
    events
        .into_iter()
        .map(|e| NewEvent {
            event_id: Uuid::new_v4(),
            event: DomainEvent::Order(e).encode(),
            metadata: json!({}),
        })
        .collect()
}

/// Loads, decides and appends like the write-service does; returns false if refused.
async fn execute(
    store: &EventStore,
    order_id: OrderId,
    cmd: OrderCommand,
) -> Result<bool, StoreError> {
    let stream = order_id.stream_id();
    let loaded = store.load::<OrderAggregate>(&stream).await?;
    let Ok(events) = order::decide(&loaded.state, cmd) else {
        return Ok(false);
    };
    let new_state = events.iter().fold(loaded.state.clone(), |s, e| s.apply(e));
    let new_version = loaded.version + events.len() as u64;
    let snapshot = store
        .snapshot_due(loaded.version, new_version)
        .then(|| Snapshot {
            state_schema: order::STATE_SCHEMA_VERSION,
            state: serde_json::to_value(&new_state).unwrap(),
        });
    store
        .append(
            &[StreamAppend {
                stream_id: stream,
                stream_type: "order",
                expected_version: loaded.version,
                events: new_events(events),
                snapshot,
            }],
            None,
        )
        .await?;
    Ok(true)
}

/// Reads the tail after `after` until it holds at least `n` rows. The tail stops below the
/// oldest running transaction in the whole cluster, so other tests' transactions may hold it
/// back for a moment; a reader waits for them, it never skips.
async fn tail_at_least(store: &EventStore, after: Position, n: usize) -> Vec<event_store::TailRow> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows = store.read_committed_after(after, 100).await.unwrap();
        if rows.len() >= n || std::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn append_then_load_returns_state_and_version(pool: PgPool) {
    let store = EventStore::new(pool, 100);
    let id = OrderId::new();
    assert!(execute(&store, id, create(id)).await.unwrap());
    assert!(
        execute(&store, id, OrderCommand::AddItem(line("b", 2, 50)))
            .await
            .unwrap()
    );
    assert!(execute(&store, id, confirm()).await.unwrap());
    let loaded = store.load::<OrderAggregate>(&id.stream_id()).await.unwrap();
    assert_eq!(loaded.version, 3);
    let o = loaded.state.order().unwrap();
    assert_eq!(o.total_cents, 200);
    assert_eq!(o.status, order::OrderStatus::Confirmed);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_stale_expected_version_is_a_conflict_and_writes_nothing(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let id = OrderId::new();
    execute(&store, id, create(id)).await.unwrap();
    let stale = StreamAppend {
        stream_id: id.stream_id(),
        stream_type: "order",
        expected_version: 0,
        events: new_events(vec![confirmed()]),
        snapshot: None,
    };
    let err = store
        .append(std::slice::from_ref(&stale), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::WrongExpectedVersion {
                expected: 0,
                actual: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let ahead = StreamAppend {
        expected_version: 5,
        ..stale
    };
    let err = store.append(&[ahead], None).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::WrongExpectedVersion {
                expected: 5,
                actual: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(count(&pool, "select count(*) from events").await, 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn concurrent_appends_at_one_version_let_exactly_one_win(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let id = OrderId::new();
    execute(&store, id, create(id)).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let append = StreamAppend {
                stream_id: id.stream_id(),
                stream_type: "order",
                expected_version: 1,
                events: new_events(vec![confirmed()]),
                snapshot: None,
            };
            tokio::spawn(async move { store.append(&[append], None).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(outcome) => {
                won += 1;
                assert_eq!(outcome.versions, vec![2]);
            }
            Err(StoreError::WrongExpectedVersion { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(count(&pool, "select count(*) from events").await, 2);
}

#[sqlx::test(migrations = "../../migrations")]
async fn multi_stream_append_is_all_or_nothing(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let (a, b) = (OrderId::new(), OrderId::new());
    execute(&store, b, create(b)).await.unwrap();
    let append = |id: OrderId, expected, cmd| StreamAppend {
        stream_id: id.stream_id(),
        stream_type: "order",
        expected_version: expected,
        events: new_events(order::decide(&OrderState::New, cmd).unwrap()),
        snapshot: None,
    };
    // b is at version 1, so expecting 0 fails: a must not be written either.
    let err = store
        .append(&[append(a, 0, create(a)), append(b, 0, create(b))], None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongExpectedVersion { .. }));
    assert_eq!(count(&pool, "select count(*) from events").await, 1);
    assert_eq!(count(&pool, "select count(*) from streams").await, 1);

    let c = OrderId::new();
    let outcome = store
        .append(&[append(a, 0, create(a)), append(c, 0, create(c))], None)
        .await
        .unwrap();
    assert_eq!(outcome.versions, vec![1, 1]);
    // Both streams' events share one transaction, hence one tx_id.
    let tx_ids: i64 =
        sqlx::query_scalar("select count(distinct tx_id) from events where stream_id = any($1)")
            .bind(vec![a.stream_id(), c.stream_id()])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(tx_ids, 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_idempotency_key_counts_once(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let request = json!({"method": "POST", "path": "/orders"});
    let respond = |o: &event_store::AppendOutcome| json!({"version": o.versions[0]});
    let mut ids = vec![];
    for _ in 0..2 {
        let id = OrderId::new();
        ids.push(id);
        let record = IdempotencyRecord {
            key: "k-1",
            fingerprint: &request,
            outcome: &respond,
            position_path: &[],
        };
        let appended = StreamAppend {
            stream_id: id.stream_id(),
            stream_type: "order",
            expected_version: 0,
            events: new_events(order::decide(&OrderState::New, create(id)).unwrap()),
            snapshot: None,
        };
        let result = store.append(&[appended], Some(record)).await;
        if ids.len() == 2 {
            assert!(
                matches!(result, Err(StoreError::IdempotencyKeyTaken(_))),
                "{result:?}"
            );
        } else {
            result.unwrap();
        }
    }
    assert_eq!(count(&pool, "select count(*) from events").await, 1);
    let stored = store.stored_outcome("k-1").await.unwrap().unwrap();
    assert_eq!(stored.outcome, json!({"version": 1}));
    assert_eq!(stored.fingerprint, request);
}

fn command_strategy() -> impl Strategy<Value = Vec<OrderCommand>> {
    let product = prop::sample::select(vec!["p1", "p2", "p3", "p4"]);
    let cmd = prop_oneof![
        6 => (product.clone(), 1i64..5, prop::sample::select(vec![100i64, 250])).prop_map(|(p, q, c)| OrderCommand::AddItem(line(p, q, c))),
        3 => product.prop_map(|p| OrderCommand::RemoveItem(p.parse().unwrap())),
        1 => Just(confirm()),
        1 => Just(OrderCommand::Cancel { reason: Some("r".into()) }),
        1 => Just(OrderCommand::Ship { carrier: "c".into(), tracking_number: "t".into() }),
        1 => Just(OrderCommand::Deliver),
    ];
    prop::collection::vec(cmd, 0..40)
}

/// Snapshot + tail equals full replay, for random command sequences, through the real store.
#[sqlx::test(migrations = "../../migrations")]
async fn snapshot_plus_tail_equals_full_replay(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 3);
    let mut runner = TestRunner::deterministic();
    let strategy = command_strategy();
    for _ in 0..24 {
        let commands = strategy.new_tree(&mut runner).unwrap().current();
        let id = OrderId::new();
        execute(&store, id, create(id)).await.unwrap();
        for cmd in commands {
            execute(&store, id, cmd).await.unwrap();
            let via_snapshot = store.load::<OrderAggregate>(&id.stream_id()).await.unwrap();
            let replayed = store
                .replay::<OrderAggregate>(&id.stream_id(), Until::End)
                .await
                .unwrap();
            assert_eq!(via_snapshot, replayed);
        }
    }
    assert!(
        count(&pool, "select count(*) from snapshots").await > 0,
        "no snapshot was ever taken"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_snapshot_of_another_state_schema_is_ignored(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let id = OrderId::new();
    execute(&store, id, create(id)).await.unwrap();
    execute(&store, id, confirm()).await.unwrap();
    // An older build's snapshot: different schema number and a shape we cannot read.
    sqlx::query("insert into snapshots (stream_id, stream_version, state_schema, state) values ($1, 2, 0, '{\"legacy\": true}')")
        .bind(id.stream_id())
        .execute(&pool)
        .await
        .unwrap();
    let loaded = store.load::<OrderAggregate>(&id.stream_id()).await.unwrap();
    assert_eq!(loaded.version, 2);
    assert_eq!(
        loaded.state.order().unwrap().status,
        order::OrderStatus::Confirmed
    );
}

/// A version-1 `OrderCreated` (no currency) reads as version 2 with USD on every read path.
#[sqlx::test(migrations = "../../migrations")]
async fn a_version_1_order_created_is_upcast_on_every_read_path(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let id = OrderId::new();
    insert_v1_order(&pool, id).await;

    let loaded = store.load::<OrderAggregate>(&id.stream_id()).await.unwrap();
    assert_eq!(loaded.state.order().unwrap().currency, Currency::USD);
    let replayed = store
        .replay::<OrderAggregate>(&id.stream_id(), Until::Version(1))
        .await
        .unwrap();
    assert_eq!(replayed, loaded);

    let events = store
        .read_stream(&id.stream_id(), 0, Until::End)
        .await
        .unwrap();
    assert_eq!(
        (events[0].stored_schema_version, events[0].schema_version),
        (1, 2)
    );
    assert_eq!(events[0].data["currency"], "USD");

    let tail: Vec<_> = tail_at_least(&store, Position::ZERO, 1)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tail.len(), 1);
    assert!(
        matches!(&tail[0].event, DomainEvent::Order(OrderEvent::OrderCreated(e)) if e.currency == Currency::USD)
    );

    // And commands keep working on top of it.
    assert!(
        execute(&store, id, OrderCommand::AddItem(line("b", 1, 5)))
            .await
            .unwrap()
    );
}

pub async fn insert_v1_order(pool: &PgPool, id: OrderId) {
    let data: Value = json!({
        "orderId": id.0,
        "userId": "legacy-user",
        "items": [{"productId": "a", "quantity": 2, "unitPriceCents": 300}],
        "totalCents": 600
    });
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("insert into streams (stream_id, stream_type, version) values ($1, 'order', 1)")
        .bind(id.stream_id())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "insert into events (stream_id, stream_position, event_id, event_type, schema_version, data)
         values ($1, 1, $2, 'OrderCreated', 1, $3)",
    )
    .bind(id.stream_id())
    .bind(Uuid::new_v4())
    .bind(data)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Writer A takes a lower position and stays open while writer B commits a higher one.
/// A reader must not advance past A: after A commits, both are delivered, A included.
#[sqlx::test(migrations = "../../migrations")]
async fn the_tail_does_not_skip_events_when_writers_commit_out_of_order(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let (a, b) = (OrderId::new(), OrderId::new());

    let mut writer_a = pool.begin().await.unwrap();
    sqlx::query("insert into streams (stream_id, stream_type, version) values ($1, 'order', 1)")
        .bind(a.stream_id())
        .execute(&mut *writer_a)
        .await
        .unwrap();
    let event = DomainEvent::Order(
        order::decide(&OrderState::New, create(a))
            .unwrap()
            .remove(0),
    )
    .encode();
    let pos_a: i64 = sqlx::query_scalar(
        "insert into events (stream_id, stream_position, event_id, event_type, schema_version, data)
         values ($1, 1, $2, $3, $4, $5) returning global_position",
    )
    .bind(a.stream_id())
    .bind(Uuid::new_v4())
    .bind(event.event_type)
    .bind(event.schema_version)
    .bind(&event.data)
    .fetch_one(&mut *writer_a)
    .await
    .unwrap();

    execute(&store, b, create(b)).await.unwrap();

    let checkpoint = Position::ZERO;
    let mut delivered = vec![];
    let first = store.read_committed_after(checkpoint, 100).await.unwrap();
    assert!(
        first.is_empty(),
        "B is above A's running xid and must wait: {first:?}"
    );

    writer_a.commit().await.unwrap();
    for e in tail_at_least(&store, checkpoint, 2)
        .await
        .into_iter()
        .map(Result::unwrap)
    {
        delivered.push((e.stream_id.clone(), e.position.global_position));
    }
    assert_eq!(delivered.len(), 2);
    assert_eq!(delivered[0], (a.stream_id(), pos_a));
    assert_eq!(delivered[1].0, b.stream_id());
    assert!(delivered[1].1 > pos_a);
}

/// The other interleaving: B takes its xid first but its position last, and commits while A
/// is open. B may be delivered first (its tx is below A's); A must still come after.
#[sqlx::test(migrations = "../../migrations")]
async fn the_tail_delivers_a_late_commit_with_a_lower_position(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let (a, b) = (OrderId::new(), OrderId::new());
    let insert = |id: OrderId| {
        let event = DomainEvent::Order(
            order::decide(&OrderState::New, create(id))
                .unwrap()
                .remove(0),
        )
        .encode();
        (id.stream_id(), event)
    };
    let mut writer_b = pool.begin().await.unwrap();
    let mut writer_a = pool.begin().await.unwrap();
    for (tx, id) in [(&mut writer_b, b), (&mut writer_a, a)] {
        sqlx::query(
            "insert into streams (stream_id, stream_type, version) values ($1, 'order', 1)",
        )
        .bind(id.stream_id())
        .execute(&mut **tx)
        .await
        .unwrap();
    }
    for (tx, id) in [(&mut writer_a, a), (&mut writer_b, b)] {
        let (stream, event) = insert(id);
        sqlx::query(
            "insert into events (stream_id, stream_position, event_id, event_type, schema_version, data)
             values ($1, 1, $2, $3, $4, $5)",
        )
        .bind(stream)
        .bind(Uuid::new_v4())
        .bind(event.event_type)
        .bind(event.schema_version)
        .bind(&event.data)
        .execute(&mut **tx)
        .await
        .unwrap();
    }
    writer_b.commit().await.unwrap();

    let mut checkpoint = Position::ZERO;
    let mut delivered = vec![];
    for e in tail_at_least(&store, checkpoint, 1)
        .await
        .into_iter()
        .map(Result::unwrap)
    {
        checkpoint = e.position;
        delivered.push(e.stream_id);
    }
    assert_eq!(delivered, vec![b.stream_id()]);
    writer_a.commit().await.unwrap();
    for e in tail_at_least(&store, checkpoint, 1)
        .await
        .into_iter()
        .map(Result::unwrap)
    {
        delivered.push(e.stream_id);
    }
    assert_eq!(delivered, vec![b.stream_id(), a.stream_id()]);
}

/// An event the code cannot read comes back as an unreadable row, in its place, not as an
/// error that hides the rest of the batch.
#[sqlx::test(migrations = "../../migrations")]
async fn unreadable_events_keep_their_place_in_the_tail(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let id = OrderId::new();
    execute(&store, id, create(id)).await.unwrap();
    sqlx::query("update streams set version = 2 where stream_id = $1")
        .bind(id.stream_id())
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into events (stream_id, stream_position, event_id, event_type, schema_version, data)
         values ($1, 2, $2, 'OrderTeleported', 1, '{}')",
    )
    .bind(id.stream_id())
    .bind(Uuid::new_v4())
    .execute(&pool)
    .await
    .unwrap();
    execute(&store, id, confirm()).await.unwrap_err();
    let rows = tail_at_least(&store, Position::ZERO, 2).await;
    assert_eq!(rows.len(), 2);
    assert!(rows[0].is_ok());
    let bad = rows[1].as_ref().unwrap_err();
    assert_eq!(
        (bad.event_type.as_str(), bad.stream_position),
        ("OrderTeleported", 2)
    );
    assert!(bad.error.contains("unknown event type"), "{}", bad.error);

    let prefix = store
        .read_stream_prefixes(OrderAggregate::STREAM_TYPE, &[(id.stream_id(), 3)])
        .await
        .unwrap();
    assert_eq!(prefix.len(), 2);
    let (count, oldest) = store.lag_after(Position::ZERO).await.unwrap();
    assert_eq!(count, 2);
    assert!(oldest.is_some());
    assert_eq!(store.head().await.unwrap(), Some(bad.position));
}

/// An append dropped at any moment (a timeout, a client gone) must not leave its pooled
/// connection inside a transaction: sqlx 0.9.0's `Pool::begin` returns the connection to
/// the pool in one when dropped while `BEGIN` is in flight (transact-rs/sqlx#4393).
#[sqlx::test(migrations = "../../migrations")]
async fn appends_dropped_at_random_moments_leave_no_session_in_a_transaction(pool: PgPool) {
    use sqlx::Connection;
    use std::time::Instant;

    let options = (*pool.connect_options()).clone();
    let small = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy_with(options.clone());
    let store = EventStore::new(small, 100);
    let append = |store: EventStore| async move {
        let id = OrderId::new();
        let events = order::decide(&OrderState::New, create(id)).unwrap();
        let append = StreamAppend {
            stream_id: id.stream_id(),
            stream_type: "order",
            expected_version: 0,
            events: new_events(events),
            snapshot: None,
        };
        store.append(&[append], None).await
    };
    // How long an append takes here, so the drops spread over its whole run (calibration,
    // not an assertion).
    let started = Instant::now();
    for _ in 0..10 {
        append(store.clone()).await.unwrap();
    }
    let horizon = started.elapsed() / 10 * 2;

    let mut check = sqlx::PgConnection::connect_with(&options).await.unwrap();
    for round in 0..100 {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let fraction = (Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
                let future = append(store.clone());
                tokio::spawn(tokio::time::timeout(horizon.mul_f64(fraction), future))
            })
            .collect();
        for t in tasks {
            let _ = t.await.unwrap();
        }
        let stuck = test_support::sessions::left_in_a_transaction(&mut check).await;
        assert!(
            stuck.is_empty(),
            "after round {round}, sessions left inside a transaction: {stuck:?}"
        );
    }
    // The pool still works.
    for _ in 0..10 {
        append(store.clone()).await.unwrap();
    }
}

/// A stored version below 0 is corruption, never "version 0". `snapshots.stream_version` is
/// the one version column without a check (positions and `streams.version` have theirs).
#[sqlx::test(migrations = "../../migrations")]
async fn a_snapshot_with_a_negative_version_is_an_error_not_version_0(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let id = OrderId::new();
    execute(&store, id, create(id)).await.unwrap();
    let state = serde_json::to_value(
        store
            .load::<OrderAggregate>(&id.stream_id())
            .await
            .unwrap()
            .state,
    )
    .unwrap();
    sqlx::query(
        "insert into snapshots (stream_id, stream_version, state_schema, state) values ($1, -1, $2, $3)",
    )
    .bind(id.stream_id())
    .bind(order::STATE_SCHEMA_VERSION)
    .bind(state)
    .execute(&pool)
    .await
    .unwrap();
    let loaded = store.load::<OrderAggregate>(&id.stream_id()).await;
    let err = loaded.expect_err("a negative snapshot version must not load");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("stream_version") && message.contains("-1"),
        "{message}"
    );
}

/// The last version a bigint holds cannot move further: an append past it is refused and
/// writes nothing, where a clamp to `i64::MAX` would "succeed" without moving the stream.
#[sqlx::test(migrations = "../../migrations")]
async fn an_append_past_the_largest_version_is_an_error_not_a_clamp(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let id = OrderId::new();
    sqlx::query("insert into streams (stream_id, stream_type, version) values ($1, 'order', $2)")
        .bind(id.stream_id())
        .bind(i64::MAX)
        .execute(&pool)
        .await
        .unwrap();
    let append = StreamAppend {
        stream_id: id.stream_id(),
        stream_type: "order",
        expected_version: i64::MAX as u64,
        events: new_events(vec![confirmed()]),
        snapshot: None,
    };
    let result = store.append(std::slice::from_ref(&append), None).await;
    assert!(
        matches!(result, Err(StoreError::VersionOverflow { events: 1, .. })),
        "{result:?}"
    );
    assert_eq!(count(&pool, "select count(*) from events").await, 0);
}

/// A stream's kind is its `stream_type` column, whatever its id looks like.
#[sqlx::test(migrations = "../../migrations")]
async fn stream_prefixes_are_read_by_the_stream_type_column_not_the_id(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let order = OrderId::new();
    execute(&store, order, create(order)).await.unwrap();
    execute(&store, order, confirm()).await.unwrap();
    // Named like an order, typed as a product.
    let impostor = OrderId::new().stream_id();
    sqlx::query("insert into streams (stream_id, stream_type, version) values ($1, 'product', 1)")
        .bind(&impostor)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into events (stream_id, stream_position, event_id, event_type, schema_version, data)
         values ($1, 1, $2, 'StockReceived', 1, '{\"productId\": \"sku-1\", \"quantity\": 1}')",
    )
    .bind(&impostor)
    .bind(Uuid::new_v4())
    .execute(&pool)
    .await
    .unwrap();
    let prefixes = [(order.stream_id(), 3), (impostor.clone(), 3)];
    let streams = |rows: Vec<event_store::TailRow>| {
        rows.into_iter()
            .map(|r| r.unwrap().stream_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        streams(
            store
                .read_stream_prefixes(OrderAggregate::STREAM_TYPE, &prefixes)
                .await
                .unwrap()
        ),
        vec![order.stream_id(), order.stream_id()]
    );
    assert_eq!(
        streams(
            store
                .read_stream_prefixes("product", &prefixes)
                .await
                .unwrap()
        ),
        vec![impostor]
    );
    // `before` is exclusive, and the largest bound reads everything.
    let rows = store
        .read_stream_prefixes(OrderAggregate::STREAM_TYPE, &[(order.stream_id(), 2)])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let rows = store
        .read_stream_prefixes(
            OrderAggregate::STREAM_TYPE,
            &[(order.stream_id(), u64::MAX)],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
}

// --- the command path: `EventStore::execute` ---

/// `decide` for `execute`: the domain's order decision, counting its calls and waking
/// `decided` after each.
fn order_decide(
    cmd: OrderCommand,
    calls: Arc<AtomicUsize>,
    decided: Arc<Notify>,
) -> impl Fn(&OrderState) -> Result<Vec<DomainEvent>, order::DomainError> + Send + 'static {
    move |state| {
        calls.fetch_add(1, Ordering::SeqCst);
        decided.notify_one();
        order::decide(state, cmd.clone())
            .map(|events| events.into_iter().map(DomainEvent::Order).collect())
    }
}

/// Runs one order command through `execute` with the given options.
async fn run_command(
    store: &EventStore,
    id: OrderId,
    cmd: OrderCommand,
    expected_version: Option<u64>,
    idempotency: Option<IdempotencyRecord<'_>>,
) -> Result<Executed, CommandError<order::DomainError>> {
    let decide = order_decide(cmd, Arc::default(), Arc::default());
    let stream = id.stream_id();
    let cmd = Command::new(&stream, decide)
        .expected_version(expected_version)
        .idempotency(idempotency);
    store.execute::<OrderAggregate, _, _>(cmd).await
}

/// Begins a transaction that appends `OrderConfirmed` to the order at `version` and keeps
/// the stream's lock until it is committed: the race a command is about to lose.
async fn competing_confirm(
    store: &EventStore,
    pool: &PgPool,
    id: OrderId,
    version: u64,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    let append = StreamAppend {
        stream_id: id.stream_id(),
        stream_type: "order",
        expected_version: version,
        events: new_events(vec![confirmed()]),
        snapshot: None,
    };
    store.append_in(&mut tx, &[append], None).await.unwrap();
    tx
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_command_that_loses_a_race_decides_again_and_succeeds(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let id = OrderId::new();
    execute(&store, id, create(id)).await.unwrap();
    // The competitor holds the stream's lock, at version 2, until it commits.
    let competitor = competing_confirm(&store, &pool, id, 1).await;

    let (calls, decided) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
    let decide = order_decide(
        OrderCommand::Cancel { reason: None },
        calls.clone(),
        decided.clone(),
    );
    let command = tokio::spawn({
        let store = store.clone();
        async move {
            let stream = id.stream_id();
            store
                .execute::<OrderAggregate, _, _>(Command::new(&stream, decide))
                .await
        }
    });
    // The command has decided on version 1; it cannot append at 1 any more.
    decided.notified().await;
    competitor.commit().await.unwrap();

    let executed = command.await.unwrap().unwrap();
    let Executed::Appended {
        outcome,
        events,
        retries,
    } = executed
    else {
        panic!("expected an append, got {executed:?}");
    };
    assert_eq!((outcome.versions, events, retries), (vec![3], 1, 1));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "decided again after the lost race"
    );
    let loaded = store.load::<OrderAggregate>(&id.stream_id()).await.unwrap();
    assert_eq!(
        loaded.state.order().unwrap().status,
        order::OrderStatus::Cancelled
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_command_out_of_retries_is_a_conflict(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let id = OrderId::new();
    execute(&store, id, create(id)).await.unwrap();
    let competitor = competing_confirm(&store, &pool, id, 1).await;
    let decided = Arc::new(Notify::new());
    let decide = order_decide(
        OrderCommand::Cancel { reason: None },
        Arc::new(AtomicUsize::new(0)),
        decided.clone(),
    );
    let command = tokio::spawn({
        let store = store.clone();
        async move {
            let stream = id.stream_id();
            let cmd = Command::new(&stream, decide).retries(Retries::new(0));
            store.execute::<OrderAggregate, _, _>(cmd).await
        }
    });
    decided.notified().await;
    competitor.commit().await.unwrap();
    let result = command.await.unwrap();
    assert!(
        matches!(result, Err(CommandError::Conflict { attempts: 1 })),
        "{result:?}"
    );
    assert_eq!(count(&pool, "select count(*) from events").await, 2);
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_expected_version_is_checked_after_the_decision(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let id = OrderId::new();
    execute(&store, id, create(id)).await.unwrap();

    let result = run_command(&store, id, confirm(), Some(5), None).await;
    assert!(
        matches!(
            result,
            Err(CommandError::PreconditionFailed {
                expected: 5,
                actual: 1
            })
        ),
        "{result:?}"
    );
    // A command that fails on its own says so, whatever the version.
    let result = run_command(&store, id, create(id), Some(5), None).await;
    assert!(
        matches!(
            result,
            Err(CommandError::Rejected(
                order::DomainError::OrderAlreadyExists
            ))
        ),
        "{result:?}"
    );
    assert_eq!(count(&pool, "select count(*) from events").await, 1);

    let result = run_command(&store, id, confirm(), Some(1), None).await;
    assert_eq!(result.unwrap().appended().unwrap().versions, vec![2]);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_lost_race_with_an_expected_version_is_a_precondition_failure_not_a_retry(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let id = OrderId::new();
    execute(&store, id, create(id)).await.unwrap();
    let competitor = competing_confirm(&store, &pool, id, 1).await;
    let (calls, decided) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
    let decide = order_decide(
        OrderCommand::Cancel { reason: None },
        calls.clone(),
        decided.clone(),
    );
    let command = tokio::spawn({
        let store = store.clone();
        async move {
            let stream = id.stream_id();
            let cmd = Command::new(&stream, decide).expected_version(Some(1));
            store.execute::<OrderAggregate, _, _>(cmd).await
        }
    });
    decided.notified().await;
    competitor.commit().await.unwrap();
    let result = command.await.unwrap();
    assert!(
        matches!(
            result,
            Err(CommandError::PreconditionFailed {
                expected: 1,
                actual: 2
            })
        ),
        "{result:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_refused_command_writes_nothing(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let id = OrderId::new();
    let request = json!({"body": "confirm"});
    let recorded = |_: &event_store::AppendOutcome| json!({});
    let record = IdempotencyRecord {
        key: "k-refused",
        fingerprint: &request,
        outcome: &recorded,
        position_path: &[],
    };
    let result = run_command(&store, id, confirm(), None, Some(record)).await;
    assert!(
        matches!(
            result,
            Err(CommandError::Rejected(order::DomainError::OrderNotFound))
        ),
        "{result:?}"
    );
    for table in ["events", "streams", "snapshots", "idempotency_keys"] {
        let sql = format!("select count(*) from {table}");
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_idempotent_command_is_replayed_and_its_key_refused_to_another_request(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let id = OrderId::new();
    let request = json!({"method": "POST", "path": "/orders", "body": {"userId": "alice"}});
    let recorded = |o: &event_store::AppendOutcome| json!({"status": 201, "body": {"version": o.versions[0], "token": o.position.to_string()}});
    let record = |fingerprint| IdempotencyRecord {
        key: "k-create",
        fingerprint,
        outcome: &recorded,
        position_path: &["body", "token"],
    };
    let first = run_command(&store, id, create(id), None, Some(record(&request)))
        .await
        .unwrap();
    let Executed::Appended { outcome, .. } = &first else {
        panic!("expected an append, got {first:?}");
    };
    let expected = recorded(outcome);

    // The same request again, even one that would now be refused: the recorded outcome.
    let calls = Arc::new(AtomicUsize::new(0));
    let decide = order_decide(create(id), calls.clone(), Arc::new(Notify::new()));
    let stream = id.stream_id();
    let again = store
        .execute::<OrderAggregate, _, _>(
            Command::new(&stream, decide).idempotency(Some(record(&request))),
        )
        .await
        .unwrap();
    assert_eq!(again, Executed::Replayed(expected));
    // The key is looked up only once the command fails (here: the order exists), so the
    // replay decided once; it appended nothing.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(count(&pool, "select count(*) from events").await, 1);

    let other = json!({"method": "POST", "path": "/orders", "body": {"userId": "bob"}});
    let other_id = OrderId::new();
    let result = run_command(
        &store,
        other_id,
        create(other_id),
        None,
        Some(record(&other)),
    )
    .await;
    assert!(matches!(result, Err(CommandError::KeyReused)), "{result:?}");
    assert_eq!(count(&pool, "select count(*) from events").await, 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_command_whose_key_commits_first_elsewhere_gets_that_outcome(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let request = json!({"method": "POST", "path": "/orders"});
    let recorded = |o: &event_store::AppendOutcome| json!({"version": o.versions[0]});
    let record = IdempotencyRecord {
        key: "k-race",
        fingerprint: &request,
        outcome: &recorded,
        position_path: &[],
    };
    // The first request holds its key, uncommitted.
    let (first, ours) = (OrderId::new(), OrderId::new());
    let mut tx = pool.begin().await.unwrap();
    let append = StreamAppend {
        stream_id: first.stream_id(),
        stream_type: "order",
        expected_version: 0,
        events: new_events(order::decide(&OrderState::New, create(first)).unwrap()),
        snapshot: None,
    };
    store
        .append_in(&mut tx, &[append], Some(record))
        .await
        .unwrap();

    let decided = Arc::new(Notify::new());
    let decide = order_decide(create(ours), Arc::new(AtomicUsize::new(0)), decided.clone());
    let command = tokio::spawn({
        let (store, request) = (store.clone(), request.clone());
        async move {
            let recorded = |o: &event_store::AppendOutcome| json!({"version": o.versions[0]});
            let stream = ours.stream_id();
            let cmd = Command::new(&stream, decide).idempotency(Some(IdempotencyRecord {
                key: "k-race",
                fingerprint: &request,
                outcome: &recorded,
                position_path: &[],
            }));
            store.execute::<OrderAggregate, _, _>(cmd).await
        }
    });
    // Ours found no record and decided; its key insert waits for the first, which commits.
    decided.notified().await;
    tx.commit().await.unwrap();
    let result = command.await.unwrap().unwrap();
    assert_eq!(result, Executed::Replayed(json!({"version": 1})));
    assert_eq!(count(&pool, "select count(*) from events").await, 1);
    assert_eq!(count(&pool, "select count(*) from streams").await, 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_append_in_the_callers_transaction_commits_and_rolls_back_with_its_rows(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    sqlx::query("create table reservations (order_stream text primary key, units int not null)")
        .execute(&pool)
        .await
        .unwrap();
    let append = |id: OrderId| StreamAppend {
        stream_id: id.stream_id(),
        stream_type: "order",
        expected_version: 0,
        events: new_events(order::decide(&OrderState::New, create(id)).unwrap()),
        snapshot: None,
    };
    let reserve = |id: OrderId| {
        sqlx::query("insert into reservations (order_stream, units) values ($1, 1)")
            .bind(id.stream_id())
    };

    let kept = OrderId::new();
    let mut tx = pool.begin().await.unwrap();
    let outcome = store
        .append_in(&mut tx, &[append(kept)], None)
        .await
        .unwrap();
    reserve(kept).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(outcome.versions, vec![1]);

    let dropped = OrderId::new();
    let mut tx = pool.begin().await.unwrap();
    store
        .append_in(&mut tx, &[append(dropped)], None)
        .await
        .unwrap();
    reserve(dropped).execute(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();

    assert_eq!(count(&pool, "select count(*) from events").await, 1);
    assert_eq!(count(&pool, "select count(*) from streams").await, 1);
    assert_eq!(count(&pool, "select count(*) from reservations").await, 1);
    let loaded = store
        .load::<OrderAggregate>(&kept.stream_id())
        .await
        .unwrap();
    assert_eq!(loaded.version, 1);
    let loaded = store
        .load::<OrderAggregate>(&dropped.stream_id())
        .await
        .unwrap();
    assert_eq!(loaded.version, 0);
}

/// The stream lock must be a transaction's first write (docs/ARCHITECTURE.md): an append
/// after the caller's own writes is refused before it writes anything.
#[sqlx::test(migrations = "../../migrations")]
async fn an_append_after_the_callers_own_writes_is_refused(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    sqlx::query("create table reservations (order_stream text primary key)")
        .execute(&pool)
        .await
        .unwrap();
    let id = OrderId::new();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("insert into reservations values ($1)")
        .bind(id.stream_id())
        .execute(&mut *tx)
        .await
        .unwrap();
    let append = StreamAppend {
        stream_id: id.stream_id(),
        stream_type: "order",
        expected_version: 0,
        events: new_events(order::decide(&OrderState::New, create(id)).unwrap()),
        snapshot: None,
    };
    let result = store.append_in(&mut tx, &[append], None).await;
    assert!(
        matches!(result, Err(StoreError::AppendNotFirst)),
        "{result:?}"
    );
    tx.commit().await.unwrap();
    assert_eq!(count(&pool, "select count(*) from events").await, 0);
    assert_eq!(count(&pool, "select count(*) from streams").await, 0);
}

/// Keys recorded before the store kept one opaque outcome keep their answer, as the
/// `{"status", "body"}` document the write-service reads back.
#[sqlx::test(migrations = false)]
async fn idempotency_records_from_before_the_outcome_column_keep_their_answer(pool: PgPool) {
    let before = 20261126000002;
    event_store::MIGRATOR.run_to(before, &pool).await.unwrap();
    sqlx::query(
        "insert into idempotency_keys (idempotency_key, request, response_status, response_body)
         values ('k-old', '{\"method\": \"POST\"}', 201, '{\"version\": 1}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    event_store::MIGRATOR.run(&pool).await.unwrap();

    let store = EventStore::new(pool, 100);
    let stored = store.stored_outcome("k-old").await.unwrap().unwrap();
    assert_eq!(stored.fingerprint, json!({"method": "POST"}));
    assert_eq!(
        stored.outcome,
        json!({"status": 201, "body": {"version": 1}})
    );
}

// --- decisions over several streams: `EventStore::execute_many` ---

/// Receives one unit on each of `streams` (product streams), loaded in that order, the first
/// being the command's own; refuses instead when `refuse` is set, after staging. Counts its
/// calls and wakes `decided` after each.
struct ReceiveOnEach {
    streams: Vec<String>,
    refuse: bool,
    calls: Arc<AtomicUsize>,
    decided: Arc<Notify>,
}

impl ReceiveOnEach {
    fn new(streams: &[&str]) -> Self {
        Self {
            streams: streams.iter().map(|s| (*s).to_owned()).collect(),
            refuse: false,
            calls: Arc::default(),
            decided: Arc::default(),
        }
    }
}

/// What `ReceiveOnEach` refuses with.
#[derive(Debug, PartialEq)]
struct Refused;

impl event_store::Decide<Refused> for ReceiveOnEach {
    async fn decide(
        &mut self,
        decision: &mut event_store::Decision<'_>,
    ) -> Result<(), CommandError<Refused>> {
        for stream in &self.streams {
            let state = decision.load::<ProductAggregate>(stream).await?;
            let product_id = stream.trim_start_matches("product-").parse().unwrap();
            let cmd = ProductCommand::ReceiveStock {
                product_id,
                quantity: StockQuantity::try_from(1).unwrap(),
            };
            let events = product::decide(&state, cmd).unwrap();
            decision
                .append::<ProductAggregate>(stream, events.into_iter().map(DomainEvent::Product))?;
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.decided.notify_one();
        if self.refuse {
            return Err(CommandError::Rejected(Refused));
        }
        Ok(())
    }
}

async fn receive_on_each(store: &EventStore, streams: &[&str]) -> Executed {
    let cmd = Command::new(streams[0], ReceiveOnEach::new(streams));
    store.execute_many(cmd).await.unwrap()
}

async fn version_of(store: &EventStore, stream: &str) -> u64 {
    store
        .load::<ProductAggregate>(stream)
        .await
        .unwrap()
        .version
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_decision_that_loses_a_race_on_its_second_stream_decides_again_and_succeeds(
    pool: PgPool,
) {
    let store = EventStore::new(pool.clone(), 100);
    receive_on_each(&store, &["product-a", "product-b"]).await;
    // A competitor holds `product-b`'s lock, moving it to version 2, until it commits.
    let mut competitor = pool.begin().await.unwrap();
    let events = product::decide(
        &ProductState::default(),
        ProductCommand::ReceiveStock {
            product_id: "b".parse().unwrap(),
            quantity: StockQuantity::try_from(5).unwrap(),
        },
    )
    .unwrap();
    let append = StreamAppend {
        stream_id: "product-b".into(),
        stream_type: "product",
        expected_version: 1,
        events: events
            .into_iter()
            .map(|e| NewEvent {
                event_id: Uuid::new_v4(),
                event: DomainEvent::Product(e).encode(),
                metadata: json!({}),
            })
            .collect(),
        snapshot: None,
    };
    store
        .append_in(&mut competitor, &[append], None)
        .await
        .unwrap();

    let decide = ReceiveOnEach::new(&["product-a", "product-b"]);
    let (calls, decided) = (decide.calls.clone(), decide.decided.clone());
    let command = tokio::spawn({
        let store = store.clone();
        async move { store.execute_many(Command::new("product-a", decide)).await }
    });
    // It decided on both streams at version 1; `product-b` is about to move.
    decided.notified().await;
    competitor.commit().await.unwrap();

    let executed = command.await.unwrap().unwrap();
    let Executed::Appended {
        outcome,
        events,
        retries,
    } = executed
    else {
        panic!("expected an append, got {executed:?}");
    };
    assert_eq!((outcome.versions, events, retries), (vec![2, 3], 2, 1));
    assert_eq!(calls.load(Ordering::SeqCst), 2, "decided again on both");
    assert_eq!(version_of(&store, "product-a").await, 2);
    let b = store.load::<ProductAggregate>("product-b").await.unwrap();
    assert_eq!((b.version, b.state.received_units), (3, 1 + 5 + 1));
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_refused_decision_over_several_streams_writes_nothing(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    receive_on_each(&store, &["product-a"]).await;
    let before = count(&pool, "select count(*) from events").await;
    let mut decide = ReceiveOnEach::new(&["product-a", "product-b", "product-c"]);
    decide.refuse = true;
    let request = json!({"body": "refused"});
    let recorded = |_: &event_store::AppendOutcome| json!({});
    let cmd = Command::new("product-a", decide).idempotency(Some(IdempotencyRecord {
        key: "k-refused-many",
        fingerprint: &request,
        outcome: &recorded,
        position_path: &[],
    }));
    let result = store.execute_many(cmd).await;
    assert!(
        matches!(result, Err(CommandError::Rejected(Refused))),
        "{result:?}"
    );
    assert_eq!(count(&pool, "select count(*) from events").await, before);
    assert_eq!(count(&pool, "select count(*) from streams").await, 1);
    assert_eq!(
        count(&pool, "select count(*) from idempotency_keys").await,
        0
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn decisions_over_the_same_streams_in_opposite_orders_do_not_deadlock(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    receive_on_each(&store, &["product-a", "product-b"]).await;
    const PER_ORDER: usize = 20;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2 * PER_ORDER {
        let store = store.clone();
        let streams: &[&str] = if i % 2 == 0 {
            &["product-a", "product-b"]
        } else {
            &["product-b", "product-a"]
        };
        tasks.spawn(async move {
            // Enough retries that only a deadlock or a wrong lock order could fail it.
            let cmd =
                Command::new(streams[0], ReceiveOnEach::new(streams)).retries(Retries::new(100));
            store.execute_many(cmd).await
        });
    }
    let mut retried = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(Executed::Appended { retries, .. }) => retried += retries,
            other => panic!("{other:?}"),
        }
    }
    let expected = 1 + 2 * PER_ORDER as u64;
    assert_eq!(version_of(&store, "product-a").await, expected);
    assert_eq!(version_of(&store, "product-b").await, expected);
    // Retries queue on the streams' command locks: far fewer than one per lost race each.
    assert!(
        retried <= 2 * 2 * PER_ORDER as u32,
        "{retried} retries for {} commands",
        2 * PER_ORDER
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_decision_that_stages_nothing_answers_the_current_version(pool: PgPool) {
    let store = EventStore::new(pool.clone(), 100);
    let first = receive_on_each(&store, &["product-a"]).await;
    let position = first.appended().unwrap().position;
    struct LoadOnly;
    impl event_store::Decide<()> for LoadOnly {
        async fn decide(
            &mut self,
            decision: &mut event_store::Decision<'_>,
        ) -> Result<(), CommandError<()>> {
            decision.load::<ProductAggregate>("product-a").await?;
            Ok(())
        }
    }
    let executed = store
        .execute_many(Command::new("product-a", LoadOnly))
        .await
        .unwrap();
    let Executed::Appended {
        outcome, events, ..
    } = executed
    else {
        panic!("{executed:?}");
    };
    assert_eq!(
        (outcome.versions, outcome.position, events),
        (vec![1], position, 0)
    );
    assert_eq!(count(&pool, "select count(*) from events").await, 1);
}
