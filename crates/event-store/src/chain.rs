//! Tamper evidence: a hash chain per tenant over committed events, in commit order
//! (docs/DATA-PROTECTION.md, "Tamper evidence").
//!
//! Link `n` of a tenant is SHA-256 of link `n-1` (32 zero bytes before the first) and the
//! event's stored bytes: aggregate type, id, sequence, event type and version, and the
//! text of its payload and metadata (`jsonb`'s text form is canonical), each prefixed by
//! its length. Whatever is stored is covered, ciphertext included, so erasing keys leaves
//! the chain valid. [`extend`] chains what was committed since it last ran, after the
//! commit (appends stay as concurrent as before); [`verify`] recomputes a tenant's chain
//! from the events and names the first event whose link does not match.

use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// A link: 32 bytes of SHA-256.
pub type Link = [u8; 32];

/// The link before a tenant's first.
pub const GENESIS: Link = [0; 32];

/// What a link covers of one event: its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Covered {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
}

/// The link after `previous` for `event`.
pub fn link(previous: &Link, event: &Covered) -> Link {
    let mut hash = Sha256::new();
    hash.update(previous);
    let sequence = event.sequence.to_string();
    for part in [
        event.aggregate_type.as_str(),
        event.aggregate_id.as_str(),
        sequence.as_str(),
        event.event_type.as_str(),
        event.event_version.as_str(),
        event.payload.as_str(),
        event.metadata.as_str(),
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

const COVERED: &str = "e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, \
     e.event_version, e.payload::text AS payload_text, e.metadata::text AS metadata_text";

fn covered(row: &sqlx::postgres::PgRow) -> Result<Covered, sqlx::Error> {
    Ok(Covered {
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload_text")?,
        metadata: row.try_get("metadata_text")?,
    })
}

fn as_link(bytes: Vec<u8>) -> Result<Link, sqlx::Error> {
    bytes
        .try_into()
        .map_err(|_| sqlx::Error::Decode("a chain link is not 32 bytes".into()))
}

/// Chains up to `limit` events committed since the last call, in commit order, in one
/// transaction (callers may run it from several processes: they take turns). Returns
/// how many were chained.
pub async fn extend(pool: &PgPool, limit: i64) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (cursor_tx, cursor_position): (String, i64) =
        sqlx::query_as("SELECT tx_id::text, global_position FROM audit_chain_cursor FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
    let rows = sqlx::query(&format!(
        "SELECT e.tx_id::text AS tx_text, e.global_position, e.event_id, e.tenant_id, {COVERED}
           FROM events e
          WHERE (e.tx_id, e.global_position) > ($1::text::xid8, $2)
            AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY e.tx_id, e.global_position LIMIT $3"
    ))
    .bind(&cursor_tx)
    .bind(cursor_position)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let Some(last) = rows.last() else {
        return Ok(0);
    };
    let (last_tx, last_position): (String, i64) =
        (last.try_get("tx_text")?, last.try_get("global_position")?);
    let mut heads: std::collections::HashMap<String, (i64, Link)> = Default::default();
    let (mut tenants, mut numbers, mut ids, mut links) = (vec![], vec![], vec![], vec![]);
    for row in &rows {
        let tenant: Option<String> = row.try_get("tenant_id")?;
        let tenant = tenant.unwrap_or_default();
        if !heads.contains_key(&tenant) {
            let head: Option<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT n, link FROM audit_chain WHERE tenant_id = $1 ORDER BY n DESC LIMIT 1",
            )
            .bind(&tenant)
            .fetch_optional(&mut *tx)
            .await?;
            let head = match head {
                Some((n, bytes)) => (n, as_link(bytes)?),
                None => (0, GENESIS),
            };
            heads.insert(tenant.clone(), head);
        }
        let Some((n, previous)) = heads.get_mut(&tenant) else {
            continue;
        };
        *n += 1;
        *previous = link(previous, &covered(row)?);
        tenants.push(tenant);
        numbers.push(*n);
        ids.push(row.try_get::<Uuid, _>("event_id")?);
        links.push(previous.to_vec());
    }
    sqlx::query(
        "INSERT INTO audit_chain (tenant_id, n, event_id, link)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::bytea[])",
    )
    .bind(&tenants)
    .bind(&numbers)
    .bind(&ids)
    .bind(&links)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE audit_chain_cursor SET tx_id = $1::text::xid8, global_position = $2")
        .bind(&last_tx)
        .bind(last_position)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows.len())
}

/// Where a tenant's chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The link that does not match.
    pub n: i64,
    pub event_id: Uuid,
    /// The event as it is stored now, if it still is.
    pub aggregate: Option<(String, String, i64)>,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Links checked in this call.
    pub checked: u64,
    /// The last link that matched (0: none), where a next call resumes.
    pub through: i64,
    /// The first link that did not match, if any.
    pub broken: Option<Break>,
    /// Whether links remain after `through` (the call stopped at its limit).
    pub more: bool,
}

/// Recomputes up to `limit` links of `tenant`'s chain after link `after` (0: from the
/// start) from the events as they are stored now.
pub async fn verify(
    pool: &PgPool,
    tenant: &str,
    after: i64,
    limit: i64,
) -> Result<Verification, sqlx::Error> {
    let mut previous = if after == 0 {
        GENESIS
    } else {
        let bytes: Vec<u8> =
            sqlx::query_scalar("SELECT link FROM audit_chain WHERE tenant_id = $1 AND n = $2")
                .bind(tenant)
                .bind(after)
                .fetch_one(pool)
                .await?;
        as_link(bytes)?
    };
    let rows = sqlx::query(&format!(
        "SELECT c.n, c.event_id, c.link, e.event_id IS NOT NULL AS present, {COVERED}
           FROM audit_chain c LEFT JOIN events e ON e.event_id = c.event_id
          WHERE c.tenant_id = $1 AND c.n > $2
          ORDER BY c.n LIMIT $3"
    ))
    .bind(tenant)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() as i64 > limit;
    let mut verification = Verification {
        checked: 0,
        through: after,
        broken: None,
        more,
    };
    for row in rows.iter().take(limit as usize) {
        let n: i64 = row.try_get("n")?;
        let event_id: Uuid = row.try_get("event_id")?;
        let recorded = as_link(row.try_get("link")?)?;
        let present: bool = row.try_get("present")?;
        verification.checked += 1;
        let event = if present { Some(covered(row)?) } else { None };
        let matches = event
            .as_ref()
            .is_some_and(|event| link(&previous, event) == recorded);
        if !matches {
            verification.broken = Some(Break {
                n,
                event_id,
                aggregate: event.map(|e| (e.aggregate_type, e.aggregate_id, e.sequence)),
            });
            verification.more = false;
            return Ok(verification);
        }
        previous = recorded;
        verification.through = n;
    }
    Ok(verification)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(aggregate_id: &str, event_type: &str) -> Covered {
        Covered {
            aggregate_type: "conversation".into(),
            aggregate_id: aggregate_id.into(),
            sequence: 1,
            event_type: event_type.into(),
            event_version: "1".into(),
            payload: "{}".into(),
            metadata: "{}".into(),
        }
    }

    #[test]
    fn a_link_covers_every_part_and_where_one_ends() {
        let base = link(&GENESIS, &event("ab", "c"));
        // The same bytes split differently: the length prefixes tell them apart.
        assert_ne!(base, link(&GENESIS, &event("a", "bc")));
        assert_ne!(
            base,
            link(&[1; 32], &event("ab", "c")),
            "the previous link counts"
        );
        assert_eq!(base, link(&GENESIS, &event("ab", "c")), "and nothing else");
    }
}
