//! The embedding model and the vector store the environment configures
//! (`EMBEDDING_*`, `VECTOR_STORE`, `QDRANT_*`): what the embeddings projector, the
//! assistant and query-api each need, and must agree on.

use std::sync::Arc;

use common::config::ConfigError;
use embeddings::{EmbedError, Embedder, EmbeddingConfig};
use sqlx::PgPool;
use vectors::{StoreConfig, VectorError, VectorStore};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("loading the embedding model: {0}")]
    Embedding(#[from] EmbedError),
    #[error("opening the vector store: {0}")]
    Store(#[from] VectorError),
}

/// The configured embedder (the local model is loaded here) and vector store (`pool` is
/// the service's database, where the PostgreSQL store keeps its points).
pub async fn from_env(
    pool: &PgPool,
) -> Result<(Arc<dyn Embedder>, Arc<dyn VectorStore>), SetupError> {
    let embedder = EmbeddingConfig::from_env()?.build().await?;
    let store = StoreConfig::from_env()?.build(pool.clone()).await?;
    Ok((embedder, store))
}
