//! Pins every MongoDB operation the views rely on. It must pass on real MongoDB as on the
//! local nx-27017 server: a server that differs shows up here, not as wrong views.

mod common;

use mongodb::bson::{self, Bson, Document, doc};
use projector::mongo::{GuardedWrite, MongoError, ViewStore, get_int};
use projector::settings::Transactions;
use read_model::View;

async fn store() -> ViewStore {
    let name = format!("c{}", uuid::Uuid::new_v4().simple());
    ViewStore::connect(&common::mongodb_uri(), &name, Transactions::Off)
        .await
        .unwrap()
}

fn write(id: &str, expected: Option<&str>, applied: &str, n: i64) -> GuardedWrite {
    GuardedWrite {
        id: id.into(),
        expected: expected.map(str::to_owned),
        document: doc! {"_id": id, "appliedPosition": applied, "n": n},
    }
}

#[tokio::test]
async fn guarded_upserts_insert_replace_and_detect_a_moved_document() {
    let s = store().await;
    s.write_guarded(
        "c",
        vec![write("a", None, "01", 1), write("b", None, "01", 1)],
        None,
    )
    .await
    .unwrap();
    // Replace when the guard holds.
    s.write_guarded("c", vec![write("a", Some("01"), "02", 2)], None)
        .await
        .unwrap();
    // A stale guard (document moved on) is a conflict, never a second document or an update.
    // The batch is ordered: statements before the failing one apply, none after it does (so
    // a checkpoint sent last never moves past a write that did not happen).
    let err = s
        .write_guarded(
            "c",
            vec![
                write("b", Some("01"), "02", 2),
                write("a", Some("01"), "03", 99),
                write("c", None, "03", 3),
            ],
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, MongoError::Conflict(1)), "{err:?}");
    // Inserting an id that exists is a conflict too.
    let err = s
        .write_guarded("c", vec![write("b", None, "09", 9)], None)
        .await
        .unwrap_err();
    assert!(matches!(err, MongoError::Conflict(1)), "{err:?}");

    let found = s
        .find_by_ids("c", vec!["a".into(), "b".into(), "zz".into()], None)
        .await
        .unwrap();
    assert_eq!(found.len(), 2, "nothing after the conflict was written");
    assert_eq!(get_int(&found["a"], "n"), Some(2));
    assert_eq!(found["a"].get_str("appliedPosition").unwrap(), "02");
    assert_eq!(get_int(&found["b"], "n"), Some(2));
    s.database().drop().await.unwrap();
}

#[tokio::test]
async fn pointers_checkpoints_and_generations() {
    let s = store().await;
    assert_eq!(
        s.active_generation(View::Orders).await.unwrap(),
        1,
        "first use creates generation 1"
    );
    assert_eq!(s.active_generation(View::Orders).await.unwrap(), 1);
    assert_eq!(s.reserve_generation(View::Orders).await.unwrap(), 2);
    assert_eq!(
        s.reserve_generation(View::Orders).await.unwrap(),
        3,
        "an abandoned reservation is not reused"
    );
    s.activate(View::Orders, 3).await.unwrap();
    assert_eq!(s.active_generation(View::Orders).await.unwrap(), 3);

    let p: domain::Position = "00000000000000aa-0000000000000010".parse().unwrap();
    assert_eq!(
        s.checkpoint(View::Orders, 3).await.unwrap(),
        domain::Position::ZERO
    );
    // The old layout's checkpoint (in `projection_checkpoints`) is read while the generation
    // has none of its own, so an upgraded deployment resumes where it was.
    let legacy: domain::Position = "00000000000000aa-0000000000000001".parse().unwrap();
    s.database()
        .collection::<Document>(read_model::CHECKPOINTS)
        .insert_one(doc! {"_id": "orders_view_g3", "projection": "orders_view", "generation": 3_i64, "position": legacy.to_string()})
        .await
        .unwrap();
    assert_eq!(s.checkpoint(View::Orders, 3).await.unwrap(), legacy);
    s.save_checkpoint(View::Orders, 3, p, None).await.unwrap();
    assert_eq!(s.checkpoint(View::Orders, 3).await.unwrap(), p);
    // The checkpoint lives in the generation's own collection, so the batch's `update` can
    // carry it.
    let coll = s.database().collection::<Document>("orders_view_g3");
    // Tokens compare as strings on the server the way positions compare (read-your-writes).
    let ahead = coll
        .count_documents(
            doc! {"_id": read_model::CHECKPOINT_ID, "position": {"$gte": "00000000000000a9-00000000000000ff"}},
        )
        .await
        .unwrap();
    let behind = coll
        .count_documents(
            doc! {"_id": read_model::CHECKPOINT_ID, "position": {"$gte": "00000000000000ab-0000000000000001"}},
        )
        .await
        .unwrap();
    assert_eq!((ahead, behind), (1, 0));

    s.write_guarded("orders_view_g3", vec![write("x", None, "01", 1)], None)
        .await
        .unwrap();
    s.ensure_indexes(
        "orders_view_g3",
        vec![doc! {"n": 1}, doc! {"userId": 1, "createdAt": -1}],
    )
    .await
    .unwrap();
    assert!(
        s.database()
            .list_collection_names()
            .await
            .unwrap()
            .contains(&"orders_view_g3".to_string())
    );
    s.drop_generation(View::Orders, 3).await.unwrap();
    assert_eq!(
        s.checkpoint(View::Orders, 3).await.unwrap(),
        domain::Position::ZERO,
        "a dropped generation takes both layouts' checkpoints with it"
    );
    assert!(
        !s.database()
            .list_collection_names()
            .await
            .unwrap()
            .contains(&"orders_view_g3".to_string())
    );
    assert_eq!(
        s.checkpoint(View::Orders, 3).await.unwrap(),
        domain::Position::ZERO
    );
    s.database().drop().await.unwrap();
}

#[tokio::test]
async fn values_round_trip_exactly() {
    let s = store().await;
    let when = bson::DateTime::from_millis(1_764_115_200_123);
    let big = 1_i64 << 40;
    let doc = doc! {"_id": "t", "appliedPosition": "1", "big": big, "small": 5_i64, "neg": -3_i64, "when": when, "none": Bson::Null};
    s.write_guarded(
        "t",
        vec![GuardedWrite {
            id: "t".into(),
            expected: None,
            document: doc,
        }],
        None,
    )
    .await
    .unwrap();
    let got = s
        .find_by_ids("t", vec!["t".into()], None)
        .await
        .unwrap()
        .remove("t")
        .unwrap();
    assert_eq!(get_int(&got, "big"), Some(big));
    // Some servers hand small Int64 back as Int32: readers must accept either.
    assert_eq!(get_int(&got, "small"), Some(5));
    assert_eq!(get_int(&got, "neg"), Some(-3));
    assert_eq!(got.get_datetime("when").unwrap(), &when);
    assert_eq!(got.get("none"), Some(&Bson::Null));
    s.database().drop().await.unwrap();
}

/// The queries the read-service runs on `orders_view`.
#[tokio::test]
async fn order_queries_filter_sort_and_page() {
    let s = store().await;
    let coll = s.database().collection::<Document>("orders");
    let mut docs = vec![];
    for i in 0..30_i64 {
        docs.push(doc! {
            "_id": format!("o{i:02}"),
            "userId": if i % 2 == 0 { "even" } else { "odd" },
            "status": if i % 3 == 0 { "confirmed" } else { "pending" },
            "totalCents": i * 100,
            "createdAt": bson::DateTime::from_millis(1_000_000 + i * 1000),
            "items": [{"productId": format!("p{}", i % 4), "quantity": 1_i64}],
        });
    }
    coll.insert_many(docs).await.unwrap();
    // The indexes the projector creates on orders_view (some servers query differently
    // once a path is indexed).
    s.ensure_indexes(
        "orders",
        <read_model::OrderDoc as read_model::ViewDocument>::indexes(),
    )
    .await
    .unwrap();
    let ids = |docs: Vec<Document>| {
        docs.iter()
            .map(|d| d.get_str("_id").unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    async fn all(c: mongodb::Cursor<Document>) -> Vec<Document> {
        let mut c = c;
        let mut out = vec![];
        while c.advance().await.unwrap() {
            out.push(Document::try_from(c.current()).unwrap());
        }
        out
    }
    // A user's newest first, then the next page after a (createdAt, _id) cursor.
    let page1 = all(coll
        .find(doc! {"userId": "even"})
        .sort(doc! {"createdAt": -1, "_id": -1})
        .limit(3)
        .await
        .unwrap())
    .await;
    assert_eq!(ids(page1), ["o28", "o26", "o24"]);
    let after = bson::DateTime::from_millis(1_000_000 + 24 * 1000);
    let page2 = all(
        coll.find(doc! {"userId": "even", "$or": [{"createdAt": {"$lt": after}}, {"createdAt": after, "_id": {"$lt": "o24"}}]})
            .sort(doc! {"createdAt": -1, "_id": -1})
            .limit(3)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ids(page2), ["o22", "o20", "o18"]);
    // Combined criteria: status, product on any line, total range, time range.
    let hits = all(coll
        .find(doc! {
            "status": "confirmed",
            "items": {"$elemMatch": {"productId": "p2"}},
            "totalCents": {"$gte": 500_i64, "$lte": 2500_i64},
            "createdAt": {"$gte": bson::DateTime::from_millis(1_000_000)},
        })
        .sort(doc! {"totalCents": 1, "_id": 1})
        .await
        .unwrap())
    .await;
    assert_eq!(ids(hits), ["o06", "o18"]);
    // A literal that looks like an operator is only a value.
    let none = coll
        .count_documents(doc! {"userId": "{\"$ne\": \"\"}"})
        .await
        .unwrap();
    assert_eq!(none, 0);
    // The read-service counts with the `count` command (an aggregation is slow on nx-27017).
    let counted = s
        .database()
        .run_command(doc! {"count": coll.name(), "query": {"status": "confirmed"}})
        .await
        .unwrap();
    let expected = coll
        .count_documents(doc! {"status": "confirmed"})
        .await
        .unwrap();
    assert!(expected > 0);
    assert_eq!(get_int(&counted, "n"), Some(expected as i64));
    s.database().drop().await.unwrap();
}

/// A batch's writes and its checkpoint in one ordered `update`; readers of the view's
/// documents leave the checkpoint out (`read_model::without_checkpoint`) with `$ne`, alone or
/// beside `_id` conditions (`$and`), in finds with sorts and in the `count` command.
#[tokio::test]
async fn a_batch_carries_its_checkpoint_and_readers_leave_it_out() {
    let s = store().await;
    let p: domain::Position = "00000000000000aa-0000000000000010".parse().unwrap();
    let side = std::collections::BTreeMap::from([("s1".to_owned(), doc! {"side": 1_i64})]);
    s.write_batch(
        "orders_view_g1",
        side,
        vec![write("a", None, "01", 1), write("b", None, "01", 2)],
        Some((View::Orders, 1, p.into())),
        None,
    )
    .await
    .unwrap();
    let coll = s.database().collection::<Document>("orders_view_g1");
    let got = coll
        .find_one(doc! {"_id": read_model::CHECKPOINT_ID})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.get_str("position").unwrap(), p.to_string());

    // A conflict in the batch leaves the checkpoint where it was.
    let later: domain::Position = "00000000000000ab-0000000000000001".parse().unwrap();
    let err = s
        .write_batch(
            "orders_view_g1",
            Default::default(),
            vec![write("a", Some("00"), "02", 5)],
            Some((View::Orders, 1, later.into())),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, MongoError::Conflict(1)), "{err:?}");
    assert_eq!(s.checkpoint(View::Orders, 1).await.unwrap(), p);

    async fn ids(c: mongodb::Cursor<Document>) -> Vec<String> {
        let mut c = c;
        let mut out = vec![];
        while c.advance().await.unwrap() {
            out.push(c.current().get_str("_id").unwrap().to_owned());
        }
        out
    }
    let all = ids(coll
        .find(read_model::without_checkpoint(doc! {}))
        .sort(doc! {"_id": 1})
        .await
        .unwrap())
    .await;
    assert_eq!(all, ["a", "b", "s1"]);
    let with_ids = ids(coll
        .find(read_model::without_checkpoint(
            doc! {"_id": {"$gte": "a"}, "n": {"$gte": 1_i64}},
        ))
        .sort(doc! {"n": -1, "_id": 1})
        .await
        .unwrap())
    .await;
    assert_eq!(with_ids, ["b", "a"]);
    let itself = ids(coll
        .find(read_model::without_checkpoint(
            doc! {"_id": read_model::CHECKPOINT_ID},
        ))
        .await
        .unwrap())
    .await;
    assert!(itself.is_empty());
    let counted = s
        .database()
        .run_command(
            doc! {"count": "orders_view_g1", "query": read_model::without_checkpoint(doc! {})},
        )
        .await
        .unwrap();
    assert_eq!(get_int(&counted, "n"), Some(3));
    s.database().drop().await.unwrap();
}
