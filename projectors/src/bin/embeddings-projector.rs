//! embeddings-projector: keeps the semantic index. Cuts every message, generated document
//! and knowledge document into windows of tokens, embeds them (`EMBEDDING_PROVIDER`) and
//! upserts one point per window into the vector store (`VECTOR_STORE`).
//!
//!     embeddings-projector            consume until SIGTERM/Ctrl-C
//!     embeddings-projector redrive    index parked events in order, then exit
//!     embeddings-projector rebuild    index the event store into a new generation (with
//!                                     the configured model), switch searches to it, exit

use anyhow::Context;
use embeddings::chunk::ChunkConfig;
use platform::db::DbConfig;
use projection::EffectSink;
use semantic_index::SemanticIndex;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pool = DbConfig::from_env()?
        .connect()
        .await
        .context("connecting to PostgreSQL")?;
    let (embedder, store) = semantic_index::setup::from_env(&pool).await?;
    let chunking = ChunkConfig::from_env(embedder.max_tokens())?;
    let index = SemanticIndex::new(embedder, store, chunking, pool);
    projector_runtime::service::main("embeddings-projector", EffectSink::new(index)).await?;
    Ok(())
}
