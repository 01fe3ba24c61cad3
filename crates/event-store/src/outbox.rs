//! The outbox cursor: how far a relay has published the log, per relay name. The relay
//! reads and moves it on the connection that holds its leadership lock, so a relay that
//! lost the lock cannot move it.

use schemas::CommitPosition;
use sqlx::{PgConnection, Row};

/// Key of the session advisory lock that elects the one active relay.
pub const LEADER_LOCK: i64 = 0x7468_7265_6164; // "thread"

/// Tries to become the active relay on this connection (a session lock: it ends with the
/// connection).
pub async fn try_lead(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LEADER_LOCK)
        .fetch_one(conn)
        .await
}

/// Where relay `name` stands: its position and how many events it has published.
/// Creates the cursor at the start of the log on first use.
pub async fn load_cursor(
    conn: &mut PgConnection,
    name: &str,
) -> Result<(CommitPosition, u64), sqlx::Error> {
    sqlx::query(
        "INSERT INTO relay_cursor (name, tx_id, global_position) VALUES ($1, '0'::xid8, 0) \
         ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query(
        "SELECT tx_id::text AS tx_id, global_position, published FROM relay_cursor WHERE name = $1",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    let tx: String = row.try_get("tx_id")?;
    let position = CommitPosition {
        tx_id: tx.parse().map_err(|e| sqlx::Error::ColumnDecode {
            index: "tx_id".into(),
            source: Box::new(e),
        })?,
        global: row.try_get("global_position")?,
    };
    let published: i64 = row.try_get("published")?;
    Ok((position, published.max(0) as u64))
}

/// Moves relay `name`'s cursor to `to`, after `count` more events were published.
pub async fn save_cursor(
    conn: &mut PgConnection,
    name: &str,
    to: CommitPosition,
    count: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE relay_cursor SET tx_id = $2::text::xid8, global_position = $3, \
         published = published + $4, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(to.tx_id.to_string())
    .bind(to.global)
    .bind(count as i64)
    .execute(conn)
    .await?;
    Ok(())
}

/// Why a relay must not run on a saved cursor.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error(
        "relay cursor {name:?} was saved in PostgreSQL cluster {saved}, this is cluster {current}: \
         its transaction ids mean nothing here (was the database restored or migrated?). \
         Publishing from it would skip events. See docs/OPERATIONS.md, \"Relay cursor from another cluster\"; \
         `command-api relay-reset` re-publishes every event (consumers de-duplicate by event_id)."
    )]
    OtherCluster {
        name: String,
        saved: String,
        current: String,
    },
    #[error(
        "relay cursor {name:?} is at transaction {cursor}, ahead of this cluster's current \
         transaction {current} (was the database restored or migrated?). Publishing from it \
         would skip events. See docs/OPERATIONS.md, \"Relay cursor from another cluster\"; \
         `command-api relay-reset` re-publishes every event (consumers de-duplicate by event_id)."
    )]
    AheadOfCluster {
        name: String,
        cursor: u64,
        current: u64,
    },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// This cluster's system identifier, when the role may read it.
async fn system_identifier(conn: &mut PgConnection) -> Result<Option<String>, sqlx::Error> {
    match sqlx::query_scalar::<_, String>("SELECT system_identifier::text FROM pg_control_system()")
        .fetch_one(&mut *conn)
        .await
    {
        Ok(id) => Ok(Some(id)),
        // Not granted to this role: the transaction-id check below still applies.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks that the saved cursor of relay `name` belongs to this cluster, and records the
/// cluster on a cursor that has none yet.
pub async fn check_cluster(conn: &mut PgConnection, name: &str) -> Result<(), CursorError> {
    let current_id = system_identifier(conn).await?;
    let row = sqlx::query(
        "SELECT tx_id::text AS tx_id, system_identifier, \
                pg_snapshot_xmax(pg_current_snapshot())::text AS current_tx \
         FROM relay_cursor WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(()) };
    let saved_id: Option<String> = row.try_get("system_identifier")?;
    if let (Some(saved), Some(current)) = (&saved_id, &current_id)
        && saved != current
    {
        return Err(CursorError::OtherCluster {
            name: name.to_owned(),
            saved: saved.clone(),
            current: current.clone(),
        });
    }
    let parse = |column: &str| -> Result<u64, sqlx::Error> {
        let text: String = row.try_get(column)?;
        text.parse().map_err(|e| sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: Box::new(e),
        })
    };
    let (cursor, current) = (parse("tx_id")?, parse("current_tx")?);
    if cursor > current {
        return Err(CursorError::AheadOfCluster {
            name: name.to_owned(),
            cursor,
            current,
        });
    }
    if saved_id.is_none() && current_id.is_some() {
        sqlx::query("UPDATE relay_cursor SET system_identifier = $2 WHERE name = $1")
            .bind(name)
            .bind(current_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Moves relay `name` back to the start of the log in this cluster: everything is
/// published again (consumers de-duplicate by `event_id`). The recovery after a restore.
pub async fn reset_cursor(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let current_id = system_identifier(conn).await?;
    sqlx::query(
        "INSERT INTO relay_cursor (name, tx_id, global_position, system_identifier) \
         VALUES ($1, '0'::xid8, 0, $2) \
         ON CONFLICT (name) DO UPDATE SET tx_id = '0'::xid8, global_position = 0, \
         system_identifier = $2, updated_at = now()",
    )
    .bind(name)
    .bind(current_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Where relay `name` stands, read without its lock (for lag while the relay is down).
pub async fn peek_cursor(
    db: impl sqlx::PgExecutor<'_>,
    name: &str,
) -> Result<Option<CommitPosition>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT tx_id::text AS tx_id, global_position FROM relay_cursor WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(db)
    .await?;
    row.map(|row| {
        let tx: String = row.try_get("tx_id")?;
        Ok(CommitPosition {
            tx_id: tx.parse().map_err(|e| sqlx::Error::ColumnDecode {
                index: "tx_id".into(),
                source: Box::new(e),
            })?,
            global: row.try_get("global_position")?,
        })
    })
    .transpose()
}

/// One event a relay parked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelayParked {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_id: uuid::Uuid,
    pub reason: String,
}

/// Parks events on relay `name` (an event parked already stays as it was).
pub async fn park(
    conn: &mut PgConnection,
    name: &str,
    parked: &[RelayParked],
) -> Result<(), sqlx::Error> {
    for p in parked {
        sqlx::query(
            "INSERT INTO relay_parked (name, aggregate_type, aggregate_id, sequence, event_id, reason) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(&p.aggregate_type)
        .bind(&p.aggregate_id)
        .bind(p.sequence)
        .bind(p.event_id)
        .bind(&p.reason)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Which of `streams` (`(aggregate_type, aggregate_id)`) have parked events on relay `name`.
pub async fn parked_streams(
    conn: &mut PgConnection,
    name: &str,
    streams: &[(String, String)],
) -> Result<std::collections::HashSet<(String, String)>, sqlx::Error> {
    if streams.is_empty() {
        return Ok(Default::default());
    }
    let (types, ids): (Vec<&str>, Vec<&str>) = streams
        .iter()
        .map(|(t, i)| (t.as_str(), i.as_str()))
        .unzip();
    let rows = sqlx::query(
        "SELECT DISTINCT p.aggregate_type, p.aggregate_id FROM relay_parked p \
         JOIN unnest($2::text[], $3::text[]) AS s(aggregate_type, aggregate_id) \
           ON p.aggregate_type = s.aggregate_type AND p.aggregate_id = s.aggregate_id \
         WHERE p.name = $1",
    )
    .bind(name)
    .bind(&types)
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("aggregate_type")?, r.try_get("aggregate_id")?)))
        .collect()
}

/// Parked events of relay `name`, each aggregate's in sequence order, at most `limit`.
pub async fn parked(
    conn: &mut PgConnection,
    name: &str,
    limit: i64,
) -> Result<Vec<RelayParked>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT aggregate_type, aggregate_id, sequence, event_id, reason FROM relay_parked \
         WHERE name = $1 ORDER BY aggregate_type, aggregate_id, sequence LIMIT $2",
    )
    .bind(name)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(RelayParked {
                aggregate_type: r.try_get("aggregate_type")?,
                aggregate_id: r.try_get("aggregate_id")?,
                sequence: r.try_get("sequence")?,
                event_id: r.try_get("event_id")?,
                reason: r.try_get("reason")?,
            })
        })
        .collect()
}

pub async fn parked_count(conn: &mut PgConnection, name: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM relay_parked WHERE name = $1")
        .bind(name)
        .fetch_one(conn)
        .await
}

pub async fn unpark(
    conn: &mut PgConnection,
    name: &str,
    p: &RelayParked,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM relay_parked WHERE name = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND sequence = $4",
    )
    .bind(name)
    .bind(&p.aggregate_type)
    .bind(&p.aggregate_id)
    .bind(p.sequence)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts `count` more events as published by relay `name` (re-driven ones).
pub async fn add_published(
    conn: &mut PgConnection,
    name: &str,
    count: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE relay_cursor SET published = published + $2 WHERE name = $1")
        .bind(name)
        .bind(count as i64)
        .execute(conn)
        .await?;
    Ok(())
}

/// Asks the active relay of `name` to re-drive its parked events (any replica may ask).
pub async fn request_redrive(
    db: impl sqlx::PgExecutor<'_>,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE relay_cursor SET redrive_requested_at = now() WHERE name = $1")
        .bind(name)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes a pending re-drive request of relay `name`, if there is one.
pub async fn take_redrive_request(
    conn: &mut PgConnection,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "UPDATE relay_cursor SET redrive_requested_at = NULL \
         WHERE name = $1 AND redrive_requested_at IS NOT NULL",
    )
    .bind(name)
    .execute(conn)
    .await?;
    Ok(taken.rows_affected() == 1)
}
