//! Queries of the read model, always scoped to one tenant, in the live generation.
//! Every query the query API runs on these tables is here, beside the DDL in `lib.rs`.

use std::time::Duration;

use access::Scope;
use chrono::{DateTime, Utc};
use projection::{generation, progress};
use schemas::VersionToken;
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::NAME;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the read model has not been built yet")]
    NoReadModel,
}

#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct ConversationView {
    pub conversation_id: Uuid,
    pub title: String,
    /// `open` or `ended`.
    pub status: String,
    pub message_count: i64,
    #[schema(value_type = Object)]
    pub metadata: sqlx::types::JsonValue,
    /// Version of the conversation this view reflects.
    pub version: i64,
    pub started_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Whether the assistant answers its users' messages.
    pub assistant: bool,
}

#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct MessageView {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    /// Version of the conversation at which the message was sent.
    pub sequence: i64,
    pub role: String,
    pub content: String,
    pub model: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    pub sent_at: DateTime<Utc>,
    /// An assistant reply: the user message it answers, the model's latency, and the
    /// retrieved sources it was written from.
    pub reply_to: Option<Uuid>,
    pub latency_ms: Option<i64>,
    #[schema(value_type = Vec<Object>)]
    pub sources: sqlx::types::Json<Vec<schemas::MessageSource>>,
    /// A user message: where the assistant's reply stands (`pending`, `failed`,
    /// `replied`; absent when the assistant is off), and why it failed.
    pub reply_status: Option<String>,
    pub reply_error: Option<String>,
}

/// What one conversation amounted to: messages by role, the assistant's replies and
/// failures, tokens, response times (from each question to its reply), documents.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct ConversationSummary {
    pub conversation_id: Uuid,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub user_messages: i64,
    pub assistant_messages: i64,
    pub system_messages: i64,
    /// User messages whose reply failed (and was not answered since).
    pub failed_replies: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub reply_time_p50_ms: Option<f64>,
    pub reply_time_p95_ms: Option<f64>,
    pub documents: i64,
}

#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct DocumentView {
    pub document_id: Uuid,
    pub conversation_id: Uuid,
    pub kind: String,
    pub title: String,
    pub format: String,
    pub content: String,
    pub source_message_count: i32,
    pub generator_name: String,
    pub generator_version: String,
    /// When it was generated (or, while `requested`, asked for).
    pub generated_at: DateTime<Utc>,
    /// `generated`; or, for a document asked of an LLM, `requested` (no content yet) or
    /// `failed` (with `failure`).
    pub status: String,
    pub failure: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    pub latency_ms: Option<i64>,
}

/// A document of the knowledge base, without its text. Every member of the tenant sees
/// the knowledge base; a removed document is gone from it.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct KnowledgeView {
    pub knowledge_id: Uuid,
    pub title: String,
    pub media_type: String,
    /// Hex SHA-256 of the original file.
    pub sha256: String,
    pub size_bytes: i64,
    /// Characters of text extracted from it.
    pub characters: i32,
    pub added_by: Option<String>,
    pub added_at: DateTime<Utc>,
}

/// A document of the knowledge base with the text extracted from it.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct KnowledgeDocumentView {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub document: KnowledgeView,
    pub text: String,
}

/// A webhook endpoint as its tenant's admins list it: never its secret.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct WebhookEndpointView {
    pub endpoint_id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    /// Why it is disabled, and whether the delivery service did it (it kept failing).
    pub disabled_reason: Option<String>,
    pub disabled_automatic: Option<bool>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Until when the rotated-out secret also signs.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// When a message of the endpoint last died (its every attempt failed). How many are
    /// dead now is the delivery ledger's to say, not the endpoint's events'.
    pub last_dead_at: Option<DateTime<Utc>>,
}

const WEBHOOK_COLUMNS: &str = "endpoint_id, url, event_types, description, enabled, disabled_reason, disabled_automatic, created_by, created_at, updated_at, secret_rotated_at, previous_secret_until, last_dead_at";

const KNOWLEDGE_COLUMNS: &str = "knowledge_id, title, media_type, sha256, size_bytes, char_length(text) AS characters, added_by, added_at";

/// The visibility rule (`access`) over a conversations row `c`, with the scope's
/// [`Scope::only`] as parameter `$param`.
fn visible(param: u8) -> String {
    access::sql::conversation_visible("c.started_by", param)
}

/// Filters and keyset position of a conversation listing (newest activity first).
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub status: Option<String>,
    pub active_after: Option<DateTime<Utc>>,
    pub active_before: Option<DateTime<Utc>>,
    /// Continue after this (last_activity_at, conversation_id).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

pub struct Reads {
    pool: PgPool,
}

impl Reads {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn schema(&self) -> Result<String, ReadError> {
        generation::live_schema_in(&self.pool, NAME)
            .await?
            .ok_or(ReadError::NoReadModel)
    }

    /// The version of an aggregate the read model has applied (0 if none).
    pub async fn applied_version(&self, token: &VersionToken) -> Result<u64, ReadError> {
        Ok(progress::applied_version(&self.pool, NAME, token).await?)
    }

    /// Waits until the read model has applied `token`, polling, for at most `max`.
    /// Returns the applied version when it gives up.
    pub async fn wait_for(
        &self,
        token: &VersionToken,
        max: Duration,
    ) -> Result<Result<(), u64>, ReadError> {
        Ok(progress::wait_for(&self.pool, NAME, token, max, None).await?)
    }

    pub async fn conversations(
        &self,
        scope: &Scope<'_>,
        f: &ConversationFilter,
    ) -> Result<Vec<ConversationView>, ReadError> {
        let s = self.schema().await?;
        let visible = visible(8);
        let (after_time, after_id) = f.after.map_or((None, None), |(t, id)| (Some(t), Some(id)));
        Ok(sqlx::query_as(&format!(
            "SELECT conversation_id, title, status, message_count, metadata, version, started_at, last_activity_at, ended_at, assistant
             FROM {s}.conversations c
             WHERE tenant_id = $1 AND {visible}
               AND ($2::text IS NULL OR status = $2)
               AND ($3::timestamptz IS NULL OR last_activity_at >= $3)
               AND ($4::timestamptz IS NULL OR last_activity_at < $4)
               AND ($5::timestamptz IS NULL OR (last_activity_at, conversation_id) < ($5, $6))
             ORDER BY last_activity_at DESC, conversation_id DESC
             LIMIT $7"
        ))
        .bind(scope.tenant)
        .bind(&f.status)
        .bind(f.active_after)
        .bind(f.active_before)
        .bind(after_time)
        .bind(after_id)
        .bind(f.limit)
        .bind(scope.only())
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn conversation(
        &self,
        scope: &Scope<'_>,
        id: Uuid,
    ) -> Result<Option<ConversationView>, ReadError> {
        let s = self.schema().await?;
        let visible = visible(3);
        Ok(sqlx::query_as(&format!(
            "SELECT conversation_id, title, status, message_count, metadata, version, started_at, last_activity_at, ended_at, assistant
             FROM {s}.conversations c WHERE tenant_id = $1 AND conversation_id = $2 AND {visible}"
        ))
        .bind(scope.tenant)
        .bind(id)
        .bind(scope.only())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The summary of a conversation the scope sees.
    pub async fn conversation_summary(
        &self,
        scope: &Scope<'_>,
        id: Uuid,
    ) -> Result<Option<ConversationSummary>, ReadError> {
        let s = self.schema().await?;
        let visible = visible(3);
        Ok(sqlx::query_as(&format!(
            "SELECT c.conversation_id, c.status, c.started_at, c.last_activity_at, c.ended_at,
                    count(m.message_id) FILTER (WHERE m.role = 'user') AS user_messages,
                    count(m.message_id) FILTER (WHERE m.role = 'assistant') AS assistant_messages,
                    count(m.message_id) FILTER (WHERE m.role = 'system') AS system_messages,
                    count(m.message_id) FILTER (WHERE m.reply_status = 'failed') AS failed_replies,
                    coalesce(sum(m.prompt_tokens), 0)::bigint AS prompt_tokens,
                    coalesce(sum(m.completion_tokens), 0)::bigint AS completion_tokens,
                    t.p50 AS reply_time_p50_ms, t.p95 AS reply_time_p95_ms,
                    (SELECT count(*) FROM {s}.documents d
                      WHERE d.conversation_id = c.conversation_id AND d.status = 'generated') AS documents
             FROM {s}.conversations c
             LEFT JOIN {s}.messages m ON m.conversation_id = c.conversation_id
             LEFT JOIN LATERAL (
                 SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
                        percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95
                 FROM (SELECT EXTRACT(EPOCH FROM (r.sent_at - q.sent_at)) * 1000 AS ms
                       FROM {s}.messages r JOIN {s}.messages q ON q.message_id = r.reply_to
                       WHERE r.conversation_id = c.conversation_id) times
             ) t ON true
             WHERE c.tenant_id = $1 AND c.conversation_id = $2 AND {visible}
             GROUP BY c.conversation_id, t.p50, t.p95"
        ))
        .bind(scope.tenant)
        .bind(id)
        .bind(scope.only())
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn messages(
        &self,
        scope: &Scope<'_>,
        id: Uuid,
        after_sequence: i64,
        limit: i64,
    ) -> Result<Vec<MessageView>, ReadError> {
        let s = self.schema().await?;
        let visible = visible(5);
        Ok(sqlx::query_as(&format!(
            "SELECT message_id, conversation_id, sequence, role, content, model, prompt_tokens, completion_tokens, sent_at,
                    reply_to, latency_ms, sources, reply_status, reply_error
             FROM {s}.messages m WHERE tenant_id = $1 AND conversation_id = $2 AND sequence > $3
               AND EXISTS (SELECT 1 FROM {s}.conversations c
                           WHERE c.conversation_id = m.conversation_id AND {visible})
             ORDER BY sequence LIMIT $4"
        ))
        .bind(scope.tenant)
        .bind(id)
        .bind(after_sequence)
        .bind(limit)
        .bind(scope.only())
        .fetch_all(&self.pool)
        .await?)
    }

    /// What the read model holds of `subject` (a person: the conversations they started;
    /// a conversation: itself) and the documents made from those conversations, oldest
    /// first: what an export of their data replays.
    pub async fn subject_aggregates(
        &self,
        tenant: &str,
        subject: &schemas::Subject,
    ) -> Result<(Vec<Uuid>, Vec<Uuid>), ReadError> {
        let s = self.schema().await?;
        let (person, conversation) = match subject {
            schemas::Subject::User(sub) => (Some(sub.as_str()), None),
            schemas::Subject::Conversation(id) => (None, Some(*id)),
            schemas::Subject::Tenant => return Ok((Vec::new(), Vec::new())),
        };
        let conversations: Vec<Uuid> = sqlx::query_scalar(&format!(
            "SELECT conversation_id FROM {s}.conversations
              WHERE tenant_id = $1 AND (started_by = $2 OR conversation_id = $3)
              ORDER BY started_at, conversation_id"
        ))
        .bind(tenant)
        .bind(person)
        .bind(conversation)
        .fetch_all(&self.pool)
        .await?;
        let documents: Vec<Uuid> = sqlx::query_scalar(&format!(
            "SELECT document_id FROM {s}.documents
              WHERE tenant_id = $1 AND conversation_id = ANY($2)
              ORDER BY generated_at, document_id"
        ))
        .bind(tenant)
        .bind(&conversations)
        .fetch_all(&self.pool)
        .await?;
        Ok((conversations, documents))
    }

    /// A conversation's documents, oldest first, after the keyset `after`
    /// (`generated_at`, `document_id`), at most `limit`.
    pub async fn documents_of(
        &self,
        scope: &Scope<'_>,
        conversation: Uuid,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<DocumentView>, ReadError> {
        let s = self.schema().await?;
        let visible = visible(6);
        let (after_time, after_id) = after.map_or((None, None), |(t, id)| (Some(t), Some(id)));
        Ok(sqlx::query_as(&format!(
            "SELECT document_id, conversation_id, kind, title, format, content, source_message_count,
                    generator_name, generator_version, generated_at, status, failure,
                    prompt_tokens, completion_tokens, latency_ms
             FROM {s}.documents d WHERE tenant_id = $1 AND conversation_id = $2
               AND ($3::timestamptz IS NULL OR (generated_at, document_id) > ($3, $4))
               AND EXISTS (SELECT 1 FROM {s}.conversations c
                           WHERE c.conversation_id = d.conversation_id AND {visible})
             ORDER BY generated_at, document_id LIMIT $5"
        ))
        .bind(scope.tenant)
        .bind(conversation)
        .bind(after_time)
        .bind(after_id)
        .bind(limit)
        .bind(scope.only())
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn document(
        &self,
        scope: &Scope<'_>,
        id: Uuid,
    ) -> Result<Option<DocumentView>, ReadError> {
        let s = self.schema().await?;
        let visible = visible(3);
        Ok(sqlx::query_as(&format!(
            "SELECT document_id, conversation_id, kind, title, format, content, source_message_count,
                    generator_name, generator_version, generated_at, status, failure,
                    prompt_tokens, completion_tokens, latency_ms
             FROM {s}.documents d WHERE tenant_id = $1 AND document_id = $2
               AND EXISTS (SELECT 1 FROM {s}.conversations c
                           WHERE c.conversation_id = d.conversation_id AND {visible})"
        ))
        .bind(scope.tenant)
        .bind(id)
        .bind(scope.only())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The tenant's knowledge base, newest first, after the keyset `before`
    /// (`added_at`, `knowledge_id`), at most `limit`.
    pub async fn knowledge(
        &self,
        tenant: &str,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<KnowledgeView>, ReadError> {
        let s = self.schema().await?;
        let (time, id) = before.map_or((None, None), |(t, id)| (Some(t), Some(id)));
        Ok(sqlx::query_as(&format!(
            "SELECT {KNOWLEDGE_COLUMNS} FROM {s}.knowledge
             WHERE tenant_id = $1 AND removed_at IS NULL
               AND ($2::timestamptz IS NULL OR (added_at, knowledge_id) < ($2, $3))
             ORDER BY added_at DESC, knowledge_id DESC LIMIT $4"
        ))
        .bind(tenant)
        .bind(time)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn knowledge_document(
        &self,
        tenant: &str,
        id: Uuid,
    ) -> Result<Option<KnowledgeDocumentView>, ReadError> {
        let s = self.schema().await?;
        Ok(sqlx::query_as(&format!(
            "SELECT {KNOWLEDGE_COLUMNS}, text FROM {s}.knowledge
             WHERE tenant_id = $1 AND knowledge_id = $2 AND removed_at IS NULL"
        ))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The tenant's webhook endpoints (not deleted), newest first, after the keyset
    /// `before` (`created_at`, `endpoint_id`), at most `limit`.
    pub async fn webhook_endpoints(
        &self,
        tenant: &str,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<WebhookEndpointView>, ReadError> {
        let s = self.schema().await?;
        let (time, id) = before.map_or((None, None), |(t, id)| (Some(t), Some(id)));
        Ok(sqlx::query_as(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM {s}.webhook_endpoints
             WHERE tenant_id = $1 AND deleted_at IS NULL
               AND ($2::timestamptz IS NULL OR (created_at, endpoint_id) < ($2, $3))
             ORDER BY created_at DESC, endpoint_id DESC LIMIT $4"
        ))
        .bind(tenant)
        .bind(time)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn webhook_endpoint(
        &self,
        tenant: &str,
        id: Uuid,
    ) -> Result<Option<WebhookEndpointView>, ReadError> {
        let s = self.schema().await?;
        Ok(sqlx::query_as(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM {s}.webhook_endpoints
             WHERE tenant_id = $1 AND endpoint_id = $2 AND deleted_at IS NULL"
        ))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }
}
