//! Reading the event log in a stable global order without skipping late commits.
//!
//! `global_position` is taken from a sequence before commit, so positions commit out of
//! order. Readers order by `(tx_id, global_position)` and only read rows whose writing
//! transaction is older than every transaction still in progress
//! (`tx_id < pg_snapshot_xmin(pg_current_snapshot())`): no row can later appear before
//! a position already read.

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use schemas::{CommitPosition, Event, EventHeaders};
use serde::Deserialize;
use sqlx::{PgExecutor, Row, postgres::PgRow};
use tokio::sync::mpsc;
use uuid::Uuid;

/// One row of the events table.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub position: CommitPosition,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: HashMap<String, String>,
    pub recorded_at: DateTime<Utc>,
}

/// The select list [`StoredEvent::from_row`] reads.
const COLUMNS: &str = "tx_id::text AS tx_text, global_position, event_id, aggregate_type, aggregate_id, \
     sequence, event_type, event_version, payload, metadata, recorded_at";

impl StoredEvent {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let metadata: serde_json::Value = row.try_get("metadata")?;
        Ok(StoredEvent {
            position: position_of(row)?,
            event_id: row.try_get("event_id")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: serde_json::from_value(metadata).unwrap_or_default(),
            recorded_at: row.try_get("recorded_at")?,
        })
    }

    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The payload as the contract's event type.
    pub fn event(&self) -> Result<Event, serde_json::Error> {
        Event::deserialize(&self.payload)
    }

    /// The Kafka headers the relay publishes this event with.
    pub fn headers(&self) -> EventHeaders {
        let meta = |key: &str| self.meta(key).map(str::to_owned);
        EventHeaders {
            event_type: self.event_type.clone(),
            event_id: self.event_id,
            aggregate_type: self.aggregate_type.clone(),
            sequence: self.sequence,
            commit_position: self.position,
            recorded_at: self.recorded_at,
            tenant_id: meta("tenant_id").unwrap_or_default(),
            user_id: meta("user_id"),
            correlation_id: meta("correlation_id"),
            causation_id: meta("causation_id"),
            traceparent: meta("traceparent"),
            tracestate: meta("tracestate"),
        }
    }
}

/// A page of events as stored, their payloads and metadata left as the JSON text
/// PostgreSQL keeps: for readers that pass events on without looking inside (audit
/// replays). Its events borrow from the rows ([`RawEvent`]), so reading one allocates
/// nothing, and nothing is parsed or serialised again.
#[derive(Debug)]
pub struct RawPage(Vec<PgRow>);

/// One event of a [`RawPage`].
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent<'a> {
    pub position: CommitPosition,
    pub event_id: Uuid,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    /// A JSON object, as text.
    pub payload: &'a str,
    /// A JSON object of strings, as text.
    pub metadata: &'a str,
    pub recorded_at: DateTime<Utc>,
}

/// The select list [`RawPage`] reads.
const RAW_COLUMNS: &str = "tx_id::text AS tx_text, global_position, event_id, aggregate_type, aggregate_id, \
     sequence, event_type, event_version, payload::text AS payload, metadata::text AS metadata, recorded_at";

fn position_of(row: &PgRow) -> Result<CommitPosition, sqlx::Error> {
    let tx: &str = row.try_get("tx_text")?;
    let tx_id = tx.parse().map_err(|e| sqlx::Error::ColumnDecode {
        index: "tx_text".into(),
        source: Box::new(e),
    })?;
    Ok(CommitPosition {
        tx_id,
        global: row.try_get("global_position")?,
    })
}

impl RawPage {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The page's events in order (`next_back` decodes only the last); a row that does
    /// not decode is an error in its place.
    pub fn events(&self) -> impl DoubleEndedIterator<Item = Result<RawEvent<'_>, sqlx::Error>> {
        self.0.iter().map(|row| {
            Ok(RawEvent {
                position: position_of(row)?,
                event_id: row.try_get("event_id")?,
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: row.try_get("sequence")?,
                event_type: row.try_get("event_type")?,
                event_version: row.try_get("event_version")?,
                payload: row.try_get("payload")?,
                metadata: row.try_get("metadata")?,
                recorded_at: row.try_get("recorded_at")?,
            })
        })
    }
}

/// Reads pages one ahead of their consumer: a task calls `fetch` with the cursor to read
/// after and sends each page on, while the consumer is still busy with the previous one.
/// `fetch` answers the page and the cursor after it, or `None` at the end. The task ends
/// at the end, after an error (sent as the last item), or once the receiver is dropped.
pub fn read_ahead<C, P, F, Fut>(first: C, mut fetch: F) -> mpsc::Receiver<Result<P, sqlx::Error>>
where
    C: Send + 'static,
    P: Send + 'static,
    F: FnMut(C) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Option<(P, C)>, sqlx::Error>> + Send,
{
    let (pages, receiver) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut cursor = first;
        loop {
            match fetch(cursor).await {
                Ok(Some((page, next))) => {
                    if pages.send(Ok(page)).await.is_err() {
                        return;
                    }
                    cursor = next;
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = pages.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    receiver
}

/// Up to `limit` committed events after `after`, in global order.
pub async fn read_after(
    db: impl PgExecutor<'_>,
    after: CommitPosition,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events \
         WHERE (tx_id, global_position) > ($1::text::xid8, $2) \
           AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY tx_id, global_position LIMIT $3"
    );
    let rows = sqlx::query(&sql)
        .bind(after.tx_id.to_string())
        .bind(after.global)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(StoredEvent::from_row).collect()
}

/// How far a reader at `at` is behind, estimated from positions rather than counted:
/// the global positions handed out after it (an upper bound: a rolled-back append uses one
/// too), and the age of the oldest committed event after it. Two index lookups, whatever
/// the size of the backlog.
pub async fn backlog(
    db: &mut sqlx::PgConnection,
    at: CommitPosition,
) -> Result<(i64, f64), sqlx::Error> {
    let last: Option<i64> = sqlx::query_scalar(
        "SELECT pg_sequence_last_value(pg_get_serial_sequence('events', 'global_position'))",
    )
    .fetch_one(&mut *db)
    .await?;
    let seconds: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM clock_timestamp() - recorded_at)::float8 FROM events \
         WHERE (tx_id, global_position) > ($1::text::xid8, $2) \
         ORDER BY tx_id, global_position LIMIT 1",
    )
    .bind(at.tx_id.to_string())
    .bind(at.global)
    .fetch_optional(&mut *db)
    .await?;
    let Some(seconds) = seconds else {
        return Ok((0, 0.0));
    };
    Ok(((last.unwrap_or(0) - at.global).max(1), seconds.max(0.0)))
}

/// The events of one aggregate whose sequence is in `sequences`, in sequence order.
/// Callers bound the range: an aggregate may have many events.
pub async fn aggregate_events(
    db: impl PgExecutor<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
    sequences: std::ops::RangeInclusive<i64>,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = aggregate_rows(db, COLUMNS, aggregate_type, aggregate_id, sequences).await?;
    rows.iter().map(StoredEvent::from_row).collect()
}

/// [`aggregate_events`] with payloads and metadata as text.
pub async fn aggregate_events_raw(
    db: impl PgExecutor<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
    sequences: std::ops::RangeInclusive<i64>,
) -> Result<RawPage, sqlx::Error> {
    let rows = aggregate_rows(db, RAW_COLUMNS, aggregate_type, aggregate_id, sequences).await?;
    Ok(RawPage(rows))
}

async fn aggregate_rows(
    db: impl PgExecutor<'_>,
    columns: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    sequences: std::ops::RangeInclusive<i64>,
) -> Result<Vec<PgRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {columns} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
         AND sequence BETWEEN $3 AND $4 ORDER BY sequence"
    );
    sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequences.start())
        .bind(sequences.end())
        .fetch_all(db)
        .await
}

/// The webhook endpoints' events after `after` and up to `until` (both committed
/// positions), in global order, at most `limit`: what the delivery service folds to know
/// which endpoints were subscribed when an event was committed. Served by a partial index
/// of those rows alone (migration 1004).
pub async fn webhook_endpoint_events(
    db: impl PgExecutor<'_>,
    after: CommitPosition,
    until: CommitPosition,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
         WHERE aggregate_type = 'webhook_endpoint'
           AND (tx_id, global_position) > ($1::text::xid8, $2)
           AND (tx_id, global_position) <= ($3::text::xid8, $4)
           AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY tx_id, global_position LIMIT $5"
    );
    let rows = sqlx::query(&sql)
        .bind(after.tx_id.to_string())
        .bind(after.global)
        .bind(until.tx_id.to_string())
        .bind(until.global)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(StoredEvent::from_row).collect()
}

/// Which of a tenant's events a replay wants.
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    /// Up to and including this position.
    pub until: Option<CommitPosition>,
    /// Recorded at or after.
    pub from_time: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to_time: Option<DateTime<Utc>>,
    /// Only these event types.
    pub event_types: Option<Vec<String>>,
}

/// Up to `limit` committed events of `tenant` after `after`, in global order, filtered;
/// as text, for replays that pass them on.
pub async fn tenant_events(
    db: impl PgExecutor<'_>,
    tenant: &str,
    filter: &TenantFilter,
    after: CommitPosition,
    limit: i64,
) -> Result<RawPage, sqlx::Error> {
    let sql = format!(
        "SELECT {RAW_COLUMNS} FROM events
         WHERE tenant_id = $1
           AND (tx_id, global_position) > ($2::text::xid8, $3)
           AND ($4::text IS NULL OR (tx_id, global_position) <= ($4::text::xid8, $5))
           AND ($6::timestamptz IS NULL OR recorded_at >= $6)
           AND ($7::timestamptz IS NULL OR recorded_at < $7)
           AND ($8::text[] IS NULL OR event_type = ANY($8))
           AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY tx_id, global_position LIMIT $9"
    );
    let rows = sqlx::query(&sql)
        .bind(tenant)
        .bind(after.tx_id.to_string())
        .bind(after.global)
        .bind(filter.until.map(|u| u.tx_id.to_string()))
        .bind(filter.until.map(|u| u.global))
        .bind(filter.from_time)
        .bind(filter.to_time)
        .bind(&filter.event_types)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(RawPage(rows))
}

/// The tenant that owns an aggregate (the tenant of its first event), if it exists.
pub async fn owner(
    db: impl PgExecutor<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT tenant_id FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_optional(db)
    .await
    .map(Option::flatten)
}

/// The id the next transaction of this cluster gets, about: a [`CommitPosition`] whose
/// `tx_id` is beyond it was not made in this cluster (a restore into another cluster, or
/// a forged cursor) and would skip events if read from.
pub async fn next_tx_id(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let text: String = sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
        .fetch_one(db)
        .await?;
    text.parse().map_err(|e| sqlx::Error::ColumnDecode {
        index: "pg_current_xact_id".into(),
        source: Box::new(e),
    })
}

/// How many events are stored (all tenants): what a rebuild replays, for its progress.
pub async fn count(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(db)
        .await?;
    Ok(n.max(0) as u64)
}
