//! Vector stores behind one trait, [`VectorStore`], chosen by configuration
//! ([`StoreSettings`]):
//!
//! * [`pg`] (the default): points in a PostgreSQL table, searched exactly (cosine over
//!   every point of the tenant) from an in-process cache each replica keeps current. No
//!   extra daemon; exact, so it is also the reference recall is measured against.
//! * [`qdrant`]: Qdrant over gRPC, one collection per index, the tenant as an indexed
//!   tenant key.
//!
//! An index ([`IndexName`]) belongs to one embedding model and one generation of the
//! embeddings projection: a model change is a rebuild into a new index, and readers move
//! to it when the generation switches.
//!
//! Every search is scoped to one tenant, and inside it to what the viewer sees
//! ([`SearchQuery::scope`], `access`'s rule); the store applies the filter, never the caller afterwards.

pub mod conformance;
pub mod pg;
pub mod qdrant;

use access::{Resource, Scope};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// An index's name: a lowercase identifier (letters, digits, `_`), at most 63 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IndexName(String);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not an index name: 1-63 of a-z, 0-9 and _, starting with a letter")]
pub struct BadIndexName(pub String);

impl IndexName {
    pub fn new(name: impl Into<String>) -> Result<Self, BadIndexName> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(IndexName(name))
        } else {
            Err(BadIndexName(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IndexName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a point was cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Message,
    Document,
    Knowledge,
}

impl SourceKind {
    pub const ALL: [SourceKind; 3] = [
        SourceKind::Message,
        SourceKind::Document,
        SourceKind::Knowledge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Message => "message",
            SourceKind::Document => "document",
            SourceKind::Knowledge => "knowledge",
        }
    }

    pub fn parse(s: &str) -> Option<SourceKind> {
        SourceKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What a point carries besides its vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub tenant_id: String,
    pub source_kind: SourceKind,
    /// The message, document or knowledge document id.
    pub source_id: Uuid,
    /// The conversation of a message or document; none for knowledge.
    pub conversation_id: Option<Uuid>,
    /// Who started that conversation (what members' visibility is decided by); none for
    /// knowledge, which every member sees, and for conversations from before it was kept.
    pub started_by: Option<String>,
    /// The conversation's (current) title, or the document's or knowledge document's.
    pub title: String,
    /// The event the text came from, and its aggregate's version at that event.
    pub event_id: Uuid,
    pub position: i64,
    /// Which window of the source's text, from 0.
    pub chunk: i32,
    /// The window's text.
    pub text: String,
}

/// One vector with its payload; `id` is stable (derived from the event and the window),
/// so writing a point again replaces it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub id: Uuid,
    pub vector: Vec<f32>,
    pub payload: Payload,
}

/// A search: one tenant always; inside it what the scope sees.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery<'a> {
    /// The tenant searched, and what its viewer sees there: a member's search finds the
    /// knowledge base and the points of conversations they see (the rule is `access`'s).
    pub scope: Scope<'a>,
    /// Unit length, of the index's dimension.
    pub vector: &'a [f32],
    /// The kinds of source to search (not empty).
    pub kinds: &'a [SourceKind],
    pub conversation_id: Option<Uuid>,
    pub limit: usize,
    /// Cosine similarity at least this.
    pub min_score: Option<f32>,
}

impl Payload {
    /// The point as the visibility rule looks at it: knowledge, or part of a
    /// conversation with its starter.
    pub fn resource(&self) -> Resource<'_> {
        match self.source_kind {
            SourceKind::Knowledge => Resource::knowledge(&self.tenant_id),
            SourceKind::Message | SourceKind::Document => {
                Resource::conversation(&self.tenant_id, self.started_by.as_deref())
            }
        }
    }
}

/// A point found, with its cosine similarity to the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: Uuid,
    pub score: f32,
    pub payload: Payload,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VectorError {
    /// The store cannot be reached or is overloaded: retry later.
    #[error("vector store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the request (a wrong dimension, a malformed point).
    #[error("vector store refused: {0}")]
    Rejected(String),
    #[error("no index {0}")]
    NoIndex(IndexName),
}

/// A vector store. Every write is idempotent (points by id, deletes and title updates by
/// filter), so a write repeated after a crash is harmless.
#[async_trait::async_trait]
pub trait VectorStore: Send + Sync + 'static {
    /// Creates `index` for vectors of `dimension` if it does not exist.
    async fn create_index(&self, index: &IndexName, dimension: usize) -> Result<(), VectorError>;

    /// Whether `index` exists (a collection lost with the store's storage does not).
    async fn exists(&self, index: &IndexName) -> Result<bool, VectorError>;

    /// Removes an index and its points (an old generation after a switch).
    async fn drop_index(&self, index: &IndexName) -> Result<(), VectorError>;

    /// Writes points, replacing those with the same ids.
    async fn upsert(&self, index: &IndexName, points: &[Point]) -> Result<(), VectorError>;

    /// Removes every point of one source of a tenant.
    async fn delete_source(
        &self,
        index: &IndexName,
        tenant_id: &str,
        kind: SourceKind,
        source_id: Uuid,
    ) -> Result<(), VectorError>;

    /// Removes every point of the tenant's `conversations` (their messages and the
    /// documents made from them), or with `None` every point of the tenant: what an
    /// erasure takes out (docs/DATA-PROTECTION.md). Nothing of a removed point's text or
    /// title is kept.
    async fn erase(
        &self,
        index: &IndexName,
        tenant_id: &str,
        conversations: Option<&[Uuid]>,
    ) -> Result<(), VectorError>;

    /// Sets the title on every point of a tenant's conversation (a rename).
    async fn set_conversation_title(
        &self,
        index: &IndexName,
        tenant_id: &str,
        conversation_id: Uuid,
        title: &str,
    ) -> Result<(), VectorError>;

    /// The best `limit` points for the query, best first.
    async fn search(
        &self,
        index: &IndexName,
        query: &SearchQuery<'_>,
    ) -> Result<Vec<Hit>, VectorError>;

    /// Points in the index (of one tenant, if given); [`VectorError::NoIndex`] when there is
    /// no such index.
    async fn count(&self, index: &IndexName, tenant_id: Option<&str>) -> Result<u64, VectorError>;
}

/// Which store, from the environment: `VECTOR_STORE=postgres` (default; the database
/// of `DATABASE_URL`) or `qdrant` (`QDRANT_URL`, `QDRANT_API_KEY`).
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    Postgres,
    Qdrant(qdrant::QdrantConfig),
}

/// The vector store's settings (embeddings-projector, assistant-projector and query-api
/// read them).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Vector store")]
pub struct StoreSettings {
    /// `postgres` (tables in the same database, exact search) or `qdrant`.
    #[arg(long = "vector-store", env = "VECTOR_STORE", default_value = "postgres", value_parser = ["postgres", "qdrant"])]
    pub store: String,
    /// `qdrant`, required: its gRPC endpoint, e.g. `http://qdrant:6334`.
    #[arg(long = "qdrant-url", env = "QDRANT_URL")]
    pub qdrant_url: Option<String>,
    /// `qdrant`: its API key.
    #[arg(
        long = "qdrant-api-key",
        env = "QDRANT_API_KEY",
        hide_env_values = true
    )]
    pub qdrant_api_key: Option<String>,
    /// `qdrant`: collections are named `<prefix><index>` (at most 64 of `a-z A-Z 0-9 _ -`).
    #[arg(long = "qdrant-collection-prefix", env = "QDRANT_COLLECTION_PREFIX", default_value = qdrant::DEFAULT_PREFIX, value_parser = qdrant::prefix_setting)]
    pub qdrant_collection_prefix: String,
    /// `qdrant`: milliseconds per request.
    #[arg(long = "qdrant-timeout-ms", env = "QDRANT_TIMEOUT_MS", default_value_t = qdrant::DEFAULT_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub qdrant_timeout_ms: u64,
}

impl TryFrom<StoreSettings> for StoreConfig {
    type Error = common::config::ConfigError;

    fn try_from(s: StoreSettings) -> Result<Self, Self::Error> {
        if s.store == "postgres" {
            return Ok(StoreConfig::Postgres);
        }
        Ok(StoreConfig::Qdrant(qdrant::QdrantConfig {
            url: s
                .qdrant_url
                .ok_or(common::config::ConfigError::Missing { name: "QDRANT_URL" })?,
            api_key: s.qdrant_api_key,
            collection_prefix: s.qdrant_collection_prefix,
            timeout: std::time::Duration::from_millis(s.qdrant_timeout_ms),
        }))
    }
}

impl StoreConfig {
    /// The configured store; `pool` is the service's database (the postgres store keeps
    /// its points there).
    pub async fn build(self, pool: sqlx::PgPool) -> Result<Arc<dyn VectorStore>, VectorError> {
        match self {
            StoreConfig::Postgres => Ok(Arc::new(pg::PgStore::new(pool).await?)),
            StoreConfig::Qdrant(c) => Ok(Arc::new(qdrant::QdrantStore::connect(c).await?)),
        }
    }
}

/// Cosine similarity of two unit vectors: their dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums: the compiler vectorises this into SIMD lanes.
    let mut acc = [0.0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let (rest_a, rest_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (x, y) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in rest_a.iter().zip(rest_b) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_are_plain_identifiers() {
        assert!(IndexName::new("semantic_g1_local_all_minilm_l6_v2_384").is_ok());
        for bad in ["", "1abc", "Abc", "a-b", "a b", &"a".repeat(64)] {
            assert!(IndexName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..21).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..21).map(|i| 1.0 - i as f32 * 0.05).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
    }
}
