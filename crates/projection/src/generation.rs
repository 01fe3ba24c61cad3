//! Generations: each projection's tables live in a PostgreSQL schema
//! `<projection>_g<N>`; the `projections` row (migration 2001) says which one is live.
//! A rebuild fills generation N+1 from the event store and then moves the pointer.

use sqlx::{Connection, PgConnection, PgPool, Row};

use crate::apply::Sink;
use crate::bookkeeping;

/// Name of generation `n`'s schema. Built only from a projection's static name and a
/// number, so it is a safe identifier.
pub fn schema_name(projection: &str, n: i32) -> String {
    format!("{projection}_g{n}")
}

/// The live generation's schema, if the projection has one.
pub async fn live_schema(
    db: &mut PgConnection,
    projection: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT schema_name FROM projections WHERE name = $1")
        .bind(projection)
        .fetch_optional(db)
        .await
}

/// The advisory lock that fences a projection's writers from a rebuild's switch: each
/// writing transaction holds it shared, the switch exclusively. An advisory lock lives in
/// memory: unlike `FOR SHARE` on the `projections` row it writes no WAL and makes no
/// multixact when several replicas write at once.
const FENCE: &str =
    "SELECT pg_advisory_xact_lock_shared(hashtextextended('projection-switch:' || $1, 0))";
const SWITCH: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('projection-switch:' || $1, 0))";

/// The live generation's schema, fenced until the transaction ends: a rebuild's switch
/// waits for the transaction, and a transaction that started waiting during a switch
/// reads the new pointer (the lock comes first, so the read's snapshot follows it).
pub(crate) async fn live_schema_fenced(
    tx: &mut PgConnection,
    projection: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query(FENCE)
        .bind(projection)
        .execute(&mut *tx)
        .await?;
    live_schema(tx, projection).await
}

/// Makes generation `n` (in `schema`) the live one, once every writing transaction still
/// on the old one has ended.
pub(crate) async fn switch(
    db: &mut PgConnection,
    projection: &str,
    n: i32,
    schema: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query(SWITCH)
        .bind(projection)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE projections SET generation = $2, schema_name = $3, switched_at = now() WHERE name = $1",
    )
    .bind(projection)
    .bind(n)
    .bind(schema)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Same as [`live_schema`], for readers holding a pool.
pub async fn live_schema_in(
    pool: &PgPool,
    projection: &str,
) -> Result<Option<String>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    live_schema(&mut conn, projection).await
}

/// Creates generation `n`: its schema, the runtime's bookkeeping tables, the projection's tables.
pub async fn create(db: &mut PgConnection, sink: &dyn Sink, n: i32) -> Result<String, sqlx::Error> {
    let schema = schema_name(sink.name(), n);
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut *db)
        .await?;
    bookkeeping::create(db, &schema).await?;
    sink.create_tables(db, &schema).await?;
    Ok(schema)
}

/// Makes sure the projection has a live generation (generation 1 on first start).
pub async fn ensure_live(pool: &PgPool, sink: &dyn Sink) -> Result<String, sqlx::Error> {
    Ok(ensure_live_created(pool, sink).await?.0)
}

/// Same, also saying whether this call created generation 1 (which is then empty).
pub async fn ensure_live_created(
    pool: &PgPool,
    sink: &dyn Sink,
) -> Result<(String, bool), sqlx::Error> {
    let mut tx = pool.begin().await?;
    // One starter at a time creates generation 1.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('projection:' || $1))")
        .bind(sink.name())
        .execute(&mut *tx)
        .await?;
    if let Some(schema) = live_schema(&mut tx, sink.name()).await? {
        sink.upgrade_tables(&mut tx, &schema).await?;
        tx.commit().await?;
        return Ok((schema, false));
    }
    let schema = create(&mut tx, sink, 1).await?;
    sqlx::query("INSERT INTO projections (name, generation, schema_name) VALUES ($1, 1, $2)")
        .bind(sink.name())
        .bind(&schema)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((schema, true))
}

/// The live generation number.
pub async fn live_generation(
    db: &mut PgConnection,
    projection: &str,
) -> Result<Option<i32>, sqlx::Error> {
    let row = sqlx::query("SELECT generation FROM projections WHERE name = $1")
        .bind(projection)
        .fetch_optional(db)
        .await?;
    row.map(|r| r.try_get("generation")).transpose()
}
