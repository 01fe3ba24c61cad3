//! Read-side benchmark: projector catch-up rate, rebuild rates (read model, analytics),
//! read-your-writes latency through both HTTP servers, and the read model's freshness
//! under a steady 1,000 commands/s. Run against a fresh durable stack
//! (see docs/benchmarks.md):
//!
//!     dev/stack exec -- cargo run --release -p e2e --example read_bench

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::Services;
use platform::auth::Role;
use projection::TableSink;
use read_model::ReadModel;
use serde_json::{Value, json};
use testkit::commands::{send_messages, start_conversations};
use testkit::latency::p50_p99;

/// A rate of applied events beside pgbench's one-row INSERTs from one client, one per
/// transaction and ten per transaction (a projector is one writer).
fn against_pgbench(what: &str, events_per_second: f64) {
    use testkit::latency::{pgbench_rows_per_second, ratio};
    println!(
        "ratios: {what} / pgbench 1 client, one INSERT per transaction {}; ten per transaction {}",
        ratio(events_per_second, pgbench_rows_per_second(1, 1)),
        ratio(events_per_second, pgbench_rows_per_second(10, 1)),
    );
}

#[tokio::main]
async fn main() {
    let stack = Services::spawn().await;
    let service = stack.commands.stack.service.clone();
    let messages: usize = testkit::env::knob("READ_BENCH_MESSAGES", 50_000);
    let ids = Arc::new(start_conversations(&service, "bench", 50).await);
    send_messages(service.clone(), "bench", ids.clone(), 0..messages, 32).await;
    let total = stack.commands.stack.event_count().await as u64;

    // Catch-up: a new consumer group reads the whole backlog from Kafka.
    let started = Instant::now();
    let projector = stack.projector().await;
    let mut status = projector.status.clone();
    status
        .wait_for(|s| s.applied >= total)
        .await
        .expect("status");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "projector catch-up: {total} events in {secs:.2} s: {:.0} events/s",
        total as f64 / secs
    );
    against_pgbench("catch-up", total as f64 / secs);

    let report = projection::rebuild(&stack.commands.stack.db.pool, &TableSink(ReadModel))
        .await
        .expect("rebuild");
    println!(
        "rebuild from the event store: {} events in {:.2} s: {:.0} events/s",
        report.replayed,
        report.seconds,
        report.replayed as f64 / report.seconds
    );
    against_pgbench("rebuild", report.replayed as f64 / report.seconds);

    // The analytics from the same event store: facts are additive, so a rebuild is a sum.
    let report = projection::rebuild(
        &stack.commands.stack.db.pool,
        &TableSink(analytics::Analytics),
    )
    .await
    .expect("rebuild the analytics");
    println!(
        "rebuild of the analytics from the event store: {} events in {:.2} s: {:.0} events/s",
        report.replayed,
        report.seconds,
        report.replayed as f64 / report.seconds
    );
    against_pgbench("analytics rebuild", report.replayed as f64 / report.seconds);

    // Read-your-writes: command over HTTP, then a read that waits for its position.
    let http = reqwest::Client::new();
    // The conversations were started by another subject: a member would not see them.
    let token = stack.commands.token("bench", &[Role::Admin]);
    let mut latencies = Vec::new();
    for n in 0..200 {
        let t = Instant::now();
        let sent: Value = http
            .post(format!(
                "{}/v1/conversations/{}/messages",
                stack.commands.base,
                ids[n % ids.len()]
            ))
            .bearer_auth(&token)
            .json(&json!({"role": "user", "content": format!("ryw {n}")}))
            .send()
            .await
            .expect("command")
            .json()
            .await
            .expect("json");
        let resp = http
            .get(format!(
                "{}/v1/conversations/{}?position={}",
                stack.query_base,
                ids[n % ids.len()],
                sent["position"].as_str().expect("position")
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("read");
        assert_eq!(resp.status(), 200);
        latencies.push(t.elapsed());
    }
    let (p50, p99) = p50_p99(latencies);
    println!(
        "read-your-writes (command, relay, Kafka, projector, read): p50 {p50:.1} ms, p99 {p99:.1} ms over 200"
    );
    // Freshness under load: commands straight to the service at a steady 1,000/s for
    // 10 s; every tenth is read back through query-api with its position, timed from
    // its acceptance until the read model shows it.
    let (rate, seconds) = (1_000u64, 10u64);
    let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for n in 0..rate * seconds {
        pace.tick().await;
        let (service, ids, http, token) =
            (service.clone(), ids.clone(), http.clone(), token.clone());
        let query = stack.query_base.clone();
        tasks.spawn(async move {
            let id = ids[n as usize % ids.len()];
            let meta = testkit::commands::meta("bench");
            let accepted = service
                .send_message(
                    id,
                    testkit::commands::user_message(&format!("steady {n}")),
                    None,
                    &meta,
                )
                .await
                .expect("command");
            if n % 10 != 0 {
                return None;
            }
            let t = Instant::now();
            let resp = http
                .get(format!(
                    "{query}/v1/conversations/{id}?position={}",
                    accepted.token()
                ))
                .bearer_auth(&token)
                .send()
                .await
                .expect("read");
            assert_eq!(
                resp.status(),
                200,
                "{}",
                resp.text().await.unwrap_or_default()
            );
            Some(t.elapsed())
        });
    }
    let mut fresh = Vec::new();
    while let Some(done) = tasks.join_next().await {
        fresh.extend(done.expect("task"));
    }
    let achieved = (rate * seconds) as f64 / started.elapsed().as_secs_f64();
    let reads = fresh.len();
    let (p50, p99) = p50_p99(fresh);
    println!(
        "freshness at a steady {rate} commands/s ({achieved:.0}/s achieved, relay, Kafka, projector): accepted to visible p50 {p50:.1} ms, p99 {p99:.1} ms over {reads} reads"
    );
    projector.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
}
