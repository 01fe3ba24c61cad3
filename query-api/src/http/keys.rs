//! Subject keys for authorised consumers of the Kafka topics (docs/DATA-PROTECTION.md,
//! "Kafka"): a record whose `sealed` field is set opens with the key it names. Service
//! tokens only; every key handed out is logged (tenant, subject, generation, caller). An
//! erased key cannot be had: what it sealed is unreadable for good. The same holders
//! resolve the pseudonyms records name people by (the `user_id` header, a few payload
//! fields) while the person is not erased.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use platform::auth::{Principal, Role};
use platform::problem::Problem;
use schemas::Subject;
use schemas::personal::Pseudonym;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

const HOLDERS: &[Role] = &[Role::Service];

/// A subject key, and how what it sealed opens.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectKeyView {
    /// `conversation:<uuid>` or `tenant`, as the record's `sealed.key` names it.
    pub subject: String,
    pub generation: i32,
    /// Base64 of the 32-byte key.
    pub key: String,
    /// `ChaCha20-Poly1305`: the box is a 12-byte nonce, the ciphertext, a 16-byte tag.
    pub algorithm: &'static str,
    /// What the box is bound to: the record's `aggregate_type`, key, `sequence` and
    /// `event_type` headers joined by NUL bytes.
    pub associated_data: &'static str,
}

/// A subject key of the caller's tenant, for a service opening Kafka records.
#[utoipa::path(get, path = "/v1/keys/{subject}/{generation}",
    params(("subject" = String, Path, description = "conversation:<uuid> or tenant"), ("generation" = i32, Path)),
    responses((status = 200, body = SubjectKeyView), (status = 400, description = "Not a subject"), (status = 403), (status = 404, description = "No such key, or erased"), (status = 409, description = "Data protection is off")),
    security(("bearer" = [])))]
pub async fn subject_key(
    State(app): State<AppState>,
    who: Principal,
    Path((subject, generation)): Path<(String, i32)>,
) -> Result<Json<SubjectKeyView>, Problem> {
    who.require_any(HOLDERS)?;
    let subject = Subject::parse(&subject)
        .map_err(|e| Problem::bad_request("invalid_subject", e.to_string()))?;
    let protector = app.events.protector().ok_or_else(protection_off)?;
    let key = protector
        .keys()
        .for_reading(&who.tenant_id, &subject, generation)
        .await
        .map_err(keys_unavailable)?
        .ok_or_else(|| Problem::not_found().detail("no such key, or it was erased"))?;
    tracing::info!(
        tenant_id = %who.tenant_id,
        %subject,
        generation,
        caller = %who.subject,
        "subject key handed out"
    );
    Ok(Json(SubjectKeyView {
        subject: subject.to_string(),
        generation,
        key: STANDARD.encode(key.expose()),
        algorithm: "ChaCha20-Poly1305",
        associated_data: "aggregate_type NUL aggregate_id NUL sequence NUL event_type",
    }))
}

fn protection_off() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "data_protection_off",
        "Data protection is off",
    )
    .detail("nothing is sealed without DATA_MASTER_KEY")
}

fn keys_unavailable(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "the keys do not read");
    Problem::unavailable("the keys cannot be read; retry").retry_after(1)
}

/// A pseudonym and the person it names.
#[derive(Debug, Serialize, ToSchema)]
pub struct PseudonymView {
    /// `pseudonym:<uuid>`, as a record's `user_id` header or payload names someone.
    pub pseudonym: String,
    /// The person's id (their tokens' `sub`), or a service's name.
    pub actor: String,
}

/// Who a pseudonym of the caller's tenant names, for a service reading Kafka records.
#[utoipa::path(get, path = "/v1/pseudonyms/{pseudonym}",
    params(("pseudonym" = String, Path, description = "pseudonym:<uuid>")),
    responses((status = 200, body = PseudonymView), (status = 400, description = "Not a pseudonym"), (status = 403), (status = 404, description = "Names nobody: erased"), (status = 409, description = "Data protection is off")),
    security(("bearer" = [])))]
pub async fn pseudonym(
    State(app): State<AppState>,
    who: Principal,
    Path(pseudonym): Path<String>,
) -> Result<Json<PseudonymView>, Problem> {
    who.require_any(HOLDERS)?;
    let parsed = Pseudonym::parse(&pseudonym).ok_or_else(|| {
        Problem::bad_request("invalid_pseudonym", "a pseudonym is pseudonym:<uuid>")
    })?;
    let protector = app.events.protector().ok_or_else(protection_off)?;
    let actor = protector
        .keys()
        .actor(&who.tenant_id, parsed)
        .await
        .map_err(keys_unavailable)?
        .ok_or_else(|| Problem::not_found().detail("it names nobody: the person was erased"))?;
    tracing::info!(
        tenant_id = %who.tenant_id,
        pseudonym = %parsed,
        caller = %who.subject,
        "pseudonym resolved"
    );
    Ok(Json(PseudonymView { pseudonym, actor }))
}
