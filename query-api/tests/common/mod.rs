//! The query API over HTTP on loopback, in front of a fresh [`Stack`] (command service,
//! relay, projectors) on one database and topic prefix of the stack `dev/stack test`
//! provides.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use projection::{Sink, TableSink};
use query_api::http::{AppState, router};
use read_model::{ReadModel, Reads};
use testkit::{RunningProjector, RunningRelay, Stack};
use tokio::task::JoinHandle;

pub struct ReadStack {
    /// The write side: database, topics, command service.
    pub commands: Stack,
    /// The relay publishing the command side's events (absent with [`ReadStack::without_relay`]).
    pub relay: Option<RunningRelay>,
    /// `http://127.0.0.1:<port>` of the query API.
    pub query_base: String,
    server: JoinHandle<()>,
}

impl Drop for ReadStack {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ReadStack {
    pub async fn spawn() -> ReadStack {
        let mut stack = Self::without_relay().await;
        stack.relay = Some(stack.commands.relay());
        stack
    }

    /// For tests that publish records themselves, or need none. Search has no
    /// embedding model (it answers 503): [`ReadStack::with_search`] loads one.
    pub async fn without_relay() -> ReadStack {
        Self::serving(Vec::new()).await
    }

    /// With the relay, and search embedding queries with `embedders`.
    pub async fn with_search(embedders: Vec<Arc<dyn embeddings::Embedder>>) -> ReadStack {
        let mut stack = Self::serving(embedders).await;
        stack.relay = Some(stack.commands.relay());
        stack
    }

    /// With the relay, and personal fields sealed under a master key of the test's own
    /// (commands, relay, projectors and this server share the keys).
    pub async fn protected() -> ReadStack {
        let mut stack = Self::serving_on(Stack::with_data_protection().await, Vec::new()).await;
        stack.relay = Some(stack.commands.relay());
        stack
    }

    async fn serving(embedders: Vec<Arc<dyn embeddings::Embedder>>) -> ReadStack {
        Self::serving_on(Stack::new().await, embedders).await
    }

    async fn serving_on(
        commands: Stack,
        embedders: Vec<Arc<dyn embeddings::Embedder>>,
    ) -> ReadStack {
        let pool = commands.db.pool.clone();
        let store = vectors::pg::PgStore::new(pool.clone())
            .await
            .expect("the vector tables");
        let search = semantic_index::Search::new(pool.clone(), Arc::new(store), embedders);
        let app = router(AppState {
            reads: Arc::new(Reads::new(pool.clone())),
            events: commands.service.reader().clone(),
            search: Arc::new(search),
            auth: testkit::tokens::authenticator(),
            read_wait_max: Duration::from_secs(5),
            stream_max: Duration::from_secs(60),
            streams: std::sync::Arc::new(tokio::sync::Semaphore::new(32)),
            analytics: std::sync::Arc::new(analytics::queries::Usage::new(pool.clone())),
            live: query_api::http::live::LiveStreams::new(100),
            progress: Some(projection::progress::Announcements::listen(pool.clone())),
            edge: platform::edge::EdgeConfig::permissive(),
        });
        let (query_base, server) = testkit::serve(app).await;
        ReadStack {
            commands,
            relay: None,
            query_base,
            server,
        }
    }

    /// Starts a projector of `sink` once its live generation exists.
    pub async fn projector<S: Sink>(&self, sink: Arc<S>) -> RunningProjector {
        self.commands.projector(sink).await
    }

    /// The read-model projector.
    pub async fn read_model(&self) -> RunningProjector {
        self.projector(Arc::new(TableSink(ReadModel))).await
    }
}
