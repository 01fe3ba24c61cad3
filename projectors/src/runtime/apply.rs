//! Applying one event: one database transaction holding the read-model writes and the
//! aggregate's progress, so a redelivered event is recognised and skipped.

use command_api::store::log;
use sqlx::{PgConnection, Row};

use super::envelope::{Envelope, StreamPosition};
use super::{ApplyError, Projection};

/// What happened to an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already applied (sequence at or below the aggregate's progress).
    Duplicate,
    /// An earlier event of the aggregate is parked; this one waits behind it.
    Queued,
}

/// Locks the aggregate's progress row and returns its last applied sequence.
async fn lock_progress(
    tx: &mut PgConnection,
    schema: &str,
    pos: &StreamPosition,
) -> Result<i64, sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO {schema}.progress (aggregate_type, aggregate_id, last_sequence) VALUES ($1, $2, 0) \
         ON CONFLICT DO NOTHING"
    ))
    .bind(&pos.aggregate_type)
    .bind(&pos.aggregate_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query_scalar(&format!(
        "SELECT last_sequence FROM {schema}.progress WHERE aggregate_type = $1 AND aggregate_id = $2 FOR UPDATE"
    ))
    .bind(&pos.aggregate_type)
    .bind(&pos.aggregate_id)
    .fetch_one(&mut *tx)
    .await
}

/// Whether the aggregate has parked events.
pub async fn has_parked(
    tx: &mut PgConnection,
    schema: &str,
    pos: &StreamPosition,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM {schema}.parked WHERE aggregate_type = $1 AND aggregate_id = $2)"
    ))
    .bind(&pos.aggregate_type)
    .bind(&pos.aggregate_id)
    .fetch_one(tx)
    .await
}

pub fn position(e: &Envelope) -> StreamPosition {
    StreamPosition {
        aggregate_type: e.aggregate_type.clone(),
        aggregate_id: e.aggregate_id.clone(),
        sequence: e.sequence,
        event_id: Some(e.event_id),
    }
}

/// Whether an event must wait behind its aggregate's parked events (live consumption and
/// rebuilds) or is itself being re-driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Redrive,
}

/// Applies `event` inside `tx` unless it was applied already. A gap before it (events the
/// stream skipped, e.g. around a rebuild's switch) is filled from the event store first.
/// The aggregate's progress row stays locked until `tx` ends, which serialises live
/// consumers, re-drives and rebuild catch-ups of one aggregate.
pub async fn apply_in(
    tx: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
    event: &Envelope,
    mode: Mode,
) -> Result<Outcome, ApplyError> {
    let pos = position(event);
    let last = lock_progress(tx, schema, &pos).await?;
    if event.sequence <= last {
        return Ok(Outcome::Duplicate);
    }
    if mode == Mode::Live && has_parked(tx, schema, &pos).await? {
        return Ok(Outcome::Queued);
    }
    if event.sequence > last + 1 {
        let missing = log::aggregate_events(
            &mut *tx,
            &event.aggregate_type,
            &event.aggregate_id,
            last + 1..=event.sequence - 1,
        )
        .await?;
        if missing.len() as i64 != event.sequence - 1 - last {
            return Err(ApplyError::Rejected(format!(
                "events {}..{} of {} {} are not in the event store",
                last + 1,
                event.sequence - 1,
                event.aggregate_type,
                event.aggregate_id
            )));
        }
        for stored in missing {
            let earlier =
                Envelope::from_store(stored).map_err(|e| ApplyError::Rejected(e.to_string()))?;
            projection.apply(tx, schema, &earlier).await?;
        }
    }
    projection.apply(tx, schema, event).await?;
    sqlx::query(&format!(
        "UPDATE {schema}.progress SET last_sequence = $3 WHERE aggregate_type = $1 AND aggregate_id = $2"
    ))
    .bind(&pos.aggregate_type)
    .bind(&pos.aggregate_id)
    .bind(event.sequence)
    .execute(&mut *tx)
    .await?;
    Ok(Outcome::Applied)
}

/// Records a parked event (or bumps its attempt count).
pub async fn park(
    tx: &mut PgConnection,
    schema: &str,
    pos: &StreamPosition,
    raw: Option<&[u8]>,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO {schema}.parked (aggregate_type, aggregate_id, sequence, event_id, raw, error) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (aggregate_type, aggregate_id, sequence) DO UPDATE \
         SET error = EXCLUDED.error, attempts = {schema}.parked.attempts + 1"
    ))
    .bind(&pos.aggregate_type)
    .bind(&pos.aggregate_id)
    .bind(pos.sequence)
    .bind(pos.event_id)
    .bind(raw)
    .bind(error)
    .execute(tx)
    .await?;
    Ok(())
}

/// Parked events, oldest aggregate first, each aggregate's in sequence order.
pub async fn parked(
    tx: &mut PgConnection,
    schema: &str,
) -> Result<Vec<(StreamPosition, Option<Vec<u8>>)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT aggregate_type, aggregate_id, sequence, event_id, raw FROM {schema}.parked \
         ORDER BY aggregate_type, aggregate_id, sequence"
    ))
    .fetch_all(tx)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                StreamPosition {
                    aggregate_type: r.try_get("aggregate_type")?,
                    aggregate_id: r.try_get("aggregate_id")?,
                    sequence: r.try_get("sequence")?,
                    event_id: r.try_get("event_id")?,
                },
                r.try_get("raw")?,
            ))
        })
        .collect()
}

pub async fn unpark(
    tx: &mut PgConnection,
    schema: &str,
    pos: &StreamPosition,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "DELETE FROM {schema}.parked WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3"
    ))
    .bind(&pos.aggregate_type)
    .bind(&pos.aggregate_id)
    .bind(pos.sequence)
    .execute(tx)
    .await?;
    Ok(())
}
