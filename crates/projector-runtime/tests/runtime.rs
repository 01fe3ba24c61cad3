//! The projector runtime against a real PostgreSQL and a real broker: a poison event parks
//! its aggregate only, an undecodable record is parked and re-driven from the store, a
//! group shares partitions across a rebalance, a database outage delays but parks nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use projection::{ApplyError, Envelope, Pass, Sink, TableProjection, TableSink};
use read_model::ReadModel;
use schemas::Event;
use sqlx::PgConnection;
use testkit::commands::{meta, send_messages, start_conversations, user_message};
use testkit::{RunningProjector, RunningRelay, Stack, wait_until};
use uuid::Uuid;

/// The write side with (or without) its relay, as the tests below use it.
struct ReadStack {
    commands: Stack,
    /// Kept so the relay runs as long as the test (absent: the test publishes itself).
    _relay: Option<RunningRelay>,
}

impl ReadStack {
    async fn spawn() -> ReadStack {
        let commands = Stack::new().await;
        let relay = Some(commands.relay());
        ReadStack {
            commands,
            _relay: relay,
        }
    }

    async fn without_relay() -> ReadStack {
        ReadStack {
            commands: Stack::new().await,
            _relay: None,
        }
    }

    async fn projector<S: Sink>(&self, sink: Arc<S>) -> RunningProjector {
        self.commands.projector(sink).await
    }

    async fn projector_on<S: Sink>(
        &self,
        pool: sqlx::PgPool,
        sink: Arc<S>,
        group: &str,
    ) -> RunningProjector {
        self.commands.projector_on(pool, sink, group).await
    }
}

async fn live_schema(stack: &ReadStack) -> String {
    stack.commands.live_schema("read_model").await
}

async fn scalar(stack: &ReadStack, sql: &str) -> i64 {
    stack.commands.scalar(sql).await
}

/// The read model, failing on messages whose content is "poison" while `poisoned` is set.
struct Flaky {
    poisoned: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl TableProjection for Flaky {
    fn name(&self) -> &'static str {
        "read_model"
    }

    async fn create_tables(&self, db: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
        ReadModel.create_tables(db, schema).await
    }

    async fn apply(
        &self,
        db: &mut PgConnection,
        schema: &str,
        events: &[Envelope],
        pass: Pass,
    ) -> Result<(), ApplyError> {
        for event in events {
            if let Event::MessageSent(m) = &event.event
                && m.content == "poison"
                && self.poisoned.load(Ordering::SeqCst)
            {
                return Err(ApplyError::Rejected("poisoned message".into()));
            }
        }
        ReadModel.apply(db, schema, events, pass).await
    }
}

async fn contents(stack: &ReadStack, conversation: Uuid) -> Vec<String> {
    let schema = live_schema(stack).await;
    sqlx::query_scalar(&format!(
        "SELECT content FROM {schema}.messages WHERE conversation_id = $1 ORDER BY sequence"
    ))
    .bind(conversation)
    .fetch_all(&stack.commands.db.pool)
    .await
    .unwrap()
}

async fn dead_letters(stack: &ReadStack, expected: usize) -> Vec<(String, String)> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};
    let kafka = &stack.commands.kafka;
    let consumer: StreamConsumer = kafka
        .consumer("dlq-reader", &testkit::env::group("dlq"))
        .unwrap();
    consumer
        .subscribe(&[&projector_runtime::dead_letter_topic(kafka, "read_model")])
        .unwrap();
    let mut out = Vec::new();
    while out.len() < expected {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("dead letter")
            .unwrap();
        let header = |k: &str| {
            msg.headers()
                .and_then(|h| h.iter().find(|h| h.key == k))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        out.push((header("sequence"), header("dlq_error")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_parks_its_aggregate_only_and_redrive_completes_it_in_order() {
    let stack = ReadStack::spawn().await;
    let service = stack.commands.service.clone();
    let poisoned = Arc::new(AtomicBool::new(true));
    let projector = stack
        .projector(Arc::new(TableSink(Flaky {
            poisoned: poisoned.clone(),
        })))
        .await;
    let a = service
        .start_conversation("A".into(), Default::default(), &meta("acme"))
        .await
        .unwrap()
        .aggregate_id;
    let b = service
        .start_conversation("B".into(), Default::default(), &meta("acme"))
        .await
        .unwrap()
        .aggregate_id;
    for (id, text) in [
        (a, "one"),
        (a, "poison"),
        (b, "b1"),
        (a, "three"),
        (b, "b2"),
        (a, "four"),
    ] {
        service
            .send_message(id, user_message(text), None, &meta("acme"))
            .await
            .unwrap();
    }
    wait_until("b flows and a waits", || async {
        contents(&stack, b).await.len() == 2 && projector.status.borrow().parked == 3
    })
    .await;
    assert_eq!(
        contents(&stack, a).await,
        vec!["one"],
        "later events of A wait behind the poison"
    );
    let letters = dead_letters(&stack, 1).await;
    assert_eq!(
        letters[0].0, "3",
        "the poison event (sequence 3) is dead-lettered"
    );
    assert!(letters[0].1.contains("poisoned message"), "{letters:?}");

    // Still broken: re-driving changes nothing.
    let flaky = TableSink(Flaky {
        poisoned: poisoned.clone(),
    });
    let report = projection::redrive(&stack.commands.db.pool, &flaky)
        .await
        .unwrap();
    assert_eq!((report.applied, report.still_parked), (0, 3));
    // Fixed: re-driving applies the parked events in order.
    poisoned.store(false, Ordering::SeqCst);
    let report = projection::redrive(&stack.commands.db.pool, &flaky)
        .await
        .unwrap();
    assert_eq!((report.applied, report.still_parked), (3, 0));
    assert_eq!(
        contents(&stack, a).await,
        vec!["one", "poison", "three", "four"]
    );
    service
        .send_message(a, user_message("five"), None, &meta("acme"))
        .await
        .unwrap();
    wait_until("A flows again", || async {
        contents(&stack, a).await.len() == 5
    })
    .await;
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecodable_record_is_parked_and_redrive_takes_the_event_from_the_store() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let stack = ReadStack::without_relay().await;
    let service = stack.commands.service.clone();
    let id = service
        .start_conversation("C".into(), Default::default(), &meta("acme"))
        .await
        .unwrap()
        .aggregate_id;
    for text in ["one", "two"] {
        service
            .send_message(id, user_message(text), None, &meta("acme"))
            .await
            .unwrap();
    }
    let kafka = &stack.commands.kafka;
    let topic = schemas::AggregateKind::Conversation.topic(&kafka.topic_prefix);
    kafka
        .ensure_topics(std::slice::from_ref(&topic))
        .await
        .unwrap();
    let producer: FutureProducer = kafka.producer("test").unwrap();
    let stored = event_store::log::read_after(&stack.commands.db.pool, Default::default(), 10)
        .await
        .unwrap();
    for e in &stored {
        let event: Event = e.event().unwrap();
        let mut value = event.encode().unwrap();
        if e.sequence == 2 {
            value.truncate(8); // corrupt on the wire
        }
        let record = FutureRecord::to(&topic)
            .key(e.aggregate_id.as_str())
            .payload(&value)
            .headers(kafka::headers::to_owned_headers(&e.headers()));
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let projector = stack.projector(Arc::new(TableSink(ReadModel))).await;
    wait_until("one applied, two parked", || async {
        let s = projector.status.borrow().clone();
        s.applied == 1 && s.parked == 2
    })
    .await;
    assert_eq!(contents(&stack, id).await, Vec::<String>::new());
    let report = projection::redrive(&stack.commands.db.pool, &TableSink(ReadModel))
        .await
        .unwrap();
    assert_eq!((report.applied, report.still_parked), (2, 0));
    assert_eq!(contents(&stack, id).await, vec!["one", "two"]);
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_projectors_in_one_group_share_the_stream_and_survive_a_rebalance() {
    let stack = ReadStack::spawn().await;
    let service = stack.commands.service.clone();
    let a = stack.projector(Arc::new(TableSink(ReadModel))).await;
    let b = stack.projector(Arc::new(TableSink(ReadModel))).await;
    wait_until("both members have partitions", || async {
        a.status.borrow().assigned_partitions > 0 && b.status.borrow().assigned_partitions > 0
    })
    .await;
    let ids = Arc::new(start_conversations(&service, "acme", 20).await);
    send_messages(service.clone(), "acme", ids.clone(), 0..300, 1).await;
    let schema = live_schema(&stack).await;
    wait_until("the first half projected", || async {
        scalar(&stack, &format!("SELECT count(*) FROM {schema}.messages")).await == 300
    })
    .await;
    let (applied_a, applied_b) = (a.status.borrow().applied, b.status.borrow().applied);
    assert!(
        applied_a > 0 && applied_b > 0,
        "both members got partitions: {applied_a} / {applied_b}"
    );
    // One member leaves cleanly; the other takes over its partitions.
    a.stop().await;
    send_messages(service.clone(), "acme", ids.clone(), 300..600, 1).await;
    wait_until(
        "the second half projected by the remaining member",
        || async {
            scalar(&stack, &format!("SELECT count(*) FROM {schema}.messages")).await == 600
        },
    )
    .await;
    assert_eq!(
        scalar(
            &stack,
            &format!("SELECT sum(message_count)::bigint FROM {schema}.conversations")
        )
        .await,
        600,
        "every message counted once"
    );
    b.stop().await;
}

/// A projector on a one-connection pool whose connection the test takes away (the
/// outage), with a conversation of five messages written during the outage.
struct Outage {
    stack: ReadStack,
    pool: sqlx::PgPool,
    held: sqlx::pool::PoolConnection<sqlx::Postgres>,
    projector: RunningProjector,
    conversation: Uuid,
}

async fn outage() -> Outage {
    let stack = ReadStack::spawn().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(100))
        .connect(&stack.commands.db.config.url)
        .await
        .unwrap();
    let projector = stack
        .projector_on(pool.clone(), Arc::new(TableSink(ReadModel)), "outage")
        .await;
    let mut status = projector.status.clone();
    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| s.assigned_partitions > 0),
    )
    .await
    .expect("projector consuming")
    .unwrap();
    let held = loop {
        if let Ok(conn) = pool.acquire().await {
            break conn;
        }
    };
    let service = stack.commands.service.clone();
    let conversation = service
        .start_conversation("Outage".into(), Default::default(), &meta("acme"))
        .await
        .unwrap()
        .aggregate_id;
    for n in 0..5 {
        service
            .send_message(
                conversation,
                user_message(&format!("m{n}")),
                None,
                &meta("acme"),
            )
            .await
            .unwrap();
    }
    // Well past max_attempts: without the outage rule these would be parked by now.
    projector
        .wait_for("retries through the outage", |s| s.outage_retries >= 10)
        .await;
    assert_eq!(
        projector.status.borrow().applied,
        0,
        "nothing applied during the outage"
    );
    Outage {
        stack,
        pool,
        held,
        projector,
        conversation,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_delays_events_but_parks_none() {
    let o = outage().await;
    drop(o.held);
    let mut status = o.projector.status.clone();
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.applied == 6))
        .await
        .expect("applied after the outage")
        .unwrap();
    assert_eq!(status.borrow().parked, 0);
    assert_eq!(
        contents(&o.stack, o.conversation).await,
        vec!["m0", "m1", "m2", "m3", "m4"]
    );
    o.projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_stopped_during_an_outage_resumes_with_every_event() {
    let o = outage().await;
    // Shut down while records are fetched but not applied: their offsets must not be committed.
    o.projector.stop().await;
    drop(o.held);
    let restarted = o
        .stack
        .projector_on(o.pool.clone(), Arc::new(TableSink(ReadModel)), "outage")
        .await;
    let mut status = restarted.status.clone();
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.applied == 6))
        .await
        .expect("every event applied after the restart")
        .unwrap();
    assert_eq!(
        contents(&o.stack, o.conversation).await,
        vec!["m0", "m1", "m2", "m3", "m4"]
    );
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_parked_event_keeps_its_root_cause_and_is_counted_once() {
    let stack = ReadStack::spawn().await;
    let service = stack.commands.service.clone();
    let poisoned = Arc::new(AtomicBool::new(true));
    let flaky = || {
        Arc::new(TableSink(Flaky {
            poisoned: poisoned.clone(),
        }))
    };
    let first = stack.projector(flaky()).await;
    let a = service
        .start_conversation("A".into(), Default::default(), &meta("acme"))
        .await
        .unwrap()
        .aggregate_id;
    for text in ["one", "poison", "three"] {
        service
            .send_message(a, user_message(text), None, &meta("acme"))
            .await
            .unwrap();
    }
    first
        .wait_for("the poison and the event behind it parked", |s| {
            s.parked == 2
        })
        .await;
    first.stop().await;

    // The same records again, to a group that has committed nothing: a redelivery.
    let again = stack
        .projector_on(stack.commands.db.pool.clone(), flaky(), "again")
        .await;
    again
        .wait_for("the stream redelivered", |s| {
            s.duplicates == 2 && s.already_parked == 2
        })
        .await;
    assert_eq!(again.status.borrow().parked, 0, "nothing is counted twice");
    let schema = live_schema(&stack).await;
    let parked: Vec<(i64, String)> = sqlx::query_as(&format!(
        "SELECT sequence, error FROM {schema}.parked ORDER BY sequence"
    ))
    .fetch_all(&stack.commands.db.pool)
    .await
    .unwrap();
    assert_eq!(
        parked,
        vec![
            (3, "poisoned message".to_owned()),
            (4, "waiting behind a parked event".to_owned())
        ],
        "each parked event keeps the error that parked it"
    );
    again.stop().await;
}

/// Committed offset and high watermark of every partition of `topics` for `group`.
fn committed_and_high(
    kafka: &kafka::KafkaConfig,
    group: &str,
    topics: &[String],
) -> Vec<(String, i32, i64, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::util::Timeout;
    let consumer: BaseConsumer = kafka
        .client_config("offset-checker")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let wait = Timeout::After(Duration::from_secs(10));
    let mut out = Vec::new();
    for topic in topics {
        for partition in 0..kafka.partitions {
            let mut tpl = rdkafka::TopicPartitionList::new();
            tpl.add_partition(topic, partition);
            let committed = consumer.committed_offsets(tpl, wait).unwrap();
            let at = committed
                .find_partition(topic, partition)
                .and_then(|p| p.offset().to_raw())
                .unwrap_or(-1);
            let (_, high) = consumer.fetch_watermarks(topic, partition, wait).unwrap();
            out.push((topic.clone(), partition, at, high));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_leaving_after_a_rebalance_does_not_rewind_partitions_it_gave_away() {
    let stack = ReadStack::spawn().await;
    let service = stack.commands.service.clone();
    let a = stack.projector(Arc::new(TableSink(ReadModel))).await;
    let ids = Arc::new(start_conversations(&service, "acme", 20).await);
    send_messages(service.clone(), "acme", ids.clone(), 0..200, 4).await;
    a.wait_for("the first part applied", |s| s.applied == 220)
        .await;
    // A second member joins: some of a's partitions move to it.
    let b = stack.projector(Arc::new(TableSink(ReadModel))).await;
    wait_until("both members have partitions", || async {
        a.status.borrow().assigned_partitions > 0 && b.status.borrow().assigned_partitions > 0
    })
    .await;
    send_messages(service.clone(), "acme", ids.clone(), 200..500, 4).await;
    let schema = live_schema(&stack).await;
    wait_until("every message projected and committed", || async {
        scalar(&stack, &format!("SELECT count(*) FROM {schema}.messages")).await == 500
            && a.status.borrow().lag_events == 0
            && b.status.borrow().lag_events == 0
    })
    .await;
    // a leaves: its final commit must not carry the offsets of partitions it gave away.
    a.stop().await;
    let group = stack.commands.settings("read_model").group;
    let topics = stack.commands.kafka.event_topics();
    for (topic, partition, committed, high) in
        committed_and_high(&stack.commands.kafka, &group, &topics)
    {
        if high > 0 {
            assert_eq!(
                committed, high,
                "{topic}/{partition}: committed offset rewound after a member left"
            );
        }
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_projection_fills_itself_from_the_store_when_kafka_no_longer_has_the_events() {
    // Nothing was ever published: as if retention had dropped every record.
    let stack = ReadStack::without_relay().await;
    let service = stack.commands.service.clone();
    let ids = Arc::new(start_conversations(&service, "acme", 3).await);
    send_messages(service, "acme", ids, 0..30, 1).await;
    // A projector whose projection does not exist yet (no generation made for it).
    let (runtime, status) = projector_runtime::Runtime::new(
        stack.commands.db.pool.clone(),
        Arc::new(TableSink(ReadModel)),
        stack.commands.kafka.clone(),
        stack.commands.settings("fresh"),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runtime.run(stopped));
    wait_until("the new read model filled from the event store", || async {
        match projection::generation::live_schema_in(&stack.commands.db.pool, "read_model")
            .await
            .unwrap()
        {
            Some(schema) => {
                scalar(&stack, &format!("SELECT count(*) FROM {schema}.messages")).await == 30
            }
            None => false,
        }
    })
    .await;
    assert_eq!(status.borrow().applied, 0, "none of it came from Kafka");
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
}
