//! Every fact equals a recount straight from the event store, written here without the
//! crate's own counting: after a load with a kill of the projector, and after a rebuild
//! (which replays every event long after it happened: each lands in its own hour).

use std::collections::BTreeMap;
use std::sync::Arc;

use analytics::Analytics;
use chrono::{DateTime, Timelike, Utc};
use commands::NewMessage;
use projection::TableSink;
use schemas::{CommitPosition, DocumentKind, Event, Role};
use testkit::commands::{add_knowledge, meta, user_message};
use testkit::{Stack, wait_until};

type Key = (String, DateTime<Utc>, String, String);

fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .expect("an hour")
}

/// The facts, recounted from every event in the store.
async fn recount(stack: &Stack) -> BTreeMap<Key, i64> {
    let events = event_store::log::read_after(&stack.db.pool, CommitPosition::START, 1_000_000)
        .await
        .expect("read the log");
    let mut counts: BTreeMap<Key, i64> = BTreeMap::new();
    for stored in &events {
        let tenant = stored
            .metadata
            .get("tenant_id")
            .cloned()
            .unwrap_or_default();
        let mut add = |at: DateTime<Utc>, metric: &str, dimension: &str, n: i64| {
            *counts
                .entry((
                    tenant.clone(),
                    hour_of(at),
                    metric.to_owned(),
                    dimension.to_owned(),
                ))
                .or_default() += n;
        };
        match stored.event().expect("decodes") {
            Event::ConversationStarted(e) => add(e.started_at, "conversations_started", "", 1),
            Event::ConversationEnded(e) => add(e.ended_at, "conversations_ended", "", 1),
            Event::MessageSent(m) => {
                add(m.sent_at, "messages", m.role.as_str(), 1);
                if m.reply_to.is_some() {
                    let model = m.model.clone().unwrap_or_default();
                    add(m.sent_at, "assistant_replies", &model, 1);
                    if let Some(n) = m.prompt_tokens {
                        add(m.sent_at, "prompt_tokens", &model, i64::from(n));
                    }
                    if let Some(n) = m.completion_tokens {
                        add(m.sent_at, "completion_tokens", &model, i64::from(n));
                    }
                }
            }
            Event::AssistantReplyFailed(e) => add(e.failed_at, "assistant_failures", "", 1),
            Event::DocumentGenerated(d) => {
                let kind = match d.kind {
                    DocumentKind::RequirementsSpec => "requirements_spec",
                    DocumentKind::Summary => "summary",
                    DocumentKind::MeetingNotes => "meeting_notes",
                };
                add(d.generated_at, "documents_generated", kind, 1);
                add(
                    d.generated_at,
                    "documents_by_generator",
                    &d.generator.name,
                    1,
                );
            }
            Event::KnowledgeDocumentAdded(k) => add(k.added_at, "knowledge_added", "", 1),
            Event::KnowledgeDocumentRemoved(k) => add(k.removed_at, "knowledge_removed", "", 1),
            _ => {}
        }
    }
    counts
}

async fn projected(stack: &Stack) -> BTreeMap<Key, i64> {
    let schema = stack.live_schema("analytics").await;
    let rows: Vec<(String, DateTime<Utc>, String, String, i64)> = sqlx::query_as(&format!(
        "SELECT tenant_id, hour, metric, dimension, value FROM {schema}.usage"
    ))
    .fetch_all(&stack.db.pool)
    .await
    .expect("read the facts");
    rows.into_iter()
        .map(|(t, h, m, d, v)| ((t, h, m, d), v))
        .collect()
}

/// Every event applied (sequences are contiguous from 1 per aggregate).
async fn caught_up(stack: &Stack) -> bool {
    let schema = stack.live_schema("analytics").await;
    stack
        .scalar(&format!(
            "SELECT (SELECT count(*) FROM events) - (SELECT coalesce(sum(last_sequence), 0)::bigint FROM {schema}.progress)"
        ))
        .await
        == 0
}

async fn load(stack: &Stack, tenant: &str, n: usize) {
    let service = &stack.service;
    let mut assistant = meta(tenant);
    assistant.reach = commands::Reach::Tenant;
    assistant.user_id = "assistant".into();
    for i in 0..n {
        let mut asker = meta(tenant);
        asker.user_id = format!("user{}", i % 3);
        let c = service
            .start_conversation(format!("c{i}"), Default::default(), &asker)
            .await
            .expect("start")
            .aggregate_id;
        for q in 0..3 {
            let sent = service
                .send_message(c, user_message(&format!("question {q}")), None, &asker)
                .await
                .expect("ask");
            let Some(Event::MessageSent(asked)) = sent.events.first() else {
                panic!("no message")
            };
            if q == 2 {
                service
                    .fail_reply(c, asked.message_id, ("down".into(), 2), None, &assistant)
                    .await
                    .expect("fail");
                continue;
            }
            let reply = NewMessage {
                model: Some(format!("model-{}", q % 2)),
                prompt_tokens: Some(100 + q),
                completion_tokens: Some(20),
                reply_to: Some(asked.message_id),
                latency_ms: Some(5),
                ..NewMessage::new(Role::Assistant, "answer")
            };
            service
                .send_message(c, reply, None, &assistant)
                .await
                .expect("reply");
        }
        if i % 2 == 0 {
            service
                .generate_document(c, DocumentKind::Summary, None, &asker)
                .await
                .expect("document");
            service
                .end_conversation(c, None, None, &asker)
                .await
                .expect("end");
        }
    }
    let k = add_knowledge(
        service,
        tenant,
        "Policy",
        "text/plain",
        b"Refunds in 14 days.",
    )
    .await;
    let mut admin = meta(tenant);
    admin.reach = commands::Reach::Tenant;
    service
        .remove_knowledge(k.aggregate_id, None, &admin)
        .await
        .expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fact_equals_a_recount_after_a_kill_and_a_rebuild() {
    let stack = Stack::new().await;
    let _relay = stack.relay();
    let first = stack.projector(Arc::new(TableSink(Analytics))).await;
    let writer = async {
        load(&stack, "acme", 12).await;
        load(&stack, "globex", 6).await;
    };
    let kill = async {
        first.wait_for("some facts", |s| s.applied >= 30).await;
        first.kill().await;
    };
    tokio::join!(writer, kill);
    let second = stack.projector(Arc::new(TableSink(Analytics))).await;
    wait_until("the projector caught up", || caught_up(&stack)).await;
    second.stop().await;
    let expected = recount(&stack).await;
    assert!(expected.len() > 10, "{expected:?}");
    assert_eq!(projected(&stack).await, expected);

    let report = projection::rebuild(&stack.db.pool, &TableSink(Analytics))
        .await
        .expect("rebuild");
    assert_eq!(report.parked, 0);
    assert_eq!(
        projected(&stack).await,
        expected,
        "a rebuild counts the same"
    );

    // Active users and response times, through the query the endpoint runs.
    let usage = analytics::queries::Usage::new(stack.db.pool.clone());
    let now = Utc::now();
    let rows = usage
        .usage(
            "acme",
            now - chrono::TimeDelta::days(1),
            now + chrono::TimeDelta::days(1),
            analytics::Bucket::Day,
        )
        .await
        .expect("usage");
    let value = |metric: &str, dimension: &str| {
        rows.iter()
            .filter(|r| r.metric == metric && r.dimension == dimension)
            .map(|r| r.value)
            .sum::<f64>()
    };
    assert_eq!(value("active_users", ""), 3.0, "{rows:?}");
    assert_eq!(value("messages", "user"), 36.0);
    assert_eq!(value("assistant_replies", "model-0"), 12.0);
    assert_eq!(value("assistant_failures", ""), 12.0);
    assert!(value("reply_time_p95_ms", "") >= value("reply_time_p50_ms", ""));
    assert!(rows.iter().any(|r| r.metric == "reply_time_p50_ms"));
}
