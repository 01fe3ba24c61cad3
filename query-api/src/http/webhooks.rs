//! Webhook endpoints as their tenant's admins (and auditors) see them: the endpoints
//! (from the read model, never their secrets), and from the delivery ledger each
//! endpoint's messages and every attempt made to deliver them.

use axum::Json;
use axum::extract::{Path, State};
use platform::auth::{Principal, Role};
use platform::problem::{Problem, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use webhook_delivery::ledger::{self, AttemptView, MessageView};

use super::reads::{
    Consistency, Page, consistent, limit, parse_id, parse_time_cursor, time_cursor,
};
use super::{AppState, database_failed, read_failed};
use read_model::queries::WebhookEndpointView;

const OVERSEERS: &[Role] = &[Role::Admin, Role::Auditor];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListEndpoints {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    #[param(
        pattern = r"^(conversation|document|knowledge|webhook_endpoint|inbox):[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:[0-9]{1,19}$"
    )]
    pub position: Option<String>,
    #[param(minimum = 0)]
    pub wait_ms: Option<i64>,
}

/// The tenant's webhook endpoints, newest first.
#[utoipa::path(get, path = "/v1/webhooks/endpoints", params(ListEndpoints),
    responses((status = 200, body = Page<WebhookEndpointView>), (status = 403), (status = 503)), security(("bearer" = [])))]
pub async fn list_endpoints(
    State(app): State<AppState>,
    who: Principal,
    Query(q): Query<ListEndpoints>,
) -> Result<Json<Page<WebhookEndpointView>>, Problem> {
    who.require_any(OVERSEERS)?;
    let position = Consistency {
        position: q.position.clone(),
        wait_ms: q.wait_ms,
    };
    consistent(&app, &position, &who).await?;
    let limit = limit(q.limit)?;
    let before = q.cursor.as_deref().map(parse_time_cursor).transpose()?;
    let items = app
        .reads
        .webhook_endpoints(&who.tenant_id, before, limit + 1)
        .await
        .map_err(read_failed)?;
    Ok(Json(Page::from_overfetch(items, limit, |e| {
        time_cursor(e.created_at, e.endpoint_id)
    })))
}

/// One webhook endpoint.
#[utoipa::path(get, path = "/v1/webhooks/endpoints/{id}", params(("id" = uuid::Uuid, Path), Consistency),
    responses((status = 200, body = WebhookEndpointView), (status = 403), (status = 404), (status = 503)), security(("bearer" = [])))]
pub async fn get_endpoint(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(c): Query<Consistency>,
) -> Result<Json<WebhookEndpointView>, Problem> {
    who.require_any(OVERSEERS)?;
    let id = parse_id(&id)?;
    consistent(&app, &c, &who).await?;
    let found = app
        .reads
        .webhook_endpoint(&who.tenant_id, id)
        .await
        .map_err(read_failed)?;
    found.map(Json).ok_or_else(Problem::not_found)
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Pending,
    Paused,
    Delivered,
    Dead,
    Dropped,
}

impl MessageStatus {
    fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Paused => "paused",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Dead => "dead",
            MessageStatus::Dropped => "dropped",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListMessages {
    /// Only messages in this state.
    pub status: Option<MessageStatus>,
    /// 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// The endpoint's messages, newest first: where each stands, how many attempts it took.
#[utoipa::path(get, path = "/v1/webhooks/endpoints/{id}/messages", params(("id" = uuid::Uuid, Path), ListMessages),
    responses((status = 200, body = Vec<MessageView>), (status = 403), (status = 404), (status = 503)), security(("bearer" = [])))]
pub async fn list_messages(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<ListMessages>,
) -> Result<Json<Vec<MessageView>>, Problem> {
    who.require_any(OVERSEERS)?;
    let id = parse_id(&id)?;
    let limit = limit(q.limit)?;
    let status = q.status.map(MessageStatus::as_str);
    ledger::list_messages(app.reads.pool(), &who.tenant_id, id, status, limit)
        .await
        .map(Json)
        .map_err(|e| database_failed(&e))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListAttempts {
    /// Only the attempts of this message (its `webhook-id`).
    pub message_id: Option<String>,
    /// 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// Every attempt to deliver to the endpoint, newest first: when, the status code, the
/// latency, the error, the first bytes of the answer.
#[utoipa::path(get, path = "/v1/webhooks/endpoints/{id}/attempts", params(("id" = uuid::Uuid, Path), ListAttempts),
    responses((status = 200, body = Vec<AttemptView>), (status = 403), (status = 404), (status = 503)), security(("bearer" = [])))]
pub async fn list_attempts(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<ListAttempts>,
) -> Result<Json<Vec<AttemptView>>, Problem> {
    who.require_any(OVERSEERS)?;
    let id = parse_id(&id)?;
    let limit = limit(q.limit)?;
    ledger::list_attempts(
        app.reads.pool(),
        &who.tenant_id,
        id,
        q.message_id.as_deref(),
        limit,
    )
    .await
    .map(Json)
    .map_err(|e| database_failed(&e))
}
