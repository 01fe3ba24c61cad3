//! The read-model projection: conversations (title, status, message count, last
//! activity), messages, documents and the knowledge base, per tenant. This crate owns its tables: it creates
//! and writes them ([`ReadModel`], a table projection) and holds every query the query
//! API runs on them ([`queries`]), so a change to a column is checked in one place.

mod apply;
pub mod queries;

use projection::{ApplyError, Envelope, Pass, TableProjection};
use sqlx::PgConnection;

pub use queries::Reads;

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
        apply::apply(db, schema, events).await
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
