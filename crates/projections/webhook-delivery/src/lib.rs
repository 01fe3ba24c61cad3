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

/// The dispatcher's settings (webhooks-projector reads them).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Webhooks")]
pub struct DeliveryArgs {
    /// The sealing key (required here) and the address rules, as command-api reads them.
    #[command(flatten)]
    pub keys: commands::webhooks::WebhookKeys,
    /// Delay before each attempt (±10 % jitter); after the last the message is dead.
    #[arg(long = "webhook-retry-schedule", env = "WEBHOOK_RETRY_SCHEDULE", default_value = schedule::DEFAULT, value_parser = schedule_setting)]
    pub schedule: Schedule,
    /// Milliseconds in which an attempt must get a 2xx to succeed; redirects are not
    /// followed.
    #[arg(id = "webhook-timeout-ms", long = "webhook-timeout-ms", env = "WEBHOOK_TIMEOUT_MS", default_value = "15000", value_parser = config::millis)]
    pub timeout: Duration,
    /// Attempts in flight at once, in all.
    #[arg(id = "webhook-concurrency", long = "webhook-concurrency", env = "WEBHOOK_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Attempts claimed per endpoint at once (a slow endpoint holds at most twice that).
    #[arg(long = "webhook-per-endpoint", env = "WEBHOOK_PER_ENDPOINT", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub per_endpoint: u32,
    /// Milliseconds between asking the ledger for due messages.
    #[arg(long = "webhook-poll-ms", env = "WEBHOOK_POLL_MS", default_value = "200", value_parser = config::millis)]
    pub poll: Duration,
    /// Hours an endpoint may fail without a success before it is disabled (its owner is
    /// told).
    #[arg(
        long = "webhook-disable-after-hours",
        env = "WEBHOOK_DISABLE_AFTER_HOURS",
        default_value_t = 120
    )]
    pub disable_after_hours: i64,
}

fn schedule_setting(text: &str) -> Result<Schedule, String> {
    Schedule::parse(text).map_err(|e| e.to_string())
}

impl TryFrom<DeliveryArgs> for DeliverySettings {
    type Error = ConfigError;

    fn try_from(args: DeliveryArgs) -> Result<Self, ConfigError> {
        let webhooks = WebhookSettings::from_keys(args.keys)?.ok_or(ConfigError::Missing {
            name: "WEBHOOK_SECRET_KEY",
        })?;
        Ok(DeliverySettings {
            webhooks,
            schedule: args.schedule,
            timeout: args.timeout,
            concurrency: args.concurrency as usize,
            per_endpoint: args.per_endpoint as usize,
            lease: args.timeout * 2 + Duration::from_secs(15),
            poll: args.poll,
            disable_after: chrono::Duration::hours(args.disable_after_hours),
        })
    }
}
