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
    // its acceptance until the read model shows it. An observer consumer of its own
    // group notes when each record reached Kafka and a consumer, to split the time.
    let observer = Observer::start(&stack.commands.stack.kafka).await;
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
            let accepted_at = chrono::Utc::now();
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
            let visible_at = chrono::Utc::now();
            Some((
                t.elapsed(),
                (id, accepted.version.0 as i64),
                accepted_at,
                visible_at,
            ))
        });
    }
    let mut fresh = Vec::new();
    let mut sampled = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Some((elapsed, key, accepted_at, visible_at)) = done.expect("task") {
            fresh.push(elapsed);
            sampled.push((key, accepted_at, visible_at));
        }
    }
    let achieved = (rate * seconds) as f64 / started.elapsed().as_secs_f64();
    let reads = fresh.len();
    let (p50, p99) = p50_p99(fresh);
    println!(
        "freshness at a steady {rate} commands/s ({achieved:.0}/s achieved, relay, Kafka, projector): accepted to visible p50 {p50:.1} ms, p99 {p99:.1} ms over {reads} reads"
    );
    observer.split(&sampled).await;
    projector.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// When each event record reached Kafka (the relay's produce time) and a consumer of its
/// own group (fetched like the projector's, with the same settings), by aggregate and
/// sequence.
struct Observer {
    seen: Arc<std::sync::Mutex<std::collections::HashMap<(uuid::Uuid, i64), Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A timed command: its aggregate and sequence, when it was accepted and when a read
/// saw it.
type Sampled = (
    (uuid::Uuid, i64),
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
);

#[derive(Clone, Copy)]
struct Seen {
    recorded_ms: i64,
    produced_ms: i64,
    consumed: chrono::DateTime<chrono::Utc>,
}

impl Observer {
    async fn start(kafka: &kafka::KafkaConfig) -> Observer {
        use rdkafka::Message;
        use rdkafka::consumer::Consumer;
        let consumer = kafka
            .consumer("freshness-observer", &testkit::env::group("observer"))
            .expect("observer");
        let topics = kafka.event_topics();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).expect("subscribe");
        let seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let into = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok(msg) = consumer.recv().await else {
                    continue;
                };
                let consumed = chrono::Utc::now();
                let (Ok(headers), Some(key), Some(produced_ms)) = (
                    kafka::headers::read(&msg),
                    msg.key().and_then(|k| std::str::from_utf8(k).ok()),
                    msg.timestamp().to_millis(),
                ) else {
                    continue;
                };
                let Ok(id) = key.parse() else { continue };
                let mut seen = into.lock().unwrap_or_else(|p| p.into_inner());
                seen.insert(
                    (id, headers.sequence),
                    Seen {
                        recorded_ms: headers.recorded_at.timestamp_millis(),
                        produced_ms,
                        consumed,
                    },
                );
            }
        });
        // The group's first assignment, before anything is timed.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Observer { seen, task }
    }

    /// Prints where the sampled commands' time went: p50 and p99 of each step, in ms.
    async fn split(self, sampled: &[Sampled]) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.task.abort();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut steps: [Vec<f64>; 4] = Default::default();
        for (key, accepted, visible) in sampled {
            let Some(s) = seen.get(key) else { continue };
            let ms = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros() as f64 / 1_000.0;
            steps[0].push(ms(*accepted) - s.recorded_ms as f64);
            steps[1].push(s.produced_ms as f64 - ms(*accepted));
            steps[2].push(ms(s.consumed) - s.produced_ms as f64);
            steps[3].push(ms(*visible) - ms(s.consumed));
        }
        let names = [
            "appended (recorded_at) to accepted (commit)",
            "accepted to produced (relay)",
            "produced to consumed (Kafka fetch)",
            "consumed to visible (projector commit, query-api wait and read)",
        ];
        for (name, values) in names.into_iter().zip(steps) {
            let count = values.len();
            let (p50, p99) = testkit::latency::p50_p99_ms(values);
            println!(
                "freshness, where the time goes: {name}: p50 {p50:.1} ms, p99 {p99:.1} ms over {count} (timestamps in ms)"
            );
        }
    }
}
