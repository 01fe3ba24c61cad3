//! Webhook endpoints, for the tenant's admins: subscribe an HTTPS endpoint to event
//! types, change or disable it, rotate its signing secret, ask for messages to be sent
//! again. The secret is in the answer to a create or a rotation, and nowhere else.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use platform::auth::Role as CallerRole;
use platform::problem::Problem;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use ::commands::{Accepted, CommandService, EndpointChanges, NewEndpoint};
use domain::WebhookCommand;

use super::AppState;
use super::commands::{
    Caller, CommandAccepted, CommandRequest, IdempotencyHeader, WriteHeaders, accepted_body,
    expected_version, parse_id, respond, respond_with,
};
use super::errors::command_failed;

const ADMINS: &[CallerRole] = &[CallerRole::Admin];

/// The default time a rotated-out secret keeps signing: a day.
const DEFAULT_GRACE_SECONDS: i64 = 86_400;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// `https://` (plain http only where the server allows it); its host must not resolve
    /// to a loopback, private, link-local or otherwise internal address.
    #[schema(max_length = 2048)]
    pub url: String,
    /// Webhook types such as `message.sent` and `document.generated`, or `*` for all.
    #[schema(schema_with = event_types)]
    pub event_types: Vec<String>,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

/// `event_types` as the documents state it: one or more known webhook types, or `*`.
fn event_types() -> utoipa::openapi::schema::Array {
    event_types_array(utoipa::openapi::schema::Type::Array.into())
}

fn event_types_or_null() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{SchemaType, Type};
    event_types_array(SchemaType::from_iter([Type::Array, Type::Null]))
}

fn event_types_array(
    schema_type: utoipa::openapi::schema::SchemaType,
) -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let mut names: Vec<&str> = std::iter::once(domain::webhook::ALL_TYPES)
        .chain(schemas::EventType::webhook_types())
        .collect();
    names.sort_unstable();
    names.dedup();
    ArrayBuilder::new()
        .schema_type(schema_type)
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names)),
        )
        .min_items(Some(1))
        .build()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    #[schema(schema_with = event_types_or_null)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the current secret keeps signing beside the new one (default 86400,
    /// at most 604800).
    #[serde(default, deserialize_with = "platform::whole_number::option")]
    #[schema(minimum = 0, maximum = 604_800)]
    pub grace_seconds: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableEndpoint {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnableEndpoint {}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redeliver {
    /// One message (its `webhook-id`) to send again, whatever became of it.
    #[serde(default)]
    pub message_id: Option<String>,
    /// Or the dead messages created from here...
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// ...until here (default: now).
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

/// An accepted create or rotation, with the signing secret: shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EndpointSecret {
    #[serde(flatten)]
    pub accepted: CommandAccepted,
    /// `whsec_…`: verify the `webhook-signature` header with it (Standard Webhooks).
    pub secret: String,
}

fn with_secret(
    service: &CommandService,
    a: Accepted,
    status: StatusCode,
) -> Result<Response, Problem> {
    let secret = service
        .revealed_secret(&a)
        .map_err(command_failed)?
        .ok_or_else(Problem::internal)?;
    let body = EndpointSecret {
        accepted: accepted_body(&a),
        secret: secret.expose(),
    };
    let mut response = respond_with(&a, status, body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Subscribes an endpoint to the tenant's events. The answer carries its signing secret,
/// once.
#[utoipa::path(post, path = "/v1/webhooks/endpoints", request_body = CreateEndpoint,
    params(IdempotencyHeader),
    responses((status = 201, body = EndpointSecret), (status = 403), (status = 422), (status = 503)),
    security(("bearer" = [])))]
pub async fn create_endpoint(
    State(app): State<AppState>,
    req: CommandRequest<CreateEndpoint>,
) -> Result<Response, Problem> {
    req.who.require_any(ADMINS)?;
    let endpoint = NewEndpoint {
        url: req.body.url,
        event_types: req.body.event_types,
        description: req.body.description,
    };
    let accepted = app
        .service
        .create_webhook_endpoint(endpoint, &req.meta)
        .await
        .map_err(command_failed)?;
    with_secret(&app.service, accepted, StatusCode::CREATED)
}

/// Changes an endpoint's URL, event types or description; what is not given stays.
#[utoipa::path(patch, path = "/v1/webhooks/endpoints/{id}", request_body = UpdateEndpoint,
    params(("id" = uuid::Uuid, Path), WriteHeaders),
    responses((status = 200, body = CommandAccepted), (status = 403), (status = 404), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn update_endpoint(
    State(app): State<AppState>,
    Path(id): Path<String>,
    req: CommandRequest<UpdateEndpoint>,
) -> Result<Response, Problem> {
    req.who.require_any(ADMINS)?;
    let id = parse_id(&id)?;
    let changes = EndpointChanges {
        url: req.body.url,
        event_types: req.body.event_types,
        description: req.body.description,
    };
    let accepted = app
        .service
        .update_webhook_endpoint(id, changes, req.expected, &req.meta)
        .await
        .map_err(command_failed)?;
    Ok(respond(accepted, StatusCode::OK))
}

/// A new signing secret, in the answer, once. The current one keeps signing beside it
/// for `grace_seconds`, so receivers can switch without losing a message.
#[utoipa::path(post, path = "/v1/webhooks/endpoints/{id}/rotate-secret", request_body = RotateSecret,
    params(("id" = uuid::Uuid, Path), WriteHeaders),
    responses((status = 200, body = EndpointSecret), (status = 403), (status = 404), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    State(app): State<AppState>,
    Path(id): Path<String>,
    req: CommandRequest<RotateSecret>,
) -> Result<Response, Problem> {
    req.who.require_any(ADMINS)?;
    let id = parse_id(&id)?;
    let grace =
        chrono::Duration::try_seconds(req.body.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS))
            .unwrap_or(chrono::Duration::MAX);
    let accepted = app
        .service
        .rotate_webhook_secret(id, grace, req.expected, &req.meta)
        .await
        .map_err(command_failed)?;
    with_secret(&app.service, accepted, StatusCode::OK)
}

async fn endpoint_command(
    app: &AppState,
    id: &str,
    body: WebhookCommand,
    expected: Option<schemas::Version>,
    meta: &::commands::RequestMeta,
    status: StatusCode,
) -> Result<Response, Problem> {
    let id = parse_id(id)?;
    let accepted = app
        .service
        .webhook_endpoint(id, body, expected, meta)
        .await
        .map_err(command_failed)?;
    Ok(respond(accepted, status))
}

/// Stops deliveries to the endpoint; its messages wait until it is enabled.
#[utoipa::path(post, path = "/v1/webhooks/endpoints/{id}/disable", request_body = DisableEndpoint,
    params(("id" = uuid::Uuid, Path), WriteHeaders),
    responses((status = 200, body = CommandAccepted), (status = 403), (status = 404), (status = 409), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn disable_endpoint(
    State(app): State<AppState>,
    Path(id): Path<String>,
    req: CommandRequest<DisableEndpoint>,
) -> Result<Response, Problem> {
    req.who.require_any(ADMINS)?;
    let reason = req
        .body
        .reason
        .unwrap_or_else(|| "disabled by an admin".to_owned());
    let body = WebhookCommand::Disable {
        automatic: false,
        reason,
    };
    endpoint_command(&app, &id, body, req.expected, &req.meta, StatusCode::OK).await
}

/// Resumes deliveries: the messages that waited are sent.
#[utoipa::path(post, path = "/v1/webhooks/endpoints/{id}/enable", request_body = EnableEndpoint,
    params(("id" = uuid::Uuid, Path), WriteHeaders),
    responses((status = 200, body = CommandAccepted), (status = 403), (status = 404), (status = 409), (status = 412), (status = 422)),
    security(("bearer" = [])))]
pub async fn enable_endpoint(
    State(app): State<AppState>,
    Path(id): Path<String>,
    req: CommandRequest<EnableEndpoint>,
) -> Result<Response, Problem> {
    req.who.require_any(ADMINS)?;
    endpoint_command(
        &app,
        &id,
        WebhookCommand::Enable,
        req.expected,
        &req.meta,
        StatusCode::OK,
    )
    .await
}

/// Deletes the endpoint: nothing more is sent to it. Its history stays for audit.
#[utoipa::path(delete, path = "/v1/webhooks/endpoints/{id}",
    params(("id" = uuid::Uuid, Path), WriteHeaders),
    responses((status = 200, body = CommandAccepted), (status = 403), (status = 404), (status = 412),
        (status = 422, description = "idempotency_key_reused")),
    security(("bearer" = [])))]
pub async fn delete_endpoint(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, Problem> {
    caller.who.require_any(ADMINS)?;
    let expected = expected_version(&headers)?;
    let meta = caller.meta(&serde_json::Value::Null)?;
    endpoint_command(
        &app,
        &id,
        WebhookCommand::Delete,
        expected,
        &meta,
        StatusCode::OK,
    )
    .await
}

/// Sends again one message (whatever became of it), or the dead messages created in a
/// time range. The attempts start again from the beginning of the schedule.
#[utoipa::path(post, path = "/v1/webhooks/endpoints/{id}/redeliver", request_body = Redeliver,
    params(("id" = uuid::Uuid, Path), IdempotencyHeader),
    responses((status = 202, body = CommandAccepted), (status = 403), (status = 404), (status = 422)),
    security(("bearer" = [])))]
pub async fn redeliver(
    State(app): State<AppState>,
    Path(id): Path<String>,
    req: CommandRequest<Redeliver>,
) -> Result<Response, Problem> {
    req.who.require_any(ADMINS)?;
    let body = WebhookCommand::Redeliver {
        message_id: req.body.message_id,
        since: req.body.since,
        until: req.body.until,
    };
    endpoint_command(
        &app,
        &id,
        body,
        req.expected,
        &req.meta,
        StatusCode::ACCEPTED,
    )
    .await
}
