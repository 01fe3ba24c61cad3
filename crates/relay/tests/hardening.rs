//! The relay under what could stop it: events that cannot be published, a broker it cannot
//! reach, a producer queue that fills, a cursor carried into another cluster. Real
//! PostgreSQL, real broker.

use std::collections::HashMap;
use std::time::Duration;

use kafka::KafkaConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use testkit::commands::{meta, user_message};
use testkit::{RunningRelay, Stack};
use uuid::Uuid;

/// `(aggregate_id, sequence)` of every record on both topics, in arrival order, read until
/// nothing new arrives for `quiet`.
async fn consume(kafka: &KafkaConfig, group: &str, quiet: Duration) -> Vec<(String, i64)> {
    let consumer: StreamConsumer = kafka
        .consumer("checker", &testkit::env::group(group))
        .expect("consumer");
    let topics = kafka.event_topics();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).expect("subscribe");
    let mut out = Vec::new();
    // The first records may take a rebalance to arrive; after that, `quiet` ends it.
    let mut wait = Duration::from_secs(30);
    while let Ok(msg) = tokio::time::timeout(wait, consumer.recv()).await {
        let msg = msg.expect("consume");
        let key = String::from_utf8_lossy(msg.key().expect("key")).into_owned();
        let sequence = kafka::headers::header(&msg, schemas::headers::SEQUENCE)
            .and_then(|s| s.parse().ok())
            .expect("sequence header");
        out.push((key, sequence));
        wait = quiet;
    }
    out
}

fn sequences_of(records: &[(String, i64)], id: Uuid) -> Vec<i64> {
    let id = id.to_string();
    let mut seen = Vec::new();
    for (key, sequence) in records {
        if *key == id && !seen.contains(sequence) {
            seen.push(*sequence);
        }
    }
    seen
}

async fn start(stack: &Stack, title: &str) -> Uuid {
    stack
        .service
        .start_conversation(title.into(), Default::default(), &meta("acme"))
        .await
        .unwrap()
        .aggregate_id
}

async fn send(stack: &Stack, id: Uuid, content: &str) {
    stack
        .service
        .send_message(id, user_message(content), None, &meta("acme"))
        .await
        .unwrap();
}

async fn wait_status(
    relay: &RunningRelay,
    what: &str,
    done: impl FnMut(&relay::RelayStatus) -> bool,
) {
    let mut status = relay.status.clone();
    tokio::time::timeout(Duration::from_secs(60), status.wait_for(done))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", *relay.status.borrow()))
        .expect("status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_that_cannot_be_published_parks_its_aggregate_only_and_redrive_keeps_order() {
    let stack = Stack::new().await;
    // Topics as the deployment creates them (1 MB records), and a relay whose own limit is
    // below the event about to be written: 32,768 four-byte characters.
    stack
        .kafka
        .ensure_topics(&stack.kafka.event_topics())
        .await
        .unwrap();
    let mut small = stack.kafka.clone();
    small.message_max_bytes = 50_000;
    let a = start(&stack, "A").await;
    let b = start(&stack, "B").await;
    send(&stack, a, "a2").await;
    send(&stack, a, &"😀".repeat(32_768)).await;
    send(&stack, a, "a4").await;
    send(&stack, b, "b2").await;
    // A row that does not decode into the contract (written around the command side).
    let c = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('conversation', $1, 1, 'ConversationStarted', '1', '{\"Bogus\": {}}', '{\"tenant_id\": \"acme\"}')",
    )
    .bind(c.to_string())
    .execute(&stack.db.pool)
    .await
    .unwrap();
    send(&stack, b, "b3").await;

    let relay = stack.relay_with(small, 200);
    wait_status(&relay, "5 published, 3 parked", |s| {
        s.published == 5 && s.parked == 3 && s.lag_events == 0
    })
    .await;
    let records = consume(&stack.kafka, "first", Duration::from_secs(2)).await;
    assert_eq!(
        sequences_of(&records, a),
        vec![1, 2],
        "a waits behind its oversize event"
    );
    assert_eq!(
        sequences_of(&records, b),
        vec![1, 2, 3],
        "other aggregates flow"
    );
    assert!(sequences_of(&records, c).is_empty());
    let parked: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT aggregate_id, sequence, reason FROM relay_parked ORDER BY aggregate_id, sequence",
    )
    .fetch_all(&stack.db.pool)
    .await
    .unwrap();
    let reasons: HashMap<(String, i64), String> = parked
        .into_iter()
        .map(|(id, seq, reason)| ((id, seq), reason))
        .collect();
    assert!(
        reasons[&(a.to_string(), 3)].contains("exceeds KAFKA_MESSAGE_MAX_BYTES"),
        "{reasons:?}"
    );
    assert_eq!(
        reasons[&(a.to_string(), 4)],
        "waiting behind a parked event"
    );
    assert!(
        reasons[&(c.to_string(), 1)].contains("does not decode"),
        "{reasons:?}"
    );
    // Later events of the parked aggregate keep waiting.
    send(&stack, a, "a5").await;
    wait_status(&relay, "a's new event parked too", |s| s.parked == 4).await;
    relay.stop().await;

    // The limit is raised; a re-drive publishes a's events in order, c stays parked.
    let relay = stack.relay();
    wait_status(&relay, "the relay active", |s| s.active).await;
    assert!(
        event_store::outbox::request_redrive(&stack.db.pool, "test")
            .await
            .unwrap()
    );
    wait_status(&relay, "a re-driven", |s| s.parked == 1).await;
    send(&stack, a, "a6").await;
    wait_status(&relay, "a flows again", |s| {
        s.published == 9 && s.lag_events == 0
    })
    .await;
    let records = consume(&stack.kafka, "second", Duration::from_secs(2)).await;
    assert_eq!(
        sequences_of(&records, a),
        vec![1, 2, 3, 4, 5, 6],
        "a in order, nothing lost"
    );
    assert!(
        sequences_of(&records, c).is_empty(),
        "what cannot be published stays parked"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_that_cannot_reach_the_broker_says_it_is_stuck_while_its_lag_rises() {
    let stack = Stack::new().await;
    let mut unreachable = stack.kafka.clone();
    unreachable.brokers = "127.0.0.1:1".into();
    unreachable.request_timeout = Duration::from_millis(500);
    let relay = stack.relay_with(unreachable, 200);
    let a = start(&stack, "A").await;
    wait_status(&relay, "stuck with one event behind", |s| {
        s.stuck && s.publish_failures >= 1 && s.lag_events >= 1 && s.last_error.is_some()
    })
    .await;
    let before = relay.status.borrow().lag_events;
    for n in 0..20 {
        send(&stack, a, &format!("m{n}")).await;
    }
    wait_status(&relay, "lag measured while stuck", |s| {
        s.stuck && s.lag_events >= before + 20 && s.lag_seconds > 0.0
    })
    .await;
    let status = relay.status.borrow().clone();
    assert!(!status.active);
    assert!(status.failing_since.is_some());
    assert_eq!(status.published, 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_producer_queue_never_lets_a_later_event_of_an_aggregate_overtake() {
    let stack = Stack::new().await;
    let ids: Vec<Uuid> = {
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(start(&stack, &format!("c{n}")).await);
        }
        ids
    };
    for n in 0..300 {
        send(&stack, ids[n % 3], &format!("m{n}")).await;
    }
    // A producer queue of 5 records and batches of 500: most records meet a full queue.
    let mut tiny = stack.kafka.clone();
    tiny.extra
        .push(("queue.buffering.max.messages".into(), "5".into()));
    tiny.extra.push(("batch.num.messages".into(), "5".into()));
    let relay = stack.relay_with(tiny, 500);
    wait_status(&relay, "all published", |s| {
        s.published == 303 && s.lag_events == 0
    })
    .await;
    let records = consume(&stack.kafka, "order", Duration::from_secs(2)).await;
    for id in ids {
        let sequences: Vec<i64> = records
            .iter()
            .filter(|(key, _)| *key == id.to_string())
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(
            sequences,
            (1..=101).collect::<Vec<i64>>(),
            "{id}: in order, once"
        );
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cursor_from_another_cluster_is_refused_until_reset() {
    let stack = Stack::new().await;
    let a = start(&stack, "A").await;
    let relay = stack.relay();
    wait_status(&relay, "published", |s| {
        s.published == 1 && s.lag_events == 0
    })
    .await;
    relay.stop().await;

    // As after a restore into another cluster: the cursor's transaction ids are foreign.
    sqlx::query("UPDATE relay_cursor SET system_identifier = '1' WHERE name = 'test'")
        .execute(&stack.db.pool)
        .await
        .unwrap();
    send(&stack, a, "after the restore").await;
    let relay = stack.relay();
    wait_status(&relay, "refusal", |s| s.stuck && s.last_error.is_some()).await;
    let error = relay.status.borrow().last_error.clone().unwrap_or_default();
    assert!(
        error.contains("another cluster") || error.contains("cluster 1"),
        "{error}"
    );
    assert!(
        error.contains("relay-reset"),
        "the message names the recovery: {error}"
    );
    assert_eq!(
        relay.status.borrow().published,
        0,
        "nothing published from a foreign cursor"
    );
    relay.stop().await;

    // A cursor ahead of this cluster's transaction ids is refused the same way.
    sqlx::query(
        "UPDATE relay_cursor SET system_identifier = NULL, \
         tx_id = (pg_current_xact_id()::text::bigint + 1000000)::text::xid8 WHERE name = 'test'",
    )
    .execute(&stack.db.pool)
    .await
    .unwrap();
    let relay = stack.relay();
    wait_status(&relay, "refusal", |s| s.stuck && s.last_error.is_some()).await;
    let error = relay.status.borrow().last_error.clone().unwrap_or_default();
    assert!(error.contains("ahead of this cluster"), "{error}");
    relay.stop().await;

    // The documented recovery: publish everything again from the start.
    let mut conn = stack.db.pool.acquire().await.unwrap();
    event_store::outbox::reset_cursor(&mut conn, "test")
        .await
        .unwrap();
    drop(conn);
    let relay = stack.relay();
    // Published counts on: 1 before, then both events again.
    wait_status(&relay, "everything published again", |s| {
        s.published == 3 && s.lag_events == 0 && !s.stuck
    })
    .await;
    relay.stop().await;
}
