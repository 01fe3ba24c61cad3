//! The PostgreSQL event store. It owns the tables of `migrations/` (versions 1xxx) and is
//! the only code that writes or queries them:
//!
//! * `events`: the log, and the outbox the relay publishes from. Appended through cqrs-es
//!   ([`store`], in event-store mode) by the [`append`] group commit, several commands per
//!   transaction; read in committed order by [`log`].
//! * `idempotency_keys`: written by a trigger in the append's own transaction; looked up
//!   and expired by [`idempotency`].
//! * `relay_cursor`: how far each relay has published ([`outbox`]).
//! * `aggregate_snapshots`: the latest state of long streams, a cache of the events
//!   ([`snapshots`]).
//! * `blobs`: content-addressed originals of uploaded files, outside the events ([`blobs`]).
//!
//! Knows nothing of particular aggregates (cqrs-es' `Aggregate` is generic) nor of Kafka.

pub mod append;
pub mod blobs;
pub mod chain;
pub mod idempotency;
pub mod keys;
pub mod log;
pub mod outbox;
pub mod protect;
pub mod reader;
mod repository;
pub mod snapshots;
pub mod stream;

use cqrs_es::Aggregate;
use cqrs_es::persist::PersistedEventStore;
use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

pub use append::Appender;
pub use common::unavailable::{is_transient_sqlstate, is_unavailable, is_unavailable_dyn};
pub use log::StoredEvent;
pub use reader::{DataProtection, Reader};
pub use repository::GroupCommitRepository;
pub use schemas::CommitPosition;
pub use stream::{Recorded, Stream, StreamError};

/// The event store's migrations. Other crates keep their own (with other version
/// numbers) in the same database, so missing versions are ignored.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// An event-sourced store for one aggregate type (no cqrs-es snapshots: postgres-es
/// 0.5.0's apply new events twice).
pub type Store<A> = PersistedEventStore<GroupCommitRepository, A>;

/// A store whose appends go through `appender` (stores of every aggregate type can share
/// one, so their commands share commits).
pub fn store<A: Aggregate>(appender: &Appender) -> Store<A> {
    PersistedEventStore::new_event_store(GroupCommitRepository::new(appender.clone()))
}
