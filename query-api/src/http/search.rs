//! `GET /v1/search`: semantic search over messages, generated documents and the
//! knowledge base. The tenant comes from the token; a member finds only what they can
//! read elsewhere (their conversations, and the tenant's knowledge base).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use platform::auth::Principal;
use platform::problem::{Problem, Query};
use semantic_index::search::Found;
use semantic_index::{SearchError, SearchRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use vectors::SourceKind;

use super::reads::{Consistency, READERS, consistent_in};
use super::{AppState, database_failed};

/// Longest query, in characters.
const QUERY_MAX: usize = 1000;
/// Characters of a hit's text shown as its snippet.
const SNIPPET_CHARS: usize = 300;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// What to look for, in words: 1-1000 characters, not blank, no control characters.
    #[param(
        min_length = 1,
        max_length = 1000,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub q: String,
    /// `messages`, `documents`, `knowledge` or `all` (default).
    #[param(pattern = "^(messages|documents|knowledge|all)$")]
    pub scope: Option<String>,
    /// Only hits of this conversation (messages and its documents).
    #[param(value_type = Option<Uuid>)]
    pub conversation_id: Option<String>,
    /// 1-50, default 10.
    #[param(minimum = 1, maximum = 50)]
    pub limit: Option<i64>,
    /// Cosine similarity from -1 to 1; hits below it are left out.
    #[param(minimum = -1, maximum = 1)]
    pub min_score: Option<f32>,
    /// A `position` a command returned: waits until the index has it.
    #[param(
        pattern = r"^(conversation|document|knowledge|webhook_endpoint|inbox):[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}:[0-9]{1,19}$"
    )]
    pub position: Option<String>,
    #[param(minimum = 0)]
    pub wait_ms: Option<i64>,
}

/// Where a hit comes from.
#[derive(Debug, Serialize, ToSchema)]
pub struct HitSource {
    /// `message`, `document` or `knowledge`.
    pub kind: String,
    /// The message, document or knowledge document id.
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<Uuid>,
    /// The version of its aggregate that carried the text.
    pub position: i64,
    /// Which window of the text, from 0.
    pub chunk: i32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    /// Cosine similarity to the query, -1 to 1.
    pub score: f32,
    pub source: HitSource,
    /// The conversation's title (for a message), or the document's.
    pub title: String,
    pub snippet: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    pub items: Vec<SearchHit>,
    /// The embedding model that ranked them.
    pub model: String,
}

struct Checked {
    kinds: Vec<SourceKind>,
    conversation_id: Option<Uuid>,
    limit: usize,
    min_score: Option<f32>,
}

fn check(p: &SearchParams) -> Result<Checked, Problem> {
    let bad = |detail: &str| Problem::bad_request("invalid_query", detail.to_owned());
    let q = p.q.trim();
    if q.is_empty() {
        return Err(bad("q must not be blank"));
    }
    if q.chars().count() > QUERY_MAX {
        return Err(bad("q must be at most 1000 characters"));
    }
    if q.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(bad("q must not contain control characters"));
    }
    let kinds = match p.scope.as_deref().unwrap_or("all") {
        "all" => SourceKind::ALL.to_vec(),
        "messages" => vec![SourceKind::Message],
        "documents" => vec![SourceKind::Document],
        "knowledge" => vec![SourceKind::Knowledge],
        _ => return Err(bad("scope must be messages, documents, knowledge or all")),
    };
    let conversation_id = p
        .conversation_id
        .as_deref()
        .map(|raw| {
            raw.parse::<Uuid>()
                .map_err(|_| bad("conversation_id must be a UUID"))
        })
        .transpose()?;
    let limit = match p.limit.unwrap_or(10) {
        n @ 1..=50 => n as usize,
        _ => return Err(Problem::bad_request("invalid_limit", "limit must be 1-50")),
    };
    let min_score = match p.min_score {
        Some(s) if !(s.is_finite() && (-1.0..=1.0).contains(&s)) => {
            return Err(bad("min_score must be a number from -1 to 1"));
        }
        other => other,
    };
    Ok(Checked {
        kinds,
        conversation_id,
        limit,
        min_score,
    })
}

/// The first characters of a hit's text, cut at a character boundary.
fn snippet(text: &str) -> String {
    let mut chars = text.char_indices();
    match chars.nth(SNIPPET_CHARS) {
        Some((end, _)) => format!("{}…", text[..end].trim_end()),
        None => text.to_owned(),
    }
}

/// Finds messages, documents and knowledge by meaning.
#[utoipa::path(get, path = "/v1/search", params(SearchParams),
    responses((status = 200, body = SearchResults), (status = 400), (status = 503)), security(("bearer" = [])))]
pub async fn search(
    State(app): State<AppState>,
    who: Principal,
    Query(params): Query<SearchParams>,
) -> Result<Json<SearchResults>, Problem> {
    who.require_any(READERS)?;
    let checked = check(&params)?;
    let position = Consistency {
        position: params.position.clone(),
        wait_ms: params.wait_ms,
    };
    consistent_in(&app, semantic_index::NAME, &position, &who).await?;
    let found = app
        .search
        .search(&SearchRequest {
            scope: who.scope(),
            text: params.q.trim(),
            kinds: &checked.kinds,
            conversation_id: checked.conversation_id,
            limit: checked.limit,
            min_score: checked.min_score,
        })
        .await
        .map_err(search_failed)?;
    let Found { model, hits } = found;
    Ok(Json(SearchResults {
        items: hits
            .into_iter()
            .map(|h| SearchHit {
                score: h.score,
                source: HitSource {
                    kind: h.payload.source_kind.as_str().to_owned(),
                    id: h.payload.source_id,
                    conversation_id: h.payload.conversation_id,
                    position: h.payload.position,
                    chunk: h.payload.chunk,
                },
                title: h.payload.title,
                snippet: snippet(&h.payload.text),
            })
            .collect(),
        model: model.name,
    }))
}

fn unavailable(code: &'static str, title: &str, detail: String) -> Problem {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, code, title.to_owned())
        .detail(detail)
        .retry_after(1)
}

fn search_failed(e: SearchError) -> Problem {
    use embeddings::EmbedError;
    use vectors::VectorError;
    match e {
        SearchError::NotBuilt | SearchError::Store(VectorError::NoIndex(_)) => unavailable(
            "search_index_unavailable",
            "Search index unavailable",
            "the embeddings projector has not built its index yet".into(),
        ),
        SearchError::IndexLost(detail) => {
            tracing::error!(%detail, "the live vector index is lost");
            unavailable(
                "search_index_unavailable",
                "Search index unavailable",
                detail,
            )
        }
        SearchError::ModelUnavailable(model) => {
            tracing::error!(%model, "the live index's model is not configured here");
            unavailable(
                "embedding_model_unavailable",
                "Embedding model unavailable",
                format!("the live index is built with {model}; this replica cannot embed with it"),
            )
        }
        SearchError::Embedding(EmbedError::Rejected(reason)) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query_refused",
            "The embedding provider refused the query",
        )
        .detail(reason),
        SearchError::Embedding(e) => {
            tracing::warn!(error = %e, "embedding the query failed");
            unavailable(
                "embedding_unavailable",
                "Embedding unavailable",
                "the embedding provider cannot answer right now; retry shortly".into(),
            )
        }
        SearchError::Store(VectorError::Unavailable(reason)) => {
            tracing::warn!(%reason, "vector store unavailable");
            unavailable(
                "vector_store_unavailable",
                "Vector store unavailable",
                "the vector store cannot answer right now; retry shortly".into(),
            )
        }
        SearchError::Store(e) => {
            tracing::error!(error = %e, "vector store refused a search");
            Problem::internal()
        }
        SearchError::Database(e) => database_failed(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> SearchParams {
        SearchParams {
            q: q.into(),
            scope: None,
            conversation_id: None,
            limit: None,
            min_score: None,
            position: None,
            wait_ms: None,
        }
    }

    #[test]
    fn bad_parameters_are_400_problems() {
        assert!(check(&params("when do we ship?")).is_ok());
        let long = "x".repeat(QUERY_MAX + 1);
        for bad in [
            params("  "),
            params(&long),
            params("a\u{0}b"),
            SearchParams {
                scope: Some("everything".into()),
                ..params("q")
            },
            SearchParams {
                conversation_id: Some("nope".into()),
                ..params("q")
            },
            SearchParams {
                limit: Some(0),
                ..params("q")
            },
            SearchParams {
                min_score: Some(f32::NAN),
                ..params("q")
            },
            SearchParams {
                min_score: Some(1.5),
                ..params("q")
            },
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn snippets_are_cut_at_a_character_boundary() {
        assert_eq!(snippet("short"), "short");
        let long = "é".repeat(SNIPPET_CHARS + 5);
        let cut = snippet(&long);
        assert_eq!(cut.chars().count(), SNIPPET_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
