//! Idempotency records. A key is written by a trigger in the same transaction as its
//! events (migration 1001), so it is recorded if and only if they are; a second append
//! with the same key fails with a unique violation, which cqrs-es reports as a conflict.
//! This module reads and expires them.

use std::time::Duration;

use sqlx::{PgExecutor, Row};

/// What an earlier request with the key appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Hash of that request: the same key with another request is refused.
    pub request_hash: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub first_sequence: i64,
    pub last_sequence: i64,
}

/// The record of `key` as sent by `user_id` of `tenant_id`: a key is its caller's own
/// (migration 1007), so another member's same key finds nothing.
pub async fn find(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    user_id: &str,
    key: &str,
) -> Result<Option<KeyRecord>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT request_hash, aggregate_type, aggregate_id, first_sequence, last_sequence \
         FROM idempotency_keys WHERE tenant_id = $1 AND user_id = $2 AND key = $3",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(key)
    .fetch_optional(db)
    .await?;
    row.map(|r| {
        Ok(KeyRecord {
            request_hash: r.try_get("request_hash")?,
            aggregate_type: r.try_get("aggregate_type")?,
            aggregate_id: r.try_get("aggregate_id")?,
            first_sequence: r.try_get("first_sequence")?,
            last_sequence: r.try_get("last_sequence")?,
        })
    })
    .transpose()
}

/// Keys deleted per transaction when expiring.
const EXPIRE_BATCH: i64 = 1000;

/// Forgets keys older than `ttl`; a request with a forgotten key is a new request.
/// Deletes in small transactions: one long writing transaction would hold back every
/// committed-order reader of the log (the relay, audit replays) until it ended.
/// Returns how many were removed.
pub async fn expire(db: &sqlx::PgPool, ttl: Duration) -> Result<u64, sqlx::Error> {
    let mut removed = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE ctid IN (\
                 SELECT ctid FROM idempotency_keys WHERE created_at < now() - $1::interval LIMIT $2)",
        )
        .bind(format!("{} milliseconds", ttl.as_millis()))
        .bind(EXPIRE_BATCH)
        .execute(db)
        .await?;
        removed += done.rows_affected();
        if done.rows_affected() < EXPIRE_BATCH as u64 {
            return Ok(removed);
        }
    }
}
