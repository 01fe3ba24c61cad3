//! Webhook delivery throughput (see docs/benchmarks.md), against a fresh durable stack:
//!
//!     dev/stack exec -- ../bench-target/release/examples/delivery_bench
//!
//! 1. Deliveries per second: 2,000 messages already fanned out to one endpoint (a local
//!    receiver answering 200 at once), timed from the dispatcher's start until the last
//!    one is recorded delivered. Baseline, same run: the same receiver POSTed to directly
//!    with the same number of requests in flight (`WEBHOOK_PER_ENDPOINT`, 8).
//! 2. One slow endpoint (every answer after 2 s) beside a fast one: how long the fast
//!    endpoint's 500 messages take while the slow one has 500 waiting, against the fast
//!    endpoint alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use commands::NewEndpoint;
use projection::TableSink;
use testkit::receiver::Receiver;
use testkit::stack::Stack;
use tokio::sync::watch;
use uuid::Uuid;
use webhook_delivery::{DeliverySettings, Dispatcher, Fanout, Schedule};

const MESSAGES: usize = 2_000;
/// `WEBHOOK_PER_ENDPOINT`'s default; `BENCH_PER_ENDPOINT` to try another.
fn per_endpoint() -> usize {
    std::env::var("BENCH_PER_ENDPOINT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

fn settings() -> DeliverySettings {
    DeliverySettings {
        webhooks: testkit::webhooks::settings(),
        schedule: Schedule::parse("0s,1s,1s").expect("a schedule"),
        timeout: Duration::from_secs(15),
        concurrency: 64,
        per_endpoint: per_endpoint(),
        lease: Duration::from_secs(45),
        poll: Duration::from_millis(200),
        disable_after: chrono::Duration::hours(120),
    }
}

async fn endpoint(stack: &Stack, url: &str) -> Uuid {
    stack
        .service
        .create_webhook_endpoint(
            NewEndpoint {
                url: url.to_owned(),
                event_types: vec!["message.sent".into()],
                description: None,
            },
            &testkit::commands::admin_meta("bench"),
        )
        .await
        .expect("endpoint")
        .aggregate_id
}

async fn count(stack: &Stack, sql: &str) -> i64 {
    stack.scalar(sql).await
}

/// Fans `n` messages out (the projector runs until every message is written) with the
/// dispatcher stopped, so the next phase times delivery alone.
async fn fan_out(stack: &Stack, n: usize, total_messages: i64) {
    let c = stack
        .service
        .start_conversation(
            "bench".into(),
            Default::default(),
            &testkit::commands::meta("bench"),
        )
        .await
        .expect("conversation")
        .aggregate_id;
    testkit::commands::send_messages(stack.service.clone(), "bench", Arc::new(vec![c]), 0..n, 8)
        .await;
    while count(stack, "SELECT count(*) FROM webhook_messages").await < total_messages {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn deliver_until(stack: &Stack, sql: &str, want: i64) -> Duration {
    let (stop, stopped) = watch::channel(false);
    let commands =
        commands::CommandService::new(stack.db.pool.clone(), Arc::new(commands::TemplateGenerator));
    let dispatcher = Dispatcher::new(stack.db.pool.clone(), commands, settings()).expect("client");
    let started = Instant::now();
    let task = tokio::spawn(dispatcher.run(stopped));
    while count(stack, sql).await < want {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let _ = stop.send(true);
    let _ = task.await;
    took
}

/// The receiver POSTed to directly, `in_flight` requests at a time.
async fn raw_posts(url: &str, n: usize, in_flight: usize) -> Duration {
    let client = reqwest::Client::new();
    let body = serde_json::json!({"type": "message.sent", "data": {"content": "x".repeat(200)}})
        .to_string();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (client, url, body, next) =
            (client.clone(), url.to_owned(), body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let r = client
                    .post(&url)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("post");
                assert!(r.status().is_success());
            }
        }));
    }
    for t in tasks {
        t.await.expect("poster");
    }
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let stack = Stack::new().await;
    webhook_delivery::migrate(&stack.db.pool)
        .await
        .expect("ledger");
    let _relay = stack.relay();
    let _fanout = stack
        .projector(Arc::new(TableSink(Fanout::new(Duration::ZERO))))
        .await;

    // 1. Throughput to one fast endpoint, against raw POSTs.
    let fast = Receiver::start().await;
    let fast_id = endpoint(&stack, &fast.url).await;
    fan_out(&stack, MESSAGES, MESSAGES as i64).await;
    let took = deliver_until(
        &stack,
        "SELECT count(*) FROM webhook_messages WHERE status = 'delivered'",
        MESSAGES as i64,
    )
    .await;
    let ours = MESSAGES as f64 / took.as_secs_f64();
    let raw = raw_posts(&fast.url, MESSAGES, per_endpoint()).await;
    let baseline = MESSAGES as f64 / raw.as_secs_f64();
    println!(
        "deliveries to one endpoint: {MESSAGES} in {:.2} s = {ours:.0}/s; raw POSTs, {} in flight: {baseline:.0}/s; ratio {:.2}",
        took.as_secs_f64(),
        per_endpoint(),
        ours / baseline
    );

    // 2. A slow endpoint beside the fast one.
    let slow = Receiver::start().await;
    slow.set_delay(Some(Duration::from_secs(2)));
    let slow_id = endpoint(&stack, &slow.url).await;
    let n = 500usize;
    let before = count(&stack, "SELECT count(*) FROM webhook_messages").await;
    fan_out(&stack, n, before + 2 * n as i64).await;
    let fast_sql = format!(
        "SELECT count(*) FROM webhook_messages WHERE status = 'delivered' AND endpoint_id = '{fast_id}'"
    );
    let with_slow = deliver_until(&stack, &fast_sql, (MESSAGES + n) as i64).await;
    let slow_done = count(&stack, &format!("SELECT count(*) FROM webhook_messages WHERE status = 'delivered' AND endpoint_id = '{slow_id}'")).await;
    // The same fast backlog without the slow endpoint: delete it first.
    stack
        .service
        .webhook_endpoint(
            slow_id,
            domain::WebhookCommand::Delete,
            None,
            &testkit::commands::admin_meta("bench"),
        )
        .await
        .expect("delete the slow endpoint");
    while count(&stack, &format!("SELECT count(*) FROM webhook_messages WHERE endpoint_id = '{slow_id}' AND status = 'pending'")).await > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = count(&stack, "SELECT count(*) FROM webhook_messages").await;
    fan_out(&stack, n, before + n as i64).await;
    let alone = deliver_until(&stack, &fast_sql, (MESSAGES + 2 * n) as i64).await;
    println!(
        "fast endpoint, {n} messages: {:.2} s beside a slow endpoint with {n} waiting (the slow one got {slow_done} meanwhile), {:.2} s alone; ratio {:.2}",
        with_slow.as_secs_f64(),
        alone.as_secs_f64(),
        with_slow.as_secs_f64() / alone.as_secs_f64()
    );
}
