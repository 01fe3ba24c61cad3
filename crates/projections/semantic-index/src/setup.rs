//! The embedding model and the vector store the environment configures
//! (`EMBEDDING_*`, `VECTOR_STORE`, `QDRANT_*`): what the embeddings projector, the
//! assistant and query-api each need, and must agree on.

use std::sync::Arc;

use common::config::ConfigError;
use embeddings::{EmbedError, Embedder, EmbeddingConfig, EmbeddingSettings};
use sqlx::PgPool;
use vectors::{StoreConfig, StoreSettings, VectorError, VectorStore};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("loading the embedding model: {0}")]
    Embedding(#[from] EmbedError),
    #[error("opening the vector store: {0}")]
    Store(#[from] VectorError),
}

/// The settings of semantic search: the embedding model and the vector store.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchSettings {
    #[command(flatten)]
    pub embedding: EmbeddingSettings,
    #[command(flatten)]
    pub store: StoreSettings,
}

impl SearchSettings {
    /// Checks the settings without loading or connecting anything.
    pub fn check(&self) -> Result<(), ConfigError> {
        EmbeddingConfig::try_from(self.embedding.clone())?;
        StoreConfig::try_from(self.store.clone())?;
        Ok(())
    }
}

/// The configured embedder (the local model is loaded here) and vector store (`pool` is
/// the service's database, where the PostgreSQL store keeps its points).
pub async fn build(
    settings: SearchSettings,
    pool: &PgPool,
) -> Result<(Arc<dyn Embedder>, Arc<dyn VectorStore>), SetupError> {
    let embedder = EmbeddingConfig::try_from(settings.embedding)?
        .build()
        .await?;
    let store = StoreConfig::try_from(settings.store)?
        .build(pool.clone())
        .await?;
    Ok((embedder, store))
}
