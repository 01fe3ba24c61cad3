//! Webhook delivery (issue 13): a projection and a dispatcher in one binary
//! (`webhooks-projector`).
//!
//! * [`fanout::Fanout`], a table projection on the shared runtime (consumer group
//!   `threadline-webhooks`): each event becomes one message per endpoint of its tenant
//!   that was subscribed to its type when it was committed ([`endpoints`]), written to
//!   the [`ledger`] with the projection's progress, exactly once.
//! * [`dispatch::Dispatcher`], running beside the consumer: claims due messages, sends
//!   them signed ([`client`], Standard Webhooks), records each attempt, and schedules
//!   the next ([`schedule`], persisted, so a restart resumes it).
//!
//! Writes the tables of [`ledger`] (`webhook-ledger`, migrations 5xxx), which live outside
//! projection generations: a rebuild never sends anything again. Secrets are opened only
//! in memory, at sending time.

pub mod client;
pub mod dispatch;
pub mod endpoints;
pub mod fanout;
pub mod message;
pub mod schedule;

pub use webhook_ledger as ledger;

use std::time::Duration;

use commands::WebhookSettings;
use common::config::{self, ConfigError};
use sqlx::PgPool;
use sqlx::migrate::MigrateError;

pub use dispatch::Dispatcher;
pub use fanout::{Fanout, NAME};
pub use schedule::Schedule;

/// The ledger's migrations (versions 5xxx) in the shared database.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    ledger::migrate(pool).await
}

/// How the dispatcher sends.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// The sealing key and the address rules (shared with command-api).
    pub webhooks: WebhookSettings,
    pub schedule: Schedule,
    /// An attempt's limit: success is a 2xx within it.
    pub timeout: Duration,
    /// Attempts in flight at once, in all.
    pub concurrency: usize,
    /// Attempts in flight at once to one endpoint.
    pub per_endpoint: usize,
    /// How long a claimed message is held before another attempt may take it.
    pub lease: Duration,
    /// How often the ledger is asked for due messages when nothing is in flight.
    pub poll: Duration,
    /// An endpoint failing without a success for this long is disabled.
    pub disable_after: chrono::Duration,
}

impl DeliverySettings {
    /// `WEBHOOK_SECRET_KEY` (required here), `WEBHOOK_ALLOW_LOOPBACK`, `WEBHOOK_ALLOW_HTTP`,
    /// `WEBHOOK_RETRY_SCHEDULE` (default [`schedule::DEFAULT`]), `WEBHOOK_TIMEOUT_MS`
    /// (15000), `WEBHOOK_CONCURRENCY` (64), `WEBHOOK_PER_ENDPOINT` (8), `WEBHOOK_POLL_MS`
    /// (200), `WEBHOOK_DISABLE_AFTER_HOURS` (120).
    pub fn from_env() -> Result<DeliverySettings, ConfigError> {
        let webhooks = WebhookSettings::from_env()?.ok_or(ConfigError::Missing {
            name: "WEBHOOK_SECRET_KEY",
        })?;
        let schedule_text = config::var("WEBHOOK_RETRY_SCHEDULE");
        let schedule = match &schedule_text {
            None => Schedule::default(),
            Some(text) => Schedule::parse(text).map_err(|e| ConfigError::Invalid {
                name: "WEBHOOK_RETRY_SCHEDULE",
                value: text.clone(),
                reason: e.to_string(),
            })?,
        };
        let timeout = Duration::from_millis(config::parse_or("WEBHOOK_TIMEOUT_MS", 15_000u64)?);
        let hours: i64 = config::parse_or("WEBHOOK_DISABLE_AFTER_HOURS", 120)?;
        Ok(DeliverySettings {
            webhooks,
            schedule,
            timeout,
            concurrency: config::parse_or("WEBHOOK_CONCURRENCY", 64usize)?.max(1),
            per_endpoint: config::parse_or("WEBHOOK_PER_ENDPOINT", 8usize)?.max(1),
            lease: timeout * 2 + Duration::from_secs(15),
            poll: Duration::from_millis(config::parse_or("WEBHOOK_POLL_MS", 200u64)?),
            disable_after: chrono::Duration::hours(hours),
        })
    }
}
