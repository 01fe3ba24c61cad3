//! Group commit against a real PostgreSQL: concurrent appends share one transaction, and
//! each still gets the outcome it would have had alone.

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use event_store::Appender;
use serde_json::json;
use sqlx::PgPool;

/// `count` events of one conversation from `first`, with an idempotency key or not.
fn unit(id: &str, first: usize, count: usize, key: Option<&str>) -> Vec<SerializedEvent> {
    (first..first + count)
        .map(|sequence| {
            let mut metadata = json!({"tenant_id": "acme", "request_hash": "h"});
            if let Some(key) = key {
                metadata["idempotency_key"] = json!(key);
            }
            SerializedEvent::new(
                id.to_owned(),
                sequence,
                "conversation".into(),
                "MessageSent".into(),
                "1".into(),
                json!({"n": sequence}),
                metadata,
            )
        })
        .collect()
}

async fn rows(pool: &PgPool, id: &str) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT sequence, global_position FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .expect("rows")
}

async fn transactions(pool: &PgPool, ids: &[String]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(DISTINCT tx_id::text) FROM events WHERE aggregate_id = ANY($1)",
    )
    .bind(ids)
    .fetch_one(pool)
    .await
    .expect("count")
}

// The test runs on one thread: every append is queued before a writer runs, so one
// writer takes them all into one batch.
#[tokio::test]
async fn concurrent_appends_share_a_commit_and_a_conflict_fails_only_its_own_append() {
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.expect("migrate");
    let appender = Appender::start(db.pool.clone());

    let ids: Vec<String> = (0..40).map(|n| format!("c{n}")).collect();
    let outcomes =
        futures::future::join_all(ids.iter().map(|id| appender.append(unit(id, 1, 3, None)))).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(
        transactions(&db.pool, &ids).await,
        1,
        "one commit for 40 appends"
    );
    for id in &ids {
        let rows = rows(&db.pool, id).await;
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(
            rows.windows(2).all(|w| w[0].1 < w[1].1),
            "order kept: {rows:?}"
        );
    }

    // Next: 20 good appends and one whose sequence another writer took (c0 is at 3).
    let good: Vec<String> = (0..20).map(|n| format!("g{n}")).collect();
    let mut units: Vec<Vec<SerializedEvent>> = good.iter().map(|id| unit(id, 1, 2, None)).collect();
    units.push(unit("c0", 3, 1, None));
    let outcomes = futures::future::join_all(units.into_iter().map(|u| appender.append(u))).await;
    for outcome in &outcomes[..20] {
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    assert!(
        matches!(outcomes[20], Err(PersistenceError::OptimisticLockError)),
        "{:?}",
        outcomes[20]
    );
    for id in &good {
        assert_eq!(rows(&db.pool, id).await.len(), 2);
    }
    assert_eq!(
        rows(&db.pool, "c0").await.len(),
        3,
        "nothing of the conflict"
    );

    // Then two appends with the same idempotency key on two new conversations, among
    // good ones: the second is refused even though both are in one transaction.
    let more: Vec<String> = (0..5).map(|n| format!("h{n}")).collect();
    let mut units: Vec<Vec<SerializedEvent>> = more.iter().map(|id| unit(id, 1, 1, None)).collect();
    units.push(unit("k1", 1, 2, Some("key-1")));
    units.push(unit("k2", 1, 2, Some("key-1")));
    let outcomes = futures::future::join_all(units.into_iter().map(|u| appender.append(u))).await;
    assert!(outcomes[..5].iter().all(Result::is_ok), "{outcomes:?}");
    assert!(
        outcomes[5].is_ok(),
        "the key's first append: {:?}",
        outcomes[5]
    );
    assert!(
        matches!(outcomes[6], Err(PersistenceError::OptimisticLockError)),
        "the key used again in the same batch: {:?}",
        outcomes[6]
    );
    assert_eq!(rows(&db.pool, "k1").await.len(), 2);
    assert!(
        rows(&db.pool, "k2").await.is_empty(),
        "nothing of the reused key"
    );
    let key: (String, i64, i64) = sqlx::query_as(
        "SELECT aggregate_id, first_sequence, last_sequence FROM idempotency_keys WHERE key = 'key-1'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("key");
    assert_eq!(key, ("k1".to_owned(), 1, 2));
}

#[tokio::test]
async fn one_append_at_a_time_still_works_and_a_closed_pool_is_unavailable() {
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.expect("migrate");
    let appender = Appender::start(db.pool.clone());
    appender.set_max_units(1);
    let ids = ["a".to_owned(), "b".to_owned()];
    let outcomes =
        futures::future::join_all(ids.iter().map(|id| appender.append(unit(id, 1, 2, None)))).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(transactions(&db.pool, &ids).await, 2, "a commit each");

    db.pool.close().await;
    let closed = appender.append(unit("c", 1, 1, None)).await;
    assert!(
        matches!(closed, Err(PersistenceError::ConnectionError(_))),
        "{closed:?}"
    );
}

#[tokio::test]
async fn an_append_decided_after_another_is_written_after_it_and_fails_with_it() {
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.expect("migrate");
    let appender = Appender::start(db.pool.clone());
    appender
        .append(unit("x", 1, 1, None))
        .await
        .expect("x at 1");

    // A takes a sequence already taken; B was decided on A's state. By the key alone B
    // would be accepted (nothing is at 2): it must fail with A and leave no row.
    let a = appender.queue(unit("x", 1, 1, None), None);
    let b = appender.queue(unit("x", 2, 1, None), Some(a.ticket()));
    // C then D on a new conversation: both written, D after C.
    let c = appender.queue(unit("y", 1, 1, None), None);
    let d = appender.queue(unit("y", 2, 2, None), Some(c.ticket()));
    let (a, b, c, d) = tokio::join!(a.outcome(), b.outcome(), c.outcome(), d.outcome());
    assert!(
        matches!(a, Err(PersistenceError::OptimisticLockError)),
        "{a:?}"
    );
    assert!(
        matches!(b, Err(PersistenceError::OptimisticLockError)),
        "{b:?}"
    );
    assert!(c.is_ok() && d.is_ok(), "{c:?} {d:?}");
    assert_eq!(rows(&db.pool, "x").await.len(), 1);
    let y = rows(&db.pool, "y").await;
    assert_eq!(y.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(y.windows(2).all(|w| w[0].1 < w[1].1), "order kept: {y:?}");

    // A unit decided after one of an earlier statement waits for its commit.
    let e = appender.queue(unit("z", 1, 1, None), None);
    let e_ticket = e.ticket();
    e.outcome().await.expect("z at 1");
    let f = appender.queue(unit("z", 2, 1, None), Some(e_ticket));
    f.outcome().await.expect("z at 2");
    assert_eq!(rows(&db.pool, "z").await.len(), 2);
}
