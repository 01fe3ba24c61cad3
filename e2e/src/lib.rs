//! End-to-end harness: both HTTP APIs over one fresh stack ([`Services`]), and
//! `dev/stack run` as a process group ([`dev_stack::DevStack`]), as the cross-service tests
//! in `tests/` and the read-side benchmark in `examples/` use them. The only crate that
//! depends on more than one service; nothing depends on it.

pub mod browser;
pub mod caller;
pub mod client;
pub mod dashboards;
pub mod dev_stack;
pub mod sse;

use std::sync::Arc;
use std::time::Duration;

use platform::auth::Role;
use projection::TableSink;
use query_api::http::{AppState as QueryState, router as query_router};
use read_model::{ReadModel, Reads};
use testkit::{RunningRelay, Stack, serve};
use tokio::task::JoinHandle;

/// Both HTTP APIs on loopback over one fresh stack, with the relay running.
pub struct Services {
    pub commands: Commands,
    pub query_base: String,
    /// The vector store query-api searches (PostgreSQL, the default).
    pub store: Arc<vectors::pg::PgStore>,
    relay: RunningRelay,
    servers: Vec<JoinHandle<()>>,
}

/// The write side as the test sees it: the stack, and the command API's address.
pub struct Commands {
    pub stack: Stack,
    pub base: String,
}

impl Commands {
    pub fn token(&self, tenant: &str, roles: &[Role]) -> String {
        self.stack.token(tenant, roles)
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

impl Services {
    /// Search answers 503 here (no embedding model): its tests are the semantic index's.
    pub async fn spawn() -> Services {
        Services::spawn_with(Vec::new()).await
    }

    /// Query-api embeds search queries with `embedders`.
    pub async fn spawn_with(embedders: Vec<Arc<dyn embeddings::Embedder>>) -> Services {
        Services::spawn_on(Stack::new().await, embedders).await
    }

    /// With personal fields sealed (`Stack::with_data_protection`).
    pub async fn spawn_protected() -> Services {
        Services::spawn_on(Stack::with_data_protection().await, Vec::new()).await
    }

    async fn spawn_on(stack: Stack, embedders: Vec<Arc<dyn embeddings::Embedder>>) -> Services {
        let relay = stack.relay();
        let (command_base, a) = serve(command_api::http::router(command_api::http::AppState {
            service: stack.service.clone(),
            auth: testkit::tokens::authenticator(),
            relay: None,
            relay_name: "test".into(),
            edge: platform::edge::EdgeConfig::permissive(),
        }))
        .await;
        let pool = stack.db.pool.clone();
        let store = Arc::new(
            vectors::pg::PgStore::new(pool.clone())
                .await
                .expect("the vector tables"),
        );
        let progress = projection::progress::Announcements::listen(pool.clone());
        let (query_base, b) = serve(query_router(QueryState {
            search: Arc::new(semantic_index::Search::new(
                pool.clone(),
                store.clone(),
                embedders,
            )),
            reads: Arc::new(Reads::new(pool.clone())),
            events: stack.service.reader().clone(),
            auth: testkit::tokens::authenticator(),
            read_wait_max: Duration::from_secs(5),
            stream_max: Duration::from_secs(60),
            streams: std::sync::Arc::new(tokio::sync::Semaphore::new(32)),
            analytics: std::sync::Arc::new(analytics::queries::Usage::new(pool.clone())),
            live: query_api::http::live::LiveStreams::new(100),
            progress: Some(progress),
            edge: platform::edge::EdgeConfig::permissive(),
        }))
        .await;
        Services {
            commands: Commands {
                stack,
                base: command_base,
            },
            query_base,
            store,
            relay,
            servers: vec![a, b],
        }
    }

    /// Waits until the relay has published the first `total` events of the store.
    pub async fn relay_caught_up(&mut self, total: u64, within: Duration) {
        self.relay.caught_up(total, within).await;
    }

    /// Starts an embeddings projector writing to [`Services::store`], with the default
    /// chunking for `embedder`.
    pub async fn semantic_projector(
        &self,
        embedder: Arc<dyn embeddings::Embedder>,
    ) -> testkit::RunningProjector {
        let chunking = embeddings::chunk::ChunkConfig::from_env(embedder.max_tokens())
            .expect("chunking settings");
        let index = semantic_index::SemanticIndex::new(
            embedder,
            self.store.clone(),
            chunking,
            self.commands.stack.db.pool.clone(),
        );
        self.commands
            .stack
            .projector(Arc::new(projection::EffectSink::new(index)))
            .await
    }

    /// Starts the assistant, retrieving with `embedder` from [`Services::store`] and
    /// answering through `router` (passages from a cosine of 0.1), streaming its replies.
    pub async fn assistant_projector(
        &self,
        embedder: Arc<dyn embeddings::Embedder>,
        router: llm::router::Router,
    ) -> testkit::RunningProjector {
        self.assistant_projector_with(embedder, router, None).await
    }

    /// [`Services::assistant_projector`] with at most `concurrency` calls at once
    /// (`None`: the default).
    pub async fn assistant_projector_with(
        &self,
        embedder: Arc<dyn embeddings::Embedder>,
        router: llm::router::Router,
        concurrency: Option<usize>,
    ) -> testkit::RunningProjector {
        let stack = &self.commands.stack;
        let search =
            semantic_index::Search::new(stack.db.pool.clone(), self.store.clone(), vec![embedder]);
        let assistant = assistant::Assistant::new(
            stack.service.clone(),
            Arc::new(search),
            Arc::new(router),
            assistant::AssistantSettings {
                min_score: 0.1,
                ..assistant::AssistantSettings::default()
            },
        )
        .with_deltas(projection::deltas::Publisher::start(stack.db.pool.clone()));
        let sink = Arc::new(projection::EffectSink::new(assistant));
        match concurrency {
            Some(n) => stack.projector_concurrent(sink, n, None).await,
            None => stack.projector(sink).await,
        }
    }

    /// Starts a read-model projector.
    pub async fn projector(&self) -> testkit::RunningProjector {
        self.commands
            .stack
            .projector(Arc::new(TableSink(ReadModel)))
            .await
    }
}
