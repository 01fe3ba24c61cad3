//! The read path end to end: commands over HTTP, relay, projector, query API over HTTP,
//! against a real PostgreSQL and a real broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use command_api::testing::{meta, send_messages, start_conversations, user_message};
use platform::auth::Role;
use projectors::read_model::ReadModel;
use projectors::runtime::envelope::Envelope;
use projectors::runtime::{self, ApplyError, Projection, generation};
use query_api::testing::ReadStack;
use reqwest::StatusCode;
use schemas::Event;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

struct Http {
    client: reqwest::Client,
    token: String,
}

impl Http {
    fn new(stack: &ReadStack, tenant: &str, roles: &[Role]) -> Http {
        Http {
            client: reqwest::Client::new(),
            token: stack.commands.token(tenant, roles),
        }
    }

    async fn post(&self, url: String, body: Value) -> Value {
        let resp = self
            .client
            .post(url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("post");
        assert!(resp.status().is_success(), "{}", resp.status());
        resp.json().await.expect("json")
    }

    async fn get(&self, url: String) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("get");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn live_schema(stack: &ReadStack) -> String {
    generation::live_schema_in(&stack.commands.db.pool, "read_model")
        .await
        .expect("query")
        .expect("live generation")
}

async fn scalar(stack: &ReadStack, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&stack.commands.db.pool)
        .await
        .expect(sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commands_result_is_visible_through_its_position_token() {
    let stack = ReadStack::spawn().await;
    let cmd = &stack.commands.base;
    let q = &stack.query_base;
    let http = Http::new(&stack, "acme", &[Role::Member]);

    let started = http
        .post(
            format!("{cmd}/v1/conversations"),
            json!({"title": "Launch plan"}),
        )
        .await;
    let id = started["id"].as_str().unwrap().to_owned();
    // No projector yet: the read model cannot reach the position.
    let (status, body) = http
        .get(format!(
            "{q}/v1/conversations/{id}?position={}&wait_ms=300",
            started["position"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        (body["code"].clone(), body["applied_version"].clone()),
        (json!("position_not_reached"), json!(0))
    );

    let projector = stack.projector(Arc::new(ReadModel)).await;
    let sent = http
        .post(
            format!("{cmd}/v1/conversations/{id}/messages"),
            json!({"role": "user", "content": "Ship in May"}),
        )
        .await;
    let position = sent["position"].as_str().unwrap();
    let (status, page) = http
        .get(format!(
            "{q}/v1/conversations/{id}/messages?position={position}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"][0]["content"], "Ship in May");
    assert_eq!(page["items"][0]["message_id"], sent["message_id"]);
    let (_, conversation) = http
        .get(format!("{q}/v1/conversations/{id}?position={position}"))
        .await;
    assert_eq!(
        (
            conversation["message_count"].clone(),
            conversation["version"].clone()
        ),
        (json!(1), json!(2))
    );

    let doc = http
        .post(
            format!("{cmd}/v1/conversations/{id}/documents"),
            json!({"kind": "summary"}),
        )
        .await;
    let (status, document) = http
        .get(format!(
            "{q}/v1/documents/{}?position={}",
            doc["id"].as_str().unwrap(),
            doc["position"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{document}");
    assert_eq!(document["conversation_id"], id.as_str());
    assert!(
        document["content"]
            .as_str()
            .unwrap()
            .contains("Ship in May")
    );

    let (status, list) = http.get(format!("{q}/v1/conversations?status=open")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (status, body) = http
        .get(format!("{q}/v1/conversations?cursor=garbage"))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_cursor"))
    );
    let (status, body) = http
        .get(format!("{q}/v1/conversations/{id}?position=nonsense"))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_position"))
    );

    let other = Http::new(&stack, "globex", &[Role::Member]);
    let (status, _) = other.get(format!("{q}/v1/conversations/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, theirs) = other.get(format!("{q}/v1/conversations")).await;
    assert_eq!(theirs["items"], json!([]));
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conversation_pages_follow_their_cursor_without_gaps() {
    let stack = ReadStack::spawn().await;
    let service = stack.commands.service.clone();
    let projector = stack.projector(Arc::new(ReadModel)).await;
    let ids = start_conversations(&service, "acme", 25).await;
    service
        .end_conversation(ids[3], None, None, &meta("acme"))
        .await
        .unwrap();
    let http = Http::new(&stack, "acme", &[Role::Auditor]);
    let q = &stack.query_base;
    wait_until("the read model", || async {
        scalar(&stack, "SELECT count(*) FROM events").await == 26
            && projector.status.borrow().applied == 26
    })
    .await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = http
            .get(format!("{q}/v1/conversations?limit=10{cursor}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            seen.push(item["conversation_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(
        seen.iter().collect::<std::collections::HashSet<_>>().len(),
        25
    );
    let (_, ended) = http.get(format!("{q}/v1/conversations?status=ended")).await;
    assert_eq!(ended["items"][0]["conversation_id"], ids[3].to_string());
    let (status, _) = http.get(format!("{q}/v1/conversations?limit=0")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    projector.stop().await;
}

async fn snapshot(stack: &ReadStack, schema: &str) -> Value {
    let sql = format!(
        "SELECT json_build_object(
            'conversations', (SELECT json_agg(c ORDER BY c.conversation_id) FROM {schema}.conversations c),
            'messages', (SELECT json_agg(m ORDER BY m.message_id) FROM {schema}.messages m),
            'documents', (SELECT json_agg(d ORDER BY d.document_id) FROM {schema}.documents d))"
    );
    sqlx::query_scalar(&sql)
        .fetch_one(&stack.commands.db.pool)
        .await
        .expect("snapshot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_killed_and_restarted_ends_equal_to_a_rebuild_from_the_store() {
    let stack = ReadStack::spawn().await;
    let service = stack.commands.service.clone();
    let first = stack.projector(Arc::new(ReadModel)).await;
    let ids = Arc::new(start_conversations(&service, "acme", 20).await);
    let writers = tokio::spawn(send_messages(
        service.clone(),
        "acme",
        ids.clone(),
        0..800,
        8,
    ));
    let mut status = first.status.clone();
    tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| s.applied >= 150),
    )
    .await
    .expect("first projector progressed")
    .expect("status");
    first.task.abort();
    let _ = first.task.await;
    let second = stack.projector(Arc::new(ReadModel)).await;
    writers.await.unwrap();
    let schema = live_schema(&stack).await;
    wait_until("every message projected", || async {
        scalar(&stack, &format!("SELECT count(*) FROM {schema}.messages")).await == 800
    })
    .await;
    assert_eq!(
        scalar(&stack, &format!("SELECT count(*) FROM (SELECT DISTINCT conversation_id, sequence FROM {schema}.messages) d")).await,
        800,
        "no duplicate messages"
    );
    let live = snapshot(&stack, &schema).await;

    // Rebuild from the event store while the query API keeps serving.
    let http = Http::new(&stack, "acme", &[Role::Member]);
    let q = stack.query_base.clone();
    let reader = tokio::spawn(async move {
        let mut ok = 0;
        for _ in 0..40 {
            let (status, _) = http.get(format!("{q}/v1/conversations?limit=5")).await;
            assert_eq!(status, StatusCode::OK, "reads continue during the rebuild");
            ok += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ok
    });
    let report = runtime::rebuild(&stack.commands.db.pool, &ReadModel)
        .await
        .expect("rebuild");
    assert_eq!(reader.await.unwrap(), 40);
    assert_eq!(report.generation, 2);
    assert_eq!(report.replayed, 820);
    assert_eq!(live_schema(&stack).await, report.schema);
    let rebuilt = snapshot(&stack, &report.schema).await;
    assert_eq!(
        live, rebuilt,
        "the live read model equals one rebuilt from the event store"
    );

    // The live projector follows the switch.
    service
        .send_message(ids[0], user_message("after rebuild"), None, &meta("acme"))
        .await
        .unwrap();
    wait_until("the new generation receives new events", || async {
        scalar(
            &stack,
            &format!("SELECT count(*) FROM {}.messages", report.schema),
        )
        .await
            == 801
    })
    .await;
    second.stop().await;
}

/// The read model, failing on messages whose content is "poison" while `poisoned` is set.
struct Flaky {
    poisoned: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Projection for Flaky {
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
        event: &Envelope,
    ) -> Result<(), ApplyError> {
        if let Event::MessageSent(m) = &event.event
            && m.content == "poison"
            && self.poisoned.load(Ordering::SeqCst)
        {
            return Err(ApplyError::Rejected("poisoned message".into()));
        }
        ReadModel.apply(db, schema, event).await
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
        .consumer("dlq-reader", &platform::testenv::group("dlq"))
        .unwrap();
    consumer
        .subscribe(&[&runtime::dead_letter_topic(kafka, "read_model")])
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
        .projector(Arc::new(Flaky {
            poisoned: poisoned.clone(),
        }))
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
    let flaky = Flaky {
        poisoned: poisoned.clone(),
    };
    let report = runtime::redrive(&stack.commands.db.pool, &flaky)
        .await
        .unwrap();
    assert_eq!((report.applied, report.still_parked), (0, 3));
    // Fixed: re-driving applies the parked events in order.
    poisoned.store(false, Ordering::SeqCst);
    let report = runtime::redrive(&stack.commands.db.pool, &flaky)
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
    let stored =
        command_api::store::log::read_after(&stack.commands.db.pool, Default::default(), 10)
            .await
            .unwrap();
    for e in &stored {
        let event: Event = serde_json::from_value(e.payload.clone()).unwrap();
        let mut value = event.encode().unwrap();
        if e.sequence == 2 {
            value.truncate(8); // corrupt on the wire
        }
        let record = FutureRecord::to(&topic)
            .key(e.aggregate_id.as_str())
            .payload(&value)
            .headers(command_api::relay::headers(e));
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let projector = stack.projector(Arc::new(ReadModel)).await;
    wait_until("one applied, two parked", || async {
        let s = projector.status.borrow().clone();
        s.applied == 1 && s.parked == 2
    })
    .await;
    assert_eq!(contents(&stack, id).await, Vec::<String>::new());
    let report = runtime::redrive(&stack.commands.db.pool, &ReadModel)
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
    let a = stack.projector(Arc::new(ReadModel)).await;
    let b = stack.projector(Arc::new(ReadModel)).await;
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
    projector: query_api::testing::RunningProjector,
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
        .projector_on(pool.clone(), Arc::new(ReadModel), "outage")
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
    // Well past max_attempts x backoff: without the outage rule these would be parked.
    tokio::time::sleep(Duration::from_secs(2)).await;
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
        .projector_on(o.pool.clone(), Arc::new(ReadModel), "outage")
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
