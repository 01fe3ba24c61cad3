//! The read model folds a batch of events into a few multi-row statements. What it writes
//! must not depend on how the events were cut into batches: the same events applied as
//! one batch, as two, and one at a time leave equal tables; and a batch that cannot be
//! written whole writes nothing.

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use projection::{Envelope, Pass, Sink, TableSink, Target};
use read_model::ReadModel;
use schemas::{
    AssistantReplyFailed, AssistantReplyRequested, ConversationEnded, ConversationRenamed,
    ConversationStarted, DocumentFormat, DocumentGenerated, DocumentGenerationFailed, DocumentKind,
    DocumentRequested, Event, Generator, KnowledgeDocumentAdded, KnowledgeDocumentRemoved,
    MessageSent, MessageSource, Role, WebhookEndpointCreated, WebhookEndpointDisabled,
};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Events as their aggregates number them: each gets its aggregate's next sequence.
#[derive(Default)]
struct History {
    sequences: HashMap<String, i64>,
    events: Vec<Envelope>,
    clock: i64,
}

impl History {
    fn at(&mut self) -> DateTime<Utc> {
        self.clock += 1;
        Utc.timestamp_millis_opt(1_790_000_000_000)
            .single()
            .expect("time")
            + Duration::seconds(self.clock)
    }

    fn push(&mut self, event: Event) {
        let mut e = testkit::projection::envelope(event, "ann");
        let sequence = self.sequences.entry(e.aggregate_id.clone()).or_insert(0);
        *sequence += 1;
        e.sequence = *sequence;
        self.events.push(e);
    }

    fn start(&mut self, title: &str, assistant: bool) -> Uuid {
        let id = Uuid::new_v4();
        let started_at = self.at();
        self.push(Event::ConversationStarted(ConversationStarted {
            sealed: None,
            conversation_id: id,
            tenant_id: "acme".into(),
            title: title.into(),
            metadata: [("channel".to_owned(), "web".to_owned())].into(),
            started_at,
            started_by: Some("ann".into()),
            assistant,
        }));
        id
    }

    fn message(&mut self, conversation: Uuid, role: Role, reply_to: Option<Uuid>) -> Uuid {
        let id = Uuid::new_v4();
        let sent_at = self.at();
        let assistant = role == Role::Assistant;
        self.push(Event::MessageSent(MessageSent {
            sealed: None,
            conversation_id: conversation,
            message_id: id,
            role,
            content: format!("message {id}"),
            model: assistant.then(|| "local/extractive-v1".to_owned()),
            prompt_tokens: assistant.then_some(120),
            completion_tokens: assistant.then_some(30),
            sent_at,
            reply_to,
            latency_ms: assistant.then_some(7),
            sources: if assistant {
                vec![MessageSource {
                    kind: "knowledge".into(),
                    id: Uuid::new_v4(),
                    title: "Price list".into(),
                    score: 0.5,
                }]
            } else {
                Vec::new()
            },
        }));
        id
    }

    /// Every event the read model writes, over a few conversations and documents.
    fn varied() -> History {
        let mut h = History::default();
        let a = h.start("Launch plan", true);
        let b = h.start("Quiet", false);
        let q1 = h.message(a, Role::User, None);
        h.message(b, Role::User, None);
        let at = h.at();
        h.push(Event::AssistantReplyFailed(AssistantReplyFailed {
            sealed: None,
            conversation_id: a,
            message_id: q1,
            reason: "every provider is down".into(),
            attempts: 3,
            failed_at: at,
            asked_by: Some("ann".into()),
        }));
        let at = h.at();
        h.push(Event::AssistantReplyRequested(AssistantReplyRequested {
            sealed: None,
            conversation_id: a,
            message_id: q1,
            requested_by: "ann".into(),
            requested_at: at,
        }));
        h.message(a, Role::Assistant, Some(q1));
        let at = h.at();
        h.push(Event::ConversationRenamed(ConversationRenamed {
            sealed: None,
            conversation_id: b,
            title: "Loud".into(),
            previous_title: "Quiet".into(),
            renamed_at: at,
        }));
        let q2 = h.message(a, Role::User, None);
        let at = h.at();
        h.push(Event::AssistantReplyFailed(AssistantReplyFailed {
            sealed: None,
            conversation_id: a,
            message_id: q2,
            reason: "timeout".into(),
            attempts: 3,
            failed_at: at,
            asked_by: Some("ann".into()),
        }));
        let document = Uuid::new_v4();
        let at = h.at();
        h.push(Event::DocumentRequested(DocumentRequested {
            sealed: None,
            document_id: document,
            tenant_id: "acme".into(),
            conversation_id: a,
            kind: DocumentKind::Summary,
            title: None,
            requested_by: "ann".into(),
            requested_at: at,
        }));
        let at = h.at();
        h.push(Event::DocumentGenerationFailed(DocumentGenerationFailed {
            sealed: None,
            document_id: document,
            conversation_id: a,
            reason: "budget".into(),
            attempts: 1,
            failed_at: at,
        }));
        let at = h.at();
        h.push(Event::DocumentGenerated(DocumentGenerated {
            sealed: None,
            document_id: document,
            tenant_id: "acme".into(),
            conversation_id: a,
            kind: DocumentKind::Summary,
            title: "Summary: Launch plan".into(),
            format: DocumentFormat::Markdown,
            content: "# Summary".into(),
            source_message_count: 3,
            generator: Generator {
                name: "template".into(),
                version: "1".into(),
            },
            generated_at: at,
            prompt_tokens: None,
            completion_tokens: None,
            latency_ms: None,
            requested_by: Some("ann".into()),
        }));
        let knowledge = Uuid::new_v4();
        let at = h.at();
        h.push(Event::KnowledgeDocumentAdded(KnowledgeDocumentAdded {
            sealed: None,
            knowledge_id: knowledge,
            tenant_id: "acme".into(),
            title: "Price list".into(),
            media_type: "text/plain".into(),
            sha256: "00".into(),
            size_bytes: 2,
            text: "42".into(),
            added_by: Some("ann".into()),
            added_at: at,
        }));
        let endpoint = Uuid::new_v4();
        let at = h.at();
        h.push(Event::WebhookEndpointCreated(WebhookEndpointCreated {
            endpoint_id: endpoint,
            tenant_id: "acme".into(),
            url: "https://example.com/hook".into(),
            event_types: vec!["message.sent".into()],
            description: String::new(),
            sealed_secret: "sealed".into(),
            created_by: "ann".into(),
            created_at: at,
        }));
        let c = h.start("Short", true);
        h.message(c, Role::User, None);
        for _ in 0..5 {
            h.message(b, Role::User, None);
        }
        let at = h.at();
        h.push(Event::ConversationEnded(ConversationEnded {
            sealed: None,
            conversation_id: c,
            reason: None,
            ended_at: at,
        }));
        let at = h.at();
        h.push(Event::KnowledgeDocumentRemoved(KnowledgeDocumentRemoved {
            knowledge_id: knowledge,
            removed_at: at,
        }));
        let at = h.at();
        h.push(Event::WebhookEndpointDisabled(WebhookEndpointDisabled {
            endpoint_id: endpoint,
            automatic: true,
            reason: "failing since yesterday".into(),
            owner: "ann".into(),
            disabled_at: at,
        }));
        let q3 = h.message(b, Role::User, None);
        h.message(b, Role::Assistant, Some(q3));
        let at = h.at();
        h.push(Event::ConversationEnded(ConversationEnded {
            sealed: None,
            conversation_id: a,
            reason: Some("done".into()),
            ended_at: at,
        }));
        h
    }
}

async fn generation(pool: &PgPool, n: i32) -> String {
    let mut conn = pool.acquire().await.expect("connection");
    projection::generation::create(&mut conn, &TableSink(ReadModel), n)
        .await
        .expect("generation")
}

async fn apply(pool: &PgPool, schema: &str, events: &[Envelope]) {
    let outcomes = TableSink(ReadModel)
        .apply(&pool.into(), Target::Generation(schema), events, Pass::Live)
        .await
        .expect("apply");
    assert!(
        outcomes.iter().all(|o| *o == projection::Outcome::Applied),
        "{outcomes:?}"
    );
}

/// Every table of the read model in `schema`, rows in key order.
async fn tables(pool: &PgPool, schema: &str) -> Value {
    let sql = format!(
        "SELECT json_build_object(
            'conversations', (SELECT json_agg(t ORDER BY t.conversation_id) FROM {schema}.conversations t),
            'messages', (SELECT json_agg(t ORDER BY t.message_id) FROM {schema}.messages t),
            'documents', (SELECT json_agg(t ORDER BY t.document_id) FROM {schema}.documents t),
            'knowledge', (SELECT json_agg(t ORDER BY t.knowledge_id) FROM {schema}.knowledge t),
            'webhook_endpoints', (SELECT json_agg(t ORDER BY t.endpoint_id) FROM {schema}.webhook_endpoints t),
            'progress', (SELECT json_agg(t ORDER BY t.aggregate_type, t.aggregate_id) FROM {schema}.progress t))"
    );
    sqlx::query_scalar(&sql)
        .fetch_one(pool)
        .await
        .expect("tables")
}

#[tokio::test]
async fn batches_write_what_one_event_at_a_time_writes() {
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.unwrap();
    projection::migrate(&db.pool).await.unwrap();
    let history = History::varied();
    let events = &history.events;

    let whole = generation(&db.pool, 1).await;
    apply(&db.pool, &whole, events).await;

    // Cut where a conversation started in the first batch changes in the second.
    let halves = generation(&db.pool, 2).await;
    let (first, second) = events.split_at(events.len() / 2);
    apply(&db.pool, &halves, first).await;
    apply(&db.pool, &halves, second).await;

    let single = generation(&db.pool, 3).await;
    for e in events {
        apply(&db.pool, &single, std::slice::from_ref(e)).await;
    }

    let expected = tables(&db.pool, &single).await;
    assert_eq!(tables(&db.pool, &whole).await, expected, "one batch");
    assert_eq!(tables(&db.pool, &halves).await, expected, "two batches");

    // What the fold computed, checked by hand on one event at a time's result.
    let rows: Vec<(String, String, i64, i64, bool)> = sqlx::query_as(&format!(
        "SELECT title, status, message_count, version, ended_at IS NOT NULL
           FROM {single}.conversations ORDER BY started_at"
    ))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("Launch plan".to_owned(), "ended".to_owned(), 3, 8, true),
            ("Loud".to_owned(), "open".to_owned(), 8, 10, false),
            ("Short".to_owned(), "ended".to_owned(), 1, 3, true),
        ]
    );
    let replies: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(&format!(
        "SELECT role, reply_status, reply_error FROM {single}.messages WHERE role = 'user' ORDER BY sent_at"
    ))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        replies[..2],
        [
            ("user".to_owned(), Some("replied".to_owned()), None),
            ("user".to_owned(), None, None),
        ],
        "a failed reply retried and answered ends replied; the assistant is off in the other"
    );
    assert_eq!(
        replies[2],
        (
            "user".to_owned(),
            Some("failed".to_owned()),
            Some("timeout".to_owned())
        )
    );
}

#[tokio::test]
async fn a_batch_changing_a_conversation_the_read_model_does_not_have_writes_nothing() {
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.unwrap();
    projection::migrate(&db.pool).await.unwrap();
    let schema = generation(&db.pool, 1).await;
    let mut history = History::default();
    let known = history.start("Known", true);
    history.message(known, Role::User, None);
    apply(&db.pool, &schema, &history.events).await;
    let before = tables(&db.pool, &schema).await;

    let mut next = History::default();
    let fresh = next.start("Fresh", true);
    next.message(fresh, Role::User, None);
    // A message of a conversation whose start the read model never saw.
    let mut orphan = History::default();
    let lost = Uuid::new_v4();
    orphan.message(lost, Role::User, None);
    let mut batch = next.events.clone();
    batch.extend(orphan.events.iter().cloned());
    let refused = TableSink(ReadModel)
        .apply(
            &(&db.pool).into(),
            Target::Generation(&schema),
            &batch,
            Pass::Live,
        )
        .await;
    match refused {
        Err(projection::ApplyError::Rejected(why)) => {
            assert!(why.contains(&lost.to_string()), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        tables(&db.pool, &schema).await,
        before,
        "nothing of the batch was written"
    );
}
