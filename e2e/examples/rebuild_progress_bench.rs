//! `threadline rebuild` of a large store: how often its progress shows, and whether it
//! ends with the same counts as a rebuild without it. `REBUILD_EVENTS` events (default
//! 1,000,000) over 1,000 conversations are seeded straight into a fresh database; then
//! the read model is rebuilt three times: by `threadline rebuild read-model` on a
//! pseudo-terminal (`script`), its screen redraws counted; by `read-model-projector
//! rebuild --progress`, the time between its progress lines measured; and in this
//! process by `projection::rebuild`, today's report. Release binaries beside this
//! example (see docs/benchmarks.md):
//!
//!     CARGO_TARGET_DIR=../bench-target cargo build --release -p threadline -p projectors --bins
//!     CARGO_TARGET_DIR=../bench-target cargo build --release -p e2e --example rebuild_progress_bench
//!     dev/stack exec -- ../bench-target/release/examples/rebuild_progress_bench

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use projection::TableSink;
use read_model::ReadModel;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

const CONVERSATIONS: i64 = 1_000;

/// Each conversation started, then its messages, `n` events in all, in statements of at
/// most 100,000 rows.
async fn seed(pool: &sqlx::PgPool, n: i64) {
    let per = n / CONVERSATIONS;
    let mut from = 1;
    while from <= per {
        let to = (from + 100_000 / CONVERSATIONS - 1).min(per);
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'conversation', id::text, s,
                    CASE WHEN s = 1 THEN 'ConversationStarted' ELSE 'MessageSent' END, '1',
                    CASE WHEN s = 1 THEN jsonb_build_object('ConversationStarted', jsonb_build_object(
                        'conversation_id', id, 'tenant_id', 'bench', 'title', 'Launch plan ' || a,
                        'metadata', '{}'::jsonb, 'started_at', (extract(epoch from now()) * 1000)::bigint,
                        'started_by', 'writer'))
                    ELSE jsonb_build_object('MessageSent', jsonb_build_object(
                        'conversation_id', id, 'message_id', gen_random_uuid(), 'role', 'user',
                        'content', 'message ' || s || ' of a conversation about the launch plan',
                        'sent_at', (extract(epoch from now()) * 1000)::bigint)) END,
                    jsonb_build_object('tenant_id', 'bench', 'user_id', 'writer',
                                       'correlation_id', gen_random_uuid()::text, 'command', 'Seed')
             FROM generate_series($1::int8, $2::int8) AS s,
                  LATERAL (SELECT a, md5('bench' || a)::uuid AS id FROM generate_series(1, $3::int8) AS a) c
             ORDER BY s",
        )
        .bind(from)
        .bind(to)
        .bind(CONVERSATIONS)
        .execute(pool)
        .await
        .expect("seed");
        from = to + 1;
    }
}

/// The release binaries beside this example (`target/release/examples/..`).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("this example's path");
    let dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .expect("target/release");
    dir.join(name)
}

fn counts(report: &Value) -> (u64, u64) {
    (
        report["replayed"].as_u64().unwrap_or(0),
        report["parked"].as_u64().unwrap_or(0),
    )
}

#[tokio::main]
async fn main() {
    let events: i64 = testkit::env::knob("REBUILD_EVENTS", 1_000_000);
    let db = testkit::env::database().await;
    event_store::migrate(&db.pool).await.expect("migrate");
    projection::migrate(&db.pool).await.expect("migrate");
    projection::generation::ensure_live(&db.pool, &TableSink(ReadModel))
        .await
        .expect("a live generation");
    let started = Instant::now();
    seed(&db.pool, events).await;
    sqlx::query("VACUUM ANALYZE events")
        .execute(&db.pool)
        .await
        .expect("vacuum");
    println!(
        "seeded {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let kafka = testkit::env::kafka();
    let env = [
        ("DATABASE_URL", db.config.url.clone()),
        ("KAFKA_BROKERS", kafka.brokers.clone()),
        ("KAFKA_TOPIC_PREFIX", kafka.topic_prefix.clone()),
    ];

    // 1. threadline on a pseudo-terminal: its screen, redraws counted.
    let command = format!(
        "{} rebuild read-model --projector-bin {}",
        binary("threadline").display(),
        binary("read-model-projector").display()
    );
    let started = Instant::now();
    let screen = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("script runs threadline");
    let secs = started.elapsed().as_secs_f64();
    let shown = String::from_utf8_lossy(&screen.stdout);
    assert!(screen.status.success(), "{shown}");
    let redraws = shown.matches('\r').count();
    // What it printed once the bar was cleared: its report.
    let last_line = shown
        .rfind("rebuilt into")
        .map(|at| shown[at..].trim().to_owned())
        .unwrap_or_default();
    println!(
        "threadline rebuild on a terminal: {secs:.1} s, {redraws} redraws of its progress ({:.1}/s); it ended with: {last_line}",
        redraws as f64 / secs
    );

    // 2. The projector's own progress lines, timed.
    let mut child = tokio::process::Command::new(binary("read-model-projector"))
        .args(["rebuild", "--progress"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the projector runs");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let (mut last_at, mut widest, mut n, mut last) = (Instant::now(), 0f64, 0, Value::Null);
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(p) = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v.get("progress").cloned())
        {
            widest = widest.max(last_at.elapsed().as_secs_f64());
            last_at = Instant::now();
            n += 1;
            last = p;
        }
    }
    let out = child.wait_with_output().await.expect("it ends");
    assert!(out.status.success());
    let projector: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("replayed").is_some())
        .expect("its report");
    println!(
        "read-model-projector rebuild --progress: {n} progress lines, at most {widest:.2} s apart; the last {last}; report {projector}"
    );

    // 3. Today's report, in this process.
    let today = projection::rebuild(db.pool.clone(), &TableSink(ReadModel))
        .await
        .expect("rebuild");
    println!(
        "projection::rebuild: replayed {}, parked {}, {:.1} s",
        today.replayed, today.parked, today.seconds
    );
    let expected = (today.replayed, today.parked);
    assert_eq!(counts(&projector), expected, "the same counts");
    assert_eq!(last["done"].as_u64(), Some(events as u64));
    println!(
        "same counts: replayed {}, parked {}",
        expected.0, expected.1
    );
}
