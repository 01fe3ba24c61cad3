//! cqrs-es's storage port for our events table: reads through postgres-es (its queries
//! match our table), appends through the [`Appender`]'s group commit. postgres-es writes
//! each event with its own statement and each command in its own transaction, which
//! cannot share a commit between commands; cqrs-es itself is kept (its
//! `PersistedEventRepository` is the public seam for this).

use cqrs_es::Aggregate;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use postgres_es::PostgresEventRepository;
use serde_json::Value;

use crate::append::Appender;

pub struct GroupCommitRepository {
    reads: PostgresEventRepository,
    appender: Appender,
}

impl GroupCommitRepository {
    pub fn new(appender: Appender) -> Self {
        Self {
            reads: PostgresEventRepository::new(appender.pool().clone()),
            appender,
        }
    }
}

impl PersistedEventRepository for GroupCommitRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    /// The store runs in event-store mode: cqrs-es never asks for its snapshots.
    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        _snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        self.appender.append(events.to_vec()).await
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_all_events::<A>().await
    }
}
