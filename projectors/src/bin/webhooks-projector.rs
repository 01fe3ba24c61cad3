//! webhooks-projector: webhook delivery. Fans each event out to the endpoints subscribed
//! to it (a table projection, consumer group `threadline-webhooks`) and, beside the
//! consumer, dispatches the messages on their persisted retry schedule (`WEBHOOK_*`).
//!
//!     webhooks-projector            consume and deliver until SIGTERM/Ctrl-C
//!     webhooks-projector redrive    fan out parked events in order, then exit
//!     webhooks-projector rebuild    new generation (sends nothing: history), exit

use std::sync::Arc;

use anyhow::Context;
use commands::{CommandService, ServiceSettings, TemplateGenerator};
use projection::TableSink;
use projector_runtime::service::Cli;
use webhook_delivery::{DeliveryArgs, DeliverySettings, Dispatcher, Fanout};

const NAME: &str = "webhooks-projector";
const ABOUT: &str = "Webhook delivery: fans each event out to the endpoints subscribed to it and dispatches the messages on their persisted retry schedule.";

/// How messages are delivered, and how delivery outcomes are written.
#[derive(Debug, Clone, clap::Args)]
struct Settings {
    #[command(flatten)]
    delivery: DeliveryArgs,
    #[command(flatten)]
    writer: ServiceSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::<Settings>::parse(NAME, ABOUT);
    let checking = cli.checking();
    let settings = DeliverySettings::try_from(cli.projection.delivery)?;
    let writer = cli.projection.writer;
    let first_delay = settings.schedule.first();
    // An invalid master key is a settings error, found by check-settings too.
    cli.runtime.data.keyring()?;
    if checking {
        projector_runtime::service::settings_ok(NAME);
        return Ok(());
    }
    // The ledger exists before the fan-out writes to it.
    let pool = cli
        .runtime
        .database
        .connect()
        .await
        .context("connecting to PostgreSQL")?;
    webhook_delivery::migrate(&pool)
        .await
        .context("migrating the delivery ledger")?;
    pool.close().await;
    let companion: projector_runtime::service::Companion = Box::new(move |events, stop| {
        Box::pin(async move {
            let pool = events.pool().clone();
            let commands =
                CommandService::from_settings(events, Arc::new(TemplateGenerator), &writer);
            let dispatcher = Dispatcher::new(pool, commands, settings)
                .map_err(|e| format!("building the HTTP client: {e}"))?;
            dispatcher.run(stop).await
        })
    });
    projector_runtime::service::main_with(
        NAME,
        cli.command,
        cli.runtime,
        TableSink(Fanout::new(first_delay)),
        Some(companion),
    )
    .await
    .context("webhooks-projector")?;
    Ok(())
}
