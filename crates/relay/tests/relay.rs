//! The relay gets every committed event onto Kafka, in order per aggregate, also when it
//! is killed and restarted while writers are busy. Real PostgreSQL, real broker.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use commands::CommandService;
use kafka::KafkaConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use schemas::Event;
use testkit::Stack;
use testkit::commands::{meta, send_messages, start_conversations};
use testkit::env as testenv;
use uuid::Uuid;

/// Starts `aggregates` conversations, then `tasks` writers send `messages` messages in
/// total, spread round-robin over the conversations. Returns the number of events.
async fn write(
    service: Arc<CommandService>,
    aggregates: usize,
    tasks: usize,
    messages: usize,
) -> u64 {
    let ids = Arc::new(start_conversations(&service, "acme", aggregates).await);
    send_messages(service, "acme", ids, 0..messages, tasks).await;
    (aggregates + messages) as u64
}

struct Received {
    event_id: String,
    aggregate_id: String,
    sequence: u64,
}

/// Consumes both topics until `expected` distinct events arrived; checks each record.
async fn consume_all(kafka: &KafkaConfig, expected: usize) -> Vec<Received> {
    let consumer: StreamConsumer = kafka
        .consumer("checker", &testenv::group("checker"))
        .expect("consumer");
    let topics = kafka.event_topics();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).expect("subscribe");
    let mut seen = HashSet::new();
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < expected {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {expected} events arrived", seen.len()))
            .expect("consume");
        let header = |name: &str| {
            msg.headers()
                .and_then(|h| h.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| panic!("header {name} missing"))
        };
        let key = String::from_utf8(msg.key().expect("key").to_vec()).expect("utf8 key");
        let event = Event::decode(msg.payload().expect("payload")).expect("Avro value decodes");
        assert_eq!(
            event.aggregate_id().to_string(),
            key,
            "key is the aggregate id"
        );
        assert_eq!(header("event_type"), event.event_type().as_str());
        assert_eq!(header("tenant_id"), "acme");
        assert!(header("correlation_id").starts_with("corr-"));
        assert!(header("traceparent").starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        let r = Received {
            event_id: header("event_id"),
            aggregate_id: key,
            sequence: header("sequence").parse().expect("sequence"),
        };
        seen.insert(r.event_id.clone());
        records.push(r);
    }
    records
}

/// Per aggregate, in arrival order and ignoring exact re-deliveries (same event id):
/// sequences are 1, 2, 3, ... with no gap and no reordering.
fn assert_ordered_without_gaps(records: &[Received], aggregates: usize, events: u64) {
    let mut next: HashMap<&str, u64> = HashMap::new();
    let mut ids_by_position: HashMap<(&str, u64), &str> = HashMap::new();
    let mut duplicates = 0;
    for r in records {
        if let Some(first) = ids_by_position.get(&(r.aggregate_id.as_str(), r.sequence)) {
            assert_eq!(
                *first, r.event_id,
                "a re-delivered event keeps its event id"
            );
            duplicates += 1;
            continue;
        }
        let want = next.entry(&r.aggregate_id).or_insert(1);
        assert_eq!(
            r.sequence, *want,
            "aggregate {}: gap or reorder",
            r.aggregate_id
        );
        *want += 1;
        ids_by_position.insert((&r.aggregate_id, r.sequence), &r.event_id);
    }
    assert_eq!(next.len(), aggregates);
    assert_eq!(next.values().map(|n| n - 1).sum::<u64>(), events);
    eprintln!("{} records, {duplicates} re-deliveries", records.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_every_committed_event_arrives_in_order() {
    let app = Stack::new().await;
    let mut relay = app.relay();
    let total = write(app.service.clone(), 50, 16, 3000).await;
    assert_eq!(app.event_count().await as u64, total);
    relay.caught_up(total, Duration::from_secs(120)).await;
    let records = consume_all(&app.kafka, total as usize).await;
    assert_ordered_without_gaps(&records, 50, total);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_killed_mid_run_and_restarted_loses_nothing() {
    let app = Stack::new().await;
    let first = app.relay();
    // Enough messages that the writers are still busy when the relay dies (commands on
    // aggregates kept in memory write 3,000 in about a second).
    let writers = tokio::spawn(write(app.service.clone(), 50, 16, 12_000));
    // Let it publish part of the stream, then kill it without warning.
    let mut status = first.status.clone();
    tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| s.published >= 300),
    )
    .await
    .expect("first relay published")
    .expect("status");
    first.task.abort();
    let _ = first.task.await;
    let killed_at = status.borrow().published;
    assert!(
        !writers.is_finished(),
        "the relay was killed while writers were busy"
    );

    let mut second = app.relay();
    let total = writers.await.expect("writers");
    second.caught_up(total, Duration::from_secs(120)).await;
    assert!(killed_at < total);
    let records = consume_all(&app.kafka, total as usize).await;
    assert_ordered_without_gaps(&records, 50, total);
    second.stop().await;
}

#[tokio::test]
async fn only_one_relay_is_active_at_a_time() {
    let app = Stack::new().await;
    let mut a = app.relay();
    tokio::time::timeout(Duration::from_secs(30), a.status.wait_for(|s| s.active))
        .await
        .expect("first relay active")
        .expect("status");
    let b = app.relay();
    let mut b_status = b.status.clone();
    tokio::time::timeout(Duration::from_secs(30), b_status.wait_for(|s| s.standby))
        .await
        .expect("second relay found the lock taken")
        .expect("status");
    assert!(!b.status.borrow().active, "the second relay stands by");
    a.stop().await;
    tokio::time::timeout(Duration::from_secs(30), b_status.wait_for(|s| s.active))
        .await
        .expect("second relay takes over")
        .expect("status");
    let id = app
        .service
        .start_conversation("after failover".into(), Default::default(), &meta("acme"))
        .await
        .expect("start")
        .aggregate_id;
    let records = consume_all(&app.kafka, 1).await;
    assert_eq!(records[0].aggregate_id, id.to_string());
    assert_ne!(id, Uuid::nil());
    b.stop().await;
}
