//! The read-model projection: conversations (title, status, message count, last
//! activity), messages, documents and the knowledge base, per tenant. This crate owns its tables: it creates
//! and writes them ([`ReadModel`], a table projection) and holds every query the query
//! API runs on them ([`queries`]), so a change to a column is checked in one place.

pub mod queries;

use projection::{ApplyError, Envelope, Pass, TableProjection};
use schemas::Event;
use sqlx::PgConnection;

pub use queries::{Reads, Viewer};

pub const NAME: &str = "read_model";

pub struct ReadModel;

#[async_trait::async_trait]
impl TableProjection for ReadModel {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn create_tables(&self, db: &mut PgConnection, s: &str) -> Result<(), sqlx::Error> {
        for ddl in [
            format!(
                "CREATE TABLE {s}.conversations (
                    tenant_id        text        NOT NULL,
                    conversation_id  uuid        PRIMARY KEY,
                    title            text        NOT NULL,
                    status           text        NOT NULL,
                    message_count    bigint      NOT NULL DEFAULT 0,
                    metadata         jsonb       NOT NULL,
                    version          bigint      NOT NULL,
                    started_at       timestamptz NOT NULL,
                    started_by       text,
                    last_activity_at timestamptz NOT NULL,
                    ended_at         timestamptz)"
            ),
            format!(
                "CREATE INDEX ON {s}.conversations (tenant_id, last_activity_at DESC, conversation_id DESC)"
            ),
            format!(
                "CREATE TABLE {s}.messages (
                    tenant_id         text        NOT NULL,
                    conversation_id   uuid        NOT NULL,
                    message_id        uuid        PRIMARY KEY,
                    sequence          bigint      NOT NULL,
                    role              text        NOT NULL,
                    content           text        NOT NULL,
                    model             text,
                    prompt_tokens     integer,
                    completion_tokens integer,
                    sent_at           timestamptz NOT NULL,
                    UNIQUE (conversation_id, sequence))"
            ),
            format!(
                "CREATE TABLE {s}.documents (
                    tenant_id            text        NOT NULL,
                    document_id          uuid        PRIMARY KEY,
                    conversation_id      uuid        NOT NULL,
                    kind                 text        NOT NULL,
                    title                text        NOT NULL,
                    format               text        NOT NULL,
                    content              text        NOT NULL,
                    source_message_count integer     NOT NULL,
                    generator_name       text        NOT NULL,
                    generator_version    text        NOT NULL,
                    generated_at         timestamptz NOT NULL)"
            ),
            format!("CREATE INDEX ON {s}.documents (tenant_id, conversation_id, generated_at)"),
        ] {
            sqlx::query(&ddl).execute(&mut *db).await?;
        }
        create_knowledge(db, s).await?;
        create_webhook_endpoints(db, s).await?;
        add_assistant_columns(db, s).await
    }

    async fn upgrade_tables(&self, db: &mut PgConnection, s: &str) -> Result<(), sqlx::Error> {
        // Who started a conversation (schema v2 of ConversationStarted); older rows keep
        // NULL, which every member of the tenant may read.
        sqlx::query(&format!(
            "ALTER TABLE {s}.conversations ADD COLUMN IF NOT EXISTS started_by text"
        ))
        .execute(&mut *db)
        .await?;
        create_knowledge(db, s).await?;
        create_webhook_endpoints(db, s).await?;
        add_assistant_columns(db, s).await
    }

    async fn apply(
        &self,
        db: &mut PgConnection,
        schema: &str,
        events: &[Envelope],
        _pass: Pass,
    ) -> Result<(), ApplyError> {
        for e in events {
            apply_one(db, schema, e).await?;
        }
        Ok(())
    }
}

/// The assistant's part (schema v3 of ConversationStarted, v2 of MessageSent, documents
/// asked of an LLM): whether it
/// answers a conversation; what a reply answers, its latency and sources; where the reply
/// to each user message stands (`pending`, `failed` with its reason, `replied`; none
/// when the assistant is off).
async fn add_assistant_columns(db: &mut PgConnection, s: &str) -> Result<(), sqlx::Error> {
    for ddl in [
        format!(
            "ALTER TABLE {s}.conversations ADD COLUMN IF NOT EXISTS assistant boolean NOT NULL DEFAULT true"
        ),
        format!(
            "ALTER TABLE {s}.documents
                ADD COLUMN IF NOT EXISTS status            text NOT NULL DEFAULT 'generated',
                ADD COLUMN IF NOT EXISTS failure           text,
                ADD COLUMN IF NOT EXISTS prompt_tokens     integer,
                ADD COLUMN IF NOT EXISTS completion_tokens integer,
                ADD COLUMN IF NOT EXISTS latency_ms        bigint"
        ),
        format!(
            "ALTER TABLE {s}.messages
                ADD COLUMN IF NOT EXISTS reply_to     uuid,
                ADD COLUMN IF NOT EXISTS latency_ms   bigint,
                ADD COLUMN IF NOT EXISTS sources      jsonb NOT NULL DEFAULT '[]',
                ADD COLUMN IF NOT EXISTS reply_status text,
                ADD COLUMN IF NOT EXISTS reply_error  text"
        ),
    ] {
        sqlx::query(&ddl).execute(&mut *db).await?;
    }
    Ok(())
}

/// The knowledge base's documents (and the text extracted from each): created with a new
/// generation, or added to one made before the knowledge base existed.
async fn create_knowledge(db: &mut PgConnection, s: &str) -> Result<(), sqlx::Error> {
    for ddl in [
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.knowledge (
                tenant_id    text        NOT NULL,
                knowledge_id uuid        PRIMARY KEY,
                title        text        NOT NULL,
                media_type   text        NOT NULL,
                sha256       text        NOT NULL,
                size_bytes   bigint      NOT NULL,
                text         text        NOT NULL,
                added_by     text,
                added_at     timestamptz NOT NULL,
                removed_at   timestamptz)"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS knowledge_by_tenant ON {s}.knowledge (tenant_id, added_at DESC, knowledge_id DESC)"
        ),
    ] {
        sqlx::query(&ddl).execute(&mut *db).await?;
    }
    Ok(())
}

/// The tenants' webhook endpoints as admins list them: never their secrets, only when
/// they were last rotated.
async fn create_webhook_endpoints(db: &mut PgConnection, s: &str) -> Result<(), sqlx::Error> {
    for ddl in [
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.webhook_endpoints (
                tenant_id            text        NOT NULL,
                endpoint_id          uuid        PRIMARY KEY,
                url                  text        NOT NULL,
                event_types          text[]      NOT NULL,
                description          text        NOT NULL,
                enabled              boolean     NOT NULL,
                disabled_reason      text,
                disabled_automatic   boolean,
                created_by           text        NOT NULL,
                created_at           timestamptz NOT NULL,
                updated_at           timestamptz NOT NULL,
                secret_rotated_at    timestamptz,
                previous_secret_until timestamptz,
                dead_messages        bigint      NOT NULL DEFAULT 0,
                last_dead_at         timestamptz,
                deleted_at           timestamptz)"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS webhook_endpoints_by_tenant ON {s}.webhook_endpoints (tenant_id, created_at DESC, endpoint_id DESC)"
        ),
    ] {
        sqlx::query(&ddl).execute(&mut *db).await?;
    }
    Ok(())
}

async fn apply_one(db: &mut PgConnection, s: &str, e: &Envelope) -> Result<(), ApplyError> {
    {
        let done = match &e.event {
            // The inbox is the notifications projection's.
            Event::NotificationsRead(_) => return Ok(()),
            Event::ConversationStarted(c) => sqlx::query(&format!(
                "INSERT INTO {s}.conversations (tenant_id, conversation_id, title, status, metadata, version, started_at, last_activity_at, started_by, assistant)
                 VALUES ($1, $2, $3, 'open', $4, $5, $6, $6, $7, $8)"
            ))
            .bind(&c.tenant_id)
            .bind(c.conversation_id)
            .bind(&c.title)
            .bind(sqlx::types::Json(&c.metadata))
            .bind(e.sequence)
            .bind(c.started_at)
            .bind(&c.started_by)
            .bind(c.assistant)
            .execute(&mut *db)
            .await?,
            Event::MessageSent(m) => {
                sqlx::query(&format!(
                    "INSERT INTO {s}.messages (tenant_id, conversation_id, message_id, sequence, role, content, model, prompt_tokens,
                                               completion_tokens, sent_at, reply_to, latency_ms, sources, reply_status)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                             CASE WHEN $5 = 'user' THEN (SELECT CASE WHEN assistant THEN 'pending' END
                                                         FROM {s}.conversations WHERE conversation_id = $2) END)"
                ))
                .bind(&e.tenant_id)
                .bind(m.conversation_id)
                .bind(m.message_id)
                .bind(e.sequence)
                .bind(m.role.as_str())
                .bind(&m.content)
                .bind(&m.model)
                .bind(m.prompt_tokens)
                .bind(m.completion_tokens)
                .bind(m.sent_at)
                .bind(m.reply_to)
                .bind(m.latency_ms)
                .bind(sqlx::types::Json(&m.sources))
                .execute(&mut *db)
                .await?;
                if let Some(answered) = m.reply_to {
                    set_reply(db, s, answered, "replied", None).await?;
                }
                sqlx::query(&format!(
                    "UPDATE {s}.conversations SET message_count = message_count + 1, version = $2, last_activity_at = $3
                     WHERE conversation_id = $1"
                ))
                .bind(m.conversation_id)
                .bind(e.sequence)
                .bind(m.sent_at)
                .execute(&mut *db)
                .await?
            }
            Event::ConversationRenamed(r) => sqlx::query(&format!(
                "UPDATE {s}.conversations SET title = $2, version = $3, last_activity_at = $4 WHERE conversation_id = $1"
            ))
            .bind(r.conversation_id)
            .bind(&r.title)
            .bind(e.sequence)
            .bind(r.renamed_at)
            .execute(&mut *db)
            .await?,
            Event::ConversationEnded(x) => sqlx::query(&format!(
                "UPDATE {s}.conversations SET status = 'ended', version = $2, last_activity_at = $3, ended_at = $3
                 WHERE conversation_id = $1"
            ))
            .bind(x.conversation_id)
            .bind(e.sequence)
            .bind(x.ended_at)
            .execute(&mut *db)
            .await?,
            Event::AssistantReplyFailed(f) => {
                set_reply(db, s, f.message_id, "failed", Some(&f.reason)).await?;
                touch(db, s, f.conversation_id, e.sequence, f.failed_at).await?
            }
            Event::AssistantReplyRequested(r) => {
                set_reply(db, s, r.message_id, "pending", None).await?;
                touch(db, s, r.conversation_id, e.sequence, r.requested_at).await?
            }
            Event::DocumentGenerated(d) => sqlx::query(&format!(
                "INSERT INTO {s}.documents (tenant_id, document_id, conversation_id, kind, title, format, content,
                                            source_message_count, generator_name, generator_version, generated_at,
                                            status, prompt_tokens, completion_tokens, latency_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'generated', $12, $13, $14)
                 ON CONFLICT (document_id) DO UPDATE SET
                    title = EXCLUDED.title, format = EXCLUDED.format, content = EXCLUDED.content,
                    source_message_count = EXCLUDED.source_message_count,
                    generator_name = EXCLUDED.generator_name, generator_version = EXCLUDED.generator_version,
                    generated_at = EXCLUDED.generated_at, status = 'generated', failure = NULL,
                    prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
                    latency_ms = EXCLUDED.latency_ms"
            ))
            .bind(&d.tenant_id)
            .bind(d.document_id)
            .bind(d.conversation_id)
            .bind(kind_name(d.kind))
            .bind(&d.title)
            .bind(serde_json::to_value(d.format).ok().and_then(|v| v.as_str().map(str::to_owned)))
            .bind(&d.content)
            .bind(d.source_message_count)
            .bind(&d.generator.name)
            .bind(&d.generator.version)
            .bind(d.generated_at)
            .bind(d.prompt_tokens)
            .bind(d.completion_tokens)
            .bind(d.latency_ms)
            .execute(&mut *db)
            .await?,
            Event::DocumentRequested(d) => sqlx::query(&format!(
                "INSERT INTO {s}.documents (tenant_id, document_id, conversation_id, kind, title, format, content,
                                            source_message_count, generator_name, generator_version, generated_at, status)
                 VALUES ($1, $2, $3, $4, $5, 'markdown', '', 0, '', '', $6, 'requested')"
            ))
            .bind(&d.tenant_id)
            .bind(d.document_id)
            .bind(d.conversation_id)
            .bind(kind_name(d.kind))
            .bind(d.title.as_deref().unwrap_or_default())
            .bind(d.requested_at)
            .execute(&mut *db)
            .await?,
            Event::DocumentGenerationFailed(f) => sqlx::query(&format!(
                "UPDATE {s}.documents SET status = 'failed', failure = $2 WHERE document_id = $1"
            ))
            .bind(f.document_id)
            .bind(&f.reason)
            .execute(&mut *db)
            .await?,
            Event::KnowledgeDocumentAdded(k) => sqlx::query(&format!(
                "INSERT INTO {s}.knowledge (tenant_id, knowledge_id, title, media_type, sha256, size_bytes, text, added_by, added_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(&k.tenant_id)
            .bind(k.knowledge_id)
            .bind(&k.title)
            .bind(&k.media_type)
            .bind(&k.sha256)
            .bind(k.size_bytes)
            .bind(&k.text)
            .bind(&k.added_by)
            .bind(k.added_at)
            .execute(&mut *db)
            .await?,
            Event::KnowledgeDocumentRemoved(k) => sqlx::query(&format!(
                "UPDATE {s}.knowledge SET removed_at = $2 WHERE knowledge_id = $1"
            ))
            .bind(k.knowledge_id)
            .bind(k.removed_at)
            .execute(&mut *db)
            .await?,
            Event::WebhookEndpointCreated(w) => sqlx::query(&format!(
                "INSERT INTO {s}.webhook_endpoints (tenant_id, endpoint_id, url, event_types, description, enabled, created_by, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, true, $6, $7, $7)"
            ))
            .bind(&w.tenant_id)
            .bind(w.endpoint_id)
            .bind(&w.url)
            .bind(&w.event_types)
            .bind(&w.description)
            .bind(&w.created_by)
            .bind(w.created_at)
            .execute(&mut *db)
            .await?,
            Event::WebhookEndpointUpdated(w) => sqlx::query(&format!(
                "UPDATE {s}.webhook_endpoints SET url = $2, event_types = $3, description = $4, updated_at = $5
                 WHERE endpoint_id = $1"
            ))
            .bind(w.endpoint_id)
            .bind(&w.url)
            .bind(&w.event_types)
            .bind(&w.description)
            .bind(w.updated_at)
            .execute(&mut *db)
            .await?,
            Event::WebhookSecretRotated(w) => sqlx::query(&format!(
                "UPDATE {s}.webhook_endpoints SET secret_rotated_at = $2, previous_secret_until = $3, updated_at = $2
                 WHERE endpoint_id = $1"
            ))
            .bind(w.endpoint_id)
            .bind(w.rotated_at)
            .bind(w.previous_valid_until)
            .execute(&mut *db)
            .await?,
            Event::WebhookEndpointDisabled(w) => sqlx::query(&format!(
                "UPDATE {s}.webhook_endpoints SET enabled = false, disabled_reason = $2, disabled_automatic = $3, updated_at = $4
                 WHERE endpoint_id = $1"
            ))
            .bind(w.endpoint_id)
            .bind(&w.reason)
            .bind(w.automatic)
            .bind(w.disabled_at)
            .execute(&mut *db)
            .await?,
            Event::WebhookEndpointEnabled(w) => sqlx::query(&format!(
                "UPDATE {s}.webhook_endpoints SET enabled = true, disabled_reason = NULL, disabled_automatic = NULL, updated_at = $2
                 WHERE endpoint_id = $1"
            ))
            .bind(w.endpoint_id)
            .bind(w.enabled_at)
            .execute(&mut *db)
            .await?,
            Event::WebhookEndpointDeleted(w) => sqlx::query(&format!(
                "UPDATE {s}.webhook_endpoints SET deleted_at = $2, enabled = false, updated_at = $2 WHERE endpoint_id = $1"
            ))
            .bind(w.endpoint_id)
            .bind(w.deleted_at)
            .execute(&mut *db)
            .await?,
            Event::WebhookMessageFailed(w) => sqlx::query(&format!(
                "UPDATE {s}.webhook_endpoints SET dead_messages = dead_messages + 1, last_dead_at = $2 WHERE endpoint_id = $1"
            ))
            .bind(w.endpoint_id)
            .bind(w.failed_at)
            .execute(&mut *db)
            .await?,
            Event::WebhookRedeliveryRequested(w) => sqlx::query(&format!(
                "UPDATE {s}.webhook_endpoints SET updated_at = updated_at WHERE endpoint_id = $1"
            ))
            .bind(w.endpoint_id)
            .execute(&mut *db)
            .await?,
        };
        if done.rows_affected() == 0 {
            // An update of a conversation the read model does not have: its start is missing.
            return Err(ApplyError::Rejected(format!(
                "{} {} sequence {}: no row to update",
                e.aggregate_type, e.aggregate_id, e.sequence
            )));
        }
        Ok(())
    }
}

/// Where the reply to the user message `message_id` stands.
async fn set_reply(
    db: &mut PgConnection,
    s: &str,
    message_id: uuid::Uuid,
    status: &str,
    error: Option<&str>,
) -> Result<(), ApplyError> {
    sqlx::query(&format!(
        "UPDATE {s}.messages SET reply_status = $2, reply_error = $3 WHERE message_id = $1"
    ))
    .bind(message_id)
    .bind(status)
    .bind(error)
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// A conversation event that changes none of its columns but its version.
async fn touch(
    db: &mut PgConnection,
    s: &str,
    conversation_id: uuid::Uuid,
    version: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<sqlx::postgres::PgQueryResult, ApplyError> {
    Ok(sqlx::query(&format!(
        "UPDATE {s}.conversations SET version = $2, last_activity_at = $3 WHERE conversation_id = $1"
    ))
    .bind(conversation_id)
    .bind(version)
    .bind(at)
    .execute(&mut *db)
    .await?)
}

fn kind_name(kind: schemas::DocumentKind) -> Option<String> {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
}
