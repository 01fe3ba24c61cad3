//! The tamper-evident chain (`event_store::chain`) against a real PostgreSQL: extended in
//! commit order per tenant, verified from the events as stored, resumable, and an event
//! rewritten behind the append-only trigger's back named as the first break.

use event_store::chain;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Appends events `first..=last` of conversation `id` of `tenant`.
async fn append(pool: &PgPool, tenant: &str, id: Uuid, first: i64, last: i64) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'conversation', $1, n, 'Probe', '1', jsonb_build_object('n', n, 'text', 'hello'), $2
         FROM generate_series($3::bigint, $4::bigint) AS n",
    )
    .bind(id.to_string())
    .bind(json!({ "tenant_id": tenant }))
    .bind(first)
    .bind(last)
    .execute(pool)
    .await
    .expect("append");
}

async fn extend_all(pool: &PgPool) -> usize {
    let mut total = 0;
    loop {
        let n = chain::extend(pool, 7).await.expect("extend");
        if n == 0 {
            return total;
        }
        total += n;
    }
}

#[tokio::test]
async fn the_chain_verifies_resumes_and_names_an_event_rewritten_behind_the_triggers_back() {
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.expect("migrate");
    let (a, b, g) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    append(&db.pool, "acme", a, 1, 10).await;
    append(&db.pool, "globex", g, 1, 5).await;
    append(&db.pool, "acme", b, 1, 10).await;
    assert_eq!(
        extend_all(&db.pool).await,
        25,
        "every committed event, once"
    );
    append(&db.pool, "acme", a, 11, 12).await;
    assert_eq!(extend_all(&db.pool).await, 2, "only what came since");

    let whole = chain::verify(&db.pool, "acme", 0, 1000)
        .await
        .expect("verify");
    assert_eq!((whole.checked, whole.through, whole.more), (22, 22, false));
    assert_eq!(whole.broken, None);
    // Resumable: page by page to the same end.
    let first = chain::verify(&db.pool, "acme", 0, 10)
        .await
        .expect("verify");
    assert_eq!((first.through, first.more), (10, true));
    let rest = chain::verify(&db.pool, "acme", first.through, 100)
        .await
        .expect("verify");
    assert_eq!((rest.checked, rest.through, rest.more), (12, 22, false));

    // Rewritten with the append-only trigger off, as only a superuser could.
    let mut conn = db.pool.acquire().await.expect("a connection");
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(&mut *conn)
        .await
        .expect("trigger off");
    sqlx::query(
        "UPDATE events SET payload = jsonb_build_object('n', 4, 'text', 'tampered')
         WHERE aggregate_id = $1 AND sequence = 4",
    )
    .bind(b.to_string())
    .execute(&mut *conn)
    .await
    .expect("rewrite");
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only")
        .execute(&mut *conn)
        .await
        .expect("trigger on");

    let found = chain::verify(&db.pool, "acme", 0, 1000)
        .await
        .expect("verify");
    let broken = found.broken.expect("the rewritten event is found");
    assert_eq!(
        broken.aggregate,
        Some(("conversation".to_owned(), b.to_string(), 4))
    );
    // acme's events of `a` (10) come before `b`'s in commit order: b's fourth is link 14.
    assert_eq!((broken.n, found.through), (14, 13));
    // Another tenant's chain is untouched by it.
    let other = chain::verify(&db.pool, "globex", 0, 1000)
        .await
        .expect("verify");
    assert_eq!((other.checked, other.broken), (5, None));
}
