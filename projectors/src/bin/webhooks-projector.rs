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
use platform::db::DbConfig;
use projection::TableSink;
use webhook_delivery::{DeliverySettings, Dispatcher, Fanout};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = DeliverySettings::from_env()?;
    let writer = ServiceSettings::from_env()?;
    let first_delay = settings.schedule.first();
    // The ledger exists before the fan-out writes to it.
    let pool = DbConfig::from_env()?
        .connect()
        .await
        .context("connecting to PostgreSQL")?;
    webhook_delivery::migrate(&pool)
        .await
        .context("migrating the delivery ledger")?;
    pool.close().await;
    let companion: projector_runtime::service::Companion = Box::new(move |pool, stop| {
        Box::pin(async move {
            let commands =
                CommandService::from_settings(pool.clone(), Arc::new(TemplateGenerator), &writer);
            let dispatcher = Dispatcher::new(pool, commands, settings)
                .map_err(|e| format!("building the HTTP client: {e}"))?;
            dispatcher.run(stop).await
        })
    });
    projector_runtime::service::main_with(
        "webhooks-projector",
        TableSink(Fanout::new(first_delay)),
        Some(companion),
    )
    .await
    .context("webhooks-projector")?;
    Ok(())
}
