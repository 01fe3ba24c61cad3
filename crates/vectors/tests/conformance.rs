//! The vector store conformance suite (`vectors::conformance`) against the PostgreSQL
//! store, on a fresh database. The fake Qdrant runs it in `tests/qdrant_grpc.rs`; a real
//! Qdrant through `cargo run -p vectors --example conformance`.

use vectors::pg::PgStore;

#[tokio::test]
async fn the_postgres_store_passes_the_conformance_suite() {
    let db = testkit::env::database().await;
    let store = PgStore::new(db.pool.clone()).await.expect("the store");
    let outcomes = vectors::conformance::run(&store, "conformance").await;
    let failed: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(outcomes.len(), 9);
}
