//! Test fixture: a real command-api (HTTP server, fresh database, relay) on loopback,
//! against the stack `dev/stack test` provides. Used by this crate's tests and by other
//! crates' end-to-end tests.

use std::sync::Arc;
use std::time::Duration;

use platform::auth::{AuthConfig, Authenticator, KeySource, Role};
use platform::kafka::KafkaConfig;
use platform::testenv::{self, TestDatabase};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::domain::TemplateGenerator;
use crate::http::{AppState, router};
use crate::relay::{Relay, RelayConfig, RelayStatus};
use crate::service::{CommandService, NewMessage, RequestMeta};

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

/// The authenticator test servers use: HS256 with [`SECRET`], no issuer or audience.
pub fn authenticator() -> Arc<Authenticator> {
    Authenticator::new(AuthConfig {
        keys: KeySource::Hs256 {
            secret: SECRET.to_vec(),
        },
        issuer: None,
        audience: None,
        leeway: 0,
        jwks_min_refresh: Duration::from_secs(10),
    })
}

/// Request metadata for commands sent straight to the service in tests.
pub fn meta(tenant: &str) -> RequestMeta {
    RequestMeta {
        tenant_id: tenant.into(),
        user_id: "writer".into(),
        correlation_id: format!("corr-{}", uuid::Uuid::new_v4()),
        causation_id: format!("cause-{}", uuid::Uuid::new_v4()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: None,
        idempotency: None,
    }
}

/// Starts `n` conversations of `tenant` titled `c0`, `c1`, ...; returns their ids.
pub async fn start_conversations(
    service: &CommandService,
    tenant: &str,
    n: usize,
) -> Vec<uuid::Uuid> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let started = service
            .start_conversation(format!("c{i}"), Default::default(), &meta(tenant))
            .await
            .expect("start conversation");
        ids.push(started.aggregate_id);
    }
    ids
}

/// Sends the user messages `m<n>` for each `n` in `range`, message `n` to
/// `ids[n % ids.len()]`, from `tasks` concurrent writers. Returns once all are accepted.
pub async fn send_messages(
    service: Arc<CommandService>,
    tenant: &str,
    ids: Arc<Vec<uuid::Uuid>>,
    range: std::ops::Range<usize>,
    tasks: usize,
) {
    let writers: Vec<_> = (0..tasks)
        .map(|t| {
            let (service, ids, tenant) = (service.clone(), ids.clone(), tenant.to_owned());
            let range = range.clone();
            tokio::spawn(async move {
                for n in range.skip(t).step_by(tasks) {
                    let message = user_message(&format!("m{n}"));
                    service
                        .send_message(ids[n % ids.len()], message, None, &meta(&tenant))
                        .await
                        .expect("send message");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
}

/// A user message with `content`.
pub fn user_message(content: &str) -> NewMessage {
    NewMessage {
        role: schemas::Role::User,
        content: content.into(),
        model: None,
        prompt_tokens: None,
        completion_tokens: None,
    }
}

pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub db: TestDatabase,
    pub kafka: KafkaConfig,
    pub service: Arc<CommandService>,
    server: JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A running relay; dropping it stops it.
pub struct RunningRelay {
    pub task: JoinHandle<()>,
    pub status: watch::Receiver<RelayStatus>,
    stop: watch::Sender<bool>,
}

impl RunningRelay {
    /// Graceful stop.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Waits until the relay has published everything committed so far.
    pub async fn caught_up(&mut self, total: u64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let s = *self.status.borrow();
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

impl TestApp {
    pub async fn spawn() -> TestApp {
        let db = testenv::database().await;
        crate::store::migrate(&db.pool).await.expect("migrate");
        let auth = authenticator();
        let service = Arc::new(CommandService::new(
            db.pool.clone(),
            Arc::new(TemplateGenerator),
        ));
        let app = router(AppState {
            service: service.clone(),
            auth,
            relay: None,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = platform::http::serve(listener, app, std::future::pending()).await;
        });
        TestApp {
            base,
            db,
            kafka: testenv::kafka(),
            service,
            server,
        }
    }

    pub fn token(&self, tenant: &str, roles: &[Role]) -> String {
        platform::auth::dev::hs256_token(SECRET, tenant, "user-1", roles, 3600)
    }

    pub fn relay(&self) -> RunningRelay {
        let (relay, status) = Relay::new(RelayConfig {
            name: "test".into(),
            database_url: self.db.config.url.clone(),
            kafka: self.kafka.clone(),
            batch_size: 200,
            idle_poll: Duration::from_millis(10),
        });
        let (stop, stopped) = watch::channel(false);
        RunningRelay {
            task: tokio::spawn(relay.run(stopped)),
            status,
            stop,
        }
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.db.pool)
            .await
            .expect("count events")
    }
}
