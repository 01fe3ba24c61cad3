//! The embedded vector store: points in PostgreSQL (migration 3001), searched exactly.
//!
//! Writers (the embeddings projector) upsert rows; readers (query-api) keep, per index
//! and tenant, a copy of the points in memory and search it by brute force: exact cosine
//! over every point the viewer may see. Any number of replicas of either share the table.
//!
//! Keeping a copy current without missing a write: every row carries the id of the
//! transaction that last wrote it (`tx`, deletions included, as tombstones). A refresh
//! reads, in one snapshot, the rows with `tx` at or above the copy's horizon and the
//! snapshot's `xmin` (every transaction below it has ended); `xmin` becomes the new
//! horizon. A write committed later has a `tx` at or above that `xmin`, so the next
//! refresh reads it. Rows between the horizon and the newest are read again, harmlessly.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use sqlx::migrate::Migrator;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::{Hit, IndexName, Payload, Point, SearchQuery, SourceKind, VectorError, VectorStore};

/// The store's migrations (versions 3xxx) in the shared database.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

type CacheKey = (IndexName, String);

pub struct PgStore {
    pool: PgPool,
    caches: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<TenantCopy>>>>,
}

impl PgStore {
    /// The store on `pool`'s database, its tables migrated.
    pub async fn new(pool: PgPool) -> Result<Self, VectorError> {
        migrate(&pool)
            .await
            .map_err(|e| VectorError::Unavailable(format!("migrating the vector tables: {e}")))?;
        Ok(Self::migrated(pool))
    }

    /// The store on a database whose vector tables another process migrated.
    pub fn migrated(pool: PgPool) -> Self {
        PgStore {
            pool,
            caches: Mutex::new(HashMap::new()),
        }
    }

    fn copy_of(&self, index: &IndexName, tenant: &str) -> Arc<tokio::sync::Mutex<TenantCopy>> {
        let mut caches = self
            .caches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        caches
            .entry((index.clone(), tenant.to_owned()))
            .or_default()
            .clone()
    }

    async fn dimension(&self, index: &IndexName) -> Result<usize, VectorError> {
        let dimension: Option<i32> =
            sqlx::query_scalar("SELECT dimension FROM vector_indexes WHERE name = $1")
                .bind(index.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        dimension
            .map(|d| d as usize)
            .ok_or_else(|| VectorError::NoIndex(index.clone()))
    }

    /// Brings `copy` up to date with the table.
    async fn refresh(
        &self,
        index: &IndexName,
        tenant: &str,
        copy: &mut TenantCopy,
    ) -> Result<(), VectorError> {
        if copy.dimension == 0 {
            copy.dimension = self.dimension(index).await?;
        }
        let from = copy.horizon.clone().unwrap_or_else(|| "0".to_owned());
        // One statement, so one snapshot: the rows it sees and the horizon agree (every
        // transaction below the snapshot's xmin has ended, and this read saw its rows).
        // Unprepared: a generic plan of `tx >= $3` scans the whole table; the literal
        // horizon gets the index.
        let mut horizon: Option<String> = None;
        {
            let mut rows = sqlx::query(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS horizon,
                        p.id, p.source_kind, p.source_id, p.conversation_id, p.started_by, p.title,
                        p.event_id, p.position, p.chunk, p.text, p.vector
                 FROM (SELECT 1) AS one
                 LEFT JOIN vector_points p
                   ON p.index_name = $1 AND p.tenant_id = $2 AND p.tx >= $3::text::xid8",
            )
            .bind(index.as_str())
            .bind(tenant)
            .bind(&from)
            .persistent(false)
            .fetch(&self.pool);
            while let Some(row) = rows.next().await {
                let row = row.map_err(db)?;
                if horizon.is_none() {
                    horizon = Some(row.try_get("horizon").map_err(db)?);
                }
                let id: Option<Uuid> = row.try_get("id").map_err(db)?;
                if id.is_some() {
                    copy.apply(tenant, &row).map_err(db)?;
                }
            }
        }
        let Some(horizon) = horizon else {
            return Err(VectorError::Unavailable(
                "no horizon from PostgreSQL".into(),
            ));
        };
        copy.horizon = Some(horizon);
        Ok(())
    }
}

/// A database error: unavailable (retry) or a refusal.
fn db(e: sqlx::Error) -> VectorError {
    if let sqlx::Error::Database(d) = &e
        && d.code().as_deref() == Some("23503")
    {
        return VectorError::Rejected(format!("no such index: {d}"));
    }
    if common::unavailable::is_unavailable(&e) {
        VectorError::Unavailable(e.to_string())
    } else {
        VectorError::Rejected(e.to_string())
    }
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One point of the copy, without its vector (kept apart, contiguous, for the scan).
#[derive(Debug, Clone)]
struct Entry {
    id: Uuid,
    payload: Payload,
}

/// A replica's copy of one tenant's points of one index.
#[derive(Debug, Default)]
pub struct TenantCopy {
    dimension: usize,
    /// Every transaction below this has been read (`None`: nothing read yet).
    horizon: Option<String>,
    entries: Vec<Entry>,
    /// `entries[i]`'s vector is `vectors[i * dimension..(i + 1) * dimension]`.
    vectors: Vec<f32>,
    slot: HashMap<Uuid, usize>,
}

impl TenantCopy {
    fn apply(&mut self, tenant: &str, row: &sqlx::postgres::PgRow) -> Result<(), sqlx::Error> {
        let id: Uuid = row.try_get("id")?;
        let vector: Option<Vec<u8>> = row.try_get("vector")?;
        let Some(bytes) = vector else {
            self.remove(id);
            return Ok(());
        };
        if bytes.len() != self.dimension * 4 {
            // Written with another dimension: not comparable, never searched.
            tracing::warn!(%id, bytes = bytes.len(), "a point of the wrong dimension is ignored");
            self.remove(id);
            return Ok(());
        }
        let kind: String = row.try_get("source_kind")?;
        let Some(source_kind) = SourceKind::parse(&kind) else {
            self.remove(id);
            return Ok(());
        };
        let payload = Payload {
            tenant_id: tenant.to_owned(),
            source_kind,
            source_id: row.try_get("source_id")?,
            conversation_id: row.try_get("conversation_id")?,
            started_by: row.try_get("started_by")?,
            title: row.try_get("title")?,
            event_id: row.try_get("event_id")?,
            position: row.try_get("position")?,
            chunk: row.try_get("chunk")?,
            text: row.try_get("text")?,
        };
        let floats = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        match self.slot.get(&id) {
            Some(&i) => {
                self.entries[i].payload = payload;
                let d = self.dimension;
                for (dst, x) in self.vectors[i * d..(i + 1) * d].iter_mut().zip(floats) {
                    *dst = x;
                }
            }
            None => {
                self.slot.insert(id, self.entries.len());
                self.entries.push(Entry { id, payload });
                self.vectors.extend(floats);
            }
        }
        Ok(())
    }

    fn remove(&mut self, id: Uuid) {
        let Some(i) = self.slot.remove(&id) else {
            return;
        };
        let d = self.dimension;
        let last = self.entries.len() - 1;
        self.entries.swap_remove(i);
        if i != last {
            self.vectors.copy_within(last * d..(last + 1) * d, i * d);
            self.slot.insert(self.entries[i].id, i);
        }
        self.vectors.truncate(last * d);
    }

    /// The best `limit` visible points, best first.
    fn search(&self, q: &SearchQuery<'_>) -> Vec<Hit> {
        let d = self.dimension;
        if q.vector.len() != d || q.limit == 0 {
            return Vec::new();
        }
        let mut best: BinaryHeap<Scored> = BinaryHeap::with_capacity(q.limit + 1);
        for (i, entry) in self.entries.iter().enumerate() {
            if !visible(&entry.payload, q) {
                continue;
            }
            let score = crate::dot(q.vector, &self.vectors[i * d..(i + 1) * d]);
            if q.min_score.is_some_and(|min| score < min) {
                continue;
            }
            if best.len() < q.limit {
                best.push(Scored { score, slot: i });
            } else if best.peek().is_some_and(|worst| score > worst.score) {
                best.pop();
                best.push(Scored { score, slot: i });
            }
        }
        let mut hits: Vec<Hit> = best
            .into_iter()
            .map(|s| Hit {
                id: self.entries[s.slot].id,
                score: s.score,
                payload: self.entries[s.slot].payload.clone(),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        hits
    }
}

/// The query's filter on one point.
fn visible(p: &Payload, q: &SearchQuery<'_>) -> bool {
    if !q.kinds.contains(&p.source_kind) {
        return false;
    }
    if q.conversation_id.is_some() && p.conversation_id != q.conversation_id {
        return false;
    }
    q.scope.sees(&p.resource())
}

/// A min-heap entry by score: the heap's top is the worst of the best.
#[derive(Debug, Clone, Copy)]
struct Scored {
    score: f32,
    slot: usize,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        other.score.total_cmp(&self.score)
    }
}

#[async_trait::async_trait]
impl VectorStore for PgStore {
    async fn create_index(&self, index: &IndexName, dimension: usize) -> Result<(), VectorError> {
        let dimension = i32::try_from(dimension)
            .map_err(|_| VectorError::Rejected(format!("dimension {dimension} is too large")))?;
        let existing: i32 = sqlx::query_scalar(
            "INSERT INTO vector_indexes (name, dimension) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING dimension",
        )
        .bind(index.as_str())
        .bind(dimension)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        if existing != dimension {
            return Err(VectorError::Rejected(format!(
                "index {index} holds vectors of {existing} dimensions, not {dimension}"
            )));
        }
        Ok(())
    }

    async fn exists(&self, index: &IndexName) -> Result<bool, VectorError> {
        match self.dimension(index).await {
            Ok(_) => Ok(true),
            Err(VectorError::NoIndex(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn drop_index(&self, index: &IndexName) -> Result<(), VectorError> {
        sqlx::query("DELETE FROM vector_indexes WHERE name = $1")
            .bind(index.as_str())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        self.caches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|(name, _), _| name != index);
        Ok(())
    }

    async fn upsert(&self, index: &IndexName, points: &[Point]) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        let dimension = self.dimension(index).await?;
        if let Some(bad) = points.iter().find(|p| p.vector.len() != dimension) {
            return Err(VectorError::Rejected(format!(
                "point {} has {} dimensions, index {index} takes {dimension}",
                bad.id,
                bad.vector.len()
            )));
        }
        let column = |f: &dyn Fn(&Point) -> String| points.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO vector_points (index_name, id, tenant_id, source_kind, source_id,
                 conversation_id, started_by, title, event_id, position, chunk, text, vector)
             SELECT $1, * FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::uuid[],
                 $7::text[], $8::text[], $9::uuid[], $10::bigint[], $11::int[], $12::text[], $13::bytea[])
             ON CONFLICT (index_name, id) DO UPDATE SET
                 tenant_id = EXCLUDED.tenant_id, source_kind = EXCLUDED.source_kind,
                 source_id = EXCLUDED.source_id, conversation_id = EXCLUDED.conversation_id,
                 started_by = EXCLUDED.started_by, title = EXCLUDED.title,
                 event_id = EXCLUDED.event_id, position = EXCLUDED.position,
                 chunk = EXCLUDED.chunk, text = EXCLUDED.text, vector = EXCLUDED.vector,
                 tx = pg_current_xact_id()",
        )
        .bind(index.as_str())
        .bind(points.iter().map(|p| p.id).collect::<Vec<_>>())
        .bind(column(&|p| p.payload.tenant_id.clone()))
        .bind(column(&|p| p.payload.source_kind.as_str().to_owned()))
        .bind(points.iter().map(|p| p.payload.source_id).collect::<Vec<_>>())
        .bind(points.iter().map(|p| p.payload.conversation_id).collect::<Vec<_>>())
        .bind(points.iter().map(|p| p.payload.started_by.clone()).collect::<Vec<_>>())
        .bind(column(&|p| p.payload.title.clone()))
        .bind(points.iter().map(|p| p.payload.event_id).collect::<Vec<_>>())
        .bind(points.iter().map(|p| p.payload.position).collect::<Vec<_>>())
        .bind(points.iter().map(|p| p.payload.chunk).collect::<Vec<_>>())
        .bind(column(&|p| p.payload.text.clone()))
        .bind(points.iter().map(|p| to_bytes(&p.vector)).collect::<Vec<_>>())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn delete_source(
        &self,
        index: &IndexName,
        tenant_id: &str,
        kind: SourceKind,
        source_id: Uuid,
    ) -> Result<(), VectorError> {
        sqlx::query(
            "UPDATE vector_points SET vector = NULL, text = '', tx = pg_current_xact_id()
             WHERE index_name = $1 AND tenant_id = $2 AND source_kind = $3 AND source_id = $4
               AND vector IS NOT NULL",
        )
        .bind(index.as_str())
        .bind(tenant_id)
        .bind(kind.as_str())
        .bind(source_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn erase(
        &self,
        index: &IndexName,
        tenant_id: &str,
        conversations: Option<&[Uuid]>,
    ) -> Result<(), VectorError> {
        // A removed source's row keeps no text either (`delete_source` keeps its title).
        sqlx::query(
            "UPDATE vector_points
                SET vector = NULL, text = '', title = '', started_by = NULL, tx = pg_current_xact_id()
              WHERE index_name = $1 AND tenant_id = $2
                AND ($3::uuid[] IS NULL OR conversation_id = ANY($3))
                AND (vector IS NOT NULL OR text <> '' OR title <> '' OR started_by IS NOT NULL)",
        )
        .bind(index.as_str())
        .bind(tenant_id)
        .bind(conversations)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn set_conversation_title(
        &self,
        index: &IndexName,
        tenant_id: &str,
        conversation_id: Uuid,
        title: &str,
    ) -> Result<(), VectorError> {
        sqlx::query(
            "UPDATE vector_points SET title = $4, tx = pg_current_xact_id()
             WHERE index_name = $1 AND tenant_id = $2 AND conversation_id = $3
               AND source_kind = 'message' AND title IS DISTINCT FROM $4",
        )
        .bind(index.as_str())
        .bind(tenant_id)
        .bind(conversation_id)
        .bind(title)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn search(
        &self,
        index: &IndexName,
        query: &SearchQuery<'_>,
    ) -> Result<Vec<Hit>, VectorError> {
        let copy = self.copy_of(index, query.scope.tenant);
        let mut copy = copy.lock().await;
        self.refresh(index, query.scope.tenant, &mut copy).await?;
        if query.vector.len() != copy.dimension {
            return Err(VectorError::Rejected(format!(
                "the query has {} dimensions, index {index} takes {}",
                query.vector.len(),
                copy.dimension
            )));
        }
        // The scan is CPU work proportional to the tenant's points: off the async threads
        // once it is large enough to matter.
        let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        if copy.entries.len() < 20_000 || !multi_thread {
            return Ok(copy.search(query));
        }
        Ok(tokio::task::block_in_place(|| copy.search(query)))
    }

    async fn count(&self, index: &IndexName, tenant_id: Option<&str>) -> Result<u64, VectorError> {
        self.dimension(index).await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM vector_points
             WHERE index_name = $1 AND ($2::text IS NULL OR tenant_id = $2) AND vector IS NOT NULL",
        )
        .bind(index.as_str())
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use access::{Reach, Scope};

    use super::*;

    fn payload(kind: SourceKind, started_by: Option<&str>) -> Payload {
        Payload {
            tenant_id: "acme".into(),
            source_kind: kind,
            source_id: Uuid::nil(),
            conversation_id: None,
            started_by: started_by.map(str::to_owned),
            title: String::new(),
            event_id: Uuid::nil(),
            position: 1,
            chunk: 0,
            text: String::new(),
        }
    }

    #[test]
    fn members_see_their_conversations_unknown_starters_and_all_knowledge() {
        let q = SearchQuery {
            scope: Scope::new("acme", "ann", Reach::Own),
            vector: &[],
            kinds: &SourceKind::ALL,
            conversation_id: None,
            limit: 10,
            min_score: None,
        };
        assert!(visible(&payload(SourceKind::Message, Some("ann")), &q));
        assert!(visible(&payload(SourceKind::Document, None), &q));
        assert!(visible(&payload(SourceKind::Knowledge, None), &q));
        assert!(!visible(&payload(SourceKind::Message, Some("bob")), &q));
        let admin = SearchQuery {
            scope: Scope::new("acme", "admin", Reach::Tenant),
            ..q.clone()
        };
        assert!(visible(&payload(SourceKind::Message, Some("bob")), &admin));
        let knowledge_only = SearchQuery {
            kinds: &[SourceKind::Knowledge],
            ..q
        };
        assert!(!visible(
            &payload(SourceKind::Message, Some("ann")),
            &knowledge_only
        ));
    }

    #[test]
    fn removing_a_point_keeps_the_others_vectors_in_place() {
        let mut copy = TenantCopy {
            dimension: 2,
            ..TenantCopy::default()
        };
        for (n, v) in [(1u128, [1.0, 0.0]), (2, [0.0, 1.0]), (3, [0.6, 0.8])] {
            let id = Uuid::from_u128(n);
            copy.slot.insert(id, copy.entries.len());
            copy.entries.push(Entry {
                id,
                payload: payload(SourceKind::Knowledge, None),
            });
            copy.vectors.extend(v);
        }
        copy.remove(Uuid::from_u128(1));
        let q = SearchQuery {
            scope: Scope::new("acme", "admin", Reach::Tenant),
            vector: &[0.6, 0.8],
            kinds: &SourceKind::ALL,
            conversation_id: None,
            limit: 5,
            min_score: Some(0.7),
        };
        let hits = copy.search(&q);
        let ids: Vec<u128> = hits.iter().map(|h| h.id.as_u128()).collect();
        assert_eq!(ids, [3, 2]);
        assert!((hits[0].score - 1.0).abs() < 1e-6);
        assert_eq!(copy.vectors.len(), 4);
    }
}
