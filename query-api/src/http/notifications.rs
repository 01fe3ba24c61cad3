//! The caller's in-app notifications (the notifications projection's inbox): documents
//! ready, conversations ended, webhook messages that died, endpoints disabled.

use axum::Json;
use axum::extract::State;
use notifications::queries::{InboxError, InboxItem, Inboxes};
use platform::auth::Principal;
use platform::problem::{Problem, Query};
use serde::Deserialize;
use utoipa::IntoParams;

use super::reads::{Page, READERS, consistent_in, limit, parse_time_cursor, time_cursor};
use super::{AppState, database_failed};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListNotifications {
    /// Only those not marked read.
    #[serde(default)]
    pub unread: bool,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// A `position` from `POST /v1/notifications/read` (or any command): waits until the
    /// inbox has it.
    #[param(
        pattern = r"^(conversation|document|knowledge|webhook_endpoint|inbox):[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:[0-9]{1,19}$"
    )]
    pub position: Option<String>,
    #[param(minimum = 0)]
    pub wait_ms: Option<i64>,
}

/// The caller's notifications, newest first.
#[utoipa::path(get, path = "/v1/notifications", params(ListNotifications),
    responses((status = 200, body = Page<InboxItem>), (status = 503)), security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    who: Principal,
    Query(q): Query<ListNotifications>,
) -> Result<Json<Page<InboxItem>>, Problem> {
    who.require_any(READERS)?;
    let position = super::reads::Consistency {
        position: q.position.clone(),
        wait_ms: q.wait_ms,
    };
    consistent_in(&app, notifications::NAME, &position, &who).await?;
    let limit = limit(q.limit)?;
    let before = q.cursor.as_deref().map(parse_time_cursor).transpose()?;
    let items = Inboxes::new(app.reads.pool().clone())
        .list(&who.tenant_id, &who.subject, q.unread, before, limit + 1)
        .await
        .map_err(|e| match e {
            InboxError::NoGeneration => Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "no_read_model",
                "The notifications projection has not started yet",
            )
            .retry_after(5),
            InboxError::Database(e) => database_failed(&e),
        })?;
    Ok(Json(Page::from_overfetch(items, limit, |n| {
        time_cursor(n.occurred_at, n.notification_id)
    })))
}
