//! Read-model handlers, with read-your-writes through `?position=`.

use access::{Resource, Scope};
use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, TimeZone, Utc};
use event_store::{Stream, StreamError};
use platform::auth::{Principal, Role};
use platform::problem::{Problem, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{AppState, checked_time, database_failed, read_failed, stream_failed};
use read_model::queries::{ConversationFilter, ConversationView, DocumentView, MessageView};
use schemas::VersionToken;
use schemas::positions::BadVersionToken;
use schemas::{AggregateKind, Event};

pub const READERS: &[Role] = &[Role::Member, Role::Admin, Role::Auditor, Role::Service];

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Consistency {
    /// A `position` a command returned: the answer waits until the read model has it.
    #[param(
        pattern = r"^(conversation|document|knowledge|webhook_endpoint|inbox):[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:[0-9]{1,19}$"
    )]
    pub position: Option<String>,
    /// How long to wait for `position`, in ms (capped by the server's maximum).
    #[param(minimum = 0)]
    pub wait_ms: Option<i64>,
}

/// Waits for the caller's position in the read model, if given; 503
/// `position_not_reached` when it times out.
pub(super) async fn consistent(
    app: &AppState,
    c: &Consistency,
    who: &Principal,
) -> Result<(), Problem> {
    consistent_in(app, read_model::NAME, c, who).await
}

/// Waits for the caller's position in `projection`, if given; 503
/// `position_not_reached` when it times out.
///
/// A token of an aggregate the caller's tenant does not own behaves exactly as one of an
/// aggregate that does not exist (same wait, same answer, version 0): a token must not
/// tell another tenant whether an id exists or how far it is.
pub(super) async fn consistent_in(
    app: &AppState,
    projection: &str,
    c: &Consistency,
    who: &Principal,
) -> Result<(), Problem> {
    let wait = match c.wait_ms {
        None => app.read_wait_max,
        Some(ms) => {
            let ms = u64::try_from(ms).map_err(|_| {
                Problem::bad_request("invalid_wait", "wait_ms must not be negative")
            })?;
            std::time::Duration::from_millis(ms).min(app.read_wait_max)
        }
    };
    let Some(raw) = &c.position else {
        return Ok(());
    };
    let token: VersionToken = raw
        .parse()
        .map_err(|e: BadVersionToken| Problem::bad_request("invalid_position", e.to_string()))?;
    let pool = app.reads.pool();
    let visible = visible(app, &who.scope(), &token)
        .await
        .map_err(|e| stream_failed(&e))?;
    let outcome = if visible {
        let wake = app.progress.as_ref().map(|a| a.of(projection));
        projection::progress::wait_for(pool, projection, &token, wait, wake)
            .await
            .map_err(|e| database_failed(&e))?
    } else {
        tokio::time::sleep(wait).await;
        Err(0)
    };
    match outcome {
        Ok(()) => Ok(()),
        Err(applied) => Err(Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "position_not_reached",
            "Not yet consistent",
        )
        .detail(format!(
            "{projection} has {} up to version {applied}, not yet {}",
            token.kind, token.version
        ))
        .with("applied_version", applied)
        .with("position", raw.as_str())),
    }
}

/// Waits for the caller's position, then checks the conversation is one they see
/// (404 otherwise): what a read of a conversation's messages or documents starts with.
async fn conversation_in_sight(
    app: &AppState,
    who: &Principal,
    position: &Consistency,
    id: Uuid,
) -> Result<(), Problem> {
    consistent(app, position, who).await?;
    match app
        .reads
        .conversation(&who.scope(), id)
        .await
        .map_err(read_failed)?
    {
        Some(_) => Ok(()),
        None => Err(Problem::not_found()),
    }
}

/// Whether the token's aggregate is one the scope sees (the rule is `access`'s), read
/// from the event store, which has it whether or not the read model does yet.
pub(super) async fn visible(
    app: &AppState,
    scope: &Scope<'_>,
    token: &VersionToken,
) -> Result<bool, StreamError> {
    let first = |kind: AggregateKind, id: Uuid| Stream::new(&app.events, kind, id).first();
    let Some(first_event) = first(token.kind, token.id).await? else {
        return Ok(false);
    };
    let tenant = first_event.tenant();
    // A document goes with its conversation.
    let event = match first_event.event() {
        Ok(Event::DocumentGenerated(d)) => first(AggregateKind::Conversation, d.conversation_id)
            .await?
            .and_then(|e| e.event().ok()),
        Ok(other) => Some(other),
        Err(_) => None,
    };
    let resource = match &event {
        Some(Event::KnowledgeDocumentAdded(_)) => Resource::knowledge(tenant),
        Some(Event::NotificationsRead(r)) => Resource::inbox(tenant, &r.user_id),
        Some(Event::ConversationStarted(c)) => {
            Resource::conversation(tenant, c.started_by.as_deref())
        }
        Some(Event::WebhookEndpointCreated(_)) => Resource::webhook_endpoint(tenant),
        _ => return Ok(false),
    };
    Ok(scope.sees(&resource))
}

pub(super) fn parse_id(raw: &str) -> Result<Uuid, Problem> {
    raw.parse().map_err(|_| Problem::not_found())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListConversations {
    /// `open` or `ended`.
    #[param(pattern = "^(open|ended)$")]
    pub status: Option<String>,
    /// Only conversations active at or after this time (RFC 3339).
    pub active_after: Option<DateTime<Utc>>,
    /// Only conversations last active before this time (RFC 3339).
    pub active_before: Option<DateTime<Utc>>,
    /// 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    #[param(
        pattern = r"^(conversation|document|knowledge|webhook_endpoint|inbox):[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:[0-9]{1,19}$"
    )]
    pub position: Option<String>,
    #[param(minimum = 0)]
    pub wait_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page from `limit + 1` fetched items: the extra one only says there is more, and
    /// the cursor is taken from the last item kept.
    pub(super) fn from_overfetch(
        mut items: Vec<T>,
        limit: i64,
        cursor: impl Fn(&T) -> String,
    ) -> Self {
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(cursor)
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

pub(super) fn limit(raw: Option<i64>) -> Result<i64, Problem> {
    match raw.unwrap_or(20) {
        n @ 1..=100 => Ok(n),
        _ => Err(Problem::bad_request("invalid_limit", "limit must be 1-100")),
    }
}

/// A keyset cursor `<microseconds>.<uuid>` (a time and an id that breaks ties).
/// A page's cursor for lists newest first: the last item's time (microseconds) and id.
pub(super) fn time_cursor(at: DateTime<Utc>, id: impl std::fmt::Display) -> String {
    format!("{}.{id}", at.timestamp_micros())
}

/// The time and the id of a [`time_cursor`], the id still as text.
pub(super) fn split_time_cursor(raw: &str) -> Result<(DateTime<Utc>, &str), Problem> {
    let (micros, id) = raw.split_once('.').ok_or_else(invalid_cursor)?;
    let micros: i64 = micros.parse().map_err(|_| invalid_cursor())?;
    let at = Utc
        .timestamp_micros(micros)
        .single()
        .ok_or_else(invalid_cursor)?;
    let at = checked_time("cursor", Some(at))
        .ok()
        .flatten()
        .ok_or_else(invalid_cursor)?;
    Ok((at, id))
}

/// A [`time_cursor`] whose id is a UUID.
pub(super) fn parse_time_cursor(raw: &str) -> Result<(DateTime<Utc>, Uuid), Problem> {
    let (at, id) = split_time_cursor(raw)?;
    Ok((at, id.parse().map_err(|_| invalid_cursor())?))
}

pub(super) fn invalid_cursor() -> Problem {
    Problem::bad_request("invalid_cursor", "cursor is not one this API returned")
}

#[utoipa::path(get, path = "/v1/conversations", params(ListConversations),
    responses((status = 200, body = Page<ConversationView>), (status = 400), (status = 503)), security(("bearer" = [])))]
pub async fn list_conversations(
    State(app): State<AppState>,
    who: Principal,
    Query(q): Query<ListConversations>,
) -> Result<Json<Page<ConversationView>>, Problem> {
    who.require_any(READERS)?;
    if let Some(s) = &q.status
        && s != "open"
        && s != "ended"
    {
        return Err(Problem::bad_request(
            "invalid_status",
            "status must be open or ended",
        ));
    }
    consistent(
        &app,
        &Consistency {
            position: q.position.clone(),
            wait_ms: q.wait_ms,
        },
        &who,
    )
    .await?;
    let limit = limit(q.limit)?;
    let filter = ConversationFilter {
        status: q.status,
        active_after: checked_time("active_after", q.active_after)?,
        active_before: checked_time("active_before", q.active_before)?,
        after: q.cursor.as_deref().map(parse_time_cursor).transpose()?,
        limit: limit + 1,
    };
    let items = app
        .reads
        .conversations(&who.scope(), &filter)
        .await
        .map_err(read_failed)?;
    Ok(Json(Page::from_overfetch(items, limit, |c| {
        time_cursor(c.last_activity_at, c.conversation_id)
    })))
}

#[utoipa::path(get, path = "/v1/conversations/{id}", params(("id" = Uuid, Path), Consistency),
    responses((status = 200, body = ConversationView), (status = 404), (status = 503)), security(("bearer" = [])))]
pub async fn get_conversation(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(c): Query<Consistency>,
) -> Result<Json<ConversationView>, Problem> {
    who.require_any(READERS)?;
    let id = parse_id(&id)?;
    consistent(&app, &c, &who).await?;
    let found = app
        .reads
        .conversation(&who.scope(), id)
        .await
        .map_err(read_failed)?;
    found.map(Json).ok_or_else(Problem::not_found)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListMessages {
    /// Messages after this conversation version (`next_cursor` of the previous page).
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

#[utoipa::path(get, path = "/v1/conversations/{id}/messages", params(("id" = Uuid, Path), ListMessages),
    responses((status = 200, body = Page<MessageView>), (status = 404), (status = 503)), security(("bearer" = [])))]
pub async fn list_messages(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<ListMessages>,
) -> Result<Json<Page<MessageView>>, Problem> {
    who.require_any(READERS)?;
    let id = parse_id(&id)?;
    let position = Consistency {
        position: q.position.clone(),
        wait_ms: q.wait_ms,
    };
    conversation_in_sight(&app, &who, &position, id).await?;
    let limit = limit(q.limit)?;
    let after: i64 = match q.cursor.as_deref() {
        None => 0,
        Some(c) => c.parse().map_err(|_| {
            Problem::bad_request("invalid_cursor", "cursor is not one this API returned")
        })?,
    };
    let items = app
        .reads
        .messages(&who.scope(), id, after, limit + 1)
        .await
        .map_err(read_failed)?;
    Ok(Json(Page::from_overfetch(items, limit, |m| {
        m.sequence.to_string()
    })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListDocuments {
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

#[utoipa::path(get, path = "/v1/conversations/{id}/documents", params(("id" = Uuid, Path), ListDocuments),
    responses((status = 200, body = Page<DocumentView>), (status = 400), (status = 404), (status = 503)), security(("bearer" = [])))]
pub async fn list_documents(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(q): Query<ListDocuments>,
) -> Result<Json<Page<DocumentView>>, Problem> {
    who.require_any(READERS)?;
    let id = parse_id(&id)?;
    let position = Consistency {
        position: q.position.clone(),
        wait_ms: q.wait_ms,
    };
    conversation_in_sight(&app, &who, &position, id).await?;
    let limit = limit(q.limit)?;
    let after = q.cursor.as_deref().map(parse_time_cursor).transpose()?;
    let items = app
        .reads
        .documents_of(&who.scope(), id, after, limit + 1)
        .await
        .map_err(read_failed)?;
    Ok(Json(Page::from_overfetch(items, limit, |d| {
        time_cursor(d.generated_at, d.document_id)
    })))
}

#[utoipa::path(get, path = "/v1/documents/{id}", params(("id" = Uuid, Path), Consistency),
    responses((status = 200, body = DocumentView), (status = 404), (status = 503)), security(("bearer" = [])))]
pub async fn get_document(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(c): Query<Consistency>,
) -> Result<Json<DocumentView>, Problem> {
    who.require_any(READERS)?;
    let id = parse_id(&id)?;
    consistent(&app, &c, &who).await?;
    let found = app
        .reads
        .document(&who.scope(), id)
        .await
        .map_err(read_failed)?;
    found.map(Json).ok_or_else(Problem::not_found)
}
