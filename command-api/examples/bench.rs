//! Command-side benchmark: HTTP command throughput and latency at 1, 32 and 64 clients
//! with group commit and with one commit per command, beside the stock cqrs-es and
//! postgres-es crates on the same aggregate; a hot aggregate (with the aggregates kept in
//! memory and without), a command's cost on a long stream, relay drain rate, and the cost
//! of sealing personal fields. Run against a fresh durable stack (see docs/benchmarks.md):
//!
//!     dev/stack exec -- cargo run --release -p command-api --example bench
//!
//! `BENCH_ONLY=sealing` runs only the sealing comparison.
//!
//! Client, server and relay share this process and the machine with PostgreSQL and
//! the broker, so the figures are for the whole system on one box.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;

use commands::{CommandService, TemplateGenerator};
use common::TestApp;
use domain::{Actor, Command, CommandContext, Conversation, ConversationCommand, Reach};
use platform::auth::Role;
use serde_json::json;
use sqlx::PgPool;
use testkit::latency::percentile_ms as percentile;
use uuid::Uuid;

/// Another command API on the same stack, its service set up by `configure` (for
/// example keeping no aggregate in memory, or committing each command alone).
async fn api(
    app: &TestApp,
    configure: impl FnOnce(CommandService) -> CommandService,
) -> (String, Arc<CommandService>) {
    api_on(app.db.pool.clone().into(), configure).await
}

/// The same over `store` (with data protection, say).
async fn api_on(
    store: event_store::Reader,
    configure: impl FnOnce(CommandService) -> CommandService,
) -> (String, Arc<CommandService>) {
    let service = Arc::new(configure(CommandService::new(
        store,
        Arc::new(TemplateGenerator),
    )));
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

/// A conversation of tenant `bench` as the assistant leaves it: `events` messages, every
/// user message answered by an assistant message that names it (`reply_to`), written by
/// 32 concurrent writers.
async fn seeded_answered(service: &Arc<CommandService>, events: usize) -> Uuid {
    let meta = testkit::commands::meta("bench");
    let id = service
        .start_conversation("long".into(), Default::default(), &meta)
        .await
        .expect("start")
        .aggregate_id;
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let service = service.clone();
            tokio::spawn(async move {
                let meta = testkit::commands::meta("bench");
                for n in (0..events / 2).skip(w).step_by(32) {
                    let asked = service
                        .send_message(
                            id,
                            testkit::commands::user_message(&format!("q{n}")),
                            None,
                            &meta,
                        )
                        .await
                        .expect("question");
                    let Some(schemas::Event::MessageSent(question)) = asked.events.first() else {
                        panic!("a question is a MessageSent");
                    };
                    let reply = commands::NewMessage {
                        reply_to: Some(question.message_id),
                        ..commands::NewMessage::new(schemas::Role::Assistant, format!("a{n}"))
                    };
                    service
                        .send_message(id, reply, None, &meta)
                        .await
                        .expect("answer");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    id
}

/// A command's cost on a conversation of 100 and of [`LONG`] events, every question
/// answered, kept in memory and not.
async fn long_stream(app: &TestApp, reloading_service: &Arc<CommandService>) {
    let short = seeded_answered(&app.stack.service, 100).await;
    let long = seeded_answered(&app.stack.service, LONG).await;
    // Snapshots are written in the background: let the last ones land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (sequence, bytes): (i64, i32) = sqlx::query_as(
        "SELECT sequence, pg_column_size(state) FROM aggregate_snapshots WHERE aggregate_id = $1",
    )
    .bind(long.to_string())
    .fetch_one(&app.db.pool)
    .await
    .expect("the long stream's snapshot");
    println!("long stream: its snapshot is at sequence {sequence}, {bytes} bytes stored");
    for (label, service) in [
        ("kept in memory", app.stack.service.clone()),
        ("reloaded", reloading_service.clone()),
    ] {
        let s = sequential(&service, short, 100).await;
        let l = sequential(&service, long, 100).await;
        println!(
            "long stream, aggregates {label}: 100 sequential commands, p50 {s:.2} ms on 100 events, {l:.2} ms on {LONG} events ({:.2}x)",
            l / s
        );
    }
}

/// Events of the long stream (the 100,000).
const LONG: usize = 100_000;

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

/// The stock crates as published: cqrs-es's framework over postgres-es's repository, on
/// the same table, aggregate and command, `clients` tasks over 50 new conversations
/// sending `per_client` messages each, straight to the framework (no HTTP). Commands/s
/// and latencies.
async fn stock(pool: &PgPool, clients: usize, per_client: usize) -> (f64, Vec<Duration>) {
    let cqrs = Arc::new(postgres_es::postgres_cqrs::<Conversation>(
        pool.clone(),
        vec![],
        (),
    ));
    let ctx = || CommandContext {
        tenant_id: "stock".into(),
        actor: Actor {
            subject: "writer".into(),
            reach: Reach::Own,
        },
        expected_version: None,
        at: schemas::timestamp_now(),
    };
    let metadata = HashMap::from([("tenant_id".to_owned(), "stock".to_owned())]);
    let mut ids = Vec::new();
    for n in 0..50 {
        let id = Uuid::now_v7();
        let start = ConversationCommand::Start {
            conversation_id: id,
            title: format!("stock {n}"),
            metadata: Default::default(),
            assistant: true,
        };
        cqrs.execute_with_metadata(
            &id.to_string(),
            Command {
                ctx: ctx(),
                body: start,
            },
            metadata.clone(),
        )
        .await
        .expect("start");
        ids.push(id.to_string());
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (cqrs, id, metadata) = (cqrs.clone(), ids[c % ids.len()].clone(), metadata.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for n in 0..per_client {
                    let body = ConversationCommand::SendMessage {
                        message_id: Uuid::now_v7(),
                        role: schemas::Role::User,
                        content: format!("benchmark message {n} from client {c}"),
                        model: None,
                        prompt_tokens: None,
                        completion_tokens: None,
                        reply_to: None,
                        latency_ms: None,
                        sources: vec![],
                    };
                    let t = Instant::now();
                    // Two clients of one conversation conflict now and then: cqrs-es
                    // reports it and the caller tries again, as ours does inside.
                    loop {
                        let command = Command {
                            ctx: ctx(),
                            body: body.clone(),
                        };
                        match cqrs
                            .execute_with_metadata(&id, command, metadata.clone())
                            .await
                        {
                            Ok(()) => break,
                            Err(cqrs_es::AggregateError::AggregateConflict) => continue,
                            Err(e) => panic!("stock command: {e}"),
                        }
                    }
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    collect(started, tasks).await
}

async fn collect(
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
) -> (f64, Vec<Duration>) {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
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
    collect(started, tasks).await
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

fn line(label: &str, (rate, lat): &(f64, Vec<Duration>)) -> f64 {
    println!(
        "{label}: {rate:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms",
        percentile(lat, 0.5),
        percentile(lat, 0.99)
    );
    *rate
}

/// HTTP commands with personal fields sealed (`DATA_MASTER_KEY`) beside the same build
/// without, alternated on one stack: 32 clients x 150 messages over 50 new conversations
/// (each with a key of its own), three rounds each. Prints each round and the ratio of the
/// medians (docs/DATA-PROTECTION.md asks for at least 0.9).
async fn sealing(app: &TestApp) {
    let master =
        sealing::Keyring::from_text(&sealing::Keyring::generate_text().expect("randomness"))
            .expect("a key");
    let (sealed_base, _) = api_on(
        event_store::Reader::new(app.db.pool.clone(), Some(master)),
        |s| s,
    )
    .await;
    let (mut plain, mut sealed) = (Vec::new(), Vec::new());
    for round in 1..=3 {
        for (label, base, rates) in [
            ("clear", &app.base, &mut plain),
            ("sealed", &sealed_base, &mut sealed),
        ] {
            let spread = start(app, base, 50).await;
            rates.push(line(
                &format!("data protection round {round}, {label}: 32 clients x 150 messages over 50 conversations"),
                &send_messages(app, base, &spread, 32, 150).await,
            ));
        }
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (p, s) = (median(&mut plain), median(&mut sealed));
    println!(
        "data protection: sealed {s:.0} / clear {p:.0} commands/s (medians of 3) = {:.3}",
        s / p
    );
}

#[tokio::main]
async fn main() {
    let app = TestApp::spawn().await;
    if testkit::env::var("BENCH_ONLY").as_deref() == Some("sealing") {
        sealing(&app).await;
        return;
    }
    // What a profiler runs (valgrind --tool=callgrind: see docs/benchmarks.md): only the
    // HTTP commands of 32 clients over 50 conversations, BENCH_COMMANDS of them.
    if testkit::env::var("BENCH_ONLY").as_deref() == Some("commands") {
        let commands: usize = testkit::env::knob("BENCH_COMMANDS", 3_200);
        let spread = start(&app, &app.base, 50).await;
        line(
            &format!(
                "spread, HTTP, group commit: 32 clients, {commands} messages over 50 conversations"
            ),
            &send_messages(&app, &app.base, &spread, 32, commands / 32).await,
        );
        return;
    }
    let (alone_base, _) = api(&app, |s| s.with_group_commit(1)).await;
    let (reloading_base, reloading_service) = api(&app, |s| s.with_cached_aggregates(0)).await;
    if testkit::env::var("BENCH_ONLY").as_deref() == Some("long") {
        long_stream(&app, &reloading_service).await;
        return;
    }
    sealing(&app).await;

    // About 4,800 commands per run, over 50 new conversations.
    for clients in [1, 32, 64] {
        let per_client = if clients == 1 { 1_600 } else { 4_800 / clients };
        let label = format!("{clients} clients x {per_client} messages over 50 conversations");
        let spread = start(&app, &app.base, 50).await;
        let grouped = line(
            &format!("spread, HTTP, group commit: {label}"),
            &send_messages(&app, &app.base, &spread, clients, per_client).await,
        );
        let spread = start(&app, &alone_base, 50).await;
        let alone = line(
            &format!("spread, HTTP, a commit per command: {label}"),
            &send_messages(&app, &alone_base, &spread, clients, per_client).await,
        );
        let stock = line(
            &format!("spread, stock cqrs-es + postgres-es, no HTTP: {label}"),
            &stock(&app.db.pool, clients, per_client).await,
        );
        println!(
            "ratios at {clients} clients: group / alone {:.2}, group / stock {:.2}, group / pgbench one-row INSERTs {}, group / pgbench realistic event rows {}",
            grouped / alone,
            grouped / stock,
            testkit::latency::ratio(
                grouped,
                testkit::latency::pgbench_rows_per_second(1, clients as u32)
            ),
            testkit::latency::ratio(
                grouped,
                testkit::latency::pgbench_realistic_per_second(clients as u32)
            )
        );
    }

    for (label, base) in [
        ("group commit", &app.base),
        ("a commit per command", &alone_base),
        ("every command reloading its stream", &reloading_base),
    ] {
        let hot = start(&app, base, 1).await;
        line(
            &format!("hot, {label}: 32 clients x 20 messages to one conversation"),
            &send_messages(&app, base, &hot, 32, 20).await,
        );
    }
    long_stream(&app, &reloading_service).await;

    let backlog = app.event_count().await as u64;
    let started = Instant::now();
    let mut relay = app.relay();
    relay.caught_up(backlog, Duration::from_secs(600)).await;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "relay: drained a backlog of {backlog} events to Kafka in {elapsed:.2} s: {:.0} events/s",
        backlog as f64 / elapsed
    );

    let spread = start(&app, &app.base, 50).await;
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
