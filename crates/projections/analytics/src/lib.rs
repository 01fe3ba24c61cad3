//! Analytics: what each tenant's assistant did, as additive facts in hour buckets of the
//! events' own time (a late or replayed event lands in its own hour), so that redelivery
//! changes nothing (a table projection: facts and progress in one transaction) and a
//! rebuild is a sum. Days are sums of hours. This crate owns its tables and the queries
//! the analytics endpoints run on them ([`queries`]).
//!
//! Facts (`usage`: tenant, hour, metric, dimension, value):
//! `conversations_started`, `conversations_ended`, `messages` (by role),
//! `documents_generated` (by kind), `documents_by_generator` (template or the model),
//! `documents_failed`, `knowledge_added`,
//! `knowledge_removed`, `assistant_replies` (by model), `assistant_failures`,
//! `prompt_tokens` and `completion_tokens` (by model, replies and documents).
//! Beside them: who was active in an hour (`active_users`), and each reply's response
//! time from its question (`reply_times`), for distinct counts and percentiles.

pub mod queries;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use projection::{ApplyError, Envelope, Pass, TableProjection};
use schemas::{Event, Role};
use sqlx::PgConnection;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

pub use queries::{Bucket, Usage, UsageRow};

pub const NAME: &str = "analytics";

pub struct Analytics;

/// The hour an instant falls in.
pub fn hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// One additive fact an event contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub at: DateTime<Utc>,
    pub metric: &'static str,
    pub dimension: String,
    pub value: i64,
}

fn fact(at: DateTime<Utc>, metric: &'static str, dimension: &str, value: i64) -> Fact {
    Fact {
        at: hour(at),
        metric,
        dimension: dimension.to_owned(),
        value,
    }
}

fn kind_name<T: serde::Serialize>(kind: T) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The facts of one event. Pure: the same event always counts the same.
pub fn facts(event: &Event) -> Vec<Fact> {
    match event {
        Event::ConversationStarted(c) => vec![fact(c.started_at, "conversations_started", "", 1)],
        Event::ConversationEnded(c) => vec![fact(c.ended_at, "conversations_ended", "", 1)],
        Event::MessageSent(m) => {
            let mut f = vec![fact(m.sent_at, "messages", m.role.as_str(), 1)];
            let model = m.model.as_deref().unwrap_or("");
            if m.role == Role::Assistant && m.reply_to.is_some() {
                f.push(fact(m.sent_at, "assistant_replies", model, 1));
            }
            // Whatever message says what a model cost (a reply, or one a service wrote
            // with a model), its tokens are counted, by model.
            tokens(
                &mut f,
                m.sent_at,
                model,
                m.prompt_tokens,
                m.completion_tokens,
            );
            f
        }
        Event::AssistantReplyFailed(r) => vec![fact(r.failed_at, "assistant_failures", "", 1)],
        Event::DocumentGenerated(d) => {
            let mut f = vec![
                fact(d.generated_at, "documents_generated", &kind_name(d.kind), 1),
                fact(
                    d.generated_at,
                    "documents_by_generator",
                    &d.generator.name,
                    1,
                ),
            ];
            tokens(
                &mut f,
                d.generated_at,
                &d.generator.name,
                d.prompt_tokens,
                d.completion_tokens,
            );
            f
        }
        Event::DocumentGenerationFailed(d) => vec![fact(d.failed_at, "documents_failed", "", 1)],
        Event::KnowledgeDocumentAdded(k) => vec![fact(k.added_at, "knowledge_added", "", 1)],
        Event::KnowledgeDocumentRemoved(k) => vec![fact(k.removed_at, "knowledge_removed", "", 1)],
        Event::WebhookMessageFailed(w) => {
            vec![fact(w.failed_at, "webhook_messages_dead", &w.event_type, 1)]
        }
        Event::WebhookEndpointDisabled(w) if w.automatic => {
            vec![fact(w.disabled_at, "webhook_endpoints_disabled", "", 1)]
        }
        Event::ConversationRenamed(_)
        | Event::AssistantReplyRequested(_)
        | Event::DocumentRequested(_)
        | Event::WebhookEndpointCreated(_)
        | Event::WebhookEndpointUpdated(_)
        | Event::WebhookSecretRotated(_)
        | Event::WebhookEndpointDisabled(_)
        | Event::WebhookEndpointEnabled(_)
        | Event::WebhookEndpointDeleted(_)
        | Event::WebhookRedeliveryRequested(_)
        | Event::NotificationsRead(_)
        | Event::SubjectErased(_) => Vec::new(),
    }
}

fn tokens(
    f: &mut Vec<Fact>,
    at: DateTime<Utc>,
    model: &str,
    prompt: Option<i32>,
    completion: Option<i32>,
) {
    if let Some(n) = prompt {
        f.push(fact(at, "prompt_tokens", model, i64::from(n)));
    }
    if let Some(n) = completion {
        f.push(fact(at, "completion_tokens", model, i64::from(n)));
    }
}

/// When the event happened (its own time, not when it was recorded or delivered).
pub fn event_time(event: &Event) -> DateTime<Utc> {
    match event {
        Event::ConversationStarted(e) => e.started_at,
        Event::MessageSent(e) => e.sent_at,
        Event::ConversationRenamed(e) => e.renamed_at,
        Event::ConversationEnded(e) => e.ended_at,
        Event::DocumentGenerated(e) => e.generated_at,
        Event::KnowledgeDocumentAdded(e) => e.added_at,
        Event::KnowledgeDocumentRemoved(e) => e.removed_at,
        Event::AssistantReplyFailed(e) => e.failed_at,
        Event::AssistantReplyRequested(e) => e.requested_at,
        Event::DocumentRequested(e) => e.requested_at,
        Event::DocumentGenerationFailed(e) => e.failed_at,
        Event::WebhookEndpointCreated(e) => e.created_at,
        Event::WebhookEndpointUpdated(e) => e.updated_at,
        Event::WebhookSecretRotated(e) => e.rotated_at,
        Event::WebhookEndpointDisabled(e) => e.disabled_at,
        Event::WebhookEndpointEnabled(e) => e.enabled_at,
        Event::WebhookEndpointDeleted(e) => e.deleted_at,
        Event::WebhookMessageFailed(e) => e.failed_at,
        Event::WebhookRedeliveryRequested(e) => e.requested_at,
        Event::NotificationsRead(e) => e.read_at,
        Event::SubjectErased(e) => e.erased_at,
    }
}

#[async_trait::async_trait]
impl TableProjection for Analytics {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create_tables(&self, db: &mut PgConnection, s: &str) -> Result<(), sqlx::Error> {
        for ddl in [
            format!(
                "CREATE TABLE {s}.usage (
                    tenant_id text        NOT NULL,
                    hour      timestamptz NOT NULL,
                    metric    text        NOT NULL,
                    dimension text        NOT NULL,
                    value     bigint      NOT NULL,
                    PRIMARY KEY (tenant_id, hour, metric, dimension))"
            ),
            format!(
                "CREATE TABLE {s}.active_users (
                    tenant_id text        NOT NULL,
                    hour      timestamptz NOT NULL,
                    user_id   text        NOT NULL,
                    PRIMARY KEY (tenant_id, hour, user_id))"
            ),
            // A user message waiting for its reply (the start of a response time).
            format!(
                "CREATE TABLE {s}.questions (
                    message_id uuid        PRIMARY KEY,
                    asked_at   timestamptz NOT NULL)"
            ),
            format!(
                "CREATE TABLE {s}.reply_times (
                    tenant_id  text        NOT NULL,
                    hour       timestamptz NOT NULL,
                    message_id uuid        PRIMARY KEY,
                    ms         bigint      NOT NULL)"
            ),
            format!("CREATE INDEX ON {s}.reply_times (tenant_id, hour)"),
        ] {
            sqlx::query(&ddl).execute(&mut *db).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        db: &mut PgConnection,
        s: &str,
        events: &[Envelope],
        pass: Pass,
    ) -> Result<(), ApplyError> {
        let mut batch = Batch::default();
        for e in events {
            if let Event::SubjectErased(x) = &e.event {
                // What the batch counted so far is written first: the erasure reaches it.
                std::mem::take(&mut batch).write(db, s).await?;
                erase(db, s, x).await?;
                continue;
            }
            batch.add(e, pass);
        }
        batch.write(db, s).await
    }
}

/// An erasure: the counts stay (they hold nothing of a person); who was active does not.
/// An erased person's hours count them under a pseudonym of the erasure's record (one
/// person still, so the counts of active users stay); an erased tenant's go.
async fn erase(
    db: &mut PgConnection,
    s: &str,
    x: &schemas::SubjectErased,
) -> Result<(), ApplyError> {
    if x.is_tenant() {
        sqlx::query(&format!(
            "DELETE FROM {s}.active_users WHERE tenant_id = $1"
        ))
        .bind(&x.tenant_id)
        .execute(&mut *db)
        .await?;
    } else if let Some(person) = x.person() {
        sqlx::query(&format!(
            "UPDATE {s}.active_users SET user_id = $3 WHERE tenant_id = $1 AND user_id = $2"
        ))
        .bind(&x.tenant_id)
        .bind(person)
        .bind(format!("{}:{}", schemas::personal::ERASED, x.subject_id))
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// A batch of events as the few statements that write it: facts summed per key (one
/// upsert), active users and questions de-duplicated (one insert each), reply times (one
/// insert reading the questions, after them). Sums are additive and the inserts keep the
/// first row of a key, so the tables end as one event at a time leaves them.
#[derive(Default)]
struct Batch {
    usage: BTreeMap<(String, DateTime<Utc>, &'static str, String), i64>,
    active: BTreeSet<(String, DateTime<Utc>, String)>,
    questions: BTreeMap<Uuid, DateTime<Utc>>,
    /// (tenant, hour, question, reply time), in event order.
    replies: Vec<(String, DateTime<Utc>, Uuid, DateTime<Utc>)>,
}

impl Batch {
    fn add(&mut self, e: &Envelope, pass: Pass) {
        for f in facts(&e.event) {
            // Live business metrics (a rebuild recounts history: not news).
            if pass == Pass::Live {
                metrics::counter!("analytics_facts_total", "metric" => f.metric)
                    .increment(f.value.max(0) as u64);
            }
            *self
                .usage
                .entry((e.tenant_id.clone(), f.at, f.metric, f.dimension))
                .or_insert(0) += f.value;
        }
        let Event::MessageSent(m) = &e.event else {
            return;
        };
        // People, not the assistant, make a tenant active: counted as stored (with data
        // protection on, a pseudonym: who they are is not the projection's to keep).
        if m.role == Role::User {
            if let Some(user) = &e.actor {
                self.active
                    .insert((e.tenant_id.clone(), hour(m.sent_at), user.clone()));
            }
            self.questions.entry(m.message_id).or_insert(m.sent_at);
        }
        if let Some(question) = m.reply_to {
            self.replies
                .push((e.tenant_id.clone(), hour(m.sent_at), question, m.sent_at));
        }
    }

    async fn write(self, db: &mut PgConnection, s: &str) -> Result<(), ApplyError> {
        if !self.usage.is_empty() {
            let (mut tenants, mut hours, mut metrics, mut dimensions, mut values) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for ((tenant, hour, metric, dimension), value) in self.usage {
                tenants.push(tenant);
                hours.push(hour);
                metrics.push(metric);
                dimensions.push(dimension);
                values.push(value);
            }
            sqlx::query(&format!(
                "INSERT INTO {s}.usage (tenant_id, hour, metric, dimension, value)
                 SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::int8[])
                 ON CONFLICT (tenant_id, hour, metric, dimension)
                 DO UPDATE SET value = {s}.usage.value + EXCLUDED.value"
            ))
            .bind(tenants)
            .bind(hours)
            .bind(metrics)
            .bind(dimensions)
            .bind(values)
            .execute(&mut *db)
            .await?;
        }
        if !self.active.is_empty() {
            let (mut tenants, mut hours, mut users) = (Vec::new(), Vec::new(), Vec::new());
            for (tenant, hour, user) in self.active {
                tenants.push(tenant);
                hours.push(hour);
                users.push(user);
            }
            sqlx::query(&format!(
                "INSERT INTO {s}.active_users (tenant_id, hour, user_id)
                 SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[])
                 ON CONFLICT DO NOTHING"
            ))
            .bind(tenants)
            .bind(hours)
            .bind(users)
            .execute(&mut *db)
            .await?;
        }
        if !self.questions.is_empty() {
            let (ids, asked): (Vec<Uuid>, Vec<DateTime<Utc>>) = self.questions.into_iter().unzip();
            sqlx::query(&format!(
                "INSERT INTO {s}.questions (message_id, asked_at)
                 SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[])
                 ON CONFLICT DO NOTHING"
            ))
            .bind(ids)
            .bind(asked)
            .execute(&mut *db)
            .await?;
        }
        if !self.replies.is_empty() {
            let (mut tenants, mut hours, mut questions, mut sent) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (tenant, hour, question, at) in self.replies {
                tenants.push(tenant);
                hours.push(hour);
                questions.push(question);
                sent.push(at);
            }
            // The question is in the same conversation, so it was applied before (in an
            // earlier batch or in the statement above).
            sqlx::query(&format!(
                "INSERT INTO {s}.reply_times (tenant_id, hour, message_id, ms)
                 SELECT u.tenant_id, u.hour, u.question,
                        GREATEST(0, (EXTRACT(EPOCH FROM (u.sent_at - q.asked_at)) * 1000)::bigint)
                 FROM UNNEST($1::text[], $2::timestamptz[], $3::uuid[], $4::timestamptz[])
                      WITH ORDINALITY AS u(tenant_id, hour, question, sent_at, n)
                 JOIN {s}.questions q ON q.message_id = u.question
                 ORDER BY u.n
                 ON CONFLICT DO NOTHING"
            ))
            .bind(tenants)
            .bind(hours)
            .bind(questions)
            .bind(sent)
            .execute(&mut *db)
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn facts_land_in_the_hour_of_the_event_itself() {
        let at = Utc
            .with_ymd_and_hms(2026, 3, 4, 10, 59, 59)
            .single()
            .expect("time");
        let e = Event::ConversationEnded(schemas::ConversationEnded {
            sealed: None,
            conversation_id: uuid::Uuid::nil(),
            reason: None,
            ended_at: at,
        });
        let f = facts(&e);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].at,
            Utc.with_ymd_and_hms(2026, 3, 4, 10, 0, 0)
                .single()
                .expect("hour")
        );
        assert_eq!(event_time(&e), at);
    }

    #[test]
    fn tokens_count_for_every_message_that_says_what_a_model_cost() {
        let message = |reply_to: Option<uuid::Uuid>| {
            Event::MessageSent(schemas::MessageSent {
                sealed: None,
                conversation_id: uuid::Uuid::nil(),
                message_id: uuid::Uuid::nil(),
                role: Role::Assistant,
                content: "A summary a service wrote".into(),
                model: Some("openai/gpt-x".into()),
                prompt_tokens: Some(30),
                completion_tokens: Some(12),
                sent_at: Utc::now(),
                reply_to,
                latency_ms: None,
                sources: Vec::new(),
            })
        };
        let counted = |e: &Event| -> Vec<(String, String, i64)> {
            facts(e)
                .into_iter()
                .map(|f| (f.metric.to_owned(), f.dimension.clone(), f.value))
                .collect()
        };
        // Sent by a service, answering nothing: its tokens count, it is no reply.
        let by_service = counted(&message(None));
        assert!(by_service.contains(&("prompt_tokens".into(), "openai/gpt-x".into(), 30)));
        assert!(by_service.contains(&("completion_tokens".into(), "openai/gpt-x".into(), 12)));
        assert!(!by_service.iter().any(|(m, _, _)| m == "assistant_replies"));
        // A reply: the same tokens, and a reply.
        let reply = counted(&message(Some(uuid::Uuid::nil())));
        assert!(reply.contains(&("prompt_tokens".into(), "openai/gpt-x".into(), 30)));
        assert!(reply.contains(&("assistant_replies".into(), "openai/gpt-x".into(), 1)));
    }
}
