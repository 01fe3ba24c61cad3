//! Test fixture for the whole read path: a command API with its relay (from
//! `command_api::testing`), projectors, and a query API over HTTP, all on one fresh
//! database and topic prefix of the stack `dev/stack test` provides.

use std::sync::Arc;
use std::time::Duration;

use command_api::testing::{RunningRelay, TestApp};
use projectors::runtime::{Projection, ProjectorStatus, Runtime, RuntimeError, Settings};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::{AppState, router};
use crate::reads::Reads;

pub struct ReadStack {
    pub commands: TestApp,
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

/// A projector running in this process.
pub struct RunningProjector {
    pub task: JoinHandle<Result<(), RuntimeError>>,
    pub status: watch::Receiver<ProjectorStatus>,
    stop: watch::Sender<bool>,
}

impl RunningProjector {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl ReadStack {
    pub async fn spawn() -> ReadStack {
        let mut stack = Self::without_relay().await;
        stack.relay = Some(stack.commands.relay());
        stack
    }

    /// For tests that publish records themselves.
    pub async fn without_relay() -> ReadStack {
        let commands = TestApp::spawn().await;
        projectors::migrate(&commands.db.pool)
            .await
            .expect("projector migrations");
        let app = router(AppState {
            reads: Arc::new(Reads::new(commands.db.pool.clone())),
            auth: command_api::testing::authenticator(),
            read_wait_max: Duration::from_secs(5),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let query_base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = platform::http::serve(listener, app, std::future::pending()).await;
        });
        ReadStack {
            commands,
            relay: None,
            query_base,
            server,
        }
    }

    /// Settings for tests: a group of this test's own, fast retries.
    pub fn settings(&self, name: &str) -> Settings {
        Settings {
            group: format!("{}{name}", self.commands.kafka.topic_prefix),
            max_attempts: 3,
            backoff: Duration::from_millis(20),
            lag_interval: Duration::from_millis(200),
        }
    }

    /// Starts a projector once its live generation exists, so tests can read its tables.
    pub async fn projector(&self, projection: Arc<dyn Projection>) -> RunningProjector {
        let name = projection.name();
        self.projector_on(self.commands.db.pool.clone(), projection, name)
            .await
    }

    /// The same on a pool of the test's own, in consumer group `group` of this test.
    pub async fn projector_on(
        &self,
        pool: sqlx::PgPool,
        projection: Arc<dyn Projection>,
        group: &str,
    ) -> RunningProjector {
        projectors::runtime::generation::ensure_live(&self.commands.db.pool, projection.as_ref())
            .await
            .expect("live generation");
        let (runtime, status) = Runtime::new(
            pool,
            projection,
            self.commands.kafka.clone(),
            self.settings(group),
        );
        let (stop, stopped) = watch::channel(false);
        RunningProjector {
            task: tokio::spawn(runtime.run(stopped)),
            status,
            stop,
        }
    }
}
