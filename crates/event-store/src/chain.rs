//! Tamper evidence: a hash chain per tenant over committed events, in commit order
//! (docs/DATA-PROTECTION.md, "Tamper evidence").
//!
//! Link `n` of a tenant is SHA-256 of link `n-1` (32 zero bytes before the first) and the
//! event's stored bytes: aggregate type, id, sequence, event type and version, and the
//! text of its payload and metadata (`jsonb`'s text form is canonical), each prefixed by
//! its length. Whatever is stored is covered, ciphertext included, so erasing keys leaves
//! the chain valid. [`extend`] chains what was committed since it last ran, after the
//! commit (appends stay as concurrent as before); [`verify`] recomputes a tenant's chain
//! from the events, compares the heads [`record_heads`] recorded, and names the first
//! event whose link does not match; [`keep`] runs beside the relay and does the
//! extending and recording.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::backoff::Backoff;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use tokio::sync::{Notify, watch};
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
        "SELECT e.tx_id::text AS tx_text, e.global_position, e.event_id,
                coalesce(e.tenant_id, '') AS tenant, {COVERED}
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
    let mut in_batch: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("tenant"))
        .collect::<Result<_, _>>()?;
    in_batch.sort_unstable();
    in_batch.dedup();
    let mut tips: HashMap<String, (i64, Link)> = HashMap::new();
    let known: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT tenant_id, n, link FROM audit_chain_tips WHERE tenant_id = ANY($1) FOR UPDATE",
    )
    .bind(&in_batch)
    .fetch_all(&mut *tx)
    .await?;
    for (tenant, n, bytes) in known {
        tips.insert(tenant, (n, as_link(bytes)?));
    }
    let (mut tenants, mut numbers, mut ids, mut links) = (vec![], vec![], vec![], vec![]);
    for row in &rows {
        let tenant: String = row.try_get("tenant")?;
        let (n, previous) = tips.entry(tenant.clone()).or_insert((0, GENESIS));
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
    let (mut tip_tenants, mut tip_numbers, mut tip_links) = (vec![], vec![], vec![]);
    for (tenant, (n, link)) in tips {
        tip_tenants.push(tenant);
        tip_numbers.push(n);
        tip_links.push(link.to_vec());
    }
    sqlx::query(
        "INSERT INTO audit_chain_tips (tenant_id, n, link)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])
         ON CONFLICT (tenant_id) DO UPDATE SET n = excluded.n, link = excluded.link",
    )
    .bind(&tip_tenants)
    .bind(&tip_numbers)
    .bind(&tip_links)
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

/// A tenant's link `n`, as stored or recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub n: i64,
    pub link: Link,
}

/// Records every tenant's newest link as a head, unless it already is one, and returns
/// the heads recorded now.
pub async fn record_heads(pool: &PgPool) -> Result<Vec<(String, Head)>, sqlx::Error> {
    let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
        "INSERT INTO audit_chain_heads (tenant_id, n, link)
         SELECT tenant_id, n, link FROM audit_chain_tips
         ON CONFLICT (tenant_id, n) DO NOTHING
         RETURNING tenant_id, n, link",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(tenant, n, bytes)| {
            Ok((
                tenant,
                Head {
                    n,
                    link: as_link(bytes)?,
                },
            ))
        })
        .collect()
}

/// Where a tenant's chain stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    /// The newest link (none before the tenant's first event is chained).
    pub tip: Option<Head>,
    /// The newest recorded heads, newest first, with when each was recorded.
    pub recorded: Vec<(Head, chrono::DateTime<chrono::Utc>)>,
    /// Committed events of every tenant not chained yet (at most `PENDING_COUNTED`).
    pub pending: i64,
}

/// [`ChainState::pending`] counts no further than this.
pub const PENDING_COUNTED: i64 = 100_000;

/// `tenant`'s newest link, if any of its events is chained.
pub async fn tip(pool: &PgPool, tenant: &str) -> Result<Option<Head>, sqlx::Error> {
    let tip: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT n, link FROM audit_chain_tips WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(pool)
            .await?;
    tip.map(|(n, bytes)| {
        Ok(Head {
            n,
            link: as_link(bytes)?,
        })
    })
    .transpose()
}

/// `tenant`'s chain: its tip, its `recorded` newest recorded heads, and how far the chain
/// is behind the commits.
pub async fn state(pool: &PgPool, tenant: &str, recorded: i64) -> Result<ChainState, sqlx::Error> {
    let tip = tip(pool, tenant).await?;
    let heads: Vec<(i64, Vec<u8>, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT n, link, recorded_at FROM audit_chain_heads WHERE tenant_id = $1
          ORDER BY n DESC LIMIT $2",
    )
    .bind(tenant)
    .bind(recorded)
    .fetch_all(pool)
    .await?;
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
            SELECT 1 FROM events e, audit_chain_cursor c
             WHERE (e.tx_id, e.global_position) > (c.tx_id, c.global_position)
             LIMIT $1) AS pending",
    )
    .bind(PENDING_COUNTED)
    .fetch_one(pool)
    .await?;
    Ok(ChainState {
        tip,
        recorded: heads
            .into_iter()
            .map(|(n, bytes, at)| {
                Ok((
                    Head {
                        n,
                        link: as_link(bytes)?,
                    },
                    at,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?,
        pending,
    })
}

/// How often the keeper records heads, and how long it waits for a commit before looking
/// anyway.
#[derive(Debug, Clone, Copy)]
pub struct Keeping {
    /// Events chained per transaction.
    pub batch: i64,
    pub record_every: Duration,
    pub poll: Duration,
}

impl Default for Keeping {
    fn default() -> Self {
        Keeping {
            batch: 5_000,
            record_every: Duration::from_secs(60),
            poll: Duration::from_secs(1),
        }
    }
}

/// Keeps the chain until `shutdown` flips to true: extends it whenever `commits` signals
/// (or `poll` passes), records the heads every `record_every` and logs each one recorded
/// (so copies of the heads live outside the database). Failures are logged, counted
/// (`audit_chain_failures_total`) and retried with backoff; the chain resumes from its
/// cursor.
pub async fn keep(
    pool: PgPool,
    keeping: Keeping,
    commits: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    metrics::counter!("audit_chain_links_total").increment(0);
    metrics::counter!("audit_chain_failures_total").increment(0);
    let mut recorded_at = tokio::time::Instant::now();
    loop {
        let round = async {
            let mut chained = 0;
            loop {
                let n = extend(&pool, keeping.batch).await?;
                chained += n;
                if (n as i64) < keeping.batch {
                    break;
                }
            }
            if recorded_at.elapsed() >= keeping.record_every {
                for (tenant, head) in record_heads(&pool).await? {
                    tracing::info!(
                        tenant = %tenant,
                        n = head.n,
                        link = %hex::encode(head.link),
                        "audit chain head recorded"
                    );
                }
                recorded_at = tokio::time::Instant::now();
            }
            Ok::<_, sqlx::Error>(chained)
        };
        let wait = match round.await {
            Ok(chained) => {
                metrics::counter!("audit_chain_links_total").increment(chained as u64);
                backoff.reset();
                keeping.poll
            }
            Err(e) => {
                tracing::warn!(error = %e, "extending the audit chain failed; retrying");
                metrics::counter!("audit_chain_failures_total").increment(1);
                backoff.next_delay()
            }
        };
        tokio::select! {
            () = commits.notified() => {}
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Why a link does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// The event's stored bytes are not those the link covered.
    Altered,
    /// The event the link names is no longer stored.
    Missing,
    /// The link matches its event, but a head recorded earlier for this link differs:
    /// links were recomputed after an event was changed.
    HeadDiffers,
}

impl BreakKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::Altered => "altered",
            BreakKind::Missing => "missing",
            BreakKind::HeadDiffers => "head_differs",
        }
    }
}

/// Where a tenant's chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The link that does not match.
    pub n: i64,
    pub event_id: Uuid,
    pub kind: BreakKind,
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
    /// The link at `through` (the genesis link at 0).
    pub link: Link,
    /// Recorded heads that the recomputed chain reached, in this call.
    pub heads_matched: u64,
    /// The first link that did not match, if any.
    pub broken: Option<Break>,
    /// Whether links remain after `through` (the call stopped at its limit).
    pub more: bool,
}

/// Recomputes up to `limit` links of `tenant`'s chain after link `after` (0: from the
/// start) from the events as they are stored now, and compares the heads recorded for
/// those links.
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
        "SELECT c.n, c.event_id, c.link, h.link AS head_link,
                e.event_id IS NOT NULL AS present, {COVERED}
           FROM audit_chain c
           LEFT JOIN events e ON e.event_id = c.event_id
           LEFT JOIN audit_chain_heads h ON h.tenant_id = c.tenant_id AND h.n = c.n
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
        link: previous,
        heads_matched: 0,
        broken: None,
        more,
    };
    for row in rows.iter().take(limit as usize) {
        let n: i64 = row.try_get("n")?;
        let event_id: Uuid = row.try_get("event_id")?;
        let recorded = as_link(row.try_get("link")?)?;
        let head = row
            .try_get::<Option<Vec<u8>>, _>("head_link")?
            .map(as_link)
            .transpose()?;
        let present: bool = row.try_get("present")?;
        verification.checked += 1;
        let event = if present { Some(covered(row)?) } else { None };
        let kind = match &event {
            None => Some(BreakKind::Missing),
            Some(event) if link(&previous, event) != recorded => Some(BreakKind::Altered),
            Some(_) if head.is_some_and(|head| head != recorded) => Some(BreakKind::HeadDiffers),
            Some(_) => None,
        };
        if let Some(kind) = kind {
            verification.broken = Some(Break {
                n,
                event_id,
                kind,
                aggregate: event.map(|e| (e.aggregate_type, e.aggregate_id, e.sequence)),
            });
            verification.more = false;
            return Ok(verification);
        }
        verification.heads_matched += u64::from(head.is_some());
        previous = recorded;
        verification.through = n;
        verification.link = recorded;
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
