//! A side-effect projection (notifications over HTTP) against a real PostgreSQL, a real
//! broker and a real HTTP receiver: every effect is done at least once and, after the
//! receiver de-duplicates by idempotency key, seen exactly once, across a projector
//! killed mid-stream, a full redelivery, a rebuild and a re-drive.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use notifications::{Channel, Notifications};
use projection::EffectSink;
use testkit::commands::{meta, summarised_and_ended};
use testkit::receiver::Receiver;
use testkit::{Stack, wait_until};
use uuid::Uuid;

fn notifier(receiver: &Receiver) -> Arc<EffectSink<Notifications>> {
    let channel =
        Channel::http(receiver.url.clone(), Duration::from_secs(5)).expect("receiver URL");
    Arc::new(EffectSink::new(Notifications::new(channel)))
}

fn distinct_delivered(receiver: &Receiver) -> usize {
    receiver.delivered().len()
}

async fn scalar(stack: &Stack, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&stack.db.pool)
        .await
        .expect(sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_notification_is_seen_once_across_kill_redelivery_rebuild_and_redrive() {
    let stack = Stack::new().await;
    let _relay = stack.relay();
    let receiver = Receiver::start().await;

    // Killed (like kill -9) while delivering, restarted in the same group.
    let first = stack.projector(notifier(&receiver)).await;
    let writer = async {
        for n in 0..40 {
            summarised_and_ended(&stack.service, "acme", n).await;
        }
    };
    let kill_midway = async {
        wait_until("some notifications delivered", || async {
            distinct_delivered(&receiver) >= 10
        })
        .await;
    };
    tokio::join!(writer, kill_midway);
    first.kill().await;
    let second = stack.projector(notifier(&receiver)).await;
    // Recorded comes after delivered: wait for the ledger, one row per notification.
    wait_until("all 80 notifications recorded", || async {
        scalar(
            &stack,
            "SELECT count(*) FROM effect_ledger WHERE projection = 'notifications'",
        )
        .await
            == 80
    })
    .await;
    assert_eq!(
        distinct_delivered(&receiver),
        80,
        "each delivered under its own id"
    );

    // Redelivery of the whole stream (a new consumer group): progress skips it all.
    let sent_before = receiver.received().len();
    let again = stack
        .projector_on(stack.db.pool.clone(), notifier(&receiver), "again")
        .await;
    let events = stack.event_count().await as u64;
    again
        .wait_for("the whole stream redelivered", |s| {
            s.applied + s.duplicates >= events
        })
        .await;
    again.stop().await;
    assert_eq!(
        receiver.received().len(),
        sent_before,
        "a redelivered event sends nothing"
    );

    // A rebuild replays history: the inbox is refilled, nothing is sent.
    let report = projection::rebuild(&stack.db.pool, notifier(&receiver).as_ref())
        .await
        .expect("rebuild");
    assert_eq!(report.replayed, events);
    assert_eq!(
        scalar(
            &stack,
            &format!("SELECT count(*) FROM {}.inbox", report.schema)
        )
        .await,
        80,
        "the rebuilt inbox holds every notification"
    );
    assert_eq!(
        receiver.received().len(),
        sent_before,
        "a rebuild sends nothing"
    );

    // The receiver refuses one notification: it is parked, then re-driven once fixed.
    let refused = stack
        .service
        .start_conversation("refused".into(), Default::default(), &meta("acme"))
        .await
        .unwrap()
        .aggregate_id;
    receiver.fail_when(&refused.to_string(), 500);
    stack
        .service
        .end_conversation(refused, None, None, &meta("acme"))
        .await
        .unwrap();
    second
        .wait_for("the refused notification parked", |s| s.parked == 1)
        .await;
    assert_eq!(distinct_delivered(&receiver), 80);
    receiver.heal();
    let redriven = projection::redrive(&stack.db.pool, notifier(&receiver).as_ref())
        .await
        .expect("redrive");
    assert_eq!((redriven.applied, redriven.still_parked), (1, 0));
    second.stop().await;

    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 81, "every notification delivered");
    let keys: HashSet<&String> = delivered.keys().collect();
    assert!(!keys.contains(&String::new()), "every delivery has a key");
    let inbox_ids: Vec<Uuid> = sqlx::query_scalar(&format!(
        "SELECT notification_id FROM {}.inbox",
        report.schema
    ))
    .fetch_all(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(
        inbox_ids.len(),
        81,
        "the live inbox has the re-driven one too"
    );
    for id in inbox_ids {
        assert!(
            delivered.contains_key(&id.to_string()),
            "inbox notification {id} was delivered under its own id"
        );
    }
    assert_eq!(
        scalar(
            &stack,
            "SELECT count(*) FROM effect_ledger WHERE projection = 'notifications'"
        )
        .await,
        81
    );
}
