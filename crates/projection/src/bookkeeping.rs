//! The runtime's own tables in each generation schema: `progress` (the last sequence
//! applied per aggregate) and `parked` (events that failed, and the events of their
//! aggregate waiting behind them); and the `effect_ledger` (migration 2002), which is
//! shared by every generation.

use std::collections::{HashMap, HashSet};

use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::envelope::EventRef;
use crate::sink::{EffectId, Pass};

/// Creates `progress` and `parked` in a fresh generation schema.
pub(crate) async fn create(db: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.progress (
            aggregate_type text NOT NULL,
            aggregate_id   text NOT NULL,
            last_sequence  bigint NOT NULL,
            PRIMARY KEY (aggregate_type, aggregate_id))"
    ))
    .execute(&mut *db)
    .await?;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.parked (
            aggregate_type text NOT NULL,
            aggregate_id   text NOT NULL,
            sequence       bigint NOT NULL,
            event_id       uuid,
            raw            bytea,
            error          text NOT NULL,
            attempts       integer NOT NULL DEFAULT 1,
            parked_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (aggregate_type, aggregate_id, sequence))"
    ))
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// An aggregate's stream, as the bookkeeping tables key it: (type, id).
pub(crate) type StreamKey = (String, String);

/// Where one aggregate stands in a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    /// The last sequence applied (0: none).
    pub last: i64,
    /// The lowest parked sequence, if any of its events is parked.
    pub first_parked: Option<i64>,
}

/// Where each of `streams` stands, in one statement (two with `lock`). With `lock` the
/// progress rows are created where missing and locked until the transaction ends, which
/// serialises every applier of one aggregate; rows are created and locked in sorted
/// order, so two appliers of overlapping batches cannot deadlock. A stream missing from
/// the answer has applied nothing and parked nothing.
pub(crate) async fn standings(
    db: &mut PgConnection,
    schema: &str,
    streams: &[StreamKey],
    lock: bool,
) -> Result<HashMap<StreamKey, Standing>, sqlx::Error> {
    let mut sorted: Vec<&StreamKey> = streams.iter().collect();
    sorted.sort();
    sorted.dedup();
    let types: Vec<&str> = sorted.iter().map(|(t, _)| t.as_str()).collect();
    let ids: Vec<&str> = sorted.iter().map(|(_, i)| i.as_str()).collect();
    let first_parked = format!(
        "(SELECT min(k.sequence) FROM {schema}.parked k \
          WHERE k.aggregate_type = p.aggregate_type AND k.aggregate_id = p.aggregate_id)"
    );
    let select = if lock {
        sqlx::query(&format!(
            "INSERT INTO {schema}.progress (aggregate_type, aggregate_id, last_sequence) \
             SELECT t, i, 0 FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS u(t, i, n) ORDER BY n \
             ON CONFLICT DO NOTHING"
        ))
        .bind(&types)
        .bind(&ids)
        .execute(&mut *db)
        .await?;
        format!(
            "SELECT p.aggregate_type, p.aggregate_id, p.last_sequence, {first_parked} AS first_parked \
             FROM {schema}.progress p \
             JOIN UNNEST($1::text[], $2::text[]) AS u(t, i) ON p.aggregate_type = u.t AND p.aggregate_id = u.i \
             ORDER BY p.aggregate_type, p.aggregate_id FOR UPDATE OF p"
        )
    } else {
        format!(
            "SELECT p.aggregate_type, p.aggregate_id, p.last_sequence, {first_parked} AS first_parked \
             FROM (SELECT u.t AS aggregate_type, u.i AS aggregate_id, coalesce(g.last_sequence, 0) AS last_sequence \
                   FROM UNNEST($1::text[], $2::text[]) AS u(t, i) \
                   LEFT JOIN {schema}.progress g ON g.aggregate_type = u.t AND g.aggregate_id = u.i) p"
        )
    };
    let rows = sqlx::query(&select)
        .bind(&types)
        .bind(&ids)
        .fetch_all(&mut *db)
        .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for r in rows {
        found.insert(
            (r.try_get("aggregate_type")?, r.try_get("aggregate_id")?),
            Standing {
                last: r.try_get("last_sequence")?,
                first_parked: r.try_get("first_parked")?,
            },
        );
    }
    Ok(found)
}

/// The last sequence applied of an aggregate (0: none), without locking.
pub async fn applied(
    db: &mut PgConnection,
    schema: &str,
    (aggregate_type, aggregate_id): (&str, &str),
) -> Result<i64, sqlx::Error> {
    let v: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT last_sequence FROM {schema}.progress WHERE aggregate_type = $1 AND aggregate_id = $2"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_optional(db)
    .await?;
    Ok(v.unwrap_or(0))
}

/// Records the last sequence applied of each stream in `moved`, in one statement.
pub(crate) async fn set_progress(
    tx: &mut PgConnection,
    schema: &str,
    moved: &[(&StreamKey, i64)],
) -> Result<(), sqlx::Error> {
    if moved.is_empty() {
        return Ok(());
    }
    let types: Vec<&str> = moved.iter().map(|((t, _), _)| t.as_str()).collect();
    let ids: Vec<&str> = moved.iter().map(|((_, i), _)| i.as_str()).collect();
    let sequences: Vec<i64> = moved.iter().map(|(_, s)| *s).collect();
    sqlx::query(&format!(
        "UPDATE {schema}.progress p SET last_sequence = u.s \
         FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS u(t, i, s) \
         WHERE p.aggregate_type = u.t AND p.aggregate_id = u.i"
    ))
    .bind(&types)
    .bind(&ids)
    .bind(&sequences)
    .execute(tx)
    .await?;
    Ok(())
}

/// Tells listeners (`progress::Announcements`) that `projection` moved on, when the
/// transaction commits.
pub(crate) async fn announce(tx: &mut PgConnection, projection: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::progress::CHANNEL)
        .bind(projection)
        .execute(tx)
        .await?;
    Ok(())
}

/// Parks an event with the error that parked it. Parking it again (a redelivery, a
/// failed re-drive) keeps the first error, the root cause, and counts the attempt.
/// Returns whether the event was newly parked.
pub(crate) async fn park(
    tx: &mut PgConnection,
    schema: &str,
    at: &EventRef,
    raw: Option<&[u8]>,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let inserted: bool = sqlx::query_scalar(&format!(
        "INSERT INTO {schema}.parked AS p (aggregate_type, aggregate_id, sequence, event_id, raw, error) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (aggregate_type, aggregate_id, sequence) DO UPDATE SET attempts = p.attempts + 1 \
         RETURNING (xmax = 0)"
    ))
    .bind(&at.aggregate_type)
    .bind(&at.aggregate_id)
    .bind(at.sequence)
    .bind(at.event_id)
    .bind(raw)
    .bind(error)
    .fetch_one(tx)
    .await?;
    Ok(inserted)
}

pub(crate) async fn unpark(
    tx: &mut PgConnection,
    schema: &str,
    at: &EventRef,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "DELETE FROM {schema}.parked WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3"
    ))
    .bind(&at.aggregate_type)
    .bind(&at.aggregate_id)
    .bind(at.sequence)
    .execute(tx)
    .await?;
    Ok(())
}

/// One parked event, as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Parked {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_id: Option<Uuid>,
    /// The error that parked it (the root cause, kept when it is parked again).
    pub error: String,
    pub attempts: i32,
}

/// Parked events after `after` (in aggregate, then sequence order), at most `limit`,
/// without their raw bytes.
pub async fn parked_page(
    db: &mut PgConnection,
    schema: &str,
    after: Option<&EventRef>,
    limit: i64,
) -> Result<Vec<Parked>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT aggregate_type, aggregate_id, sequence, event_id, error, attempts FROM {schema}.parked \
         WHERE ($1::text IS NULL OR (aggregate_type, aggregate_id, sequence) > ($1, $2, $3)) \
         ORDER BY aggregate_type, aggregate_id, sequence LIMIT $4"
    ))
    .bind(after.map(|a| a.aggregate_type.as_str()))
    .bind(after.map(|a| a.aggregate_id.as_str()))
    .bind(after.map(|a| a.sequence))
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Parked {
                aggregate_type: r.try_get("aggregate_type")?,
                aggregate_id: r.try_get("aggregate_id")?,
                sequence: r.try_get("sequence")?,
                event_id: r.try_get("event_id")?,
                error: r.try_get("error")?,
                attempts: r.try_get("attempts")?,
            })
        })
        .collect()
}

pub async fn parked_count(db: &mut PgConnection, schema: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.parked"))
        .fetch_one(db)
        .await
}

/// Which of `ids` the ledger of `projection` records as performed.
pub(crate) async fn performed(
    db: &mut PgConnection,
    projection: &str,
    ids: &[EffectId],
) -> Result<HashSet<EffectId>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
    let found: Vec<Uuid> = sqlx::query_scalar(
        "SELECT effect_id FROM effect_ledger WHERE projection = $1 AND effect_id = ANY($2)",
    )
    .bind(projection)
    .bind(&ids)
    .fetch_all(db)
    .await?;
    Ok(found.into_iter().map(EffectId).collect())
}

/// Records effects of the event at `at` as performed (one already recorded stays as it was).
pub(crate) async fn record_performed(
    tx: &mut PgConnection,
    projection: &str,
    at: &EventRef,
    ids: &[EffectId],
    pass: Pass,
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
    sqlx::query(
        "INSERT INTO effect_ledger (projection, effect_id, aggregate_type, aggregate_id, sequence, event_id, pass) \
         SELECT $1, id, $3, $4, $5, $6, $7 FROM unnest($2::uuid[]) AS id ON CONFLICT DO NOTHING",
    )
    .bind(projection)
    .bind(&ids)
    .bind(&at.aggregate_type)
    .bind(&at.aggregate_id)
    .bind(at.sequence)
    .bind(at.event_id)
    .bind(pass.as_str())
    .execute(tx)
    .await?;
    Ok(())
}

/// Parks an event in the live generation of `projection`; see [`park`].
pub async fn park_in_live(
    pool: &sqlx::PgPool,
    projection: &str,
    at: &EventRef,
    raw: Option<&[u8]>,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let schema = crate::generation::live_schema(&mut tx, projection)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let newly = park(&mut tx, &schema, at, raw, error).await?;
    tx.commit().await?;
    Ok(newly)
}
