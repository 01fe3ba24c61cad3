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
use llm::config::{LlmConfig, LlmSettings, PROVIDER_VARIABLES};
use projection::EffectSink;
use projector_runtime::service::Cli;
use semantic_index::Search;
use semantic_index::setup::SearchSettings;

const NAME: &str = "assistant-projector";
const ABOUT: &str = "The assistant: answers each user message of a conversation whose assistant is on, once, from the conversation's history and what semantic search retrieves.";

/// The assistant's settings: how it answers, with which models, from what it retrieves,
/// and how it writes its answers.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = PROVIDER_VARIABLES)]
struct Settings {
    #[command(flatten)]
    assistant: AssistantSettings,
    #[command(flatten)]
    llm: LlmSettings,
    #[command(flatten)]
    search: SearchSettings,
    #[command(flatten)]
    writer: ServiceSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::<Settings>::parse(NAME, ABOUT);
    let checking = cli.checking();
    let own = cli.projection;
    let llm = LlmConfig::from_settings(own.llm)?;
    own.search.check()?;
    let master = cli.runtime.data.keyring()?;
    if checking {
        projector_runtime::service::settings_ok(NAME);
        return Ok(());
    }
    let pool = cli
        .runtime
        .database
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
    let (embedder, store) = semantic_index::setup::build(own.search, &pool).await?;
    let search = Search::new(pool.clone(), store, vec![embedder]);
    // One cache of keys and one erasure listener for the consumer and the answers it
    // writes, each on a pool of its own (as sized by the settings).
    let store = event_store::Reader::new(pool.clone(), master);
    let consumer_store = store.on_pool(
        cli.runtime
            .database
            .connect()
            .await
            .context("connecting to PostgreSQL")?,
    );
    let service =
        CommandService::from_settings(store.clone(), Arc::new(TemplateGenerator), &own.writer);
    let assistant = Assistant::new(
        Arc::new(service),
        Arc::new(search),
        Arc::new(router),
        own.assistant,
    )
    .with_deltas(projection::deltas::Publisher::start(pool));
    projector_runtime::service::main_on(
        NAME,
        cli.command,
        cli.runtime,
        consumer_store,
        EffectSink::new(assistant),
    )
    .await?;
    Ok(())
}
