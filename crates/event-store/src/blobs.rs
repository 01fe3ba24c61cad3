//! Content-addressed originals (migration 1003): the bytes of an uploaded file, kept out
//! of the event payload so the stream stays small. The key is the hex SHA-256 of the
//! bytes, so a stored blob never changes and storing it again is a no-op. With data
//! protection on, [`store`] seals an original under its tenant's key instead
//! (`sealed_blobs`, migration 1013) and [`fetch`] opens it: an erased tenant's originals
//! read as gone.

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

/// What a sealed original is bound to: its tenant and its hash.
fn sealed_context(tenant: &str, sha256: &str) -> Vec<u8> {
    format!("threadline blob\0{tenant}\0{sha256}").into_bytes()
}

/// Something the blobs could not do: the database, or the keys.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    #[error("a sealed original does not open: {0}")]
    Sealing(#[from] sealing::SealError),
}

/// Stores an original of `tenant`: sealed under the tenant's key when `store` protects
/// data, else in clear ([`put`]). Returns its hash.
pub async fn store(
    store: &crate::Reader,
    tenant: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<String, BlobError> {
    let Some(protector) = store.protector() else {
        return Ok(put(store.pool(), media_type, bytes).await?);
    };
    let sha256 = sha256_hex(bytes);
    let key = protector
        .keys()
        .for_writing(tenant, &schemas::Subject::Tenant, None)
        .await?;
    let sealed = key.key.seal(bytes, &sealed_context(tenant, &sha256))?;
    sqlx::query(
        "INSERT INTO sealed_blobs (tenant_id, sha256, media_type, size_bytes, key_generation, sealed)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, sha256) DO NOTHING",
    )
    .bind(tenant)
    .bind(&sha256)
    .bind(media_type)
    .bind(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
    .bind(key.generation)
    .bind(sealed)
    .execute(store.pool())
    .await?;
    Ok(sha256)
}

/// The original `sha256` of `tenant`: opened if it was stored sealed, as stored if in
/// clear; `None` if there is none (or its key was erased).
pub async fn fetch(
    store: &crate::Reader,
    tenant: &str,
    sha256: &str,
) -> Result<Option<Blob>, BlobError> {
    let sealed: Option<(String, i32, Vec<u8>)> = sqlx::query_as(
        "SELECT media_type, key_generation, sealed FROM sealed_blobs
          WHERE tenant_id = $1 AND sha256 = $2",
    )
    .bind(tenant)
    .bind(sha256)
    .fetch_optional(store.pool())
    .await?;
    let Some((media_type, generation, sealed)) = sealed else {
        return Ok(get(store.pool(), sha256).await?);
    };
    let Some(protector) = store.protector() else {
        return Ok(None);
    };
    let Some(key) = protector
        .keys()
        .for_reading(tenant, &schemas::Subject::Tenant, generation)
        .await?
    else {
        return Ok(None);
    };
    let bytes = key.open(&sealed, &sealed_context(tenant, sha256))?;
    Ok(Some(Blob {
        sha256: sha256.to_owned(),
        media_type,
        bytes,
    }))
}

/// A tenant's erasure (docs/DATA-PROTECTION.md): the originals of its knowledge base go,
/// except those another tenant uploaded too (a blob is stored once per content). Returns
/// how many went.
pub async fn erase_tenant(
    db: &mut sqlx::PgConnection,
    tenant_id: &str,
) -> Result<u64, sqlx::Error> {
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
    .execute(&mut *db)
    .await?;
    let sealed = sqlx::query("DELETE FROM sealed_blobs WHERE tenant_id = $1")
        .bind(tenant_id)
        .execute(&mut *db)
        .await?;
    Ok(done.rows_affected() + sealed.rows_affected())
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
