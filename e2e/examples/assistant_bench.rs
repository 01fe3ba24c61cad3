//! Assistant turnaround (see docs/benchmarks.md), against a fresh durable stack:
//!
//!     dev/stack exec -- ../bench-target/release/examples/assistant_bench
//!
//! 100 sequential questions over HTTP, each timed until its reply arrives on the
//! conversation's live stream (SSE): relay, Kafka, the assistant (retrieval with the local
//! embedding model, the offline `local` provider), the append of the reply, the relay
//! again, the read model, the stream. Beside it, in the same run: the model call alone
//! (the reply's `latency_ms`), so the backend's own share shows, and the same path for a
//! plain message without any assistant (HTTP command until the stream shows it).

use std::time::{Duration, Instant};

use e2e::Services;
use e2e::client::Client;
use e2e::sse::read_until;
use embeddings::EmbeddingConfig;
use llm::config::LlmConfig;
use platform::auth::Role;
use testkit::latency::p50_p99 as summary;

const QUESTIONS: usize = 100;

#[tokio::main]
async fn main() {
    let model = EmbeddingConfig::from_env()
        .expect("embedding settings")
        .build()
        .await
        .expect("the embedding model (dev/stack exec sets EMBEDDING_MODEL_DIR)");
    let services = Services::spawn_with(vec![model.clone()]).await;
    let _read_model = services.projector().await;
    let _index = services.semantic_projector(model.clone()).await;
    let router = LlmConfig::from_vars([("LLM_PROVIDERS", "local")])
        .expect("LLM settings")
        .build()
        .expect("router");
    let _assistant = services.assistant_projector(model, router).await;
    testkit::commands::add_knowledge(
        &services.commands.stack.service,
        "bench",
        "Shipping policy",
        "text/plain",
        b"Orders ship within two days. Refunds are issued within fourteen days of a return.",
    )
    .await;

    let with_assistant = run(&services, true).await;
    let without = run(&services, false).await;
    let (t50, t99) = summary(with_assistant.iter().map(|(t, _)| *t).collect());
    let (m50, m99) = summary(with_assistant.iter().map(|(_, m)| *m).collect());
    let (o50, o99) = summary(
        with_assistant
            .iter()
            .map(|(t, m)| t.saturating_sub(*m))
            .collect(),
    );
    let (p50, p99) = summary(without.iter().map(|(t, _)| *t).collect());
    println!(
        "user message to its reply on the live stream, {QUESTIONS} sequential: p50 {t50:.1} ms, p99 {t99:.1} ms"
    );
    println!("  the model call alone (local provider): p50 {m50:.2} ms, p99 {m99:.2} ms");
    println!(
        "  the backend's own share (turnaround - model call): p50 {o50:.1} ms, p99 {o99:.1} ms"
    );
    println!(
        "  baseline, same run: a message with the assistant off, until the stream shows it: p50 {p50:.1} ms, p99 {p99:.1} ms; reply / baseline at p50: {:.2}",
        t50 / p50
    );
}

/// Times each message until the stream shows what it waits for: the reply (assistant
/// on) or the message itself (assistant off). With it, the model's latency.
async fn run(services: &Services, assistant: bool) -> Vec<(Duration, Duration)> {
    let client = Client::new(services, services.commands.token("bench", &[Role::Member]));
    let id = client.start("Bench", assistant).await;
    let mut stream = client.stream(&id).await;
    let mut buffer = String::new();
    read_until(&mut stream, &mut buffer, |e| {
        e.event == "ConversationStarted"
    })
    .await;
    let mut timings = Vec::new();
    for n in 0..QUESTIONS {
        let t = Instant::now();
        let sent = client
            .ask(&id, &format!("When do refunds arrive for order {n}?"))
            .await;
        let message = sent["message_id"].as_str().expect("message id").to_owned();
        let seen = read_until(&mut stream, &mut buffer, |e| {
            e.event == "MessageSent"
                && if assistant {
                    e.data["reply_to"] == message.as_str()
                } else {
                    e.data["message_id"] == message.as_str()
                }
        })
        .await;
        let elapsed = t.elapsed();
        let model = seen
            .last()
            .and_then(|e| e.data["latency_ms"].as_u64())
            .map_or(Duration::ZERO, Duration::from_millis);
        timings.push((elapsed, model));
    }
    timings
}
