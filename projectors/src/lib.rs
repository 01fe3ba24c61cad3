//! Projectors: independent binaries, each a Kafka consumer group, built on one runtime.
//!
//! * [`runtime`]: consume, decode, apply in a database transaction with per-aggregate
//!   progress, retry, park and dead-letter, re-drive, lag, shutdown, rebuild.
//! * [`read_model`]: conversations, messages and documents per tenant, read by query-api.

pub mod read_model;
pub mod runtime;

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// The projector tables' migrations (the generation pointer). Versions 2xxx; the event
/// store's (1xxx) live in the same database.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}
