//! Content-addressed originals (migration 1003): the bytes of an uploaded file, kept out
//! of the event payload so the stream stays small. The key is the hex SHA-256 of the
//! bytes, so a stored blob never changes and storing it again is a no-op.

use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, Row};

/// The hex SHA-256 of some bytes: a blob's key.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A stored original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub sha256: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// Stores bytes under their hash (once; a second put of the same bytes changes nothing).
/// Returns the hash.
pub async fn put(
    db: impl PgExecutor<'_>,
    media_type: &str,
    bytes: &[u8],
) -> Result<String, sqlx::Error> {
    let sha256 = sha256_hex(bytes);
    sqlx::query(
        "INSERT INTO blobs (sha256, media_type, size_bytes, bytes) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(&sha256)
    .bind(media_type)
    .bind(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
    .bind(bytes)
    .execute(db)
    .await?;
    Ok(sha256)
}

pub async fn get(db: impl PgExecutor<'_>, sha256: &str) -> Result<Option<Blob>, sqlx::Error> {
    let row = sqlx::query("SELECT sha256, media_type, bytes FROM blobs WHERE sha256 = $1")
        .bind(sha256)
        .fetch_optional(db)
        .await?;
    row.map(|r| {
        Ok(Blob {
            sha256: r.try_get("sha256")?,
            media_type: r.try_get("media_type")?,
            bytes: r.try_get("bytes")?,
        })
    })
    .transpose()
}

/// A tenant's erasure (docs/DATA-PROTECTION.md): the originals of its knowledge base go,
/// except those another tenant uploaded too (a blob is stored once per content). Returns
/// how many went.
pub async fn erase_tenant(db: impl PgExecutor<'_>, tenant_id: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM blobs b
          WHERE b.sha256 IN (
                SELECT payload -> 'KnowledgeDocumentAdded' ->> 'sha256' FROM events
                 WHERE tenant_id = $1 AND aggregate_type = 'knowledge'
                   AND event_type = 'KnowledgeDocumentAdded')
            AND NOT EXISTS (
                SELECT 1 FROM events o
                 WHERE o.aggregate_type = 'knowledge' AND o.event_type = 'KnowledgeDocumentAdded'
                   AND o.tenant_id <> $1
                   AND o.payload -> 'KnowledgeDocumentAdded' ->> 'sha256' = b.sha256)",
    )
    .bind(tenant_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_lowercase_hex_sha256_of_the_bytes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
