//! The caller's own in-app notifications: marking them read.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use platform::problem::Problem;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::commands::{CommandAccepted, CommandRequest, IdempotencyHeader, respond};
use super::errors::command_failed;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    /// 1 to 100 ids from `GET /v1/notifications`; ids that are not the caller's change nothing.
    #[schema(min_items = 1, max_items = 100)]
    pub notification_ids: Vec<Uuid>,
}

/// Marks notifications of the caller's inbox read. The answer's `position` makes
/// `GET /v1/notifications?position=` show them read.
#[utoipa::path(post, path = "/v1/notifications/read", request_body = MarkRead,
    params(IdempotencyHeader),
    responses((status = 200, body = CommandAccepted), (status = 403), (status = 422)),
    security(("bearer" = [])))]
pub async fn mark_read(
    State(app): State<AppState>,
    req: CommandRequest<MarkRead>,
) -> Result<Response, Problem> {
    let accepted = app
        .service
        .mark_notifications_read(req.body.notification_ids, &req.meta)
        .await
        .map_err(command_failed)?;
    Ok(respond(accepted, StatusCode::OK))
}
