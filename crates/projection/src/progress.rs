//! How far a projection's live generation has got with one aggregate: what a reader
//! waits on to read its own write (a version token a command returned).

use std::time::Duration;

use schemas::VersionToken;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use crate::{bookkeeping, generation};

/// The version of the token's aggregate the live generation of `projection` has applied:
/// 0 when it has applied none, or has no generation yet.
pub async fn applied_version(
    pool: &PgPool,
    projection: &str,
    token: &VersionToken,
) -> Result<u64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let Some(schema) = generation::live_schema(&mut conn, projection).await? else {
        return Ok(0);
    };
    let id = token.id.to_string();
    let v = bookkeeping::applied(&mut conn, &schema, (token.kind.as_str(), &id)).await?;
    Ok(v.max(0) as u64)
}

/// Waits until `projection` has applied the token's version, polling, for at most
/// `max`. `Err(applied)` when it gives up.
pub async fn wait_for(
    pool: &PgPool,
    projection: &str,
    token: &VersionToken,
    max: Duration,
) -> Result<Result<(), u64>, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + max;
    loop {
        let applied = applied_version(pool, projection, token).await?;
        if applied >= token.version.0 {
            return Ok(Ok(()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Err(applied));
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// The PostgreSQL notification channel a projection's commits are announced on (the
/// payload is its name).
pub const CHANNEL: &str = "threadline_progress";

/// Commits of one projection as they happen: a counter that moves at each of its
/// announced commits. Readers that wait for a projection (live streams) wake on it
/// instead of polling fast; notifications can be lost while the listening connection
/// reconnects, so they keep a slow poll as well.
pub fn announcements(pool: PgPool, projection: &'static str) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        loop {
            if tx.is_closed() {
                return;
            }
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "progress listener: cannot connect, retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::debug!(error = %e, "progress listener: LISTEN failed, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) if n.payload() == projection => {
                        tx.send_modify(|c| *c = c.wrapping_add(1));
                    }
                    Ok(Some(_)) => {}
                    // The connection was lost: what happened meanwhile is unknown, so
                    // wake the waiters, then listen again.
                    Ok(None) => {
                        tx.send_modify(|c| *c = c.wrapping_add(1));
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "progress listener failed, reconnecting");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        }
    });
    rx
}
