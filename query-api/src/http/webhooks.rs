//! Webhook endpoints as their tenant's admins (and auditors) see them: the endpoints
//! (from the read model, never their secrets), and from the delivery ledger each
//! endpoint's messages and every attempt made to deliver them.

use axum::Json;
use axum::extract::{Path, State};
use platform::auth::{Principal, Role};
use platform::problem::{Problem, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use webhook_ledger::{self as ledger, AttemptView, MessageView};

use super::reads::{
    Consistency, Page, consistent, invalid_cursor, limit, parse_id, parse_time_cursor,
    split_time_cursor, time_cursor,
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

/// An endpoint as its admins see it: its settings (the read model's) and how many of its
/// messages are dead now (the delivery ledger's).
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    #[serde(flatten)]
    pub endpoint: WebhookEndpointView,
    /// Messages whose schedule ran out and that were not redelivered since.
    pub dead_messages: i64,
}

/// `endpoints` with their dead-message counts.
async fn with_dead_counts(
    app: &AppState,
    tenant: &str,
    endpoints: Vec<WebhookEndpointView>,
) -> Result<Vec<EndpointView>, Problem> {
    let ids: Vec<uuid::Uuid> = endpoints.iter().map(|e| e.endpoint_id).collect();
    let dead = ledger::dead_messages(app.reads.pool(), tenant, &ids)
        .await
        .map_err(|e| database_failed(&e))?;
    Ok(endpoints
        .into_iter()
        .map(|endpoint| EndpointView {
            dead_messages: dead.get(&endpoint.endpoint_id).copied().unwrap_or(0),
            endpoint,
        })
        .collect())
}

/// The tenant's webhook endpoints, newest first.
#[utoipa::path(get, path = "/v1/webhooks/endpoints", params(ListEndpoints),
    responses((status = 200, body = Page<EndpointView>), (status = 403), (status = 503)), security(("bearer" = [])))]
pub async fn list_endpoints(
    State(app): State<AppState>,
    who: Principal,
    Query(q): Query<ListEndpoints>,
) -> Result<Json<Page<EndpointView>>, Problem> {
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
    let page = Page::from_overfetch(items, limit, |e| time_cursor(e.created_at, e.endpoint_id));
    Ok(Json(Page {
        items: with_dead_counts(&app, &who.tenant_id, page.items).await?,
        next_cursor: page.next_cursor,
    }))
}

/// One webhook endpoint.
#[utoipa::path(get, path = "/v1/webhooks/endpoints/{id}", params(("id" = uuid::Uuid, Path), Consistency),
    responses((status = 200, body = EndpointView), (status = 403), (status = 404), (status = 503)), security(("bearer" = [])))]
pub async fn get_endpoint(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(c): Query<Consistency>,
) -> Result<Json<EndpointView>, Problem> {
    who.require_any(OVERSEERS)?;
    let id = parse_id(&id)?;
    consistent(&app, &c, &who).await?;
    let found = app
        .reads
        .webhook_endpoint(&who.tenant_id, id)
        .await
        .map_err(read_failed)?
        .ok_or_else(Problem::not_found)?;
    let mut views = with_dead_counts(&app, &who.tenant_id, vec![found]).await?;
    views.pop().map(Json).ok_or_else(Problem::not_found)
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
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// The endpoint's messages, newest first: where each stands, how many attempts it took.
/// Pages through the whole ledger (`cursor`, `next_cursor`).
#[utoipa::path(get, path = "/v1/webhooks/endpoints/{id}/messages", params(("id" = uuid::Uuid, Path), ListMessages),
    responses((status = 200, body = Page<MessageView>), (status = 400), (status = 403), (status = 404), (status = 503)), security(("bearer" = [])))]
pub async fn list_messages(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<ListMessages>,
) -> Result<Json<Page<MessageView>>, Problem> {
    who.require_any(OVERSEERS)?;
    let id = parse_id(&id)?;
    let limit = limit(q.limit)?;
    let status = q.status.map(MessageStatus::as_str);
    let before = match q.cursor.as_deref().map(split_time_cursor).transpose()? {
        None => None,
        Some((at, id)) => Some((at, message_id(id)?)),
    };
    let items = ledger::list_messages(
        app.reads.pool(),
        &who.tenant_id,
        id,
        status,
        before,
        limit + 1,
    )
    .await
    .map_err(|e| database_failed(&e))?;
    Ok(Json(Page::from_overfetch(items, limit, |m| {
        time_cursor(m.created_at, &m.message_id)
    })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListAttempts {
    /// Only the attempts of this message (its `webhook-id`).
    pub message_id: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// Every attempt to deliver to the endpoint, newest first: when, the status code, the
/// latency, the error, the first bytes of the answer. Pages through every attempt
/// (`cursor`, `next_cursor`).
#[utoipa::path(get, path = "/v1/webhooks/endpoints/{id}/attempts", params(("id" = uuid::Uuid, Path), ListAttempts),
    responses((status = 200, body = Page<AttemptView>), (status = 400), (status = 403), (status = 404), (status = 503)), security(("bearer" = [])))]
pub async fn list_attempts(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<ListAttempts>,
) -> Result<Json<Page<AttemptView>>, Problem> {
    who.require_any(OVERSEERS)?;
    let id = parse_id(&id)?;
    let limit = limit(q.limit)?;
    let before = match q.cursor.as_deref().map(split_time_cursor).transpose()? {
        None => None,
        Some((at, id)) => Some((at, id.parse::<i64>().map_err(|_| invalid_cursor())?)),
    };
    let items = ledger::list_attempts(
        app.reads.pool(),
        &who.tenant_id,
        id,
        q.message_id.as_deref(),
        before,
        limit + 1,
    )
    .await
    .map_err(|e| database_failed(&e))?;
    Ok(Json(Page::from_overfetch(items, limit, |a| {
        time_cursor(a.attempted_at, a.attempt_id)
    })))
}

/// A message id as the ledger writes them (`msg_` and hex), not any text a cursor holds.
fn message_id(raw: &str) -> Result<&str, Problem> {
    let plausible = !raw.is_empty()
        && raw.len() <= 64
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    plausible.then_some(raw).ok_or_else(invalid_cursor)
}
