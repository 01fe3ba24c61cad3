//! What a projection is and how events reach it, without Kafka: the two kinds of
//! projection ([`sink`]), the one interface that drives either ([`apply::Sink`]), the
//! runtime's bookkeeping (progress, parked events, the effect ledger), generations,
//! rebuilds from the event store, re-drives of parked events, and the progress readers
//! wait on ([`progress`]).
//!
//! The Kafka consumer loop that feeds live events is `projector-runtime`; the query API
//! depends on this crate (through the projections' queries) without linking librdkafka.
//!
//! Owns the `projections` pointer and the `effect_ledger` (migrations 2xxx), and in each
//! generation schema `<name>_g<N>` the `progress` and `parked` tables.

pub mod apply;
pub mod bookkeeping;
pub mod deltas;
pub mod envelope;
pub mod generation;
mod locks;
pub mod progress;
pub mod rebuild;
pub mod redrive;
pub mod sink;

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

pub use apply::{EffectSink, Outcome, Sink, TableSink, Target};
pub use envelope::{Envelope, EnvelopeError, EventRef};
pub use rebuild::{
    RebuildPlan, RebuildReport, WorkDone, bootstrap, rebuild, rebuild_plan, rebuild_watched,
};
pub use redrive::{
    RedriveReport, parked_in, parked_now, redrive, redrive_watched, request_redrive,
    take_redrive_request,
};
pub use sink::{
    ApplyError, DEFAULT_EFFECT_CONCURRENCY, EffectError, EffectId, EffectProjection, Parallelism,
    Pass, Planned, TableProjection,
};

/// Failures of rebuilds, re-drives and start-up.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("projection {0} has no live generation")]
    NoGeneration(&'static str),
    #[error("{0}")]
    Apply(String),
}

/// The projection tables' migrations (the generation pointer, the effect ledger).
/// Versions 2xxx; the event store's (1xxx) live in the same database.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}
