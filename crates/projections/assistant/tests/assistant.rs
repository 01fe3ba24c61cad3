//! The assistant against a real PostgreSQL and a real broker, with the semantic index
//! running beside it (embeddings from a real HTTP server standing in for an
//! OpenAI-compatible provider) and LLM providers that are real HTTP servers too.

use std::sync::Arc;
use std::time::Duration;

use assistant::{Assistant, AssistantSettings};
use embeddings::chunk::ChunkConfig;
use llm::config::LlmConfig;
use projection::{EffectSink, TableSink};
use schemas::{Event, MessageSent, Role};
use semantic_index::{Search, SemanticIndex};
use testkit::chat_server::ChatServer;
use testkit::commands::{add_knowledge, meta, user_message};
use testkit::embeddings_server::EmbeddingsServer;
use testkit::{RunningProjector, Stack, wait_until};
use uuid::Uuid;
use vectors::pg::PgStore;

struct World {
    stack: Stack,
    store: Arc<PgStore>,
    embeddings: EmbeddingsServer,
    _index: RunningProjector,
}

impl World {
    async fn new() -> World {
        let stack = Stack::new().await;
        let store = Arc::new(PgStore::new(stack.db.pool.clone()).await.expect("vectors"));
        let embeddings = EmbeddingsServer::start().await;
        let index = SemanticIndex::new(
            embeddings.embedder("bow"),
            store.clone(),
            ChunkConfig::new(200, 40, 512).expect("chunking"),
            stack.db.pool.clone(),
        );
        let index = stack.projector(Arc::new(EffectSink::new(index))).await;
        World {
            stack,
            store,
            embeddings,
            _index: index,
        }
    }

    /// An assistant routing `reply` through `providers` (name, chat server), in order.
    fn assistant(&self, providers: &[(&str, &ChatServer)]) -> Arc<EffectSink<Assistant>> {
        let mut vars = vec![
            (
                "LLM_PROVIDERS".to_owned(),
                providers
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("LLM_BREAKER_FAILURES".to_owned(), "1000".to_owned()),
        ];
        for (name, server) in providers {
            let upper = name.to_uppercase();
            vars.push((format!("LLM_{upper}_KIND"), "openai".into()));
            vars.push((format!("LLM_{upper}_URL"), server.base_url.clone()));
            vars.push((format!("LLM_{upper}_MODEL"), format!("{name}-model")));
            vars.push((format!("LLM_{upper}_RETRIES"), "0".into()));
            vars.push((format!("LLM_{upper}_TIMEOUT_MS"), "30000".into()));
        }
        let router = LlmConfig::from_vars(vars)
            .expect("LLM settings")
            .build()
            .expect("a router");
        let search = Search::new(
            self.stack.db.pool.clone(),
            self.store.clone(),
            vec![self.embeddings.embedder("bow")],
        );
        Arc::new(EffectSink::new(Assistant::new(
            self.stack.service.clone(),
            Arc::new(search),
            Arc::new(router),
            AssistantSettings {
                min_score: 0.1,
                ..AssistantSettings::default()
            },
        )))
    }

    async fn conversation(&self, tenant: &str) -> Uuid {
        self.stack
            .service
            .start_conversation("Questions".into(), Default::default(), &meta(tenant))
            .await
            .expect("start")
            .aggregate_id
    }

    /// `n` new conversations of `tenant`.
    async fn conversations(&self, tenant: &str, n: usize) -> Vec<Uuid> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.conversation(tenant).await);
        }
        out
    }

    /// `text` asked in each of `conversations`, one after the other.
    async fn ask_each(&self, tenant: &str, conversations: &[Uuid], text: &str) {
        for c in conversations {
            self.ask(tenant, *c, text).await;
        }
    }

    async fn ask(&self, tenant: &str, conversation: Uuid, text: &str) -> Uuid {
        let sent = self
            .stack
            .service
            .send_message(conversation, user_message(text), None, &meta(tenant))
            .await
            .expect("send");
        match sent.events.as_slice() {
            [Event::MessageSent(m)] => m.message_id,
            other => panic!("sending appended {other:?}"),
        }
    }

    /// The conversation's events, in order.
    async fn events(&self, conversation: Uuid) -> Vec<Event> {
        event_store::log::aggregate_events(
            &self.stack.db.pool,
            "conversation",
            &conversation.to_string(),
            1..=100_000,
        )
        .await
        .expect("read the stream")
        .iter()
        .map(|e| e.event().expect("decodes"))
        .collect()
    }

    async fn replies(&self, conversation: Uuid) -> Vec<MessageSent> {
        self.events(conversation)
            .await
            .into_iter()
            .filter_map(|e| match e {
                Event::MessageSent(m) if m.role == Role::Assistant => Some(m),
                _ => None,
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_message_gets_one_reply_from_the_retrieved_context_and_the_history() {
    let world = World::new().await;
    let _relay = world.stack.relay();
    let llm = ChatServer::start().await;
    let _assistant = world
        .stack
        .projector(world.assistant(&[("primary", &llm)]))
        .await;
    let knowledge = add_knowledge(
        &world.stack.service,
        "acme",
        "Launch policy",
        "text/plain",
        b"The product launch happens in May, after the security review.",
    )
    .await
    .aggregate_id;
    wait_until("the knowledge indexed", || async {
        testkit::semantic::live_points(&world.stack.db.pool).await >= 1
    })
    .await;

    let conversation = world.conversation("acme").await;
    let first = world
        .ask("acme", conversation, "Hello, who approves budgets?")
        .await;
    wait_until("the first reply", || async {
        world.replies(conversation).await.len() == 1
    })
    .await;
    let second = world
        .ask("acme", conversation, "When is the product launch?")
        .await;
    wait_until("the second reply", || async {
        world.replies(conversation).await.len() == 2
    })
    .await;

    let replies = world.replies(conversation).await;
    assert_eq!(replies[0].reply_to, Some(first));
    assert_eq!(replies[1].reply_to, Some(second));
    let reply = &replies[1];
    assert_eq!(reply.content, "Answer: When is the product launch?");
    assert_eq!(reply.model.as_deref(), Some("openai/primary-model"));
    assert_eq!(
        (reply.prompt_tokens, reply.completion_tokens),
        (Some(42), Some(7))
    );
    assert!(reply.latency_ms.is_some());
    assert!(
        reply
            .sources
            .iter()
            .any(|s| s.id == knowledge && s.kind == "knowledge"),
        "the knowledge document is a source: {:?}",
        reply.sources
    );
    // The prompt held the retrieved passage and the conversation so far.
    let requests = llm.requests();
    assert_eq!(requests.len(), 2, "one model call per user message");
    let messages = requests[1]["messages"].as_array().expect("messages");
    let system = messages[0]["content"].as_str().expect("system prompt");
    assert!(
        system.contains("The product launch happens in May"),
        "{system}"
    );
    let said: Vec<(&str, &str)> = messages[1..]
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default(),
                m["content"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        said,
        [
            ("user", "Hello, who approves budgets?"),
            ("assistant", "Answer: Hello, who approves budgets?"),
            ("user", "When is the product launch?"),
        ]
    );
    // The reply was caused by the user message's event.
    let causation: String = sqlx::query_scalar(
        "SELECT metadata->>'causation_id' FROM events WHERE payload->'MessageSent'->>'role' = 'assistant' ORDER BY global_position DESC LIMIT 1",
    )
    .fetch_one(&world.stack.db.pool)
    .await
    .expect("the reply's metadata");
    let asked: String = sqlx::query_scalar(
        "SELECT event_id::text FROM events WHERE payload->'MessageSent'->>'message_id' = $1",
    )
    .bind(second.to_string())
    .fetch_one(&world.stack.db.pool)
    .await
    .expect("the question's event");
    assert_eq!(causation, asked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_backup_answers_when_the_primary_fails_and_a_failed_reply_can_be_retried() {
    let world = World::new().await;
    let _relay = world.stack.relay();
    let (primary, backup) = (ChatServer::start().await, ChatServer::start().await);
    let _assistant = world
        .stack
        .projector(world.assistant(&[("primary", &primary), ("backup", &backup)]))
        .await;
    let conversation = world.conversation("acme").await;

    primary.go_down(500);
    world.ask("acme", conversation, "first?").await;
    wait_until("a reply", || async {
        world.replies(conversation).await.len() == 1
    })
    .await;
    assert_eq!(
        world.replies(conversation).await[0].model.as_deref(),
        Some("openai/backup-model")
    );
    assert!(primary.calls() >= 1);

    // Every provider down: the failure is recorded, with its reason.
    backup.go_down(503);
    let unanswered = world.ask("acme", conversation, "second?").await;
    wait_until("the failure recorded", || async {
        world
            .events(conversation)
            .await
            .iter()
            .any(|e| matches!(e, Event::AssistantReplyFailed(f) if f.message_id == unanswered))
    })
    .await;
    let failed = world
        .events(conversation)
        .await
        .into_iter()
        .find_map(|e| match e {
            Event::AssistantReplyFailed(f) => Some(f),
            _ => None,
        })
        .expect("the failure");
    assert!(
        failed.reason.contains("primary") && failed.reason.contains("backup"),
        "{}",
        failed.reason
    );
    assert_eq!(failed.attempts, 2);
    // The one who asked is named, so they are told.
    assert_eq!(failed.asked_by.as_deref(), Some("writer"));

    // Garbage from every provider is a failure too, never a stuck assistant.
    backup.heal();
    primary.heal();
    primary.garble();
    backup.garble();
    let garbled = world.ask("acme", conversation, "third?").await;
    wait_until("the garbled answers recorded as a failure", || async {
        world
            .events(conversation)
            .await
            .iter()
            .any(|e| matches!(e, Event::AssistantReplyFailed(f) if f.message_id == garbled))
    })
    .await;
    primary.go_down(500);

    // Back up, and asked again: the reply comes.
    backup.heal();
    world
        .stack
        .service
        .request_reply(conversation, unanswered, None, &meta("acme"))
        .await
        .expect("request the reply again");
    wait_until("the retried reply", || async {
        world.replies(conversation).await.len() == 2
    })
    .await;
    assert_eq!(
        world.replies(conversation).await[1].reply_to,
        Some(unanswered)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_reply_per_message_across_a_kill_redelivery_and_rebuilds() {
    let world = World::new().await;
    let _relay = world.stack.relay();
    let llm = ChatServer::start().await;
    let first = world
        .stack
        .projector(world.assistant(&[("primary", &llm)]))
        .await;
    let conversations = world.conversations("acme", 15).await;
    let writer = async {
        for round in 0..3 {
            for c in &conversations {
                world.ask("acme", *c, &format!("question {round}")).await;
            }
        }
    };
    let kill = async {
        wait_until("some replies", || async { llm.calls() >= 10 }).await;
        first.kill().await;
        // Model calls the killed assistant made without appending their reply: each may
        // be made again, once.
        let mut replied = 0;
        for c in &conversations {
            replied += world.replies(*c).await.len();
        }
        llm.calls() - replied
    };
    let ((), unfinished) = tokio::join!(writer, kill);
    let asked = conversations.len() * 3;
    let second = world
        .stack
        .projector(world.assistant(&[("primary", &llm)]))
        .await;
    let all_answered = || async {
        let mut n = 0;
        for c in &conversations {
            n += world.replies(*c).await.len();
        }
        n
    };
    wait_until("every message answered", || async {
        all_answered().await >= asked
    })
    .await;
    second.stop().await;
    let calls = llm.calls();

    // Redelivery of every record (a new consumer group reads the topics from the start),
    // and a rebuild of the assistant and of the read model: no reply, no model call.
    let again = world
        .stack
        .projector_on(
            world.stack.db.pool.clone(),
            world.assistant(&[("primary", &llm)]),
            "assistant-again",
        )
        .await;
    let total = world.stack.event_count().await as u64;
    again
        .wait_for("every record redelivered", |s| {
            s.lag_events == 0 && s.applied + s.duplicates >= total
        })
        .await;
    again.stop().await;
    let report = projection::rebuild(
        &world.stack.db.pool,
        world.assistant(&[("primary", &llm)]).as_ref(),
    )
    .await
    .expect("rebuild the assistant");
    assert_eq!(report.parked, 0);
    // Both rebuilds are done when they return, and no projector runs: what the read
    // model shows now is all there is.
    projection::rebuild(&world.stack.db.pool, &TableSink(read_model::ReadModel))
        .await
        .expect("rebuild the read model");

    for c in &conversations {
        let replies = world.replies(*c).await;
        let mut answered: Vec<_> = replies.iter().filter_map(|r| r.reply_to).collect();
        answered.sort();
        answered.dedup();
        assert_eq!(
            (replies.len(), answered.len()),
            (3, 3),
            "one reply per user message in {c}"
        );
    }
    assert_eq!(
        llm.calls(),
        calls,
        "nothing after the replies called a model"
    );
    // A kill between a model's answer and the append of the reply may cost one more call
    // for each message in flight, never a second reply.
    assert!(
        calls <= asked + unfinished,
        "{calls} model calls for {asked} messages, {unfinished} unfinished at the kill"
    );
}

/// The document stream's events, in order.
async fn document_events(stack: &Stack, document: Uuid) -> Vec<Event> {
    event_store::log::aggregate_events(&stack.db.pool, "document", &document.to_string(), 1..=100)
        .await
        .expect("read the stream")
        .iter()
        .map(|e| e.event().expect("decodes"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_requested_document_is_written_by_the_model_once_or_fails_with_its_reason() {
    let world = World::new().await;
    let _relay = world.stack.relay();
    let llm = ChatServer::start().await;
    let _assistant = world
        .stack
        .projector(world.assistant(&[("primary", &llm)]))
        .await;
    let conversation = world.conversation("acme").await;
    world
        .ask(
            "acme",
            conversation,
            "We need online payments with 3-D Secure.",
        )
        .await;
    wait_until("the reply", || async {
        world.replies(conversation).await.len() == 1
    })
    .await;
    let calls = llm.calls();

    let requested = world
        .stack
        .service
        .request_document(
            conversation,
            schemas::DocumentKind::RequirementsSpec,
            None,
            &meta("acme"),
        )
        .await
        .expect("request a document")
        .aggregate_id;
    wait_until("the document written", || async {
        document_events(&world.stack, requested).await.len() == 2
    })
    .await;
    let events = document_events(&world.stack, requested).await;
    let Event::DocumentGenerated(doc) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(doc.content, "Answer: Write the document for \"Questions\".");
    assert_eq!(doc.generator.name, "openai/primary-model");
    assert_eq!(doc.generator.version, "requirements_spec-v1");
    assert_eq!(
        (doc.prompt_tokens, doc.completion_tokens),
        (Some(42), Some(7))
    );
    assert_eq!(doc.source_message_count, 2);
    // The requester, not the assistant that completed it, is the one to tell.
    assert_eq!(doc.requested_by.as_deref(), Some("writer"));
    assert_eq!(llm.calls(), calls + 1, "one model call for the document");
    let prompt = llm.requests()[calls]["messages"][0]["content"]
        .as_str()
        .expect("the system prompt")
        .to_owned();
    assert!(prompt.contains("## Functional requirements"), "{prompt}");
    assert!(
        prompt.contains("user: We need online payments with 3-D Secure."),
        "{prompt}"
    );

    // Meeting notes, from their own versioned template.
    let notes = world
        .stack
        .service
        .request_document(
            conversation,
            schemas::DocumentKind::MeetingNotes,
            None,
            &meta("acme"),
        )
        .await
        .expect("request meeting notes")
        .aggregate_id;
    wait_until("the notes written", || async {
        document_events(&world.stack, notes).await.len() == 2
    })
    .await;
    let Event::DocumentGenerated(notes) = &document_events(&world.stack, notes).await[1] else {
        panic!("no meeting notes")
    };
    assert_eq!(notes.kind, schemas::DocumentKind::MeetingNotes);
    assert_eq!(notes.generator.version, "meeting_notes-v1");
    let prompt = llm.requests()[calls + 1]["messages"][0]["content"]
        .as_str()
        .expect("the system prompt")
        .to_owned();
    assert!(
        prompt.contains("## Action items") && prompt.contains("## Participants"),
        "{prompt}"
    );

    // Every provider down: the document fails, with the reason.
    llm.go_down(503);
    let failing = world
        .stack
        .service
        .request_document(
            conversation,
            schemas::DocumentKind::Summary,
            None,
            &meta("acme"),
        )
        .await
        .expect("request another")
        .aggregate_id;
    wait_until("the failure recorded", || async {
        document_events(&world.stack, failing).await.len() == 2
    })
    .await;
    match &document_events(&world.stack, failing).await[1] {
        Event::DocumentGenerationFailed(f) => {
            assert!(f.reason.contains("primary"), "{}", f.reason);
            assert_eq!(f.attempts, 1);
        }
        other => panic!("{other:?}"),
    }
}

/// How many of `conversations` have `n` replies or more.
async fn answered(world: &World, conversations: &[Uuid], n: usize) -> usize {
    let mut done = 0;
    for c in conversations {
        if world.replies(*c).await.len() >= n {
            done += 1;
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replies_to_different_conversations_are_made_side_by_side_up_to_the_bound() {
    let world = World::new().await;
    let _relay = world.stack.relay();
    let llm = ChatServer::start().await;
    llm.set_latency(Duration::from_millis(300));
    let _assistant = world
        .stack
        .projector_concurrent(world.assistant(&[("primary", &llm)]), 8, Some(8))
        .await;
    let conversations = world.conversations("acme", 20).await;
    world
        .ask_each("acme", &conversations, "when do refunds arrive?")
        .await;
    wait_until("every message answered", || async {
        answered(&world, &conversations, 1).await == conversations.len()
    })
    .await;
    // Twenty model calls of 300 ms each waited together, eight at a time: never one by
    // one, never more than the bound.
    assert_eq!(llm.peak_in_flight(), 8, "model calls in flight at once");
    assert_eq!(llm.calls(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_of_one_conversation_are_answered_in_order_one_call_at_a_time() {
    let world = World::new().await;
    let _relay = world.stack.relay();
    let llm = ChatServer::start().await;
    llm.set_latency(Duration::from_millis(200));
    let _assistant = world
        .stack
        .projector(world.assistant(&[("primary", &llm)]))
        .await;
    let c = world.conversation("acme").await;
    let first = world.ask("acme", c, "first question").await;
    let second = world.ask("acme", c, "second question").await;
    wait_until("both answered", || async {
        world.replies(c).await.len() == 2
    })
    .await;
    let replies = world.replies(c).await;
    assert_eq!(
        replies.iter().map(|r| r.reply_to).collect::<Vec<_>>(),
        vec![Some(first), Some(second)]
    );
    assert_eq!(
        llm.peak_in_flight(),
        1,
        "one conversation, one call at a time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tenants_burst_does_not_hold_back_another_tenants_message() {
    let world = World::new().await;
    let _relay = world.stack.relay();
    let llm = ChatServer::start().await;
    llm.set_latency(Duration::from_millis(200));
    let _assistant = world
        .stack
        .projector_concurrent(world.assistant(&[("primary", &llm)]), 4, Some(4))
        .await;
    let burst = world.conversations("acme", 40).await;
    let other = world.conversation("globex").await;
    world.ask_each("acme", &burst, "a question of acme").await;
    world.ask("globex", other, "the question of globex").await;
    wait_until("every message answered", || async {
        answered(&world, &burst, 1).await == burst.len() && world.replies(other).await.len() == 1
    })
    .await;
    // Taken in turn: globex's one message goes to the model with the next free call,
    // not after acme's forty (first in, first out would put it last, at 40).
    let position = llm
        .requests()
        .iter()
        .position(|r| r["messages"].to_string().contains("the question of globex"))
        .expect("globex was answered by the model");
    assert!(position < 8, "globex's call was number {position} of 41");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_with_many_calls_in_flight_repeats_at_most_those_calls_and_no_reply() {
    let world = World::new().await;
    let _relay = world.stack.relay();
    let llm = ChatServer::start().await;
    // No call is answered before the kill, however long a hundred take to start.
    llm.hold();
    let first = world
        .stack
        .projector(world.assistant(&[("primary", &llm)]))
        .await;
    let conversations = world.conversations("acme", 100).await;
    world.ask_each("acme", &conversations, "a question").await;
    wait_until("a hundred model calls in flight", || async {
        llm.in_flight() == 100
    })
    .await;
    let in_flight = first.status.borrow().load.records_in_flight;
    first.kill().await;
    let unfinished = llm.calls() - answered(&world, &conversations, 1).await;
    llm.release();
    let _second = world
        .stack
        .projector(world.assistant(&[("primary", &llm)]))
        .await;
    wait_until("every message answered", || async {
        answered(&world, &conversations, 1).await == conversations.len()
    })
    .await;
    for c in &conversations {
        assert_eq!(world.replies(*c).await.len(), 1, "one reply in {c}");
    }
    let repeated = llm.calls() - conversations.len();
    eprintln!(
        "{in_flight} messages in flight at the kill, {unfinished} model calls left without a reply, {repeated} repeated after the restart"
    );
    assert!(
        repeated <= unfinished && unfinished <= in_flight,
        "{repeated} calls repeated, {unfinished} unfinished, {in_flight} in flight"
    );
}
