//! An outside consumer written from the published contract alone (AsyncAPI document and
//! schema-id table) with independent libraries (confluent-kafka, fastavro) decodes every
//! record of a run in which every event type is published, and de-duplicates the
//! re-deliveries a relay restart from the beginning causes, with personal fields sealed
//! (data protection on) and an erasure among the events.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use kafka::KafkaConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use commands::NewEndpoint;
use serde_json::Value;
use testkit::Stack;
use testkit::commands::meta;

/// One event of every type, through the command service.
async fn every_event_type(stack: &Stack) {
    let service = &stack.service;
    let user = meta("acme");
    let admin = testkit::commands::admin_meta("acme");
    let c = service
        .start_conversation("Outside".into(), Default::default(), &user)
        .await
        .expect("start")
        .aggregate_id;
    let asked = service
        .send_message(c, testkit::commands::user_message("Hello?"), None, &user)
        .await
        .expect("send");
    let Some(schemas::Event::MessageSent(m)) = asked.events.first() else {
        panic!("no message")
    };
    service
        .fail_reply(
            c,
            m.message_id,
            ("down".into(), 1),
            Some("writer".into()),
            &admin,
        )
        .await
        .expect("fail");
    service
        .request_reply(c, m.message_id, None, &user)
        .await
        .expect("ask again");
    service
        .rename_conversation(c, "Outside, renamed".into(), None, &user)
        .await
        .expect("rename");
    service
        .generate_document(c, schemas::DocumentKind::MeetingNotes, None, &user)
        .await
        .expect("document");
    let requested = service
        .request_document(c, schemas::DocumentKind::Summary, None, &user)
        .await
        .expect("request")
        .aggregate_id;
    service
        .fail_document(requested, "no model".into(), 1, &admin)
        .await
        .expect("fail document");
    service
        .end_conversation(c, None, None, &user)
        .await
        .expect("end");
    let k = testkit::commands::add_knowledge(
        service,
        "acme",
        "Policy",
        "text/plain",
        b"Refunds in 14 days.",
    )
    .await
    .aggregate_id;
    service
        .remove_knowledge(k, None, &admin)
        .await
        .expect("remove");
    let e = service
        .create_webhook_endpoint(
            NewEndpoint {
                url: "http://127.0.0.1:9/hook".into(),
                event_types: vec!["*".into()],
                description: None,
            },
            &admin,
        )
        .await
        .expect("endpoint")
        .aggregate_id;
    let run = |body| service.webhook_endpoint(e, body, None, &admin);
    use domain::WebhookCommand as W;
    run(W::Update {
        url: None,
        event_types: None,
        description: Some("CRM".into()),
    })
    .await
    .expect("update");
    service
        .rotate_webhook_secret(e, chrono::Duration::hours(1), None, &admin)
        .await
        .expect("rotate");
    run(W::Disable {
        automatic: false,
        reason: "pause".into(),
    })
    .await
    .expect("disable");
    run(W::Enable).await.expect("enable");
    run(W::ReportDeadMessage {
        message_id: "msg_0".into(),
        event_id: uuid::Uuid::new_v4(),
        event_type: "message.sent".into(),
        attempts: 8,
        last_error: "HTTP 503".into(),
    })
    .await
    .expect("report");
    run(W::Redeliver {
        message_id: Some("msg_0".into()),
        since: None,
        until: None,
    })
    .await
    .expect("redeliver");
    run(W::Delete).await.expect("delete");
    service
        .mark_notifications_read(vec![uuid::Uuid::new_v4()], &admin)
        .await
        .expect("read");
    service
        .erase(
            schemas::Subject::Conversation(c),
            "a deletion request".into(),
            &admin,
        )
        .await
        .expect("erase");
}

/// Copies every record of the topics once more into the same partition (a producer
/// without idempotence, so the broker keeps both copies).
async fn redeliver_every_record(kafka: &KafkaConfig, total: usize) {
    let consumer: StreamConsumer = kafka
        .consumer("redeliverer", &testkit::env::group("redeliverer"))
        .expect("a consumer");
    let topics = kafka.event_topics();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).expect("subscribe");
    let producer: FutureProducer = kafka
        .client_config("redeliverer")
        .set("enable.idempotence", "false")
        .set("acks", "all")
        .create()
        .expect("a producer");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for _ in 0..total {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .expect("every record arrives")
            .expect("consume");
        let headers = msg.headers().map(|h| h.detach()).unwrap_or_default();
        let mut record = FutureRecord::to(msg.topic())
            .partition(msg.partition())
            .headers(headers);
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        if let Some(payload) = msg.payload() {
            record = record.payload(payload);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("the copy is acknowledged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outside_consumer_decodes_and_deduplicates_every_record_from_the_contract_alone() {
    // Personal fields sealed, as production runs: the records carry their boxes.
    let stack = Stack::with_data_protection().await;
    every_event_type(&stack).await;
    let total = stack.event_count().await as u64;
    let mut relay = stack.relay();
    relay.caught_up(total, Duration::from_secs(60)).await;
    relay.stop().await;
    // At-least-once, played out: every record delivered a second time, byte for byte,
    // headers included (what a relay that crashed before saving its cursor sends again).
    redeliver_every_record(&stack.kafka, total as usize).await;

    let python = std::env::var("THREADLINE_TEST_PYTHON")
        .expect("THREADLINE_TEST_PYTHON: run the tests through dev/stack test");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(python)
        .arg(format!("{root}/dev/outside-consumer.py"))
        .args(["--brokers", &stack.kafka.brokers])
        .args(["--prefix", &stack.kafka.topic_prefix])
        .args(["--contract", &format!("{root}/schemas/contract")])
        .args(["--expect", &total.to_string()])
        .output()
        .expect("run the outside consumer");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no report: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["distinct"], total, "{report}");
    assert!(
        report["records"].as_u64().is_some_and(|r| r >= 2 * total),
        "{report}"
    );
    // Every event type of the contract was published and decoded.
    let by_type: BTreeMap<String, u64> =
        serde_json::from_value(report["by_type"].clone()).expect("counts");
    let all: Vec<&str> = schemas::EventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(
        by_type.keys().map(String::as_str).collect::<Vec<_>>().len(),
        all.len(),
        "{by_type:?}"
    );
    let stored: Vec<(String, i64)> =
        sqlx::query_as("SELECT event_type, count(*) FROM events GROUP BY event_type")
            .fetch_all(&stack.db.pool)
            .await
            .expect("counts in the store");
    for (event_type, n) in stored {
        assert_eq!(
            by_type.get(&event_type).copied(),
            Some(n as u64),
            "{event_type}"
        );
    }
}
