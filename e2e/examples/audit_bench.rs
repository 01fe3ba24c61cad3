//! Audit replay benchmark: a tenant's events replayed over HTTP as NDJSON (query-api,
//! JWT, the auditor role) beside `COPY (the same rows) TO STDOUT (FORMAT binary)` on the
//! same server in the same run, then one aggregate of 100,000 events replayed the same
//! way. `AUDIT_EVENTS` sets the tenant's size (default 1,000,000). Run against a fresh
//! stack (see docs/benchmarks.md):
//!
//!     dev/stack exec -- cargo run --release -p e2e --example audit_bench

use std::time::Instant;

use e2e::Services;
use futures::StreamExt;
use platform::auth::Role;
use serde_json::Value;
use sqlx::PgPool;

/// Conversations the tenant's events are spread over.
const CONVERSATIONS: i64 = 1_000;

/// Appends `n` messages to conversations of tenant `audit`, `CONVERSATIONS` at a time
/// per sequence, in statements of at most 100,000 rows (the way the command side stores
/// them: one jsonb payload and metadata per event).
async fn seed(pool: &PgPool, tenant: &str, aggregates: i64, n: i64) {
    let per = n / aggregates;
    let mut from = 1;
    while from <= per {
        let to = (from + 100_000 / aggregates - 1).min(per);
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'conversation', id::text, s, 'MessageSent', '1',
                    jsonb_build_object('MessageSent', jsonb_build_object(
                        'conversation_id', id, 'message_id', gen_random_uuid(), 'role', 'user',
                        'content', 'audited message ' || s || ' of a conversation about the launch plan',
                        'model', NULL, 'prompt_tokens', NULL, 'completion_tokens', NULL,
                        'sent_at', (extract(epoch from now()) * 1000)::bigint)),
                    jsonb_build_object('tenant_id', $4::text, 'user_id', 'writer', 'correlation_id', gen_random_uuid()::text,
                                       'causation_id', gen_random_uuid()::text, 'command', 'SendMessage')
             FROM generate_series($1::int8, $2::int8) AS s,
                  LATERAL (SELECT md5($4 || a)::uuid AS id FROM generate_series(1, $3::int8) AS a) c
             ORDER BY s",
        )
        .bind(from)
        .bind(to)
        .bind(aggregates)
        .bind(tenant)
        .execute(pool)
        .await
        .expect("seed");
        from = to + 1;
    }
}

/// `COPY` of the rows a replay of `tenant` reads, binary, to nowhere: seconds and bytes.
async fn copy_binary(pool: &PgPool, tenant: &str) -> (f64, u64) {
    let mut conn = pool.acquire().await.expect("connection");
    let started = Instant::now();
    let mut out = conn
        .copy_out_raw(&format!(
            "COPY (SELECT tx_id, global_position, event_id, aggregate_type, aggregate_id, sequence, event_type,
                          event_version, payload, metadata, recorded_at
                   FROM events WHERE tenant_id = '{tenant}' ORDER BY tx_id, global_position)
             TO STDOUT (FORMAT binary)"
        ))
        .await
        .expect("copy");
    let mut bytes = 0u64;
    while let Some(chunk) = out.next().await {
        bytes += chunk.expect("copy chunk").len() as u64;
    }
    (started.elapsed().as_secs_f64(), bytes)
}

/// A replay over HTTP read to its end: seconds, bytes, and the trailer's count.
async fn replay(http: &reqwest::Client, url: &str, token: &str) -> (f64, u64, u64) {
    let started = Instant::now();
    let mut resp = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("replay");
    assert_eq!(resp.status(), 200);
    let (mut bytes, mut tail) = (0u64, Vec::new());
    while let Some(chunk) = resp.chunk().await.expect("body") {
        bytes += chunk.len() as u64;
        tail.extend_from_slice(&chunk);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&tail);
    let trailer: Value = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("a trailer line");
    let count = trailer["end"]["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("the replay did not end: {trailer}"));
    (secs, bytes, count)
}

#[tokio::main]
async fn main() {
    let events: i64 = testkit::env::knob("AUDIT_EVENTS", 1_000_000);
    let mut stack = Services::spawn().await;
    let pool = stack.commands.stack.db.pool.clone();
    let started = Instant::now();
    seed(&pool, "audit", CONVERSATIONS, events).await;
    seed(&pool, "long", 1, 100_000).await;
    sqlx::query("VACUUM ANALYZE events")
        .execute(&pool)
        .await
        .expect("vacuum");
    // The relay publishes what was seeded; measured once it is done, on a quiet machine.
    let total = stack.commands.stack.event_count().await as u64;
    stack
        .relay_caught_up(total, std::time::Duration::from_secs(1_200))
        .await;
    println!(
        "seeded {events} events over {CONVERSATIONS} conversations and one of 100,000, and published them, in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let http = reqwest::Client::new();
    let token = stack.commands.token("audit", &[Role::Auditor]);
    let url = format!("{}/v1/audit/events", stack.query_base);
    for run in 1..=2 {
        let (copy_secs, copy_bytes) = copy_binary(&pool, "audit").await;
        let (secs, bytes, count) = replay(&http, &url, &token).await;
        assert_eq!(count, events as u64, "every event replayed");
        let (ours, theirs) = (count as f64 / secs, events as f64 / copy_secs);
        println!(
            "run {run}: tenant replay as NDJSON over HTTP: {count} events in {secs:.2} s: {ours:.0} events/s ({:.0} MB/s); \
             COPY binary of the same rows: {copy_secs:.2} s: {theirs:.0} events/s ({:.0} MB/s); ratio {:.2}",
            bytes as f64 / secs / 1e6,
            copy_bytes as f64 / copy_secs / 1e6,
            ours / theirs
        );
    }

    let long = {
        let id: String = sqlx::query_scalar("SELECT md5('long' || 1)::uuid::text")
            .fetch_one(&pool)
            .await
            .expect("id");
        id
    };
    let token = stack.commands.token("long", &[Role::Auditor]);
    let url = format!("{}/v1/audit/conversation/{long}/events", stack.query_base);
    let (secs, bytes, count) = replay(&http, &url, &token).await;
    assert_eq!(count, 100_000);
    println!(
        "aggregate replay: one conversation of {count} events in {secs:.2} s: {:.0} events/s ({:.0} MB/s)",
        count as f64 / secs,
        bytes as f64 / secs / 1e6
    );
}
