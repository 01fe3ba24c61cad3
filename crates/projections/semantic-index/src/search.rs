//! Searching the semantic index: the query is embedded with the model of the live
//! generation's index and run against that index, scoped to the caller's tenant and to
//! what the caller sees. Read-your-writes waits on this projection's progress.

use std::sync::Arc;
use std::time::Duration;

use access::Scope;
use chrono::{DateTime, Utc};
use embeddings::{EmbedError, Embedder, ModelId};
use projection::{generation, progress};
use schemas::VersionToken;
use sqlx::PgPool;
use thiserror::Error;
use uuid::Uuid;
use vectors::{Hit, IndexName, SearchQuery, SourceKind, VectorError, VectorStore};

use crate::NAME;

#[derive(Debug, Error)]
pub enum SearchError {
    /// The embeddings projector has not created its index yet.
    #[error("the semantic index has not been built yet")]
    NotBuilt,
    /// The live index was built with a model this process cannot embed with (a model
    /// change switched generations; this replica is configured for another model).
    #[error("the live index is built with {0}, which this service is not configured to embed with")]
    ModelUnavailable(String),
    #[error(transparent)]
    Embedding(#[from] EmbedError),
    #[error(transparent)]
    Store(#[from] VectorError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The live index was created and is gone from the vector store.
    #[error("{0}")]
    IndexLost(String),
}

/// A search as the query API received it, with the caller's scope.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest<'a> {
    /// The tenant, and what the caller sees there (`access`).
    pub scope: Scope<'a>,
    pub text: &'a str,
    pub kinds: &'a [SourceKind],
    pub conversation_id: Option<Uuid>,
    pub limit: usize,
    pub min_score: Option<f32>,
}

/// Hits, best first, and the model that ranked them.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub model: ModelId,
    pub hits: Vec<Hit>,
}

pub struct Search {
    pool: PgPool,
    store: Arc<dyn VectorStore>,
    /// The models this process embeds queries with; the live index's must be one of
    /// them. Two during a model change: the old index answers until the switch, the new
    /// one right after it.
    embedders: Vec<Arc<dyn Embedder>>,
}

impl Search {
    pub fn new(
        pool: PgPool,
        store: Arc<dyn VectorStore>,
        embedders: Vec<Arc<dyn Embedder>>,
    ) -> Self {
        Search {
            pool,
            store,
            embedders,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The live generation's index and the model it was built with.
    pub async fn live_index(&self) -> Result<(IndexName, ModelId), SearchError> {
        let (index, model, _) = self.live_index_info().await?;
        Ok((index, model))
    }

    /// [`Search::live_index`], and when the projector created the index in the store.
    async fn live_index_info(
        &self,
    ) -> Result<(IndexName, ModelId, Option<DateTime<Utc>>), SearchError> {
        let Some(schema) = generation::live_schema_in(&self.pool, NAME).await? else {
            return Err(SearchError::NotBuilt);
        };
        let info = crate::index_info(&self.pool, &schema)
            .await?
            .ok_or(SearchError::NotBuilt)?;
        let index = IndexName::new(info.name).map_err(|e| VectorError::Rejected(e.to_string()))?;
        Ok((
            index,
            ModelId {
                name: info.model,
                dimension: info.dimension as usize,
            },
            info.created_at,
        ))
    }

    pub async fn search(&self, request: &SearchRequest<'_>) -> Result<Found, SearchError> {
        let (index, model, created_at) = self.live_index_info().await?;
        let embedder = self
            .embedders
            .iter()
            .find(|e| *e.model() == model)
            .ok_or_else(|| SearchError::ModelUnavailable(model.to_string()))?;
        let vector = embedder
            .embed(&[request.text.to_owned()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| EmbedError::Unavailable("no vector for the query".into()))?;
        let hits = match self
            .store
            .search(
                &index,
                &SearchQuery {
                    scope: request.scope,
                    vector: &vector,
                    kinds: request.kinds,
                    conversation_id: request.conversation_id,
                    limit: request.limit,
                    min_score: request.min_score,
                },
            )
            .await
        {
            Ok(hits) => hits,
            Err(VectorError::NoIndex(index)) => match created_at {
                // Created and gone: the collection was lost; an empty answer would lie.
                Some(created_at) => {
                    return Err(SearchError::IndexLost(crate::lost(
                        &index,
                        Some(created_at),
                    )));
                }
                // Not created yet: the projector creates it with the generation's first text.
                None => Vec::new(),
            },
            Err(e) => return Err(e.into()),
        };
        Ok(Found { model, hits })
    }

    /// Waits until the index has the token's version, for at most `max`; `Err(applied)`
    /// when it gives up.
    pub async fn wait_for(
        &self,
        token: &VersionToken,
        max: Duration,
    ) -> Result<Result<(), u64>, SearchError> {
        Ok(progress::wait_for(&self.pool, NAME, token, max, None).await?)
    }
}
