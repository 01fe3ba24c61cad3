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
            if m.role == Role::Assistant && m.reply_to.is_some() {
                let model = m.model.as_deref().unwrap_or("");
                f.push(fact(m.sent_at, "assistant_replies", model, 1));
                tokens(
                    &mut f,
                    m.sent_at,
                    model,
                    m.prompt_tokens,
                    m.completion_tokens,
                );
            }
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
        | Event::NotificationsRead(_) => Vec::new(),
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
        for e in events {
            for f in facts(&e.event) {
                // Live business metrics (a rebuild recounts history: not news).
                if pass == Pass::Live {
                    metrics::counter!("analytics_facts_total", "metric" => f.metric)
                        .increment(f.value.max(0) as u64);
                }
                sqlx::query(&format!(
                    "INSERT INTO {s}.usage (tenant_id, hour, metric, dimension, value)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant_id, hour, metric, dimension)
                     DO UPDATE SET value = {s}.usage.value + EXCLUDED.value"
                ))
                .bind(&e.tenant_id)
                .bind(f.at)
                .bind(f.metric)
                .bind(&f.dimension)
                .bind(f.value)
                .execute(&mut *db)
                .await?;
            }
            // People, not the assistant, make a tenant active.
            if let Event::MessageSent(m) = &e.event
                && m.role == Role::User
            {
                if let Some(user) = &e.user_id {
                    sqlx::query(&format!(
                        "INSERT INTO {s}.active_users (tenant_id, hour, user_id) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING"
                    ))
                    .bind(&e.tenant_id)
                    .bind(hour(m.sent_at))
                    .bind(user)
                    .execute(&mut *db)
                    .await?;
                }
                sqlx::query(&format!(
                    "INSERT INTO {s}.questions (message_id, asked_at) VALUES ($1, $2) ON CONFLICT DO NOTHING"
                ))
                .bind(m.message_id)
                .bind(m.sent_at)
                .execute(&mut *db)
                .await?;
            }
            if let Event::MessageSent(m) = &e.event
                && let Some(question) = m.reply_to
            {
                // The question is in the same conversation, so it was applied before.
                sqlx::query(&format!(
                    "INSERT INTO {s}.reply_times (tenant_id, hour, message_id, ms)
                     SELECT $1, $2, $3, GREATEST(0, (EXTRACT(EPOCH FROM ($4 - asked_at)) * 1000)::bigint)
                     FROM {s}.questions WHERE message_id = $3
                     ON CONFLICT DO NOTHING"
                ))
                .bind(&e.tenant_id)
                .bind(hour(m.sent_at))
                .bind(question)
                .bind(m.sent_at)
                .execute(&mut *db)
                .await?;
            }
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
}
