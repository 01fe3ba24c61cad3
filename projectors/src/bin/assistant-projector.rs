//! assistant-projector: the assistant. Answers each user message of a conversation whose
//! assistant is on, once, through the LLM route `reply` (`LLM_*`), from the conversation's
//! history and what semantic search retrieves (`EMBEDDING_*`, `VECTOR_STORE`: the same
//! settings as embeddings-projector and query-api).
//!
//!     assistant-projector            consume until SIGTERM/Ctrl-C
//!     assistant-projector redrive    answer parked messages in order, then exit
//!     assistant-projector rebuild    new generation from the event store (answers
//!                                    nothing: history was answered long ago), exit

use std::sync::Arc;

use anyhow::Context;
use assistant::budget::PgBudget;
use assistant::{Assistant, AssistantSettings};
use commands::{CommandService, ServiceSettings, TemplateGenerator};
use llm::clock::SystemClock;
use llm::config::LlmConfig;
use platform::db::DbConfig;
use projection::EffectSink;
use semantic_index::Search;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let llm = LlmConfig::from_env()?;
    let settings = AssistantSettings::from_env()?;
    let pool = DbConfig::from_env()?
        .connect()
        .await
        .context("connecting to PostgreSQL")?;
    assistant::budget::migrate(&pool)
        .await
        .context("migrating the token budget table")?;
    // One daily budget per tenant for every replica.
    let budget = Arc::new(PgBudget::new(pool.clone(), llm.tenant_daily_tokens));
    let router = llm
        .build_with(budget, Arc::new(SystemClock))
        .context("configuring the LLM providers")?;
    let (embedder, store) = semantic_index::setup::from_env(&pool).await?;
    let search = Search::new(pool.clone(), store, vec![embedder]);
    let service = CommandService::from_settings(
        pool.clone(),
        Arc::new(TemplateGenerator),
        &ServiceSettings::from_env()?,
    );
    let assistant = Assistant::new(
        Arc::new(service),
        pool.clone(),
        Arc::new(search),
        Arc::new(router),
        settings,
    )
    .with_deltas(projection::deltas::Publisher::start(pool));
    projector_runtime::service::main("assistant-projector", EffectSink::new(assistant)).await?;
    Ok(())
}
