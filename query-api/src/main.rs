//! query-api: read models, semantic search and audit replays over HTTP.
//!
//!     query-api                 serve reads until SIGTERM/Ctrl-C
//!     query-api check-settings  check the settings without connecting to anything, exit
//!     query-api --help          every setting, with its variable, default and meaning

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use analytics::queries::Prices;
use anyhow::Context;
use platform::auth::{AuthConfig, Authenticator};
use platform::{ApiSettings, config, http, telemetry};
use query_api::http::{AppState, router};
use read_model::Reads;
use semantic_index::setup::SearchSettings;

/// Read models, semantic search, analytics and audit replays over HTTP. Every setting is
/// a flag or its environment variable.
#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(subcommand)]
    command: Option<Verb>,
    /// Where reads are served.
    #[arg(
        id = "query-api-addr",
        long = "query-api-addr",
        env = "QUERY_API_ADDR",
        default_value = "127.0.0.1:8081",
        help_heading = "Query API"
    )]
    addr: SocketAddr,
    /// Longest a read waits for its `position`, in milliseconds.
    #[arg(long = "read-wait-max-ms", env = "READ_WAIT_MAX_MS", default_value = "3000", value_parser = config::millis, help_heading = "Query API")]
    read_wait_max: Duration,
    /// An audit stream ends with a resumable `stream_time_limit` line after this many
    /// seconds.
    #[arg(long = "audit-stream-max-secs", env = "AUDIT_STREAM_MAX_SECS", default_value = "600", value_parser = config::secs, help_heading = "Query API")]
    audit_stream_max: Duration,
    /// Audit streams open at once; one more is 503 `too_many_streams`.
    #[arg(
        long = "audit-streams-max",
        env = "AUDIT_STREAMS_MAX",
        default_value_t = 32,
        help_heading = "Query API"
    )]
    audit_streams_max: usize,
    /// Live conversation streams open at once per tenant.
    #[arg(
        long = "live-streams-per-tenant",
        env = "LIVE_STREAMS_PER_TENANT",
        default_value_t = 100,
        help_heading = "Query API"
    )]
    live_streams_per_tenant: usize,
    /// Live streams one user (token subject) may hold open, so one member cannot take the
    /// tenant's.
    #[arg(long = "live-streams-per-subject", env = "LIVE_STREAMS_PER_SUBJECT", default_value_t = query_api::http::live::PER_SUBJECT, help_heading = "Query API")]
    live_streams_per_subject: usize,
    /// `model=prompt/completion` USD per million tokens, comma-separated (e.g.
    /// `openai/gpt-4o-mini=0.15/0.60`); usage answers then carry `estimated_cost_usd` by
    /// model.
    #[arg(long = "analytics-prices", env = "ANALYTICS_PRICES", default_value = "", value_parser = prices, help_heading = "Query API")]
    analytics_prices: Prices,
    #[command(flatten)]
    search: SearchSettings,
    #[command(flatten)]
    data: event_store::DataProtection,
    #[command(flatten)]
    api: ApiSettings,
}

fn prices(text: &str) -> Result<Prices, String> {
    Prices::parse(text).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
enum Verb {
    /// Serve reads until SIGTERM/Ctrl-C (also what no command does).
    Run,
    /// Check the settings without connecting to anything; exit 0 when they hold.
    CheckSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = config::parse("query-api");
    let auth = AuthConfig::try_from(cli.api.auth)?;
    cli.search.check()?;
    let master = cli.data.keyring()?;
    if cli.command == Some(Verb::CheckSettings) {
        println!("query-api: settings ok");
        return Ok(());
    }
    let telemetry = telemetry::init("query-api", &cli.api.telemetry);
    let shutdown = cli.api.shutdown;
    let addr = cli.addr;
    let pool = cli
        .api
        .database
        .connect()
        .await
        .context("connecting to PostgreSQL")?;
    let (embedder, store) = semantic_index::setup::build(cli.search, &pool).await?;
    let search = semantic_index::Search::new(pool.clone(), store, vec![embedder]);
    let progress = projection::progress::Announcements::listen(pool.clone());
    let app = router(AppState {
        reads: Arc::new(Reads::new(pool.clone())),
        events: event_store::Reader::new(pool.clone(), master),
        search: Arc::new(search),
        auth: Authenticator::new(auth),
        read_wait_max: cli.read_wait_max,
        stream_max: cli.audit_stream_max,
        streams: Arc::new(tokio::sync::Semaphore::new(cli.audit_streams_max)),
        analytics: Arc::new(
            analytics::queries::Usage::new(pool.clone()).with_prices(cli.analytics_prices),
        ),
        live: query_api::http::live::LiveStreams::with_per_subject(
            cli.live_streams_per_tenant,
            cli.live_streams_per_subject,
        ),
        progress: Some(progress),
        edge: cli.api.edge,
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let limits = http::HttpLimits::new(cli.api.http, query_api::http::BODY_LIMIT);
    http::serve(listener, app, limits, shutdown.requested()).await?;
    telemetry.shutdown().await;
    Ok(())
}
