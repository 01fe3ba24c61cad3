//! Command-side benchmark: HTTP command throughput and latency, a hot aggregate, and
//! relay drain rate. Run against a fresh durable stack (see docs/benchmarks.md):
//!
//!     dev/stack exec -- cargo run --release -p command-api --example bench
//!
//! Client, server and relay share this process and the machine with PostgreSQL and
//! the broker, so the figures are for the whole system on one box.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use common::TestApp;
use platform::auth::Role;
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// `clients` concurrent HTTP clients send `per_client` messages each, client `i` to
/// conversation `i % conversations.len()`.
async fn send_messages(
    app: &TestApp,
    conversations: &[String],
    clients: usize,
    per_client: usize,
) -> (f64, Vec<Duration>) {
    let token = Arc::new(app.token("bench", &[Role::Member]));
    let http = reqwest::Client::new();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let url = format!("{}/v1/conversations/{}/messages", app.base, conversations[c % conversations.len()]);
            let (http, token) = (http.clone(), token.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for n in 0..per_client {
                    let t = Instant::now();
                    let resp = http
                        .post(&url)
                        .bearer_auth(token.as_str())
                        .json(&json!({"role": "user", "content": format!("benchmark message {n} from client {c}")}))
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap_or_default());
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
}

async fn start(app: &TestApp, n: usize) -> Vec<String> {
    let http = reqwest::Client::new();
    let token = app.token("bench", &[Role::Member]);
    let mut ids = Vec::new();
    for i in 0..n {
        let body: serde_json::Value = http
            .post(format!("{}/v1/conversations", app.base))
            .bearer_auth(&token)
            .json(&json!({"title": format!("bench {i}")}))
            .send()
            .await
            .expect("start")
            .json()
            .await
            .expect("json");
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    ids
}

#[tokio::main]
async fn main() {
    let app = TestApp::spawn().await;
    let spread = start(&app, 50).await;
    let hot = start(&app, 1).await;

    let (rate, lat) = send_messages(&app, &spread, 32, 150).await;
    println!(
        "spread: 32 clients x 150 messages over 50 conversations: {rate:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let (rate, lat) = send_messages(&app, &hot, 32, 20).await;
    println!(
        "hot: 32 clients x 20 messages to one conversation: {rate:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    let backlog = app.event_count().await as u64;
    let started = Instant::now();
    let mut relay = app.relay();
    relay.caught_up(backlog, Duration::from_secs(600)).await;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "relay: drained a backlog of {backlog} events to Kafka in {elapsed:.2} s: {:.0} events/s",
        backlog as f64 / elapsed
    );

    let (rate, _) = send_messages(&app, &spread, 32, 50).await;
    let total = app.event_count().await as u64;
    let t = Instant::now();
    relay.caught_up(total, Duration::from_secs(600)).await;
    println!(
        "relay live: {rate:.0} commands/s with the relay running; caught up {:.0} ms after the last command",
        t.elapsed().as_secs_f64() * 1000.0
    );
    relay.stop().await;
}
