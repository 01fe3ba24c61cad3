//! Reading the event log in a stable global order without skipping late commits.
//!
//! `global_position` is taken from a sequence before commit, so positions commit out of
//! order. Readers order by `(tx_id, global_position)` and only read rows whose writing
//! transaction is older than every transaction still in progress
//! (`tx_id < pg_snapshot_xmin(pg_current_snapshot())`): no row can later appear before
//! a position already read.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, Row, postgres::PgRow};
use uuid::Uuid;

/// A place in the committed global order. Totally ordered; `Position::START` is before
/// every event.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    pub tx_id: u64,
    pub global: i64,
}

impl Position {
    pub const START: Position = Position {
        tx_id: 0,
        global: 0,
    };
}

/// Text form `<tx_id>.<global>`, used in headers and audit cursors.
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.tx_id, self.global)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("position {0:?} is not <tx_id>.<global_position>")]
pub struct BadPosition(String);

impl FromStr for Position {
    type Err = BadPosition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPosition(s.to_owned());
        let (tx, global) = s.split_once('.').ok_or_else(bad)?;
        Ok(Position {
            tx_id: tx.parse().map_err(|_| bad())?,
            global: global.parse().map_err(|_| bad())?,
        })
    }
}

/// One row of the events table.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub position: Position,
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
pub const COLUMNS: &str = "tx_id::text AS tx_text, global_position, event_id, aggregate_type, aggregate_id, \
     sequence, event_type, event_version, payload, metadata, recorded_at";

impl StoredEvent {
    pub fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let tx: String = row.try_get("tx_text")?;
        let tx_id = tx.parse().map_err(|e| sqlx::Error::ColumnDecode {
            index: "tx_text".into(),
            source: Box::new(e),
        })?;
        let metadata: serde_json::Value = row.try_get("metadata")?;
        Ok(StoredEvent {
            position: Position {
                tx_id,
                global: row.try_get("global_position")?,
            },
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
}

/// Up to `limit` committed events after `after`, in global order.
pub async fn read_after(
    db: impl PgExecutor<'_>,
    after: Position,
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

/// How far a reader at `at` is behind: committed events after it, and the age of the
/// oldest of them.
pub async fn lag(db: impl PgExecutor<'_>, at: Position) -> Result<(i64, f64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT count(*) AS behind, \
                COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(recorded_at)), 0)::float8 AS seconds \
         FROM events WHERE (tx_id, global_position) > ($1::text::xid8, $2)",
    )
    .bind(at.tx_id.to_string())
    .bind(at.global)
    .fetch_one(db)
    .await?;
    Ok((row.try_get("behind")?, row.try_get("seconds")?))
}

/// Every event of one aggregate, in sequence order.
pub async fn aggregate_events(
    db: impl PgExecutor<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
    sequences: std::ops::RangeInclusive<i64>,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
         AND sequence BETWEEN $3 AND $4 ORDER BY sequence"
    );
    let rows = sqlx::query(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequences.start())
        .bind(sequences.end())
        .fetch_all(db)
        .await?;
    rows.iter().map(StoredEvent::from_row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_transaction_then_position_and_round_trip_as_text() {
        let a = Position {
            tx_id: 5,
            global: 90,
        };
        let b = Position {
            tx_id: 6,
            global: 10,
        };
        assert!(Position::START < a && a < b);
        assert_eq!("5.90".parse::<Position>().unwrap(), a);
        assert!("5".parse::<Position>().is_err());
        assert!("x.1".parse::<Position>().is_err());
    }
}
