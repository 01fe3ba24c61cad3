//! A projector binary's whole life: `main` of every projector is one call to [`main`].
//!
//!     <projector>            consume until SIGTERM/Ctrl-C (`run` also works)
//!     <projector> redrive    apply parked events in order, print a JSON report, exit
//!     <projector> rebuild    replay the event store into a new generation, switch, exit
//!
//! While consuming it serves `/healthz`, `/readyz`, `/metrics` and `/status` on
//! `PROJECTOR_ADDR`. If the consumer loop ends on its own (it failed), `/healthz` turns
//! 503 and the process exits with an error, so an orchestrator restarts it. A stop signal
//! ends the process within `SHUTDOWN_GRACE_SECS` whatever the broker and the database do.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use kafka::KafkaConfig;
use platform::config::{self, ConfigError};
use platform::db::DbConfig;
use platform::http::{self, Liveness};
use platform::shutdown::Shutdown;
use platform::telemetry;
use projection::{ProjectionError, Sink};
use thiserror::Error;
use tokio::sync::watch;

use crate::{Runtime, RuntimeError, Settings};

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("connecting to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migrating projector tables: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving health endpoints: {0}")]
    Serve(#[source] std::io::Error),
    #[error("the consumer stopped: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("the consumer task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("unknown command {0:?}: use run, redrive or rebuild")]
    Usage(String),
    #[error("the companion task stopped: {0}")]
    Companion(String),
}

/// A task that runs beside the consumer while the projector consumes (the webhook
/// dispatcher beside the fan-out projection): given the pool and the stop signal, it runs
/// until the signal turns true. If it ends on its own it failed: the process turns
/// unhealthy and exits, like a failed consumer.
pub type Companion = Box<
    dyn FnOnce(
            sqlx::PgPool,
            watch::Receiver<bool>,
        ) -> futures::future::BoxFuture<'static, Result<(), String>>
        + Send,
>;

/// Runs the projector `service` around `sink`, per the command-line argument.
pub async fn main<S: Sink>(service: &'static str, sink: S) -> Result<(), ServiceError> {
    main_with(service, sink, None).await
}

/// [`main`] with a [`Companion`] task running beside the consumer.
pub async fn main_with<S: Sink>(
    service: &'static str,
    sink: S,
    companion: Option<Companion>,
) -> Result<(), ServiceError> {
    let telemetry = telemetry::init(service);
    let result = command(Arc::new(sink), companion).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "{service} failed");
    }
    telemetry.shutdown().await;
    result
}

async fn command<S: Sink>(sink: Arc<S>, companion: Option<Companion>) -> Result<(), ServiceError> {
    let pool = DbConfig::from_env()?
        .connect()
        .await
        .map_err(ServiceError::Connect)?;
    // Projectors read the event store (gap fills, bootstraps, rebuilds): it must exist
    // even when they start before command-api. Migrations take a lock; running them from
    // every service at once is safe.
    event_store::migrate(&pool).await?;
    projection::migrate(&pool).await?;
    match std::env::args().nth(1).as_deref() {
        None | Some("run") => consume(pool, sink, companion).await,
        Some("redrive") => {
            let report = projection::redrive(&pool, sink.as_ref()).await?;
            println!("{}", serde_json::json!(report));
            Ok(())
        }
        Some("rebuild") => {
            let report = projection::rebuild(&pool, sink.as_ref()).await?;
            println!("{}", serde_json::json!(report));
            Ok(())
        }
        Some(other) => Err(ServiceError::Usage(other.to_owned())),
    }
}

async fn consume<S: Sink>(
    pool: sqlx::PgPool,
    sink: Arc<S>,
    companion: Option<Companion>,
) -> Result<(), ServiceError> {
    let shutdown = Shutdown::from_env()?;
    let settings = Settings::for_projection(sink.name(), sink.batch_max())?;
    let kafka = KafkaConfig::from_env()?;
    let addr: SocketAddr = config::parse_or("PROJECTOR_ADDR", ([127, 0, 0, 1], 8082).into())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServiceError::Bind { addr, source })?;

    let (runtime, status) = Runtime::new(pool.clone(), sink, kafka, settings);
    let (stop, stopped) = watch::channel(false);
    let mut consumer = tokio::spawn(runtime.run(stopped.clone()));
    let mut companion = match companion {
        Some(task) => tokio::spawn(task(pool.clone(), stopped.clone())),
        // Nothing beside the consumer: a task that waits for the stop signal.
        None => {
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let _ = stopped.wait_for(|s| *s).await;
                Ok(())
            })
        }
    };

    let liveness = Liveness::default();
    let app = http::health_routes(pool, liveness.clone(), true).route(
        "/status",
        get(move || {
            let s = status.borrow().clone();
            async move { axum::Json(s) }
        }),
    );
    let mut server_stop = stopped;
    let limits = http::HttpLimits::from_env(16 * 1024)?;
    let server = tokio::spawn(http::serve(listener, app, limits, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));

    let result = tokio::select! {
        () = shutdown.requested() => {
            let _ = stop.send(true);
            // The runtime commits and leaves within its own bound; the grace period
            // started by the signal covers anything that still hangs.
            let consumed = match consumer.await {
                Ok(result) => result.map_err(ServiceError::from),
                Err(e) => Err(e.into()),
            };
            match companion.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "companion task failed while stopping"),
                Err(e) => tracing::warn!(error = %e, "companion task panicked while stopping"),
                Ok(Ok(())) => {}
            }
            consumed
        }
        ended = &mut companion => {
            let error = ServiceError::Companion(match ended {
                Ok(Ok(())) => "it ended on its own".to_owned(),
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
            });
            liveness.fail(error.to_string());
            let _ = stop.send(true);
            let _ = consumer.await;
            Err(error)
        }
        ended = &mut consumer => {
            // The consumer only ends on its own when it failed: nothing is consumed any more.
            let error = match ended {
                Ok(Ok(())) => RuntimeError::Consume(rdkafka::error::KafkaError::Canceled).into(),
                Ok(Err(e)) => ServiceError::from(e),
                Err(e) => ServiceError::from(e),
            };
            liveness.fail(error.to_string());
            let _ = stop.send(true);
            let _ = companion.await;
            Err(error)
        }
    };
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "health server failed"),
        Err(e) => tracing::warn!(error = %e, "health server task failed"),
    }
    result
}
