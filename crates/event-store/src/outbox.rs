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
