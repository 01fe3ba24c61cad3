//! Erasure, for the tenant's admins (docs/DATA-PROTECTION.md, "Erasure"): a person (every
//! conversation they started, with its messages and the documents made from it), one
//! conversation, or the whole tenant. The keys go at once; the projections remove their
//! copies when the `SubjectErased` event reaches them (the answer's `position` waits for
//! that on the query side).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::auth::Role as CallerRole;
use platform::problem::Problem;
use schemas::{Event, Subject};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::commands::{
    CommandAccepted, CommandRequest, IdempotencyHeader, accepted_body, respond_with,
};
use super::errors::command_failed;

const ADMINS: &[CallerRole] = &[CallerRole::Admin];

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Erase {
    /// Why (a deletion request's reference, an offboarding ticket): kept in the audit trail.
    #[schema(min_length = 1, max_length = 1000)]
    pub reason: String,
}

/// What an erasure did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Erased {
    /// The `SubjectErased` event's record (`aggregate` is `subject`).
    #[serde(flatten)]
    pub accepted: CommandAccepted,
    /// `user:<sub>`, `conversation:<uuid>` or `tenant`.
    pub subject: String,
    /// Keys this request emptied (0 when everything named was erased before).
    pub keys_erased: i64,
    /// The conversations whose data is erased (none listed for a tenant: all of it).
    pub conversation_ids: Vec<Uuid>,
    /// Snapshots of their aggregates deleted.
    pub snapshots_deleted: u64,
    /// Originals of an erased tenant's knowledge base deleted.
    pub blobs_deleted: u64,
    /// What removes its copies when the event reaches it; `position` waits for each.
    pub projections: Vec<String>,
}

/// The projections that remove what they copied of an erased subject.
const ERASING_PROJECTIONS: [&str; 5] = [
    "read_model",
    "semantic_index",
    "notifications",
    "analytics",
    "webhooks",
];

/// Erases a person (`user:<sub>`) or one conversation (`conversation:<uuid>`): the keys
/// that sealed their data are emptied, so the event store, every Kafka topic's sealed
/// copies and every rebuild read `[erased]`; the projections remove their copies.
/// Idempotent; each request is recorded. Needs data protection (`DATA_MASTER_KEY`).
#[utoipa::path(post, path = "/v1/admin/subjects/{subject}/erase", request_body = Erase,
    params(("subject" = String, Path, description = "user:<sub> or conversation:<uuid>"), IdempotencyHeader),
    responses((status = 200, body = Erased), (status = 400, description = "Not a subject"), (status = 403), (status = 409, description = "Data protection is off"), (status = 422)),
    security(("bearer" = [])))]
pub async fn erase_subject(
    State(app): State<AppState>,
    Path(subject): Path<String>,
    req: CommandRequest<Erase>,
) -> Result<Response, Problem> {
    let subject = match Subject::parse(&subject) {
        Ok(Subject::Tenant) => {
            return Err(Problem::bad_request(
                "invalid_subject",
                "a tenant is erased with POST /v1/admin/tenant/erase",
            ));
        }
        Ok(subject) => subject,
        Err(e) => return Err(Problem::bad_request("invalid_subject", e.to_string())),
    };
    erase(app, subject, req).await
}

/// Erases the whole tenant (offboarding): its key and every key under it, so nothing of
/// its personal data or knowledge reads in clear again; the projections blank or remove
/// their copies. Counts without personal data (analytics) stay. Idempotent.
#[utoipa::path(post, path = "/v1/admin/tenant/erase", request_body = Erase,
    params(IdempotencyHeader),
    responses((status = 200, body = Erased), (status = 403), (status = 409, description = "Data protection is off"), (status = 422)),
    security(("bearer" = [])))]
pub async fn erase_tenant(
    State(app): State<AppState>,
    req: CommandRequest<Erase>,
) -> Result<Response, Problem> {
    erase(app, Subject::Tenant, req).await
}

async fn erase(
    app: AppState,
    subject: Subject,
    req: CommandRequest<Erase>,
) -> Result<Response, Problem> {
    req.who.require_any(ADMINS)?;
    let done = app
        .service
        .erase(subject.clone(), req.body.reason, &req.meta)
        .await
        .map_err(command_failed)?;
    let erased = done.accepted.events.iter().find_map(|e| match e {
        Event::SubjectErased(x) => Some(x),
        _ => None,
    });
    let body = Erased {
        accepted: accepted_body(&done.accepted),
        subject: subject.to_string(),
        keys_erased: erased.map_or(0, |x| x.keys_erased),
        conversation_ids: erased.map(|x| x.conversations()).unwrap_or_default(),
        snapshots_deleted: done.snapshots_deleted,
        blobs_deleted: done.blobs_deleted,
        projections: ERASING_PROJECTIONS.map(str::to_owned).to_vec(),
    };
    Ok(respond_with(&done.accepted, StatusCode::OK, body))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Conversations ended more than this many days ago are erased (1 to 36,500); null
    /// keeps them for ever.
    #[schema(minimum = 1, maximum = 36500)]
    pub conversations_ended_days: Option<u32>,
}

/// The tenant's retention policy and what applying it has done so far.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RetentionView {
    /// Null: conversations are kept for ever.
    pub conversations_ended_days: Option<u32>,
    pub set_by: Option<String>,
    pub set_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When command-api last applied it (every `RETENTION_APPLY_SECS`).
    pub last_applied_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Conversations it has erased, each a `SubjectErased` event by `retention`.
    pub erased_total: i64,
}

impl From<Option<::commands::retention::Policy>> for RetentionView {
    fn from(p: Option<::commands::retention::Policy>) -> Self {
        match p {
            None => RetentionView {
                conversations_ended_days: None,
                set_by: None,
                set_at: None,
                last_applied_at: None,
                erased_total: 0,
            },
            Some(p) => RetentionView {
                conversations_ended_days: Some(p.conversations_ended_days),
                set_by: Some(p.set_by),
                set_at: Some(p.set_at),
                last_applied_at: p.last_applied_at,
                erased_total: p.erased_total,
            },
        }
    }
}

/// Sets the tenant's retention policy: command-api erases, every
/// `RETENTION_APPLY_SECS`, each conversation that ended more than the given days ago (a
/// `SubjectErased` event each, by `retention`). Needs data protection.
#[utoipa::path(put, path = "/v1/admin/retention", request_body = Retention,
    responses((status = 200, body = RetentionView), (status = 403), (status = 409, description = "Data protection is off"), (status = 422)),
    security(("bearer" = [])))]
pub async fn set_retention(
    State(app): State<AppState>,
    req: CommandRequest<Retention>,
) -> Result<Response, Problem> {
    req.who.require_any(ADMINS)?;
    let policy = app
        .service
        .set_retention(req.body.conversations_ended_days, &req.meta)
        .await
        .map_err(command_failed)?;
    Ok(axum::Json(RetentionView::from(policy)).into_response())
}

/// The tenant's retention policy, and what applying it has done.
#[utoipa::path(get, path = "/v1/admin/retention",
    responses((status = 200, body = RetentionView), (status = 403)),
    security(("bearer" = [])))]
pub async fn get_retention(
    State(app): State<AppState>,
    who: platform::auth::Principal,
) -> Result<Response, Problem> {
    who.require_any(ADMINS)?;
    let policy = ::commands::retention::policy(app.service.reader(), &who.tenant_id)
        .await
        .map_err(command_failed)?;
    Ok(axum::Json(RetentionView::from(policy)).into_response())
}
