//! The assistant end to end through both HTTP servers: a user message sent over HTTP is
//! answered once, the reply arrives on the conversation's live stream (SSE) and in the
//! query API, citing the knowledge it was written from. The LLM provider and the
//! embeddings provider are real HTTP servers of the test.

use e2e::Services;
use e2e::client::Client;
use e2e::sse::read_until;
use llm::config::LlmConfig;
use platform::auth::Role;
use serde_json::Value;
use testkit::chat_server::ChatServer;
use testkit::embeddings_server::EmbeddingsServer;

/// Both HTTP servers, the read model, the semantic index (embeddings from a real HTTP
/// server) and the assistant answering through `llm`.
struct World {
    services: Services,
    _embeddings: EmbeddingsServer,
    _projectors: Vec<testkit::RunningProjector>,
}

impl World {
    async fn start(llm: &ChatServer) -> World {
        let embeddings = EmbeddingsServer::start().await;
        let embedder = embeddings.embedder("bow");
        let services = Services::spawn_with(vec![embedder.clone()]).await;
        let read_model = services.projector().await;
        let index = services.semantic_projector(embedder.clone()).await;
        let router = LlmConfig::from_vars([
            ("LLM_PROVIDERS", "primary"),
            ("LLM_PRIMARY_KIND", "openai"),
            ("LLM_PRIMARY_URL", llm.base_url.as_str()),
            ("LLM_PRIMARY_MODEL", "gpt-test"),
        ])
        .expect("LLM settings")
        .build()
        .expect("router");
        let assistant = services.assistant_projector(embedder, router).await;
        World {
            services,
            _embeddings: embeddings,
            _projectors: vec![read_model, index, assistant],
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_sent_over_http_is_answered_once_live_on_the_stream_citing_its_sources() {
    let llm = ChatServer::start().await;
    let world = World::start(&llm).await;
    let services = &world.services;
    let stack = &services.commands.stack;
    let knowledge = testkit::commands::add_knowledge(
        &stack.service,
        "acme",
        "Launch policy",
        "text/plain",
        b"The product launch happens in May, after the security review.",
    )
    .await
    .aggregate_id;
    wait_for_points(services).await;

    let client = Client::new(services, services.commands.token("acme", &[Role::Member]));
    let id = client.start("Launch", true).await;
    let stream_url = format!("{}/v1/conversations/{id}/stream", services.query_base);
    let mut stream = client.stream(&id).await;
    assert_eq!(
        stream.headers()["content-type"].to_str().ok(),
        Some("text/event-stream")
    );
    let mut buffer = String::new();
    let first = read_until(&mut stream, &mut buffer, |e| {
        e.event == "ConversationStarted"
    })
    .await;
    assert_eq!(first.last().and_then(|e| e.id.as_deref()), Some("1"));

    let sent = client.ask(&id, "When is the product launch?").await;
    let asked = sent["message_id"].as_str().expect("message id").to_owned();
    let live = read_until(&mut stream, &mut buffer, |e| {
        e.event == "MessageSent" && e.data["role"] == "assistant"
    })
    .await;
    let reply = &live.last().expect("the reply").data;
    assert_eq!(reply["reply_to"], asked.as_str());
    assert_eq!(reply["content"], "Answer: When is the product launch?");
    assert_eq!(reply["model"], "openai/gpt-test");
    assert!(
        reply["sources"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["id"] == knowledge.to_string().as_str())),
        "{reply}"
    );
    assert_eq!(live.last().and_then(|e| e.id.as_deref()), Some("3"));

    // The query API shows the same: the question replied, the reply with its sources.
    let messages: Value = client
        .get(&format!("/v1/conversations/{id}/messages"))
        .await
        .json()
        .await
        .expect("json");
    let items = messages["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "one question, one reply: {messages}");
    assert_eq!(items[0]["reply_status"], "replied");
    assert_eq!(items[1]["reply_to"], asked.as_str());
    assert_eq!(items[1]["sources"][0]["kind"], "knowledge");

    // Resuming after the question gives the reply first; another tenant sees nothing.
    let mut resumed = client
        .http
        .get(&stream_url)
        .bearer_auth(&client.token)
        .header("last-event-id", "2")
        .send()
        .await
        .expect("resume");
    let mut rest = String::new();
    let again = read_until(&mut resumed, &mut rest, |_| true).await;
    assert_eq!(again[0].id.as_deref(), Some("3"));
    assert_eq!(again[0].data["reply_to"], asked.as_str());
    let stranger = services.commands.token("globex", &[Role::Admin]);
    let status = client
        .http
        .get(&stream_url)
        .bearer_auth(&stranger)
        .send()
        .await
        .expect("another tenant")
        .status();
    assert_eq!(status, 404);
    let bad = client
        .http
        .get(&stream_url)
        .bearer_auth(&client.token)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .expect("bad resume")
        .status();
    assert_eq!(bad, 400);
    assert_eq!(llm.calls(), 1, "one model call for one question");

    // A document asked of the LLM: 202 now, written by the model a moment later.
    let resp = client
        .http
        .post(format!(
            "{}/v1/conversations/{id}/documents",
            services.commands.base
        ))
        .bearer_auth(&client.token)
        .json(&serde_json::json!({"kind": "summary", "generator": "llm"}))
        .send()
        .await
        .expect("ask for a document");
    assert_eq!(resp.status(), 202);
    let accepted: Value = resp.json().await.expect("json");
    let document = accepted["id"].as_str().expect("document id").to_owned();
    let mut last = Value::Null;
    for _ in 0..200 {
        let resp = client.get(&format!("/v1/documents/{document}")).await;
        if resp.status() == 200 {
            last = resp.json().await.expect("json");
            if last["status"] == "generated" {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last["status"], "generated", "{last}");
    assert_eq!(last["generator_name"], "openai/gpt-test");
    assert_eq!(last["generator_version"], "summary-v1");
    assert_eq!(last["prompt_tokens"], 42);
    assert_eq!(llm.calls(), 2, "one more model call, for the document");
}

async fn wait_for_points(services: &Services) {
    testkit::wait_until("the knowledge indexed", || async {
        testkit::semantic::live_points(&services.commands.stack.db.pool).await >= 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reply_streams_to_the_live_stream_piece_by_piece_and_ends_as_one_message() {
    // A model that streams its answer in 20 chunks, 50 ms apart.
    let llm = ChatServer::start().await;
    llm.set_chunks(20);
    llm.set_latency(std::time::Duration::from_millis(50));
    let world = World::start(&llm).await;
    let services = &world.services;
    let client = Client::new(services, services.commands.token("acme", &[Role::Member]));
    let id = client.start("Streaming", true).await;
    let mut stream = client.stream(&id).await;
    let mut buffer = String::new();
    read_until(&mut stream, &mut buffer, |e| {
        e.event == "ConversationStarted"
    })
    .await;

    let question = "Please tell me, in some detail, when the product launch is planned";
    let asked = client.ask(&id, question).await["message_id"]
        .as_str()
        .expect("message id")
        .to_owned();
    let first_delta = read_until(&mut stream, &mut buffer, |e| e.event == "reply.delta").await;
    let first_seen = std::time::Instant::now();
    let mut live = first_delta;
    live.extend(
        read_until(&mut stream, &mut buffer, |e| {
            e.event == "MessageSent" && e.data["role"] == "assistant"
        })
        .await,
    );
    let pieces: Vec<&e2e::sse::Sse> = live.iter().filter(|e| e.event == "reply.delta").collect();
    let reply = live.last().expect("the reply");
    assert_eq!(reply.data["reply_to"], asked.as_str());
    let content = reply.data["content"].as_str().expect("content");
    assert_eq!(content, format!("Answer: {question}"));
    // Every chunk came as a piece, in order, without an id (never replayed), and the
    // pieces make the final message.
    assert_eq!(pieces.len(), 20, "{pieces:?}");
    for (i, p) in pieces.iter().enumerate() {
        assert_eq!(p.id, None);
        assert_eq!(p.data["seq"], i as u64);
        assert_eq!(p.data["attempt"], 0);
        assert_eq!(p.data["reply_to"], asked.as_str());
    }
    let joined: String = pieces
        .iter()
        .map(|p| p.data["text"].as_str().expect("text"))
        .collect();
    assert_eq!(joined, content);
    let finals = live
        .iter()
        .filter(|e| e.event == "MessageSent" && e.data["role"] == "assistant")
        .count();
    assert_eq!(finals, 1);
    let first_chunk = llm.chunks_sent()[0];
    eprintln!(
        "first piece on the live stream {:.1} ms after the model's first chunk",
        first_seen
            .saturating_duration_since(first_chunk)
            .as_secs_f64()
            * 1000.0
    );

    // A client that drops the stream mid-reply and reconnects where it was ends with
    // the final message (and no piece of a reply it has in full).
    let second = client.ask(&id, "And after that?").await["message_id"]
        .as_str()
        .expect("message id")
        .to_owned();
    let seen = read_until(&mut stream, &mut buffer, |e| e.event == "reply.delta").await;
    let last_id = live
        .iter()
        .chain(seen.iter())
        .filter_map(|e| e.id.clone())
        .next_back()
        .expect("an event with an id");
    drop(stream);
    let mut resumed = client
        .http
        .get(format!(
            "{}/v1/conversations/{id}/stream",
            services.query_base
        ))
        .bearer_auth(&client.token)
        .header("last-event-id", last_id)
        .send()
        .await
        .expect("reconnect");
    let mut rest = String::new();
    let after = read_until(&mut resumed, &mut rest, |e| {
        e.event == "MessageSent" && e.data["reply_to"] == second.as_str()
    })
    .await;
    let last = after.last().expect("the second reply");
    assert_eq!(last.data["content"], "Answer: And after that?");
    assert_eq!(llm.calls(), 2);
}
