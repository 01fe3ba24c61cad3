//! Rebuild: replay the event store into a fresh generation, switch the live pointer to
//! it, then catch up. Readers keep reading the old generation until the switch commits;
//! the live projector keeps consuming and follows the switch (an event it applies to the
//! new generation before the catch-up reaches it fills its gap from the event store).

use std::time::Instant;

use command_api::store::log::{self, Position};
use sqlx::PgPool;

use super::apply::{self, Mode};
use super::envelope::{self, Envelope};
use super::{Projection, RuntimeError, generation};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RebuildReport {
    pub generation: i32,
    pub schema: String,
    pub replayed: u64,
    pub parked: u64,
    pub seconds: f64,
}

const BATCH: i64 = 1000;

/// Replays every committed event after `from` into `schema`; returns where it ended.
async fn replay(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: &str,
    mut from: Position,
    report: &mut RebuildReport,
) -> Result<Position, RuntimeError> {
    loop {
        let batch = log::read_after(pool, from, BATCH).await?;
        let Some(last) = batch.last() else {
            return Ok(from);
        };
        from = last.position;
        for stored in batch {
            let pos = envelope::StreamPosition {
                aggregate_type: stored.aggregate_type.clone(),
                aggregate_id: stored.aggregate_id.clone(),
                sequence: stored.sequence,
                event_id: Some(stored.event_id),
            };
            let mut tx = pool.begin().await?;
            let result = match Envelope::from_store(stored) {
                Ok(env) => apply::apply_in(&mut tx, projection, schema, &env, Mode::Live).await,
                Err(e) => Err(super::ApplyError::Rejected(e.to_string())),
            };
            match result {
                Ok(apply::Outcome::Applied) => report.replayed += 1,
                Ok(apply::Outcome::Duplicate) => {}
                Ok(apply::Outcome::Queued) => {
                    apply::park(&mut tx, schema, &pos, None, "waiting behind a parked event")
                        .await?;
                    report.parked += 1;
                }
                Err(e) => {
                    tx.rollback().await?;
                    tx = pool.begin().await?;
                    apply::park(&mut tx, schema, &pos, None, &e.to_string()).await?;
                    report.parked += 1;
                }
            }
            tx.commit().await?;
        }
    }
}

/// Rebuilds `projection` into generation N+1 and makes it live. One rebuild at a time.
pub async fn rebuild(
    pool: &PgPool,
    projection: &dyn Projection,
) -> Result<RebuildReport, RuntimeError> {
    let started = Instant::now();
    let name = projection.name();
    generation::ensure_live(pool, projection).await?;
    let mut lock = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock(hashtext('rebuild:' || $1))")
        .bind(name)
        .execute(&mut *lock)
        .await?;
    let current = generation::live_generation(&mut lock, name)
        .await?
        .ok_or(RuntimeError::NoGeneration(name))?;
    let next = current + 1;
    let schema = generation::schema_name(name, next);
    // A rebuild that died half-way left a partial generation behind: start it afresh.
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut *lock)
        .await?;
    {
        let mut tx = pool.begin().await?;
        generation::create(&mut tx, projection, next).await?;
        tx.commit().await?;
    }
    let mut report = RebuildReport {
        generation: next,
        schema: schema.clone(),
        replayed: 0,
        parked: 0,
        seconds: 0.0,
    };
    tracing::info!(
        projection = name,
        generation = next,
        "rebuild: replaying the event store"
    );
    let reached = replay(pool, projection, &schema, Position::START, &mut report).await?;
    // The switch waits for live transactions holding the row FOR SHARE.
    sqlx::query("UPDATE projections SET generation = $2, schema_name = $3, switched_at = now() WHERE name = $1")
        .bind(name)
        .bind(next)
        .bind(&schema)
        .execute(&mut *lock)
        .await?;
    tracing::info!(
        projection = name,
        generation = next,
        "rebuild: switched; catching up"
    );
    replay(pool, projection, &schema, reached, &mut report).await?;
    // Keep the previous generation for readers still on it; drop the one before.
    if next > 2 {
        let old = generation::schema_name(name, next - 2);
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {old} CASCADE"))
            .execute(&mut *lock)
            .await?;
    }
    sqlx::query("SELECT pg_advisory_unlock(hashtext('rebuild:' || $1))")
        .bind(name)
        .execute(&mut *lock)
        .await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
