//! embeddings-projector: keeps the semantic index. Cuts every message, generated document
//! and knowledge document into windows of tokens, embeds them (`EMBEDDING_PROVIDER`) and
//! upserts one point per window into the vector store (`VECTOR_STORE`).
//!
//!     embeddings-projector            consume until SIGTERM/Ctrl-C
//!     embeddings-projector redrive    index parked events in order, then exit
//!     embeddings-projector rebuild    index the event store into a new generation (with
//!                                     the configured model), switch searches to it, exit

use anyhow::Context;
use embeddings::chunk::ChunkSettings;
use projection::EffectSink;
use projector_runtime::service::Cli;
use semantic_index::SemanticIndex;
use semantic_index::setup::SearchSettings;

const NAME: &str = "embeddings-projector";
const ABOUT: &str = "Keeps the semantic index: cuts messages, documents and knowledge into windows of tokens, embeds them and upserts one point per window.";

/// The index's settings: the model, the store, and how texts are cut.
#[derive(Debug, Clone, clap::Args)]
struct Settings {
    #[command(flatten)]
    search: SearchSettings,
    #[command(flatten)]
    chunks: ChunkSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::<Settings>::parse(NAME, ABOUT);
    cli.projection.search.check()?;
    // The model's own limit is known once it is loaded; the rest is checked now.
    cli.projection.chunks.config(usize::MAX)?;
    let master = cli.runtime.data.keyring()?;
    if cli.checking() {
        projector_runtime::service::settings_ok(NAME);
        return Ok(());
    }
    let pool = cli
        .runtime
        .database
        .connect()
        .await
        .context("connecting to PostgreSQL")?;
    let (embedder, store) = semantic_index::setup::build(cli.projection.search, &pool).await?;
    let chunking = cli.projection.chunks.config(embedder.max_tokens())?;
    let index = SemanticIndex::new(
        embedder,
        store,
        chunking,
        event_store::Reader::new(pool, master),
    );
    projector_runtime::service::main(NAME, cli.command, cli.runtime, EffectSink::new(index))
        .await?;
    Ok(())
}
