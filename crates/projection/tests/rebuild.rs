//! Rebuilds against a real PostgreSQL: one that fails early leaves nothing locked.

use projection::{ApplyError, Envelope, Pass, TableProjection, TableSink};
use sqlx::PgConnection;

/// A projection whose tables cannot be created in any generation after the first.
struct BrokenSecondGeneration;

#[async_trait::async_trait]
impl TableProjection for BrokenSecondGeneration {
    fn name(&self) -> &'static str {
        "broken"
    }

    async fn create_tables(&self, db: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
        let table = if schema.ends_with("_g1") {
            "t (id int)"
        } else {
            "t (id no_such_type)"
        };
        sqlx::query(&format!("CREATE TABLE {schema}.{table}"))
            .execute(db)
            .await?;
        Ok(())
    }

    async fn apply(
        &self,
        _: &mut PgConnection,
        _: &str,
        _: &[Envelope],
        _: Pass,
    ) -> Result<(), ApplyError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_rebuild_that_fails_early_leaves_no_lock_behind() {
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.unwrap();
    projection::migrate(&db.pool).await.unwrap();
    let sink = TableSink(BrokenSecondGeneration);
    let err = projection::rebuild(&db.pool, &sink).await.unwrap_err();
    assert!(err.to_string().contains("no_such_type"), "{err}");
    // The pool is still open, with its connections: none of them may hold the lock.
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(held, 0, "the failed rebuild's lock was released");
    // And a second rebuild from another session is not blocked by it.
    let second = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        projection::rebuild(&db.pool, &sink),
    )
    .await
    .expect("a second rebuild is not blocked");
    assert!(second.is_err());
}
