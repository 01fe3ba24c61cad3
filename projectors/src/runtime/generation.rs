//! Generations: each projection's tables live in a PostgreSQL schema
//! `<projection>_g<N>`; the `projections` row says which one is live.

use sqlx::{PgConnection, PgPool, Row};

use super::Projection;

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

/// Same, for readers holding a pool.
pub async fn live_schema_in(
    pool: &PgPool,
    projection: &str,
) -> Result<Option<String>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    live_schema(&mut conn, projection).await
}

/// Creates generation `n`: its schema, the runtime's bookkeeping tables, the projection's tables.
pub async fn create(
    db: &mut PgConnection,
    projection: &dyn Projection,
    n: i32,
) -> Result<String, sqlx::Error> {
    let schema = schema_name(projection.name(), n);
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut *db)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.progress (
            aggregate_type text NOT NULL,
            aggregate_id   text NOT NULL,
            last_sequence  bigint NOT NULL,
            PRIMARY KEY (aggregate_type, aggregate_id))"
    ))
    .execute(&mut *db)
    .await?;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.parked (
            aggregate_type text NOT NULL,
            aggregate_id   text NOT NULL,
            sequence       bigint NOT NULL,
            event_id       uuid,
            raw            bytea,
            error          text NOT NULL,
            attempts       integer NOT NULL DEFAULT 1,
            parked_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (aggregate_type, aggregate_id, sequence))"
    ))
    .execute(&mut *db)
    .await?;
    projection.create_tables(db, &schema).await?;
    Ok(schema)
}

/// Makes sure the projection has a live generation (generation 1 on first start).
pub async fn ensure_live(
    pool: &PgPool,
    projection: &dyn Projection,
) -> Result<String, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // One starter at a time creates generation 1.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('projection:' || $1))")
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    if let Some(schema) = live_schema(&mut tx, projection.name()).await? {
        tx.commit().await?;
        return Ok(schema);
    }
    let schema = create(&mut tx, projection, 1).await?;
    sqlx::query("INSERT INTO projections (name, generation, schema_name) VALUES ($1, 1, $2)")
        .bind(projection.name())
        .bind(&schema)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(schema)
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
