//! Command handlers: authenticate, parse, authorise, execute, answer.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use platform::auth::{Principal, Role as CallerRole};
use platform::problem::{Json, Problem};
use schemas::{DocumentKind, Event, Role};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use ::commands::{Accepted, Idempotency, NewMessage, RequestMeta};
use schemas::Version;

use super::errors::command_failed;
use super::{AppState, RequestContext};

const WRITERS: &[CallerRole] = &[CallerRole::Member, CallerRole::Admin, CallerRole::Service];
const ASSISTANT_WRITERS: &[CallerRole] = &[CallerRole::Admin, CallerRole::Service];

/// Author of a message (documents `schemas::Role`).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum MessageRole {
    User,
    Assistant,
    System,
}

/// Kind of document (documents `schemas::DocumentKind`).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum Kind {
    RequirementsSpec,
    Summary,
    MeetingNotes,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartConversation {
    /// Printable text, no control characters.
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
    /// Free-form labels: at most 32, keys 1-64 characters, values up to 1,024.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Whether the assistant answers the users' messages (default true).
    #[serde(default = "on")]
    pub assistant: bool,
}

fn on() -> bool {
    true
}

/// Ask the assistant to answer again a user message whose reply failed: `{}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestReply {}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// Assistant and system messages need the `service` or `admin` role.
    #[schema(value_type = MessageRole)]
    pub role: Role,
    /// Not blank; line breaks and tabs are the only control characters allowed.
    #[schema(min_length = 1, max_length = 32768)]
    pub content: String,
    #[schema(max_length = 200)]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "platform::whole_number::option")]
    #[schema(minimum = 0)]
    pub prompt_tokens: Option<i32>,
    #[serde(default, deserialize_with = "platform::whole_number::option")]
    #[schema(minimum = 0)]
    pub completion_tokens: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameConversation {
    /// A title other than the current one.
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndConversation {
    #[schema(max_length = 1000)]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateDocument {
    #[schema(value_type = Kind)]
    pub kind: DocumentKind,
    /// Overrides the generated title.
    #[schema(max_length = 200)]
    pub title: Option<String>,
    /// `template` (default): written at once from the messages, 201. `llm`: asked of the
    /// LLM `document` route, 202 with the document `requested`; it becomes `generated`
    /// or `failed` (see the query API).
    #[serde(default)]
    pub generator: Option<GeneratorChoice>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GeneratorChoice {
    #[default]
    Template,
    Llm,
}

/// The answer to an accepted command.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandAccepted {
    /// `conversation`, `document`, `knowledge` or `webhook_endpoint`.
    pub aggregate: String,
    pub id: Uuid,
    /// The aggregate's version after the command; send it back in `If-Match`.
    pub version: u64,
    /// Pass to the query API (`?position=`) to read your own write.
    pub position: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<Uuid>,
    /// True when this is the stored answer to an earlier request with the same Idempotency-Key.
    pub replayed: bool,
}

pub(super) fn respond(a: Accepted, status: StatusCode) -> Response {
    respond_with(&a, status, accepted_body(&a))
}

/// `body` (the accepted command, possibly with more) with the version's `ETag` and the
/// replay marker.
pub(super) fn respond_with(a: &Accepted, status: StatusCode, body: impl Serialize) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", a.version)) {
        headers.insert(header::ETAG, v);
    }
    if a.replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

pub(super) fn accepted_body(a: &Accepted) -> CommandAccepted {
    let mut message_id = None;
    let mut conversation_id = None;
    for e in &a.events {
        match e {
            Event::MessageSent(m) => message_id = Some(m.message_id),
            Event::DocumentGenerated(d) => conversation_id = Some(d.conversation_id),
            _ => {}
        }
    }
    CommandAccepted {
        aggregate: a.kind.to_string(),
        id: a.aggregate_id,
        version: a.version.0,
        position: a.token().to_string(),
        message_id,
        conversation_id,
        replayed: a.replayed,
    }
}

/// The `Idempotency-Key` header every command takes, as the documents state it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // read from the headers by `idempotency`; here for the documents
pub struct IdempotencyHeader {
    /// Replays the first answer for the same request (1-255 visible ASCII characters).
    #[param(rename = "Idempotency-Key", value_type = String, required = false, pattern = r"^[!-~]{1,255}$")]
    idempotency_key: Option<String>,
}

/// The headers of a command on an existing aggregate: the version it expects and the
/// `Idempotency-Key`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // read from the headers by `expected_version` and `idempotency`
pub struct WriteHeaders {
    /// The aggregate version the command expects (`"3"`, `3`, or `*` for any): a
    /// different current version is 412.
    #[param(rename = "If-Match", value_type = String, required = false, pattern = r#"^(\*|"?[0-9]{1,19}"?)$"#)]
    if_match: Option<String>,
    /// Replays the first answer for the same request (1-255 visible ASCII characters).
    #[param(rename = "Idempotency-Key", value_type = String, required = false, pattern = r"^[!-~]{1,255}$")]
    idempotency_key: Option<String>,
}

/// `If-Match: "3"` (or `3`); `*` or absent: no expectation.
pub(super) fn expected_version(headers: &HeaderMap) -> Result<Option<Version>, Problem> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = raw.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_matches('"')
        .parse::<u64>()
        .map(|v| Some(Version(v)))
        .map_err(|_| {
            Problem::bad_request(
                "invalid_if_match",
                "If-Match must be a version number, e.g. \"3\"",
            )
        })
}

fn idempotency(
    headers: &HeaderMap,
    method_and_target: &str,
    body: &impl Serialize,
) -> Result<Option<Idempotency>, Problem> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            Problem::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1-255 visible ASCII characters",
            )
        })?;
    Ok(Some(Idempotency::new(
        key.to_owned(),
        method_and_target,
        body,
    )))
}

/// Everything a command handler needs besides its path: the caller (authenticated, with
/// a writing role), the request metadata stored on the events, the `If-Match` version,
/// and the JSON body. Rejections are problems, in this order: 401, 403, 400, 4xx body.
pub struct CommandRequest<T> {
    pub who: Principal,
    pub meta: RequestMeta,
    pub expected: Option<Version>,
    pub body: T,
}

impl<T: DeserializeOwned + Serialize + Send> FromRequest<AppState> for CommandRequest<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let caller = Caller::from_request_parts(&mut parts, state).await?;
        caller.who.require_any(WRITERS)?;
        let expected = expected_version(&parts.headers)?;
        let Json(body) = Json::<T>::from_request(Request::from_parts(parts, body), state).await?;
        let meta = caller.meta(&body)?;
        Ok(CommandRequest {
            who: caller.who,
            meta,
            expected,
            body,
        })
    }
}

/// The caller of a command and what its events will carry: authenticated (401 first),
/// with the request's correlation, trace context and idempotency key.
pub struct Caller {
    pub who: Principal,
    ctx: RequestContext,
    /// `METHOD /full/path`: part of the idempotency hash.
    target: String,
    headers: HeaderMap,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let who = Principal::from_request_parts(parts, state).await?;
        let Ok(ctx) = RequestContext::from_request_parts(parts, state).await;
        // The full path (inside `nest`, `uri` lacks the prefix).
        let path = parts
            .extensions
            .get::<OriginalUri>()
            .map_or_else(|| parts.uri.path().to_owned(), |u| u.path().to_owned());
        Ok(Caller {
            who,
            ctx,
            target: format!("{} {path}", parts.method),
            headers: parts.headers.clone(),
        })
    }
}

impl Caller {
    /// The metadata of the command's events; `request` is what the idempotency key's
    /// request hash covers besides the method and path.
    pub fn meta(&self, request: &impl Serialize) -> Result<RequestMeta, Problem> {
        Ok(RequestMeta {
            tenant_id: self.who.tenant_id.clone(),
            user_id: self.who.subject.clone(),
            reach: self.who.reach(),
            correlation_id: self.ctx.correlation_id.clone(),
            causation_id: self.ctx.causation_id.clone(),
            traceparent: Some(self.ctx.traceparent.clone()),
            tracestate: self.ctx.tracestate.clone(),
            idempotency: idempotency(&self.headers, &self.target, request)?,
        })
    }
}

/// An id that is not a UUID names nothing.
pub(super) fn parse_id(raw: &str) -> Result<Uuid, Problem> {
    raw.parse().map_err(|_| Problem::not_found())
}

#[utoipa::path(post, path = "/v1/conversations", request_body = StartConversation,
    params(IdempotencyHeader),
    responses((status = 201, body = CommandAccepted), (status = 401), (status = 403), (status = 422)),
    security(("bearer" = [])))]
pub async fn start_conversation(
    State(app): State<AppState>,
    req: CommandRequest<StartConversation>,
) -> Result<Response, Problem> {
    let accepted = app
        .service
        .start_conversation(
            req.body.title,
            commands::ConversationOptions {
                metadata: req.body.metadata,
                assistant: req.body.assistant,
            },
            &req.meta,
        )
        .await
        .map_err(command_failed)?;
    Ok(respond(accepted, StatusCode::CREATED))
}

#[utoipa::path(post, path = "/v1/conversations/{id}/messages", request_body = SendMessage,
    params(("id" = Uuid, Path), WriteHeaders),
    responses((status = 201, body = CommandAccepted), (status = 404), (status = 409), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn send_message(
    State(app): State<AppState>,
    Path(id): Path<String>,
    req: CommandRequest<SendMessage>,
) -> Result<Response, Problem> {
    let CommandRequest {
        who,
        meta,
        expected,
        body,
    } = req;
    if body.role != Role::User {
        who.require_any(ASSISTANT_WRITERS)?;
    }
    let id = parse_id(&id)?;
    let message = NewMessage {
        model: body.model,
        prompt_tokens: body.prompt_tokens,
        completion_tokens: body.completion_tokens,
        ..NewMessage::new(body.role, body.content)
    };
    let accepted = app
        .service
        .send_message(id, message, expected, &meta)
        .await
        .map_err(command_failed)?;
    Ok(respond(accepted, StatusCode::CREATED))
}

#[utoipa::path(post, path = "/v1/conversations/{id}/rename", request_body = RenameConversation,
    params(("id" = Uuid, Path), WriteHeaders),
    responses((status = 200, body = CommandAccepted), (status = 404), (status = 409), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn rename_conversation(
    State(app): State<AppState>,
    Path(id): Path<String>,
    req: CommandRequest<RenameConversation>,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let accepted = app
        .service
        .rename_conversation(id, req.body.title, req.expected, &req.meta)
        .await
        .map_err(command_failed)?;
    Ok(respond(accepted, StatusCode::OK))
}

#[utoipa::path(post, path = "/v1/conversations/{id}/end", request_body = EndConversation,
    params(("id" = Uuid, Path), WriteHeaders),
    responses((status = 200, body = CommandAccepted), (status = 404), (status = 409), (status = 412)),
    security(("bearer" = [])))]
pub async fn end_conversation(
    State(app): State<AppState>,
    Path(id): Path<String>,
    req: CommandRequest<EndConversation>,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let accepted = app
        .service
        .end_conversation(id, req.body.reason, req.expected, &req.meta)
        .await
        .map_err(command_failed)?;
    Ok(respond(accepted, StatusCode::OK))
}

/// The assistant's reply to a user message failed (`reply_status` `failed` in the
/// query API): try again. 409 `reply_not_failed` while a reply is pending, 409
/// `no_reply_awaited` once it came (or for a message that never awaited one).
#[utoipa::path(post, path = "/v1/conversations/{id}/messages/{message_id}/reply", request_body = RequestReply,
    params(("id" = Uuid, Path), ("message_id" = Uuid, Path), WriteHeaders),
    responses((status = 202, body = CommandAccepted), (status = 404), (status = 409), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn request_reply(
    State(app): State<AppState>,
    Path((id, message_id)): Path<(String, String)>,
    req: CommandRequest<RequestReply>,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let message_id = parse_id(&message_id)?;
    let accepted = app
        .service
        .request_reply(id, message_id, req.expected, &req.meta)
        .await
        .map_err(command_failed)?;
    Ok(respond(accepted, StatusCode::ACCEPTED))
}

#[utoipa::path(post, path = "/v1/conversations/{id}/documents", request_body = GenerateDocument,
    params(("id" = Uuid, Path), IdempotencyHeader),
    responses((status = 201, body = CommandAccepted), (status = 202, body = CommandAccepted), (status = 404), (status = 409), (status = 502)),
    security(("bearer" = [])))]
pub async fn generate_document(
    State(app): State<AppState>,
    Path(id): Path<String>,
    req: CommandRequest<GenerateDocument>,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let body = req.body;
    if body.generator.unwrap_or_default() == GeneratorChoice::Llm {
        let accepted = app
            .service
            .request_document(id, body.kind, body.title, &req.meta)
            .await
            .map_err(command_failed)?;
        return Ok(respond(accepted, StatusCode::ACCEPTED));
    }
    let accepted = app
        .service
        .generate_document(id, body.kind, body.title, &req.meta)
        .await
        .map_err(command_failed)?;
    Ok(respond(accepted, StatusCode::CREATED))
}

/// The outbox relay of this process: active or standing by, cursor, lag.
#[utoipa::path(get, path = "/v1/admin/relay",
    responses((status = 200, description = "Relay status"), (status = 403), (status = 404, description = "No relay in this process")),
    security(("bearer" = [])))]
pub async fn relay_status(
    State(app): State<AppState>,
    who: Principal,
) -> Result<Response, Problem> {
    who.require_any(&[CallerRole::Admin])?;
    let status = app
        .relay
        .as_ref()
        .map(|r| r.borrow().clone())
        .ok_or_else(|| Problem::not_found().detail("this process runs no relay"))?;
    Ok(axum::Json(status).into_response())
}

/// Asks the active relay to publish its parked events again, each aggregate's in order
/// (after the cause is fixed, e.g. `KAFKA_MESSAGE_MAX_BYTES` raised on the broker and the
/// relay). Accepted here; carried out by whichever replica holds the relay lock.
#[utoipa::path(post, path = "/v1/admin/relay/redrive",
    responses((status = 202, description = "Re-drive requested"), (status = 403), (status = 404, description = "The relay has never run")),
    security(("bearer" = [])))]
pub async fn relay_redrive(
    State(app): State<AppState>,
    who: Principal,
) -> Result<Response, Problem> {
    who.require_any(&[CallerRole::Admin])?;
    let requested = event_store::outbox::request_redrive(app.service.pool(), &app.relay_name)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "recording a re-drive request failed");
            Problem::unavailable("the database did not take the request; retry").retry_after(1)
        })?;
    if !requested {
        return Err(Problem::not_found().detail("no relay of this name has run yet"));
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "redrive requested", "relay": app.relay_name})),
    )
        .into_response())
}

/// Asks the running projector of a projection (`read_model`, `semantic`, …; its
/// `/status` names it) to re-drive its parked events, each aggregate's in order, once
/// their cause is fixed. Accepted here; carried out by the projector within a second or
/// so (its `/status` shows `parked_now` fall).
#[utoipa::path(post, path = "/v1/admin/projections/{name}/redrive",
    params(("name" = String, Path, description = "The projection")),
    responses((status = 202, description = "Re-drive requested"), (status = 403), (status = 404, description = "No projection of this name has run")),
    security(("bearer" = [])))]
pub async fn projection_redrive(
    State(app): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    who.require_any(&[CallerRole::Admin])?;
    let requested = match projection::request_redrive(app.service.pool(), &name).await {
        Ok(requested) => requested,
        Err(e) => {
            tracing::error!(error = %e, "recording a re-drive request failed");
            return Err(
                Problem::unavailable("the database did not take the request; retry").retry_after(1),
            );
        }
    };
    if !requested {
        return Err(Problem::not_found().detail("no projection of this name has run"));
    }
    tracing::info!(projection = %name, by = %who.subject, "projection re-drive requested");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "redrive requested", "projection": name})),
    )
        .into_response())
}
