//! What query-api reads of the notifications projection: a user's inbox.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// One notification as its recipient sees it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct InboxItem {
    pub notification_id: Uuid,
    /// `document_ready`, `conversation_ended`, `assistant_reply_failed`,
    /// `webhook_message_failed`, `webhook_endpoint_disabled`.
    pub kind: String,
    pub subject: String,
    pub conversation_id: Option<Uuid>,
    pub document_id: Option<Uuid>,
    pub endpoint_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
    /// When the user marked it read; absent while unread.
    pub read_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("the notifications projection has no live generation yet")]
    NoGeneration,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub struct Inboxes {
    pool: PgPool,
}

impl Inboxes {
    pub fn new(pool: PgPool) -> Inboxes {
        Inboxes { pool }
    }

    /// `recipient`'s notifications in `tenant`, newest first, after the keyset `before`
    /// (`occurred_at`, `notification_id`), only unread ones when asked, at most `limit`.
    pub async fn list(
        &self,
        tenant: &str,
        recipient: &str,
        unread_only: bool,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<InboxItem>, InboxError> {
        let s = projection::generation::live_schema_in(&self.pool, crate::NAME)
            .await?
            .ok_or(InboxError::NoGeneration)?;
        let (time, id) = before.map_or((None, None), |(t, id)| (Some(t), Some(id)));
        Ok(sqlx::query_as(&format!(
            "SELECT notification_id, kind, subject, conversation_id, document_id, endpoint_id, occurred_at, read_at
             FROM {s}.inbox
             WHERE tenant_id = $1 AND recipient = $2 AND (NOT $3 OR read_at IS NULL)
               AND ($4::timestamptz IS NULL OR (occurred_at, notification_id) < ($4, $5))
             ORDER BY occurred_at DESC, notification_id DESC LIMIT $6"
        ))
        .bind(tenant)
        .bind(recipient)
        .bind(unread_only)
        .bind(time)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
