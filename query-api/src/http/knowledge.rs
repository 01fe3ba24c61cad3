//! The knowledge base as readers see it: every member of the tenant reads all of it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use platform::auth::Principal;
use platform::problem::{Problem, Query};
use serde::Deserialize;
use utoipa::IntoParams;

use super::reads::{
    Consistency, Page, READERS, consistent, limit, parse_id, parse_time_cursor, time_cursor,
};
use super::{AppState, database_failed, read_failed};
use read_model::queries::{KnowledgeDocumentView, KnowledgeView};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListKnowledge {
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

/// The tenant's knowledge base, newest first (without the texts).
#[utoipa::path(get, path = "/v1/knowledge", params(ListKnowledge),
    responses((status = 200, body = Page<KnowledgeView>), (status = 400), (status = 503)), security(("bearer" = [])))]
pub async fn list_knowledge(
    State(app): State<AppState>,
    who: Principal,
    Query(q): Query<ListKnowledge>,
) -> Result<Json<Page<KnowledgeView>>, Problem> {
    who.require_any(READERS)?;
    let position = Consistency {
        position: q.position.clone(),
        wait_ms: q.wait_ms,
    };
    consistent(&app, &position, &who).await?;
    let limit = limit(q.limit)?;
    let before = q.cursor.as_deref().map(parse_time_cursor).transpose()?;
    let items = app
        .reads
        .knowledge(&who.tenant_id, before, limit + 1)
        .await
        .map_err(read_failed)?;
    Ok(Json(Page::from_overfetch(items, limit, |k| {
        time_cursor(k.added_at, k.knowledge_id)
    })))
}

/// A document of the knowledge base with the text extracted from it.
#[utoipa::path(get, path = "/v1/knowledge/{id}", params(("id" = uuid::Uuid, Path), Consistency),
    responses((status = 200, body = KnowledgeDocumentView), (status = 404), (status = 503)), security(("bearer" = [])))]
pub async fn get_knowledge(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(c): Query<Consistency>,
) -> Result<Json<KnowledgeDocumentView>, Problem> {
    who.require_any(READERS)?;
    let id = parse_id(&id)?;
    consistent(&app, &c, &who).await?;
    let found = app
        .reads
        .knowledge_document(&who.tenant_id, id)
        .await
        .map_err(read_failed)?;
    found.map(Json).ok_or_else(Problem::not_found)
}

/// The original file, byte for byte, with its media type; its SHA-256 is the `ETag`.
#[utoipa::path(get, path = "/v1/knowledge/{id}/original", params(("id" = uuid::Uuid, Path), Consistency),
    responses((status = 200, description = "The file", content_type = "application/octet-stream"), (status = 404), (status = 503)),
    security(("bearer" = [])))]
pub async fn get_original(
    State(app): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(c): Query<Consistency>,
) -> Result<Response, Problem> {
    who.require_any(READERS)?;
    let id = parse_id(&id)?;
    consistent(&app, &c, &who).await?;
    let document = app
        .reads
        .knowledge_document(&who.tenant_id, id)
        .await
        .map_err(read_failed)?
        .ok_or_else(Problem::not_found)?;
    let blob = event_store::blobs::fetch(&app.events, &who.tenant_id, &document.document.sha256)
        .await
        .map_err(|e| match e {
            event_store::blobs::BlobError::Database(e) => database_failed(&e),
            other => {
                tracing::error!(error = %other, %id, "a knowledge document's original does not open");
                Problem::unavailable("the original cannot be opened; retry").retry_after(5)
            }
        })?
        // Its tenant was erased (docs/DATA-PROTECTION.md): the originals went with it.
        .ok_or_else(|| Problem::not_found().detail("the original is no longer stored"))?;
    let mut response = blob.bytes.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, blob.media_type),
        (header::ETAG, format!("\"{}\"", blob.sha256)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    Ok(response)
}
