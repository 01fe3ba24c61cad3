//! Erasure, for the tenant's admins (docs/DATA-PROTECTION.md, "Erasure"): a person (every
//! conversation they started, with its messages and the documents made from it), one
//! conversation, or the whole tenant. The keys go at once; the projections remove their
//! copies when the `SubjectErased` event reaches them (the answer's `position` waits for
//! that on the query side).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
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
