//! command-api: REST commands plus the outbox relay (one active relay across replicas)
//! and the audit chain's keeper.
//!
//!     command-api                 serve commands and run the relay until SIGTERM/Ctrl-C
//!     command-api relay-reset     move the relay cursor (RELAY_NAME) back to the start of
//!                                 this cluster's log: every event is published again
//!                                 (after a restore into another cluster; see docs/OPERATIONS.md)
//!     command-api check-settings  check the settings without connecting to anything, exit
//!     command-api --help          every setting, with its variable, default and meaning

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use command_api::http::{AppState, router};
use commands::intake::{Extractor, ExtractorArgs};
use commands::webhooks::WebhookKeys;
use commands::{CommandService, ServiceSettings, TemplateGenerator, WebhookSettings};
use kafka::KafkaConfig;
use platform::auth::{AuthConfig, Authenticator};
use platform::{ApiSettings, config, http, telemetry};
use relay::{Relay, RelayConfig, RelaySettings};
use tokio::sync::watch;

/// REST commands plus the outbox relay (one active relay across replicas). Every setting
/// is a flag or its environment variable.
#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(subcommand)]
    command: Option<Verb>,
    /// Where commands are served.
    #[arg(
        id = "command-api-addr",
        long = "command-api-addr",
        env = "COMMAND_API_ADDR",
        default_value = "127.0.0.1:8080",
        help_heading = "Command API"
    )]
    addr: SocketAddr,
    /// How long an `Idempotency-Key` replays its first answer, in hours.
    #[arg(
        long = "idempotency-key-ttl-hours",
        env = "IDEMPOTENCY_KEY_TTL_HOURS",
        default_value_t = 24,
        help_heading = "Command API"
    )]
    idempotency_ttl_hours: u64,
    /// How often each tenant's audit chain head is recorded (and logged), in seconds. The
    /// chain itself is extended as commits arrive, by every replica in turn.
    #[arg(
        long = "audit-chain-record-secs",
        env = "AUDIT_CHAIN_RECORD_SECS",
        default_value = "60",
        value_parser = config::secs,
        help_heading = "Command API"
    )]
    audit_chain_record: Duration,
    /// How often the tenants' retention policies are applied (conversations ended longer
    /// ago than a policy keeps them are erased), in seconds.
    #[arg(
        long = "retention-apply-secs",
        env = "RETENTION_APPLY_SECS",
        default_value = "3600",
        value_parser = config::secs,
        help_heading = "Command API"
    )]
    retention_apply: Duration,
    #[command(flatten)]
    service: ServiceSettings,
    #[command(flatten)]
    extractor: ExtractorArgs,
    #[command(flatten)]
    webhooks: WebhookKeys,
    #[command(flatten)]
    relay: RelaySettings,
    #[command(flatten)]
    kafka: KafkaConfig,
    #[command(flatten)]
    data: event_store::DataProtection,
    #[command(flatten)]
    api: ApiSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
enum Verb {
    /// Serve commands and run the relay until SIGTERM/Ctrl-C (also what no command does).
    Run,
    /// Move the relay cursor (`RELAY_NAME`) back to the start of this cluster's log: every
    /// event is published again (after a restore into another cluster; see
    /// docs/OPERATIONS.md).
    RelayReset,
    /// Check the settings without connecting to anything; exit 0 when they hold.
    CheckSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = config::parse("command-api");
    // Everything that can be wrong with the settings, before connecting to anything.
    let auth = AuthConfig::try_from(cli.api.auth)?;
    let webhooks = WebhookSettings::from_keys(cli.webhooks)?;
    let master = cli.data.keyring()?;
    if cli.command == Some(Verb::CheckSettings) {
        println!("command-api: settings ok");
        return Ok(());
    }
    let telemetry = telemetry::init("command-api", &cli.api.telemetry);
    let shutdown = cli.api.shutdown;
    let addr = cli.addr;
    let db = cli.api.database;
    let pool = db.connect().await.context("connecting to PostgreSQL")?;
    event_store::migrate(&pool)
        .await
        .context("migrating the event store")?;
    let relay_name = cli.relay.name.clone();
    if cli.command == Some(Verb::RelayReset) {
        let mut conn = pool.acquire().await?;
        event_store::outbox::reset_cursor(&mut conn, &relay_name).await?;
        println!("relay cursor {relay_name:?} reset: every event will be published again");
        return Ok(());
    }
    let auth = Authenticator::new(auth);

    // The store as the commands of this process read and seal it (the relay publishes what
    // is stored, sealed fields sealed).
    let events = event_store::Reader::new(pool.clone(), master);
    let (stop, stopped) = watch::channel(false);
    // Each commit wakes the relay of this process: published at once, not at its next poll.
    let commits = Arc::new(tokio::sync::Notify::new());
    let (relay, relay_status) = if cli.relay.enabled {
        let (relay, status) = Relay::new(RelayConfig {
            name: relay_name.clone(),
            database: db.clone(),
            kafka: cli.kafka,
            batch_size: cli.relay.batch_size,
            idle_poll: cli.relay.idle_poll,
        });
        let relay = relay.woken_by(commits.clone());
        (Some(tokio::spawn(relay.run(stopped.clone()))), Some(status))
    } else {
        (None, None)
    };

    // Tamper evidence: the chain follows the commits (docs/DATA-PROTECTION.md).
    let chained = Arc::new(tokio::sync::Notify::new());
    let chain = tokio::spawn(event_store::chain::keep(
        pool.clone(),
        event_store::chain::Keeping {
            record_every: cli.audit_chain_record,
            ..Default::default()
        },
        chained.clone(),
        stopped.clone(),
    ));

    let extractor = Extractor::new(cli.extractor.into());
    extractor.check()?;
    let mut service =
        CommandService::from_settings(events, Arc::new(TemplateGenerator), &cli.service)
            .with_extractor(extractor)
            .with_commit_signal(commits)
            .with_commit_signal(chained);
    match webhooks {
        Some(webhooks) => service = service.with_webhooks(webhooks),
        None => {
            tracing::info!("WEBHOOK_SECRET_KEY is not set: webhook endpoints cannot be created")
        }
    }
    let service = Arc::new(service);
    let limits = http::HttpLimits::new(
        cli.api.http,
        command_api::http::transport_body_limit(&service),
    );
    let ttl = Duration::from_secs(3600 * cli.idempotency_ttl_hours);
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
    let retention = tokio::spawn(commands::retention::keep(
        service.clone(),
        cli.retention_apply,
        stopped.clone(),
    ));
    let app = router(AppState {
        service,
        auth,
        relay: relay_status,
        relay_name,
        edge: cli.api.edge,
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
    let _ = chain.await;
    let _ = retention.await;
    telemetry.shutdown().await;
    Ok(())
}
