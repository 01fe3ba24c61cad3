//! Many conversations at once (see docs/benchmarks.md), against a fresh durable stack:
//!
//!     dev/stack exec -- ../bench-target/release/examples/burst_bench
//!
//! A real HTTP server plays an OpenAI-compatible model that answers every request after
//! `BURST_LATENCY_MS` (default 1000), like a real one. The assistant retrieves with the
//! local embedding model (the semantic index fills beside it) and answers through that
//! model. Measured in one run:
//! 1. `BURST_MESSAGES` (default 200) user messages to as many fresh conversations of one
//!    tenant, sent at once: time to the first reply, half, all; model calls in flight at
//!    most;
//! 2. the same spread over four tenants;
//! 3. the old runtime's pace, one call at a time (`PROJECTOR_CONCURRENCY=1` is what the
//!    runtime did before: an effect batch performed one effect after the other), on
//!    `BURST_BASELINE_MESSAGES` (default 20) messages;
//! 4. fairness: tenant A sends `BURST_FAIR_MESSAGES` (default 500) at once, tenant B one a
//!    moment later: B's reply time beside the model's latency;
//! 5. two messages in one conversation: still answered in order;
//! 6. notifications: `BURST_MAILS` (default 200) conversations ended at once, each mailed
//!    to its starter through a real SMTP server that takes 200 ms to accept a message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::Services;
use embeddings::EmbeddingConfig;
use llm::config::LlmConfig;
use schemas::Event;
use testkit::chat_server::ChatServer;
use testkit::commands::{meta, user_message};
use testkit::env::knob;
use uuid::Uuid;

struct Burst {
    first: Duration,
    half: Duration,
    all: Duration,
    peak: usize,
}

#[tokio::main]
async fn main() {
    let messages: usize = knob("BURST_MESSAGES", 200);
    let baseline_messages: usize = knob("BURST_BASELINE_MESSAGES", 20);
    let fair_messages: usize = knob("BURST_FAIR_MESSAGES", 500);
    let latency = Duration::from_millis(knob("BURST_LATENCY_MS", 1000));

    // BURST_EMBEDDER=remote: a real HTTP server playing a remote embedding provider
    // instead of the local model, so the CPU of this machine goes to the backend alone.
    let remote = testkit::embeddings_server::EmbeddingsServer::start().await;
    let model = match testkit::env::var("BURST_EMBEDDER").as_deref() {
        Some("remote") => remote.embedder("bow"),
        _ => EmbeddingConfig::from_env()
            .expect("embedding settings")
            .build()
            .await
            .expect("the embedding model (dev/stack exec sets EMBEDDING_MODEL_DIR)"),
    };
    let services = Services::spawn_with(vec![model.clone()]).await;
    let _index = services.semantic_projector(model.clone()).await;
    let chat = ChatServer::start().await;
    chat.set_latency(latency);
    let router = || {
        LlmConfig::from_vars([
            ("LLM_PROVIDERS", "model"),
            ("LLM_MODEL_KIND", "openai"),
            ("LLM_MODEL_URL", chat.base_url.as_str()),
            ("LLM_MODEL_MODEL", "bench"),
            ("LLM_MODEL_TIMEOUT_MS", "60000"),
            ("LLM_MODEL_RETRIES", "0"),
        ])
        .expect("LLM settings")
        .build()
        .expect("router")
    };
    println!(
        "model latency {} ms; assistant concurrency {} (default)",
        latency.as_millis(),
        projection::DEFAULT_EFFECT_CONCURRENCY
    );

    let assistant = services
        .assistant_projector_with(model.clone(), router(), None)
        .await;
    let one = burst(&services, &chat, &tenants(1), messages).await;
    report(&format!("{messages} messages, one tenant"), &one, latency);
    let four = burst(&services, &chat, &tenants(4), messages).await;
    report(
        &format!("{messages} messages, four tenants"),
        &four,
        latency,
    );

    // Fairness: B's one message behind A's burst.
    let started = Instant::now();
    let a = start_conversations(&services, "fair-a", fair_messages).await;
    let b = start_conversations(&services, "fair-b", 1).await;
    let sent_a = send_all(&services, &a, "fair-a");
    let b_reply = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = Instant::now();
        send(&services, b[0], "fair-b", "the question of B").await;
        wait_replies(&services, &b, 1).await;
        sent.elapsed()
    };
    let ((), b_waited) = tokio::join!(sent_a, b_reply);
    wait_replies(&services, &a, fair_messages).await;
    println!(
        "fairness: tenant B's reply {:.0} ms after it was sent, behind tenant A's {fair_messages} ({:.1}x the model's latency; A's burst all answered after {:.1} s)",
        ms(b_waited),
        b_waited.as_secs_f64() / latency.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );

    // Order within one conversation.
    let c = start_conversations(&services, "order", 1).await[0];
    let q1 = send(&services, c, "order", "first").await;
    let q2 = send(&services, c, "order", "second").await;
    wait_replies(&services, &[c], 2).await;
    let order = replies_to(&services, c).await;
    println!(
        "two messages in one conversation: replies in order {}",
        order == vec![q1, q2]
    );
    assistant.stop().await;

    // Notifications: a mail per ended conversation, to a relay taking 200 ms a message.
    let mails: usize = knob("BURST_MAILS", 200);
    let smtp = testkit::smtp::SmtpServer::start().await;
    smtp.set_delay(Duration::from_millis(200));
    let channel = notifications::Channel::email(
        &smtp.url,
        "Threadline <noreply@threadline.test>",
        "{user}@example.com".into(),
        Duration::from_secs(30),
        None,
    )
    .expect("an email channel");
    let notifier = services
        .commands
        .stack
        .projector(Arc::new(projection::EffectSink::new(
            notifications::Notifications::new(channel),
        )))
        .await;
    let ended_tenant = format!("mail-{}", Uuid::new_v4().simple());
    let to_end = start_conversations(&services, &ended_tenant, mails).await;
    let started = Instant::now();
    let ender = meta(&ended_tenant);
    futures::future::join_all(to_end.iter().map(|c| {
        services
            .commands
            .stack
            .service
            .end_conversation(*c, None, None, &ender)
    }))
    .await;
    while smtp.mails().len() < mails {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "mails did not go out"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "notifications: {mails} conversations ended at once, all mailed after {:.2} s through a relay taking 200 ms a message ({} at once at most; one at a time: {:.0} s)",
        started.elapsed().as_secs_f64(),
        smtp.peak_accepting(),
        mails as f64 * 0.2
    );
    notifier.stop().await;

    // The old runtime's pace: one call at a time.
    let sequential = services
        .assistant_projector_with(model.clone(), router(), Some(1))
        .await;
    let old = burst(&services, &chat, &tenants(1), baseline_messages).await;
    report(
        &format!("{baseline_messages} messages, one call at a time (the old runtime)"),
        &old,
        latency,
    );
    sequential.stop().await;
    let per_message = old.all.as_secs_f64() / baseline_messages as f64;
    println!(
        "ratio: {messages} messages all answered in {:.2} s; one at a time they take {per_message:.2} s each, {:.0} s for {messages} ({:.0}x); the ideal is the model's latency, {:.2} s ({:.2}x of it)",
        one.all.as_secs_f64(),
        per_message * messages as f64,
        per_message * messages as f64 / one.all.as_secs_f64(),
        latency.as_secs_f64(),
        one.all.as_secs_f64() / latency.as_secs_f64(),
    );
}

fn tenants(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("t{i}-{}", Uuid::new_v4().simple()))
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(what: &str, b: &Burst, latency: Duration) {
    println!(
        "{what}: first reply {:.0} ms, half {:.0} ms, all {:.0} ms ({:.2}x the model's latency); model calls in flight at most {}",
        ms(b.first),
        ms(b.half),
        ms(b.all),
        b.all.as_secs_f64() / latency.as_secs_f64(),
        b.peak
    );
}

async fn start_conversations(services: &Services, tenant: &str, n: usize) -> Vec<Uuid> {
    let service = &services.commands.stack.service;
    let started = futures::future::join_all((0..n).map(|_| async {
        service
            .start_conversation("Burst".into(), Default::default(), &meta(tenant))
            .await
            .expect("start")
            .aggregate_id
    }))
    .await;
    // The semantic index and the assistant have seen them before the burst starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    started
}

async fn send(services: &Services, c: Uuid, tenant: &str, text: &str) -> Uuid {
    let sent = services
        .commands
        .stack
        .service
        .send_message(c, user_message(text), None, &meta(tenant))
        .await
        .expect("send");
    match sent.events.as_slice() {
        [Event::MessageSent(m)] => m.message_id,
        other => panic!("sending appended {other:?}"),
    }
}

async fn send_all(services: &Services, conversations: &[Uuid], tenant: &str) {
    futures::future::join_all(
        conversations
            .iter()
            .map(|c| send(services, *c, tenant, "When are refunds issued?")),
    )
    .await;
}

/// Sends one message to each of `n` new conversations spread over `tenants`, all at once,
/// and times the replies.
async fn burst(services: &Services, chat: &ChatServer, tenants: &[String], n: usize) -> Burst {
    let mut conversations = Vec::new();
    for (i, tenant) in tenants.iter().enumerate() {
        let share = n / tenants.len() + usize::from(i < n % tenants.len());
        for c in start_conversations(services, tenant, share).await {
            conversations.push((c, tenant.clone()));
        }
    }
    chat.reset_peak();
    let started = Instant::now();
    let sends = futures::future::join_all(
        conversations
            .iter()
            .map(|(c, t)| send(services, *c, t, "When are refunds issued?")),
    );
    let ids: Vec<Uuid> = conversations.iter().map(|(c, _)| *c).collect();
    let (first, half, all) = tokio::join!(
        async {
            sends.await;
        },
        async {
            let first = wait_replies(services, &ids, 1).await;
            let first = started.elapsed().min(first);
            wait_replies(services, &ids, n.div_ceil(2)).await;
            let half = started.elapsed();
            wait_replies(services, &ids, n).await;
            (first, half, started.elapsed())
        }
    )
    .1;
    Burst {
        first,
        half,
        all,
        peak: chat.peak_in_flight(),
    }
}

/// Waits until `conversations` hold `n` assistant replies in all; how long it took.
async fn wait_replies(services: &Services, conversations: &[Uuid], n: usize) -> Duration {
    let started = Instant::now();
    let ids: Vec<String> = conversations.iter().map(Uuid::to_string).collect();
    let pool = &services.commands.stack.db.pool;
    loop {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE aggregate_type = 'conversation'
               AND aggregate_id = ANY($1) AND event_type = 'MessageSent'
               AND payload->'MessageSent'->>'role' = 'assistant'",
        )
        .bind(&ids)
        .fetch_one(pool)
        .await
        .expect("count replies");
        if count as usize >= n {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "replies did not come: {count} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn replies_to(services: &Services, c: Uuid) -> Vec<Uuid> {
    let replies: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT payload->'MessageSent'->>'reply_to' FROM events
          WHERE aggregate_type = 'conversation' AND aggregate_id = $1
            AND event_type = 'MessageSent' AND payload->'MessageSent'->>'role' = 'assistant'
          ORDER BY sequence",
    )
    .bind(c.to_string())
    .fetch_all(&services.commands.stack.db.pool)
    .await
    .expect("read the replies");
    replies
        .into_iter()
        .filter_map(|r| r.and_then(|r| r.parse().ok()))
        .collect()
}
