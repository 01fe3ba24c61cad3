//! query-api binary: reads its settings from the environment and serves HTTP.

use anyhow::Context;
use platform::{config, db::DbConfig, http, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init("query-api");
    let addr: std::net::SocketAddr =
        config::parse_or("QUERY_API_ADDR", ([127, 0, 0, 1], 8081).into())?;
    let pool = DbConfig::from_env()?
        .connect()
        .await
        .context("connecting to PostgreSQL")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    http::serve(listener, http::health_routes(pool), http::shutdown_signal()).await?;
    Ok(())
}
