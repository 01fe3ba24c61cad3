//! Semantic search benchmark (see docs/benchmarks.md), against a fresh durable stack:
//!
//!     dev/stack exec -- ../bench-target/release/examples/search_bench [POINTS...]
//!
//! 1. Command to search hit: an HTTP command sends a message, then an HTTP search for its
//!    text waits on the command's `position` until the embeddings projector (the local
//!    model, in this process) has indexed it. Beside it: one query embedding alone, the
//!    part of a search that is the model.
//! 2. Search latency over one tenant's N points (default 10,000 and 100,000) in the
//!    PostgreSQL vector store, beside a naive exact search over the same vectors in process
//!    (score every vector of a `Vec<Vec<f32>>`, then select the top 10; the store's
//!    top 10 must be the same) and one `SELECT 1` round trip.

use std::sync::Arc;
use std::time::Instant;

use access::{Reach, Scope};
use e2e::Services;
use e2e::client::Client;
use embeddings::{Embedder, EmbeddingConfig};
use platform::auth::Role;
use serde_json::Value;
use testkit::latency::p50_p99 as summary;
use uuid::Uuid;
use vectors::{IndexName, Payload, Point, SearchQuery, SourceKind, VectorStore, dot};

const DIMENSION: usize = 384;
const QUERIES: usize = 200;

/// Deterministic pseudo-random unit vectors (xorshift).
struct Vectors(u64);

impl Vectors {
    fn next(&mut self) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIMENSION)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        embeddings::normalise(&mut v);
        v
    }
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number of points"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    let model = EmbeddingConfig::from_env()
        .expect("embedding settings")
        .build()
        .await
        .expect("the embedding model (dev/stack exec sets EMBEDDING_MODEL_DIR)");
    let services = Services::spawn_with(vec![model.clone()]).await;
    command_to_search_hit(&services, model).await;
    for n in sizes {
        search_latency(&services, n).await;
    }
}

async fn command_to_search_hit(services: &Services, model: Arc<dyn Embedder>) {
    let projector = services.semantic_projector(model.clone()).await;
    let client = Client::new(services, services.commands.token("bench", &[Role::Member]));
    // Off: the assistant's replies would be hits too.
    let id = client.start("Search bench", false).await;
    let mut turnaround = Vec::new();
    for n in 0..QUERIES {
        let text = format!("Shipment {n} of the quarterly order leaves the harbour on day {n}.");
        let t = Instant::now();
        let sent = client.ask(&id, &text).await;
        let url = reqwest::Url::parse_with_params(
            &format!("{}/v1/search", services.query_base),
            &[
                ("q", text.as_str()),
                ("conversation_id", id.as_str()),
                ("limit", "1"),
                ("position", sent["position"].as_str().expect("position")),
            ],
        )
        .expect("a search URL");
        let found: Value = client
            .http
            .get(url)
            .bearer_auth(&client.token)
            .send()
            .await
            .expect("search")
            .json()
            .await
            .expect("json");
        turnaround.push(t.elapsed());
        assert_eq!(
            found["items"][0]["snippet"].as_str(),
            Some(text.as_str()),
            "{found}"
        );
    }
    let mut embed_alone = Vec::new();
    for n in 0..QUERIES {
        let t = Instant::now();
        model
            .embed(&[format!("when does shipment {n} leave?")])
            .await
            .expect("embed");
        embed_alone.push(t.elapsed());
    }
    let (p50, p99) = summary(turnaround);
    let (e50, e99) = summary(embed_alone);
    println!(
        "command to search hit (HTTP command, relay, Kafka, embeddings projector, HTTP search on position), {QUERIES} sequential: p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    println!("  one query embedding alone (local model): p50 {e50:.1} ms, p99 {e99:.1} ms");
    projector.stop().await;
}

async fn search_latency(services: &Services, n: usize) {
    let store = services.store.clone();
    let index = IndexName::new(format!("bench_{n}")).expect("index name");
    store
        .create_index(&index, DIMENSION)
        .await
        .expect("create the index");
    let mut vectors = Vectors(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let mut plain: Vec<Vec<f32>> = Vec::with_capacity(n);
    let t = Instant::now();
    for batch in 0..n.div_ceil(1000) {
        let points: Vec<Point> = (batch * 1000..((batch + 1) * 1000).min(n))
            .map(|i| {
                let vector = vectors.next();
                plain.push(vector.clone());
                Point {
                    id: Uuid::from_u128(i as u128 + 1),
                    vector,
                    payload: Payload {
                        tenant_id: "bench".into(),
                        source_kind: SourceKind::Message,
                        source_id: Uuid::from_u128(i as u128 + 1),
                        conversation_id: Some(Uuid::nil()),
                        started_by: None,
                        title: "bench".into(),
                        event_id: Uuid::nil(),
                        position: 1,
                        chunk: 0,
                        text: format!("point {i}"),
                    },
                }
            })
            .collect();
        store.upsert(&index, &points).await.expect("upsert");
    }
    let written = t.elapsed().as_secs_f64();
    let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| vectors.next()).collect();
    fn query(v: &[f32]) -> SearchQuery<'_> {
        SearchQuery {
            scope: Scope::new("bench", "admin", Reach::Tenant),
            vector: v,
            kinds: &SourceKind::ALL,
            conversation_id: None,
            limit: 10,
            min_score: None,
        }
    }
    let t = Instant::now();
    store
        .search(&index, &query(&queries[0]))
        .await
        .expect("first search");
    let first = t.elapsed().as_secs_f64() * 1000.0;
    let mut ours = Vec::new();
    let mut found = Vec::new();
    for q in &queries {
        let t = Instant::now();
        let hits = store.search(&index, &query(q)).await.expect("search");
        ours.push(t.elapsed());
        assert_eq!(hits.len(), 10);
        found.push(hits.iter().map(|h| h.id).collect::<Vec<_>>());
    }
    let mut floor = Vec::new();
    for (q, ours) in queries.iter().zip(&found) {
        let t = Instant::now();
        let mut scored: Vec<(f32, usize)> = plain
            .iter()
            .enumerate()
            .map(|(i, v)| (dot(q, v), i))
            .collect();
        scored.select_nth_unstable_by(10, |a, b| b.0.total_cmp(&a.0));
        scored.truncate(10);
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        floor.push(t.elapsed());
        let exact: Vec<Uuid> = scored
            .iter()
            .map(|(_, i)| Uuid::from_u128(*i as u128 + 1))
            .collect();
        assert_eq!(ours, &exact, "the store's top 10 is the exact top 10");
    }
    let mut round_trips = Vec::new();
    for _ in 0..QUERIES {
        let t = Instant::now();
        sqlx::query("SELECT 1")
            .execute(&services.commands.stack.db.pool)
            .await
            .expect("select 1");
        round_trips.push(t.elapsed());
    }
    let (o50, o99) = summary(ours);
    let (f50, f99) = summary(floor);
    let (r50, r99) = summary(round_trips);
    println!(
        "{n} points of one tenant: written in {written:.1} s ({:.0} points/s); first search (loads the copy) {first:.0} ms",
        n as f64 / written
    );
    println!(
        "  search, top 10 of {n}: p50 {o50:.2} ms, p99 {o99:.2} ms | naive in-process scan p50 {f50:.2} ms, p99 {f99:.2} ms + SELECT 1 p50 {r50:.2} ms, p99 {r99:.2} ms | ours / (naive scan + SELECT 1) at p50: {:.2}",
        o50 / (f50 + r50)
    );
}
