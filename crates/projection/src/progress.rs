//! How far a projection's live generation has got with one aggregate: what a reader
//! waits on to read its own write (a version token a command returned).

use std::time::Duration;

use schemas::VersionToken;
use sqlx::PgPool;

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
