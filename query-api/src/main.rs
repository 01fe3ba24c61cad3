//! query-api: read models, semantic search and audit replays over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use platform::auth::{AuthConfig, Authenticator};
use platform::shutdown::Shutdown;
use platform::{config, db::DbConfig, http, telemetry};
use query_api::http::{AppState, router};
use read_model::Reads;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = telemetry::init("query-api");
    let shutdown = Shutdown::from_env()?;
    let addr: SocketAddr = config::parse_or("QUERY_API_ADDR", ([127, 0, 0, 1], 8081).into())?;
    let pool = DbConfig::from_env()?
        .connect()
        .await
        .context("connecting to PostgreSQL")?;
    let (embedder, store) = semantic_index::setup::from_env(&pool).await?;
    let search = semantic_index::Search::new(pool.clone(), store, vec![embedder]);
    let progress = projection::progress::Announcements::listen(pool.clone());
    let app = router(AppState {
        reads: Arc::new(Reads::new(pool.clone())),
        search: Arc::new(search),
        auth: Authenticator::new(AuthConfig::from_env()?),
        read_wait_max: Duration::from_millis(config::parse_or("READ_WAIT_MAX_MS", 3000)?),
        stream_max: Duration::from_secs(config::parse_or("AUDIT_STREAM_MAX_SECS", 600)?),
        streams: std::sync::Arc::new(tokio::sync::Semaphore::new(config::parse_or(
            "AUDIT_STREAMS_MAX",
            32usize,
        )?)),
        analytics: std::sync::Arc::new(analytics::queries::Usage::new(pool.clone()).with_prices(
            analytics::queries::Prices::parse(
                &config::var("ANALYTICS_PRICES").unwrap_or_default(),
            )?,
        )),
        live: query_api::http::live::LiveStreams::with_per_subject(
            config::parse_or("LIVE_STREAMS_PER_TENANT", 100usize)?,
            config::parse_or(
                "LIVE_STREAMS_PER_SUBJECT",
                query_api::http::live::PER_SUBJECT,
            )?,
        ),
        progress: Some(progress),
        edge: platform::edge::EdgeConfig::from_env()?,
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let limits = http::HttpLimits::from_env(query_api::http::BODY_LIMIT)?;
    http::serve(listener, app, limits, shutdown.requested()).await?;
    telemetry.shutdown().await;
    Ok(())
}
