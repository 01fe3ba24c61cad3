//! Snapshots of aggregate states (`aggregate_snapshots`): one row per aggregate, the
//! newest wins. Reading one gives a state and the sequence it is at; the caller applies
//! the events after it ([`crate::log::aggregate_events`]). The table is a cache of the
//! events: what is written here is never published, and losing it costs only time.

use serde_json::Value;
use sqlx::PgExecutor;

/// A state as of `sequence`, written in `format`.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub sequence: i64,
    pub state: Value,
}

/// The aggregate's snapshot, if there is one of `format`.
pub async fn latest(
    db: impl PgExecutor<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
    format: i32,
) -> Result<Option<Snapshot>, sqlx::Error> {
    let row: Option<(i64, Value)> = sqlx::query_as(
        "SELECT sequence, state FROM aggregate_snapshots \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND format = $3",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(format)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(sequence, state)| Snapshot { sequence, state }))
}

/// Keeps `state` as of `sequence` unless a snapshot of the same format at a later
/// sequence is already there (two replicas may write one at once). A snapshot of
/// another format is replaced.
pub async fn save(
    db: impl PgExecutor<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
    format: i32,
    snapshot: &Snapshot,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO aggregate_snapshots AS s (aggregate_type, aggregate_id, format, sequence, state) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
         SET format = EXCLUDED.format, sequence = EXCLUDED.sequence, state = EXCLUDED.state, \
             taken_at = now() \
         WHERE s.format <> EXCLUDED.format OR s.sequence < EXCLUDED.sequence",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(format)
    .bind(snapshot.sequence)
    .bind(&snapshot.state)
    .execute(db)
    .await?;
    Ok(())
}

/// An erasure (docs/DATA-PROTECTION.md): the snapshots of the tenant's `conversations`
/// and of the documents made from them (every snapshot of the tenant with `whole`) go,
/// so that the next load folds the events as they read now. Returns how many went.
pub async fn erase(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    conversations: &[uuid::Uuid],
    whole: bool,
) -> Result<u64, sqlx::Error> {
    let ids: Vec<String> = conversations.iter().map(uuid::Uuid::to_string).collect();
    let done = sqlx::query(
        "DELETE FROM aggregate_snapshots
          WHERE state ->> 'tenant_id' = $1
            AND ($2 OR (aggregate_type = 'conversation' AND aggregate_id = ANY($3))
                    OR (aggregate_type = 'document' AND state ->> 'conversation_id' = ANY($3)))",
    )
    .bind(tenant_id)
    .bind(whole)
    .bind(&ids)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
