//! Command-side benchmark: HTTP command throughput and latency, a hot aggregate (with
//! the aggregates kept in memory and without), a command's cost on a long stream, and
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

use commands::{CommandService, TemplateGenerator};
use common::TestApp;
use platform::auth::Role;
use serde_json::json;
use uuid::Uuid;

/// Another command API on the same stack, its service keeping no aggregate in memory:
/// every command reloads its stream, as before aggregates were kept.
async fn reloading(app: &TestApp) -> (String, Arc<CommandService>) {
    let service = Arc::new(
        CommandService::new(app.db.pool.clone(), Arc::new(TemplateGenerator))
            .with_cached_aggregates(0),
    );
    let router = command_api::http::router(command_api::http::AppState {
        service: service.clone(),
        auth: testkit::tokens::authenticator(),
        relay: None,
        relay_name: "bench".into(),
        edge: platform::edge::EdgeConfig::permissive(),
    });
    let (base, _server) = testkit::serve(router).await;
    (base, service)
}

/// A conversation of tenant `bench` with `messages` messages, written straight to the
/// service.
async fn seeded(service: &CommandService, messages: usize) -> Uuid {
    let meta = testkit::commands::meta("bench");
    let id = service
        .start_conversation("long".into(), Default::default(), &meta)
        .await
        .expect("start")
        .aggregate_id;
    for n in 0..messages {
        service
            .send_message(
                id,
                testkit::commands::user_message(&format!("m{n}")),
                None,
                &meta,
            )
            .await
            .expect("seed");
    }
    id
}

/// `n` sequential commands straight to `service` on `conversation`: the p50 in ms.
async fn sequential(service: &CommandService, conversation: Uuid, n: usize) -> f64 {
    let meta = testkit::commands::meta("bench");
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        service
            .send_message(
                conversation,
                testkit::commands::user_message(&format!("s{i}")),
                None,
                &meta,
            )
            .await
            .expect("send");
        latencies.push(t.elapsed());
    }
    latencies.sort();
    percentile(&latencies, 0.5)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// `clients` concurrent HTTP clients of the command API at `base` send `per_client` messages
/// each, client `i` to conversation `i % conversations.len()`.
async fn send_messages(
    app: &TestApp,
    base: &str,
    conversations: &[String],
    clients: usize,
    per_client: usize,
) -> (f64, Vec<Duration>) {
    let token = Arc::new(app.token("bench", &[Role::Member]));
    let http = reqwest::Client::new();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let url = format!("{base}/v1/conversations/{}/messages", conversations[c % conversations.len()]);
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

async fn start(app: &TestApp, base: &str, n: usize) -> Vec<String> {
    let http = reqwest::Client::new();
    let token = app.token("bench", &[Role::Member]);
    let mut ids = Vec::new();
    for i in 0..n {
        let body: serde_json::Value = http
            .post(format!("{base}/v1/conversations"))
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
    let spread = start(&app, &app.base, 50).await;
    let hot = start(&app, &app.base, 1).await;

    let (rate, lat) = send_messages(&app, &app.base, &spread, 32, 150).await;
    println!(
        "spread: 32 clients x 150 messages over 50 conversations: {rate:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let (rate, lat) = send_messages(&app, &app.base, &hot, 32, 20).await;
    println!(
        "hot: 32 clients x 20 messages to one conversation: {rate:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let (reloading_base, reloading_service) = reloading(&app).await;
    let hot_reloading = start(&app, &reloading_base, 1).await;
    let (rate, lat) = send_messages(&app, &reloading_base, &hot_reloading, 32, 20).await;
    println!(
        "hot, every command reloading its stream: 32 clients x 20 messages to one conversation: {rate:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let short = seeded(&app.stack.service, 100).await;
    let long = seeded(&app.stack.service, 10_000).await;
    for (label, service) in [
        ("kept in memory", app.stack.service.clone()),
        ("reloaded", reloading_service),
    ] {
        let s = sequential(&service, short, 100).await;
        let l = sequential(&service, long, 100).await;
        println!(
            "long stream, aggregates {label}: 100 sequential commands, p50 {s:.2} ms on 100 events, {l:.2} ms on 10,000 events ({:.2}x)",
            l / s
        );
    }

    let backlog = app.event_count().await as u64;
    let started = Instant::now();
    let mut relay = app.relay();
    relay.caught_up(backlog, Duration::from_secs(600)).await;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "relay: drained a backlog of {backlog} events to Kafka in {elapsed:.2} s: {:.0} events/s",
        backlog as f64 / elapsed
    );

    let (rate, _) = send_messages(&app, &app.base, &spread, 32, 50).await;
    let total = app.event_count().await as u64;
    let t = Instant::now();
    relay.caught_up(total, Duration::from_secs(600)).await;
    println!(
        "relay live: {rate:.0} commands/s with the relay running; caught up {:.0} ms after the last command",
        t.elapsed().as_secs_f64() * 1000.0
    );
    relay.stop().await;
}
