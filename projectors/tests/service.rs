//! The projector binaries as processes, against a real PostgreSQL and a real broker.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use embeddings::chunk::ChunkConfig;
use testkit::embeddings_server::DIMENSION;
use testkit::net::free_addr;

#[tokio::test]
async fn a_projector_whose_consumer_cannot_start_exits_instead_of_staying_healthy() {
    let db = testkit::env::database().await;
    // A table in the way of generation 1: the consumer fails as it starts.
    sqlx::query("CREATE SCHEMA read_model_g1")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE read_model_g1.conversations (squatter int)")
        .execute(&db.pool)
        .await
        .unwrap();
    let kafka = testkit::env::kafka();
    let addr = free_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_read-model-projector"))
        .env("DATABASE_URL", &db.config.url)
        .env("KAFKA_BROKERS", &kafka.brokers)
        .env("KAFKA_TOPIC_PREFIX", &kafka.topic_prefix)
        .env("PROJECTOR_ADDR", &addr)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start read-model-projector");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let healthz = reqwest::get(format!("http://{addr}/healthz"))
                .await
                .map(|r| r.status().to_string())
                .unwrap_or_else(|e| e.to_string());
            let _ = child.kill();
            panic!("the projector kept running (/healthz: {healthz}) although it consumes nothing");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "it exits with an error: {status}");
}

/// Starts a projector binary as a process on the test's stack with `settings` on top,
/// and waits until it consumes (a new projection first fills itself from the event store
/// as history).
/// A projector process, killed when dropped (a failing test leaves none behind).
struct Projector(std::process::Child, String);

impl Projector {
    /// Its `/status`, if it answers.
    async fn status(&self) -> Option<serde_json::Value> {
        reqwest::get(format!("http://{}/status", self.1))
            .await
            .ok()?
            .json::<serde_json::Value>()
            .await
            .ok()
    }

    /// Waits until it has performed and committed every record on its topics: no lag,
    /// nothing in flight or waiting. Whatever it was going to do, it has done.
    async fn wait_idle(&self) {
        testkit::wait_until("the projector idle", || async {
            self.status().await.is_some_and(|s| {
                s["lag_events"] == 0
                    && s["load"]["records_in_flight"] == 0
                    && s["load"]["waiting"] == 0
            })
        })
        .await;
    }
}

impl std::ops::Deref for Projector {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Projector {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Projector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn spawn_projector(
    bin: &str,
    stack: &testkit::Stack,
    settings: &[(&str, &str)],
) -> Projector {
    let addr = free_addr();
    let child = Command::new(bin)
        // The stack's command service reads without keys: a binary that sealed what it
        // writes (dev/stack exports a local DATA_MASTER_KEY) would leave events the test's
        // service cannot load once it has to read them from the store.
        .env_remove("DATA_MASTER_KEY")
        .env("DATABASE_URL", &stack.db.config.url)
        .env("KAFKA_BROKERS", &stack.kafka.brokers)
        .env("KAFKA_TOPIC_PREFIX", &stack.kafka.topic_prefix)
        .env("KAFKA_TOPIC_PARTITIONS", stack.kafka.partitions.to_string())
        .env("KAFKA_FETCH_WAIT_MAX_MS", "10")
        .env("PROJECTOR_ADDR", &addr)
        .env("RUST_LOG", "warn")
        .envs(settings.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin}: {e}"));
    let child = Projector(child, addr);
    testkit::wait_until("the projector consuming", || async {
        child
            .status()
            .await
            .is_some_and(|s| s["assigned_partitions"].as_u64().unwrap_or(0) > 0)
    })
    .await;
    child
}

/// `notifications-projector`, delivering over HTTP to `url` (what matters is what is
/// written after it started: history notifies nobody).
async fn notifications_projector(stack: &testkit::Stack, url: &str) -> Projector {
    spawn_projector(
        env!("CARGO_BIN_EXE_notifications-projector"),
        stack,
        &[("NOTIFY_CHANNEL", "http"), ("NOTIFY_HTTP_URL", url)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_survive_a_kill_9_of_their_projector_and_are_seen_once() {
    let stack = testkit::Stack::new().await;
    let _relay = stack.relay();
    let receiver = testkit::receiver::Receiver::start().await;
    let mut projector = notifications_projector(&stack, &receiver.url).await;
    let writer = async {
        for n in 0..60 {
            testkit::commands::summarised_and_ended(&stack.service, "acme", n).await;
        }
    };
    let kill = async {
        testkit::wait_until("deliveries under way", || async {
            receiver.delivered().len() >= 20
        })
        .await;
        projector.kill().expect("kill -9");
        let _ = projector.wait();
    };
    tokio::join!(writer, kill);
    let mut restarted = notifications_projector(&stack, &receiver.url).await;
    testkit::wait_until("every notification recorded", || async {
        stack
            .scalar("SELECT count(*) FROM effect_ledger WHERE projection = 'notifications'")
            .await
            == 120
    })
    .await;
    let delivered = receiver.delivered();
    assert_eq!(
        delivered.len(),
        120,
        "each notification delivered under its own id"
    );
    let sent: usize = delivered.values().sum();
    eprintln!("120 notifications, {sent} deliveries (the rest are repeats after the kill)");
    let inbox: Vec<uuid::Uuid> = sqlx::query_scalar(&format!(
        "SELECT notification_id FROM {}.inbox",
        stack.live_schema("notifications").await
    ))
    .fetch_all(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!(inbox.len(), 120);
    assert!(
        inbox
            .iter()
            .all(|id| delivered.contains_key(&id.to_string()))
    );
    let _ = restarted.kill();
    let _ = restarted.wait();
}

/// `embeddings-projector` embedding through an OpenAI-compatible provider (a real HTTP
/// server of the test's) into the PostgreSQL vector store, in windows of 24 tokens.
async fn embeddings_projector(
    stack: &testkit::Stack,
    provider: &testkit::embeddings_server::EmbeddingsServer,
) -> Projector {
    spawn_projector(
        env!("CARGO_BIN_EXE_embeddings-projector"),
        stack,
        &[
            ("EMBEDDING_PROVIDER", "openai"),
            ("EMBEDDING_OPENAI_URL", &provider.base_url),
            ("EMBEDDING_MODEL", "bow"),
            ("EMBEDDING_DIMENSION", &DIMENSION.to_string()),
            ("EMBEDDING_CHUNK_TOKENS", "24"),
            ("EMBEDDING_CHUNK_OVERLAP", "4"),
            ("VECTOR_STORE", "postgres"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_semantic_index_survives_a_kill_9_with_one_point_per_window() {
    let stack = testkit::Stack::new().await;
    let _relay = stack.relay();
    let provider = testkit::embeddings_server::EmbeddingsServer::start().await;
    let mut projector = embeddings_projector(&stack, &provider).await;
    let long: String = (0..40)
        .map(|i| format!("clause {i} of the supply agreement with the harbour authority."))
        .collect::<Vec<_>>()
        .join(" ");
    let writer = async {
        for n in 0..40 {
            testkit::commands::summarised_and_ended(&stack.service, "acme", n).await;
        }
        testkit::commands::add_knowledge(
            &stack.service,
            "acme",
            "Supply agreement",
            "text/plain",
            long.as_bytes(),
        )
        .await;
    };
    let kill = async {
        testkit::wait_until("points being written", || async {
            testkit::semantic::live_points(&stack.db.pool).await >= 20
        })
        .await;
        projector.kill().expect("kill -9");
        let _ = projector.wait();
    };
    tokio::join!(writer, kill);
    let chunking = ChunkConfig::new(24, 4, 512).expect("chunking");
    let expected = testkit::semantic::expected_points(&stack.db.pool, chunking).await;
    assert!(expected > 80, "long texts make several windows: {expected}");
    let mut restarted = embeddings_projector(&stack, &provider).await;
    testkit::wait_until("every window indexed", || async {
        testkit::semantic::live_points(&stack.db.pool).await >= expected
    })
    .await;
    // Settled (every event applied: sequences are contiguous from 1 per aggregate), and
    // what is there is one point per window.
    let schema = stack.live_schema("semantic").await;
    testkit::wait_until("the projector caught up", || async {
        stack
            .scalar(&format!(
                "SELECT (SELECT count(*) FROM events) \
                 - (SELECT coalesce(sum(last_sequence), 0)::bigint FROM {schema}.progress)"
            ))
            .await
            == 0
    })
    .await;
    assert_eq!(
        testkit::semantic::live_points(&stack.db.pool).await,
        expected
    );
    let _ = restarted.kill();
    let _ = restarted.wait();
}

/// `assistant-projector` answering through an OpenAI-compatible chat server of the
/// test's, retrieving with an embeddings server of the test's.
async fn assistant_projector(
    stack: &testkit::Stack,
    chat: &testkit::chat_server::ChatServer,
    embeddings: &testkit::embeddings_server::EmbeddingsServer,
) -> Projector {
    spawn_projector(
        env!("CARGO_BIN_EXE_assistant-projector"),
        stack,
        &[
            ("LLM_PROVIDERS", "primary"),
            ("LLM_PRIMARY_KIND", "openai"),
            ("LLM_PRIMARY_URL", &chat.base_url),
            ("LLM_PRIMARY_MODEL", "gpt-test"),
            ("EMBEDDING_PROVIDER", "openai"),
            ("EMBEDDING_OPENAI_URL", &embeddings.base_url),
            ("EMBEDDING_MODEL", "bow"),
            ("EMBEDDING_DIMENSION", &DIMENSION.to_string()),
            ("VECTOR_STORE", "postgres"),
        ],
    )
    .await
}

/// Assistant replies in the event store: (replies, distinct user messages answered).
async fn replies(stack: &testkit::Stack) -> (i64, i64) {
    let row: (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT payload->'MessageSent'->>'reply_to')
         FROM events WHERE payload->'MessageSent'->>'role' = 'assistant'",
    )
    .fetch_one(&stack.db.pool)
    .await
    .expect("count replies");
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_assistant_survives_a_kill_9_with_one_reply_per_message() {
    let stack = testkit::Stack::new().await;
    let _relay = stack.relay();
    let chat = testkit::chat_server::ChatServer::start().await;
    let embeddings = testkit::embeddings_server::EmbeddingsServer::start().await;
    let mut projector = assistant_projector(&stack, &chat, &embeddings).await;
    let mut conversations = Vec::new();
    for _ in 0..10 {
        conversations.push(
            stack
                .service
                .start_conversation(
                    "Questions".into(),
                    Default::default(),
                    &testkit::commands::meta("acme"),
                )
                .await
                .expect("start")
                .aggregate_id,
        );
    }
    let writer = async {
        for round in 0..4 {
            for c in &conversations {
                stack
                    .service
                    .send_message(
                        *c,
                        testkit::commands::user_message(&format!("question {round}?")),
                        None,
                        &testkit::commands::meta("acme"),
                    )
                    .await
                    .expect("send");
            }
        }
    };
    let kill = async {
        testkit::wait_until("replies under way", || async {
            replies(&stack).await.0 >= 8
        })
        .await;
        projector.kill().expect("kill -9");
        let _ = projector.wait();
        // What the killed process left: model calls it made whose reply it never
        // appended (each may be made again, once).
        chat.calls() as i64 - replies(&stack).await.0
    };
    let ((), unfinished) = tokio::join!(writer, kill);
    let asked = (conversations.len() * 4) as i64;
    let mut restarted = assistant_projector(&stack, &chat, &embeddings).await;
    testkit::wait_until("every question answered", || async {
        replies(&stack).await.1 >= asked
    })
    .await;
    // Once the restarted projector has performed and committed every record, nothing
    // more can come: one reply per question, and no model call more than questions but
    // for those the killed process had made without appending their reply.
    restarted.wait_idle().await;
    assert_eq!(replies(&stack).await, (asked, asked));
    let calls = chat.calls() as i64;
    assert!(
        (asked..=asked + unfinished).contains(&calls),
        "{calls} model calls for {asked} questions, {unfinished} unfinished at the kill"
    );
    let _ = restarted.kill();
    let _ = restarted.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_with_a_hundred_model_calls_in_flight_repeats_only_those() {
    let stack = testkit::Stack::new().await;
    let _relay = stack.relay();
    let chat = testkit::chat_server::ChatServer::start().await;
    // No call is answered before the kill, however long a hundred take to start.
    chat.hold();
    let embeddings = testkit::embeddings_server::EmbeddingsServer::start().await;
    let mut projector = assistant_projector(&stack, &chat, &embeddings).await;
    let meta = testkit::commands::meta("acme");
    let mut conversations = Vec::new();
    for _ in 0..100 {
        conversations.push(
            stack
                .service
                .start_conversation("Questions".into(), Default::default(), &meta)
                .await
                .expect("start")
                .aggregate_id,
        );
    }
    for c in &conversations {
        stack
            .service
            .send_message(*c, testkit::commands::user_message("refunds?"), None, &meta)
            .await
            .expect("send");
    }
    testkit::wait_until("a hundred model calls in flight", || async {
        chat.in_flight() == 100
    })
    .await;
    projector.kill().expect("kill -9");
    let _ = projector.wait();
    let unfinished = chat.calls() as i64 - replies(&stack).await.0;
    chat.release();
    let _restarted = assistant_projector(&stack, &chat, &embeddings).await;
    testkit::wait_until("every question answered", || async {
        replies(&stack).await.1 >= 100
    })
    .await;
    // One reply per message; a model call again for those the killed process left, no
    // more.
    let (count, distinct) = replies(&stack).await;
    assert_eq!((count, distinct), (100, 100));
    let repeated = chat.calls() as i64 - 100;
    eprintln!("{unfinished} model calls unfinished at the kill, {repeated} repeated");
    assert!(
        repeated <= unfinished && unfinished <= 100,
        "{repeated} repeated, {unfinished} unfinished"
    );
}

/// A projector is its binary here (`src/bin/<name>-projector.rs`): `dev/stack` and the
/// end-to-end stack start every one they find. What cannot be derived names each by hand,
/// and this fails while one is missing: the compose service, the Kubernetes manifest,
/// the Prometheus scrape target, and the codemap's list of binaries (the deployment
/// validator, `dev/validate-deploy`, then checks their settings).
#[test]
fn every_projector_is_deployed_scraped_and_documented() {
    let root = testkit::workspace::root();
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let (compose, prometheus, codemap) = (
        read("docker-compose.yml"),
        read("deploy/prometheus/prometheus.yml"),
        read("docs/ARCHITECTURE.md"),
    );
    let binaries = testkit::workspace::projector_binaries();
    for bin in &binaries {
        assert!(
            compose.contains(&format!("\n  {bin}:\n")),
            "docker-compose.yml has no service {bin}"
        );
        assert!(
            root.join(format!("k8s/{bin}.yaml")).exists(),
            "k8s/{bin}.yaml is missing"
        );
        assert!(
            prometheus.contains(&format!("- {bin}:8082")),
            "deploy/prometheus/prometheus.yml does not scrape {bin}"
        );
        assert!(
            codemap.contains(&format!("`{bin}`")),
            "docs/ARCHITECTURE.md does not list {bin}"
        );
    }
    assert!(binaries.len() >= 6, "{binaries:?}");
}
