//! The PostgreSQL event store: schema (sqlx migrations in `command-api/migrations`),
//! cqrs-es stores over postgres-es, and [`log`], the committed-order reader the relay
//! and the audit endpoints use.

pub mod log;

use cqrs_es::Aggregate;
use cqrs_es::persist::PersistedEventStore;
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

pub use log::{Position, StoredEvent};

/// The event store's migrations. Other crates keep their own (with other version
/// numbers) in the same database, so missing versions are ignored.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// An event-sourced store for one aggregate type (no snapshots: postgres-es 0.5.0
/// snapshots apply new events twice).
pub type Store<A> = PersistedEventStore<PostgresEventRepository, A>;

pub fn store<A: Aggregate>(pool: PgPool) -> Store<A> {
    PersistedEventStore::new_event_store(PostgresEventRepository::new(pool))
}
