//! read-model-projector: keeps the conversations/messages/documents read model.
//!
//!     read-model-projector            consume until SIGTERM/Ctrl-C
//!     read-model-projector redrive    apply parked events in order, then exit
//!     read-model-projector rebuild    replay the event store into a new generation, switch, exit

use std::sync::Arc;

use anyhow::Context;
use platform::kafka::KafkaConfig;
use platform::{db::DbConfig, http, telemetry};
use projectors::read_model::{NAME, ReadModel};
use projectors::runtime::{self, Runtime, Settings};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = telemetry::init("read-model-projector");
    let pool = DbConfig::from_env()?
        .connect()
        .await
        .context("connecting to PostgreSQL")?;
    projectors::migrate(&pool)
        .await
        .context("migrating projector tables")?;
    let projection = Arc::new(ReadModel);
    match std::env::args().nth(1).as_deref() {
        None | Some("run") => {
            let pool_for_health = pool.clone();
            let (runtime, _status) = Runtime::new(
                pool,
                projection,
                KafkaConfig::from_env()?,
                Settings::for_projection(NAME)?,
            );
            let (stop, stopped) = watch::channel(false);
            let consumer = tokio::spawn(runtime.run(stopped));
            // /healthz, /readyz, /metrics (lag gauges) for the orchestrator and Prometheus.
            let addr: std::net::SocketAddr =
                platform::config::parse_or("PROJECTOR_ADDR", ([127, 0, 0, 1], 8082).into())?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            http::serve(
                listener,
                http::health_routes(pool_for_health),
                http::shutdown_signal(),
            )
            .await?;
            let _ = stop.send(true);
            consumer.await??;
        }
        Some("redrive") => {
            let report = runtime::redrive(&pool, projection.as_ref()).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Some("rebuild") => {
            let report = runtime::rebuild(&pool, projection.as_ref()).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Some(other) => anyhow::bail!("unknown command {other:?}: use run, redrive or rebuild"),
    }
    telemetry.shutdown().await;
    Ok(())
}
