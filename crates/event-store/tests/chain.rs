//! The tamper-evident chain (`event_store::chain`) against a real PostgreSQL: extended in
//! commit order per tenant, verified from the events as stored, resumable, and an event
//! rewritten behind the append-only trigger's back named as the first break.

use event_store::chain;
use serde_json::json;
use sqlx::{PgPool, Row};
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

/// Extends the chain until it holds `expected` more events (others' transactions still
/// open anywhere in the cluster hold later commits back for a moment), then once more to
/// show that nothing else was waiting. Returns how many were chained.
async fn extend_all(pool: &PgPool, expected: usize) -> usize {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut total = 0;
    while total < expected && tokio::time::Instant::now() < deadline {
        let n = chain::extend(pool, 7).await.expect("extend");
        if n == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        total += n;
    }
    total + chain::extend(pool, 7).await.expect("extend")
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
        extend_all(&db.pool, 25).await,
        25,
        "every committed event, once"
    );
    append(&db.pool, "acme", a, 11, 12).await;
    assert_eq!(extend_all(&db.pool, 2).await, 2, "only what came since");

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
    assert_eq!(
        (broken.n, broken.kind, found.through),
        (14, chain::BreakKind::Altered, 13)
    );
    // Another tenant's chain is untouched by it.
    let other = chain::verify(&db.pool, "globex", 0, 1000)
        .await
        .expect("verify");
    assert_eq!((other.checked, other.broken), (5, None));
}

/// `acme`'s links `from..` recomputed from the events as they are stored now and written
/// over the chain: what someone who altered an event would do to hide it.
async fn rechain_from(pool: &PgPool, tenant: &str, from: i64) {
    let previous: Vec<u8> =
        sqlx::query_scalar("SELECT link FROM audit_chain WHERE tenant_id = $1 AND n = $2")
            .bind(tenant)
            .bind(from - 1)
            .fetch_one(pool)
            .await
            .expect("the link before");
    let mut previous: chain::Link = previous.try_into().expect("32 bytes");
    let rows = sqlx::query(
        "SELECT c.n, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type,
                e.event_version, e.payload::text AS payload, e.metadata::text AS metadata
           FROM audit_chain c JOIN events e USING (event_id)
          WHERE c.tenant_id = $1 AND c.n >= $2 ORDER BY c.n",
    )
    .bind(tenant)
    .bind(from)
    .fetch_all(pool)
    .await
    .expect("the events chained");
    for row in rows {
        let n: i64 = row.get("n");
        previous = chain::link(
            &previous,
            &chain::Covered {
                aggregate_type: row.get("aggregate_type"),
                aggregate_id: row.get("aggregate_id"),
                sequence: row.get("sequence"),
                event_type: row.get("event_type"),
                event_version: row.get("event_version"),
                payload: row.get("payload"),
                metadata: row.get("metadata"),
            },
        );
        sqlx::query("UPDATE audit_chain SET link = $3 WHERE tenant_id = $1 AND n = $2")
            .bind(tenant)
            .bind(n)
            .bind(previous.to_vec())
            .execute(pool)
            .await
            .expect("relink");
    }
}

async fn with_trigger_off(pool: &PgPool, sql: &str, id: Uuid) {
    let mut tx = pool.begin().await.expect("a transaction");
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .expect("trigger off");
    sqlx::query(sql)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .expect("the change");
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .expect("trigger on");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn the_keeper_chains_commits_as_they_come_and_recorded_heads_catch_a_rewritten_chain() {
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.expect("migrate");
    let commits = std::sync::Arc::new(tokio::sync::Notify::new());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let keeping = chain::Keeping {
        batch: 4,
        record_every: std::time::Duration::ZERO,
        // A commit wakes it; the poll picks up commits held back by transactions still
        // open elsewhere in the cluster when it woke.
        poll: std::time::Duration::from_millis(100),
    };
    let keeper = tokio::spawn(chain::keep(
        db.pool.clone(),
        keeping,
        commits.clone(),
        stopped,
    ));
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    append(&db.pool, "acme", a, 1, 10).await;
    append(&db.pool, "acme", b, 1, 5).await;
    commits.notify_one();
    let chained = async {
        loop {
            let state = chain::state(&db.pool, "acme", 10).await.expect("state");
            if state.tip.as_ref().map(|t| t.n) == Some(15) && !state.recorded.is_empty() {
                return state;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let state = tokio::time::timeout(std::time::Duration::from_secs(30), chained)
        .await
        .expect("the keeper chains the 15 events and records the head");
    assert_eq!(state.pending, 0);
    assert_eq!(state.recorded[0].0, state.tip.clone().expect("a tip"));
    let _ = stop.send(true);
    keeper.await.expect("the keeper stops when told");

    let whole = chain::verify(&db.pool, "acme", 0, 100)
        .await
        .expect("verify");
    assert_eq!(
        (whole.checked, whole.heads_matched, whole.broken),
        (15, 1, None)
    );
    assert_eq!(Some(whole.link), state.tip.map(|t| t.link));

    // a's fifth event rewritten, and every link from it recomputed to match: each link
    // holds, but the head recorded at link 15 no longer does.
    with_trigger_off(
        &db.pool,
        "UPDATE events SET payload = jsonb_build_object('text', 'tampered')
          WHERE aggregate_id = $1 AND sequence = 5",
        a,
    )
    .await;
    rechain_from(&db.pool, "acme", 5).await;
    let found = chain::verify(&db.pool, "acme", 0, 100)
        .await
        .expect("verify");
    let broken = found.broken.expect("the rewritten chain is found");
    assert_eq!((broken.n, broken.kind), (15, chain::BreakKind::HeadDiffers));

    // An event removed: its link names it, and the event is gone.
    with_trigger_off(
        &db.pool,
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 2",
        b,
    )
    .await;
    let found = chain::verify(&db.pool, "acme", 0, 100)
        .await
        .expect("verify");
    let broken = found.broken.expect("the missing event is found");
    assert_eq!(
        (broken.n, broken.kind, broken.aggregate),
        (12, chain::BreakKind::Missing, None)
    );
    assert_eq!(found.through, 11);
}
