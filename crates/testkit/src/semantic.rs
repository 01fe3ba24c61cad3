//! What the semantic index must hold, counted straight from the event store, and what its
//! live index holds: the two sides of "one point per window".

use std::collections::HashSet;

use embeddings::chunk::{ChunkConfig, approximate_spans, chunks};
use schemas::Event;
use sqlx::PgPool;

/// The windows every indexed text in the event store makes with `chunking` and the
/// approximate tokenizer (the one the OpenAI-compatible provider uses), removed
/// knowledge documents excluded.
///
/// Every committed event counts, read straight from the table: the log's reader
/// (`event_store::log::read_after`) stops short of any transaction still open in the
/// cluster, another test's included, and a count taken then would be too low for good.
pub async fn expected_points(pool: &PgPool, chunking: ChunkConfig) -> u64 {
    let payloads: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT payload FROM events ORDER BY global_position")
            .fetch_all(pool)
            .await
            .expect("read the events");
    let mut removed = HashSet::new();
    let mut windows = Vec::new();
    for payload in payloads {
        let (id, text) = match serde_json::from_value::<Event>(payload).expect("decodes") {
            Event::MessageSent(m) => (m.message_id, m.content),
            Event::DocumentGenerated(d) => (d.document_id, d.content),
            Event::KnowledgeDocumentAdded(k) => (k.knowledge_id, k.text),
            Event::KnowledgeDocumentRemoved(k) => {
                removed.insert(k.knowledge_id);
                continue;
            }
            _ => continue,
        };
        windows.push((id, chunks(&text, &approximate_spans(&text), chunking).len()));
    }
    windows
        .into_iter()
        .filter(|(id, _)| !removed.contains(id))
        .map(|(_, n)| n as u64)
        .sum()
}

/// Points (tombstones excluded) in the index of the live generation of the `semantic`
/// projection; 0 before it has one.
pub async fn live_points(pool: &PgPool) -> u64 {
    let Some(schema) = projection::generation::live_schema_in(pool, "semantic")
        .await
        .expect("query the live generation")
    else {
        return 0;
    };
    let sql = format!(
        "SELECT count(*) FROM vector_points p JOIN {schema}.index_info i ON p.index_name = i.index_name \
         WHERE p.vector IS NOT NULL"
    );
    match sqlx::query_scalar::<_, i64>(&sql).fetch_one(pool).await {
        Ok(n) => n as u64,
        // The generation's tables are created by the projector as it starts.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => 0,
        Err(e) => panic!("{sql}: {e}"),
    }
}
