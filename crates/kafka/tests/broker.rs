//! The broker the stack provides keeps the Kafka guarantees projectors rely on.
//! (tansu 0.6.0 fails the first: a fetch from an offset inside a record batch skipped the
//! whole batch. See docs/ARCHITECTURE.md, "Local broker".)

use std::time::Duration;

use kafka::KafkaConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use testkit::env as testenv;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

async fn one_partition_topic(kafka: &mut KafkaConfig, name: &str) -> String {
    kafka.partitions = 1;
    let topic = format!("{}{name}", kafka.topic_prefix);
    kafka
        .ensure_topics(std::slice::from_ref(&topic))
        .await
        .expect("create topic");
    topic
}

/// Produces `count` records to partition 0 so they leave in one request (one batch):
/// a long linger, every send queued before any is awaited.
async fn produce_one_batch(kafka: &KafkaConfig, topic: &str, count: i64) {
    let producer: FutureProducer = kafka
        .client_config("batch-producer")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1000")
        .create()
        .expect("producer");
    let payloads: Vec<String> = (0..count).map(|i| format!("record-{i}")).collect();
    let deliveries: Vec<_> = payloads
        .iter()
        .map(|p| {
            producer
                .send_result(FutureRecord::to(topic).partition(0).key("k").payload(p))
                .expect("queue record")
        })
        .collect();
    for (i, delivery) in deliveries.into_iter().enumerate() {
        let delivered = delivery.await.expect("delivery").expect("acknowledged");
        assert_eq!(delivered.offset, i as i64, "records land in order");
    }
}

async fn next(consumer: &StreamConsumer) -> (i64, String) {
    let msg = timeout(WAIT, consumer.recv())
        .await
        .expect("a record within 30 s")
        .expect("consume");
    let payload = String::from_utf8(msg.payload().expect("payload").to_vec()).expect("utf8");
    (msg.offset(), payload)
}

#[tokio::test]
async fn a_consumer_resumes_exactly_after_an_offset_committed_inside_a_batch() {
    let mut kafka = testenv::kafka();
    let topic = one_partition_topic(&mut kafka, "resume").await;
    produce_one_batch(&kafka, &topic, 10).await;
    let group = testenv::group("resume");

    // First consumer reads into the middle of the batch and commits offset 4.
    let first = kafka.consumer("first", &group).expect("consumer");
    first.subscribe(&[&topic]).expect("subscribe");
    for expected in 0..4 {
        assert_eq!(next(&first).await, (expected, format!("record-{expected}")));
    }
    let mut position = TopicPartitionList::new();
    position
        .add_partition_offset(&topic, 0, Offset::Offset(4))
        .expect("offset");
    first.commit(&position, CommitMode::Sync).expect("commit");
    drop(first);

    // A new consumer of the group resumes at exactly offset 4, then reads the rest in order.
    let second = kafka.consumer("second", &group).expect("consumer");
    second.subscribe(&[&topic]).expect("subscribe");
    for expected in 4..10 {
        assert_eq!(
            next(&second).await,
            (expected, format!("record-{expected}"))
        );
    }
    assert!(
        timeout(Duration::from_millis(500), second.recv())
            .await
            .is_err(),
        "nothing after the last record"
    );
}

#[tokio::test]
async fn watermarks_and_committed_offsets_give_real_lag() {
    let mut kafka = testenv::kafka();
    let topic = one_partition_topic(&mut kafka, "lag").await;
    produce_one_batch(&kafka, &topic, 7).await;
    let group = testenv::group("lag");
    let consumer = kafka.consumer("lag", &group).expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    for expected in 0..3 {
        assert_eq!(next(&consumer).await.0, expected);
    }
    let mut position = TopicPartitionList::new();
    position
        .add_partition_offset(&topic, 0, Offset::Offset(3))
        .expect("offset");
    consumer
        .commit(&position, CommitMode::Sync)
        .expect("commit");

    let (low, high) = consumer
        .fetch_watermarks(&topic, 0, Timeout::After(WAIT))
        .expect("watermarks");
    assert_eq!((low, high), (0, 7));
    let committed = consumer
        .committed(Timeout::After(WAIT))
        .expect("committed offsets");
    let offset = committed
        .find_partition(&topic, 0)
        .expect("partition 0")
        .offset();
    assert_eq!(offset, Offset::Offset(3));
    assert_eq!(high - 3, 4, "lag in records");
}
