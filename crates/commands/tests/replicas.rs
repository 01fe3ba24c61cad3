//! Two command services on one store, as two replicas of command-api: each keeps the
//! aggregates it used in memory. What the other wrote is found at commit (a conflict,
//! then a reload from the store), and a refusal is never decided on what one replica
//! last saw.

use std::sync::Arc;

use commands::{CommandError, CommandService, RequestMeta, TemplateGenerator};
use domain::DomainError;
use schemas::Version;
use testkit::commands::{meta, user_message};
use testkit::env::TestDatabase;
use uuid::Uuid;

/// Two services on one new database, and a conversation `a` started.
struct Replicas {
    db: TestDatabase,
    a: Arc<CommandService>,
    b: Arc<CommandService>,
    meta: RequestMeta,
    c: Uuid,
}

impl Replicas {
    async fn start(title: &str) -> Self {
        let db = testkit::env::database().await;
        event_store::migrate(&db.pool).await.expect("migrate");
        let replica = || {
            Arc::new(CommandService::new(
                db.pool.clone(),
                Arc::new(TemplateGenerator),
            ))
        };
        let (a, b) = (replica(), replica());
        let meta = meta("acme");
        let c = a
            .start_conversation(title.into(), Default::default(), &meta)
            .await
            .expect("start")
            .aggregate_id;
        Replicas { db, a, b, meta, c }
    }
}

#[tokio::test]
async fn two_replicas_on_one_conversation_keep_every_version_and_decide_on_the_latest() {
    let Replicas { db, a, b, meta, c } = Replicas::start("Plan").await;
    // Alternating writers: each one's memory is a command behind, and every answer is
    // still the next version.
    for n in 0..10u64 {
        let writer = if n % 2 == 0 { &b } else { &a };
        let sent = writer
            .send_message(c, user_message(&format!("m{n}")), None, &meta)
            .await
            .expect("send");
        assert_eq!(sent.version, Version(n + 2));
    }
    // B renames (A's memory is now behind); A is sent If-Match with B's version: it must
    // be accepted, not refused as a mismatch decided on A's older state.
    let by_b = b
        .rename_conversation(c, "Renamed".into(), None, &meta)
        .await
        .expect("rename on B")
        .version;
    let by_a = a
        .rename_conversation(c, "Again".into(), Some(by_b), &meta)
        .await
        .expect("If-Match with the latest version, on the replica that had not seen it");
    assert_eq!(by_a.version, Version(by_b.0 + 1));
    // And the other way round: a version A's memory would accept is refused when the
    // store has moved on.
    b.send_message(c, user_message("moves on"), None, &meta)
        .await
        .expect("send on B");
    assert!(matches!(
        a.rename_conversation(c, "Stale".into(), Some(by_a.version), &meta)
            .await,
        Err(CommandError::Domain(DomainError::VersionMismatch { .. }))
    ));
    // B ends it; A, which remembers it open, refuses a message for the right reason.
    b.end_conversation(c, None, None, &meta)
        .await
        .expect("end on B");
    assert!(matches!(
        a.send_message(c, user_message("late"), None, &meta).await,
        Err(CommandError::Domain(DomainError::ConversationEnded))
    ));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(c.to_string())
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(stored, 15, "start, 10 messages, 2 renames, 1 message, end");
}

/// Commands of one conversation arriving together on two replicas: each replica decides
/// its commands one after another on the state the previous one leads to, before that is
/// committed; the other replica's writes make such chains fail and be decided again.
/// Every command is accepted once, at a version of its own, and what each replica keeps
/// is what the store holds.
#[tokio::test]
async fn concurrent_commands_on_one_conversation_from_two_replicas_each_land_once() {
    let Replicas { db, a, b, meta, c } = Replicas::start("Hot").await;
    let tasks: Vec<_> = (0..24)
        .map(|n| {
            let service = if n % 3 == 0 { b.clone() } else { a.clone() };
            let meta = meta.clone();
            tokio::spawn(async move {
                service
                    .send_message(c, user_message(&format!("m{n}")), None, &meta)
                    .await
                    .expect("send")
                    .version
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.expect("task").0);
    }
    versions.sort();
    assert_eq!(versions, (2..=25).collect::<Vec<u64>>());
    let (sequences, transactions): (Vec<i64>, i64) = (
        sqlx::query_scalar("SELECT sequence FROM events ORDER BY tx_id, global_position")
            .fetch_all(&db.pool)
            .await
            .expect("events"),
        sqlx::query_scalar("SELECT count(DISTINCT tx_id::text) FROM events")
            .fetch_one(&db.pool)
            .await
            .expect("transactions"),
    );
    assert_eq!(
        sequences,
        (1..=25).collect::<Vec<i64>>(),
        "commit order is sequence order"
    );
    assert!(
        transactions < 25,
        "some commands shared a commit: {transactions}"
    );
    // Each replica's next command is decided on the latest state.
    for service in [&a, &b] {
        let next = service
            .send_message(c, user_message("after"), None, &meta)
            .await
            .expect("send after");
        assert!(next.version.0 > 25);
    }
}
