//! The knowledge base: files an admin adds for the assistant to answer from, and removes.
//! The file is the raw request body, its media type the `Content-Type`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use platform::auth::Role as CallerRole;
use platform::problem::{Problem, Query, RawBody};
use serde::Deserialize;
use utoipa::IntoParams;

use ::commands::Upload;

use super::AppState;
use super::commands::{
    Caller, IdempotencyHeader, WriteHeaders, expected_version, parse_id, respond,
};
use super::errors::command_failed;

/// A file's bytes, as the documents state a request body that is the file itself.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // the handler reads the body as bytes; this type is for the documents
pub struct FileBytes(Vec<u8>);

const CURATORS: &[CallerRole] = &[CallerRole::Admin];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AddKnowledge {
    /// Printable text, no control characters.
    #[param(min_length = 1, max_length = 200)]
    pub title: String,
}

/// Adds a text, Markdown or PDF file to the tenant's knowledge base. Its text is
/// extracted (a PDF by a separate process under memory and time limits) and carried by
/// the `KnowledgeDocumentAdded` event; the original is kept by its SHA-256. Refused, with
/// nothing stored: a media type not taken (415), a file over the limit (413), an empty
/// file, one that is not what its `Content-Type` says, a malformed PDF
/// (`file_unreadable`), one that needs more memory or time than allowed
/// (`file_too_complex`), or a PDF without text (422); 503 `extraction_unavailable` when
/// the server cannot run its extractor.
#[utoipa::path(post, path = "/v1/knowledge", params(AddKnowledge,
        ("Content-Type" = String, Header, description = "text/plain, text/markdown (UTF-8) or application/pdf"),
        IdempotencyHeader),
    request_body(description = "The file", content(
        (FileBytes = "text/plain"), (FileBytes = "text/markdown"), (FileBytes = "application/pdf"))),
    responses((status = 201, body = super::commands::CommandAccepted), (status = 403), (status = 415),
        (status = 422, description = "file_empty, media_type_mismatch, file_unreadable, file_too_complex, pdf_without_text"),
        (status = 503, description = "extraction_unavailable")),
    security(("bearer" = [])))]
pub async fn add_knowledge(
    State(app): State<AppState>,
    caller: Caller,
    Query(query): Query<AddKnowledge>,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Result<Response, Problem> {
    caller.who.require_any(CURATORS)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let meta = caller.meta(&serde_json::json!({
        "title": query.title,
        "content_type": content_type,
        "sha256": event_store::blobs::sha256_hex(&bytes),
    }))?;
    let upload = Upload {
        title: query.title,
        content_type,
        bytes: Arc::from(bytes.as_ref()),
    };
    let accepted = app
        .service
        .add_knowledge(upload, &meta)
        .await
        .map_err(command_failed)?;
    Ok(respond(accepted, StatusCode::CREATED))
}

/// Removes a document from the knowledge base: it stops being searched and answered
/// from. Its events and original stay for audit.
#[utoipa::path(delete, path = "/v1/knowledge/{id}",
    params(("id" = uuid::Uuid, Path), WriteHeaders),
    responses((status = 200, body = super::commands::CommandAccepted), (status = 403), (status = 404), (status = 412),
        (status = 422, description = "idempotency_key_reused")),
    security(("bearer" = [])))]
pub async fn remove_knowledge(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    caller.who.require_any(CURATORS)?;
    let expected = expected_version(&headers)?;
    let id = parse_id(&id)?;
    let meta = caller.meta(&serde_json::Value::Null)?;
    let accepted = app
        .service
        .remove_knowledge(id, expected, &meta)
        .await
        .map_err(command_failed)?;
    Ok(respond(accepted, StatusCode::OK))
}
