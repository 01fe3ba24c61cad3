//! The write and read path without HTTP, on one fresh database and topic prefix: the
//! command service, the relay, and projectors, each started and stopped by the test.
//! Services' own tests put their HTTP server in front of it.

use std::sync::Arc;
use std::time::Duration;

use commands::{CommandService, TemplateGenerator};
use kafka::KafkaConfig;
use platform::auth::Role;
use projection::Sink;
use projector_runtime::{ProjectorStatus, Runtime, RuntimeError, Settings};
use relay::{Relay, RelayConfig, RelayStatus};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::env::{self, TestDatabase};

pub struct Stack {
    pub db: TestDatabase,
    pub kafka: KafkaConfig,
    pub service: Arc<CommandService>,
    /// What the service notifies after each commit; the stack's relays wake on it.
    pub commits: Arc<tokio::sync::Notify>,
}

/// A running relay; [`RunningRelay::stop`] stops it gracefully, dropping it does not.
pub struct RunningRelay {
    pub task: JoinHandle<()>,
    pub status: watch::Receiver<RelayStatus>,
    stop: watch::Sender<bool>,
}

impl RunningRelay {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Waits until the relay has published everything committed so far.
    pub async fn caught_up(&mut self, total: u64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let s = self.status.borrow().clone();
            if s.active && s.published >= total && s.lag_events == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "relay did not catch up: {s:?}, want {total}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), self.status.changed()).await;
        }
    }
}

/// A projector running in this process.
pub struct RunningProjector {
    pub task: JoinHandle<Result<(), RuntimeError>>,
    pub status: watch::Receiver<ProjectorStatus>,
    stop: watch::Sender<bool>,
}

impl RunningProjector {
    /// Graceful stop: commits what was handled and leaves the group.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stops it the way kill -9 would: nothing committed, nothing left.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Waits until `done` holds for its status (60 s at most).
    pub async fn wait_for(&self, what: &str, done: impl FnMut(&ProjectorStatus) -> bool) {
        let mut status = self.status.clone();
        let waited = tokio::time::timeout(Duration::from_secs(60), status.wait_for(done))
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(result) => result.expect("projector status"),
            Err(_) => panic!(
                "timed out waiting for {what}: {:?}; {}",
                *self.status.borrow(),
                long_transactions().await
            ),
        }
    }
}

/// Attempts before a test projector parks an event it was refused.
pub const MAX_ATTEMPTS: u32 = 3;

impl Stack {
    /// A fresh database with every migration, a topic prefix of its own, and the command
    /// service with the deterministic document generator.
    pub async fn new() -> Stack {
        Stack::with_master_key(None).await
    }

    /// A stack whose personal fields are sealed under a new random master key
    /// (`DATA_MASTER_KEY`): its command service, relay and projectors share the keys.
    pub async fn with_data_protection() -> Stack {
        let key = sealing::Keyring::generate_text().expect("randomness for a test key");
        Stack::with_master_key(Some(
            sealing::Keyring::from_text(&key).expect("the test key"),
        ))
        .await
    }

    async fn with_master_key(master: Option<sealing::Keyring>) -> Stack {
        let db = env::database().await;
        event_store::migrate(&db.pool)
            .await
            .expect("event store migrations");
        projection::migrate(&db.pool)
            .await
            .expect("projection migrations");
        let commits = Arc::new(tokio::sync::Notify::new());
        let service = Arc::new(
            CommandService::new(
                event_store::Reader::new(db.pool.clone(), master),
                Arc::new(TemplateGenerator),
            )
            .with_webhooks(crate::webhooks::settings())
            .with_commit_signal(commits.clone()),
        );
        Stack {
            db,
            kafka: env::kafka(),
            service,
            commits,
        }
    }

    /// A token of `tenant` with `roles`, accepted by [`crate::tokens::authenticator`].
    pub fn token(&self, tenant: &str, roles: &[Role]) -> String {
        crate::tokens::token(tenant, roles)
    }

    pub fn relay(&self) -> RunningRelay {
        self.relay_with(self.kafka.clone(), 200)
    }

    /// A relay with Kafka settings and a batch size of the test's own.
    pub fn relay_with(&self, kafka: KafkaConfig, batch_size: i64) -> RunningRelay {
        let (relay, status) = Relay::new(RelayConfig {
            name: "test".into(),
            database: self.db.config.clone(),
            kafka,
            batch_size,
            idle_poll: Duration::from_millis(10),
        });
        let relay = relay.woken_by(self.commits.clone());
        let (stop, stopped) = watch::channel(false);
        RunningRelay {
            task: tokio::spawn(relay.run(stopped)),
            status,
            stop,
        }
    }

    pub async fn event_count(&self) -> i64 {
        self.scalar("SELECT count(*) FROM events").await
    }

    /// The one `bigint` a query answers.
    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The schema of a projection's live generation.
    pub async fn live_schema(&self, projection: &str) -> String {
        projection::generation::live_schema_in(&self.db.pool, projection)
            .await
            .expect("query the live generation")
            .unwrap_or_else(|| panic!("{projection} has no live generation"))
    }

    /// Projector settings for tests: a group of this test's own, fast retries.
    pub fn settings(&self, group: &str) -> Settings {
        Settings {
            group: format!("{}{group}", self.kafka.topic_prefix),
            max_attempts: MAX_ATTEMPTS,
            backoff: Duration::from_millis(20),
            batch_max: 100,
            concurrency: None,
            tenant_concurrency: None,
            buffer: projector_runtime::DEFAULT_BUFFER,
            lag_interval: Duration::from_millis(200),
            close_timeout: Duration::from_secs(3),
        }
    }

    /// Starts a projector once its live generation exists, so tests can read its tables.
    pub async fn projector<S: Sink>(&self, sink: Arc<S>) -> RunningProjector {
        let group = sink.name();
        self.projector_on(self.db.pool.clone(), sink, group).await
    }

    /// The same on a pool of the test's own, in consumer group `group` of this test.
    pub async fn projector_on<S: Sink>(
        &self,
        pool: sqlx::PgPool,
        sink: Arc<S>,
        group: &str,
    ) -> RunningProjector {
        let settings = Settings {
            batch_max: sink.batch_max(),
            ..self.settings(group)
        };
        self.projector_with(pool, sink, settings).await
    }

    /// [`Stack::projector`] with at most `concurrency` calls of the sink at once, and
    /// `per_tenant` of them for one tenant (`None`: the runtime's default share).
    pub async fn projector_concurrent<S: Sink>(
        &self,
        sink: Arc<S>,
        concurrency: usize,
        per_tenant: Option<usize>,
    ) -> RunningProjector {
        let settings = Settings {
            batch_max: sink.batch_max(),
            concurrency: Some(concurrency),
            tenant_concurrency: per_tenant,
            ..self.settings(sink.name())
        };
        self.projector_with(self.db.pool.clone(), sink, settings)
            .await
    }

    /// The same with settings of the test's own.
    pub async fn projector_with<S: Sink>(
        &self,
        pool: sqlx::PgPool,
        sink: Arc<S>,
        settings: Settings,
    ) -> RunningProjector {
        projection::generation::ensure_live(&self.db.pool, sink.as_ref())
            .await
            .expect("live generation");
        let events = self.service.reader().on_pool(pool);
        let (runtime, status) = Runtime::new(events, sink, self.kafka.clone(), settings);
        let (stop, stopped) = watch::channel(false);
        RunningProjector {
            task: tokio::spawn(runtime.run(stopped)),
            status,
            stop,
        }
    }
}

/// Polls `check` until it holds (60 s at most); for conditions no status reports.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out waiting for {what}; {}",
                long_transactions().await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The cluster's writing transactions older than five seconds (any of them holds back
/// every reader of the log, in every test database): what a wait that timed out may have
/// been waiting on.
pub async fn long_transactions() -> String {
    use sqlx::Connection;
    let Some(url) = crate::env::var("DATABASE_URL") else {
        return "no DATABASE_URL".into();
    };
    let Ok(mut conn) = sqlx::PgConnection::connect(&url).await else {
        return "the cluster does not answer".into();
    };
    let rows: Result<Vec<(String, String, String, String)>, _> = sqlx::query_as(
        "SELECT datname::text, coalesce(state, ''), (now() - xact_start)::text, left(coalesce(query, ''), 120)
           FROM pg_stat_activity
          WHERE backend_xid IS NOT NULL AND xact_start < now() - interval '5 seconds'",
    )
    .fetch_all(&mut conn)
    .await;
    match rows {
        Ok(rows) if rows.is_empty() => {
            "no writing transaction older than 5 s in the cluster".into()
        }
        Ok(rows) => format!("writing transactions older than 5 s in the cluster: {rows:?}"),
        Err(e) => format!("pg_stat_activity: {e}"),
    }
}

/// Serves `app` on a free loopback port with the default limits; returns its base URL
/// (`http://127.0.0.1:<port>`) and the server task (abort it to stop).
pub async fn serve(app: axum::Router) -> (String, JoinHandle<()>) {
    let limits = platform::http::HttpLimits {
        header_read: Duration::from_secs(10),
        request: Duration::from_secs(30),
        body: 1024 * 1024,
    };
    serve_with(app, limits).await
}

/// The same with limits of the test's own.
pub async fn serve_with(
    app: axum::Router,
    limits: platform::http::HttpLimits,
) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("local address"));
    let server = tokio::spawn(async move {
        let _ = platform::http::serve(listener, app, limits, std::future::pending()).await;
    });
    (base, server)
}
