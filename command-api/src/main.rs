//! command-api: REST commands plus the outbox relay (one active relay across replicas).
//!
//!     command-api                serve commands and run the relay until SIGTERM/Ctrl-C
//!     command-api relay-reset    move the relay cursor (RELAY_NAME) back to the start of
//!                                this cluster's log: every event is published again
//!                                (after a restore into another cluster; see docs/OPERATIONS.md)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use command_api::http::{AppState, router};
use commands::{CommandService, TemplateGenerator};
use kafka::KafkaConfig;
use platform::auth::{AuthConfig, Authenticator};
use platform::shutdown::Shutdown;
use platform::{config, db::DbConfig, http, telemetry};
use relay::{Relay, RelayConfig};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = telemetry::init("command-api");
    let shutdown = Shutdown::from_env()?;
    let addr: SocketAddr = config::parse_or("COMMAND_API_ADDR", ([127, 0, 0, 1], 8080).into())?;
    let db = DbConfig::from_env()?;
    let pool = db.connect().await.context("connecting to PostgreSQL")?;
    event_store::migrate(&pool)
        .await
        .context("migrating the event store")?;
    let relay_name = config::var("RELAY_NAME").unwrap_or_else(|| "kafka".into());
    match std::env::args().nth(1).as_deref() {
        None | Some("run") => {}
        Some("relay-reset") => {
            let mut conn = pool.acquire().await?;
            event_store::outbox::reset_cursor(&mut conn, &relay_name).await?;
            println!("relay cursor {relay_name:?} reset: every event will be published again");
            return Ok(());
        }
        Some(other) => anyhow::bail!("unknown command {other:?}: use run or relay-reset"),
    }
    let auth = Authenticator::new(AuthConfig::from_env()?);

    let (stop, stopped) = watch::channel(false);
    // Each commit wakes the relay of this process: published at once, not at its next poll.
    let commits = Arc::new(tokio::sync::Notify::new());
    let (relay, relay_status) = if config::parse_or("RELAY_ENABLED", true)? {
        let (relay, status) = Relay::new(RelayConfig {
            name: relay_name.clone(),
            database: db.clone(),
            kafka: KafkaConfig::from_env()?,
            batch_size: config::parse_or("RELAY_BATCH_SIZE", 500)?,
            idle_poll: Duration::from_millis(config::parse_or("RELAY_IDLE_POLL_MS", 20)?),
        });
        let relay = relay.woken_by(commits.clone());
        (Some(tokio::spawn(relay.run(stopped))), Some(status))
    } else {
        (None, None)
    };

    let extractor =
        commands::intake::Extractor::new(commands::intake::ExtractorSettings::from_env()?);
    extractor.check()?;
    let settings = commands::ServiceSettings::from_env()?;
    let mut service = CommandService::from_settings(pool, Arc::new(TemplateGenerator), &settings)
        .with_extractor(extractor)
        .with_commit_signal(commits);
    match commands::WebhookSettings::from_env()? {
        Some(webhooks) => service = service.with_webhooks(webhooks),
        None => {
            tracing::info!("WEBHOOK_SECRET_KEY is not set: webhook endpoints cannot be created")
        }
    }
    let service = Arc::new(service);
    let limits = http::HttpLimits::from_env(command_api::http::transport_body_limit(&service))?;
    let ttl = Duration::from_secs(3600 * config::parse_or("IDEMPOTENCY_KEY_TTL_HOURS", 24u64)?);
    let expiry = tokio::spawn({
        let service = service.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(600));
            loop {
                every.tick().await;
                match service.expire_idempotency_keys(ttl).await {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "idempotency keys expired"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "expiring idempotency keys failed"),
                }
            }
        }
    });
    let app = router(AppState {
        service,
        auth,
        relay: relay_status,
        relay_name,
        edge: platform::edge::EdgeConfig::from_env()?,
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    http::serve(listener, app, limits, shutdown.requested()).await?;
    expiry.abort();
    let _ = stop.send(true);
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    telemetry.shutdown().await;
    Ok(())
}
