//! Streamed answers from both providers against a real HTTP server speaking
//! server-sent events: the pieces arrive in order as they are sent, the completion holds
//! them joined with the model and usage, a stream cut short or stalled is a failure (a
//! stall ends at the provider's timeout), and the router numbers the pieces by attempt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llm::router::{ProviderPolicy, Router, RouterSettings};
use llm::{ChatProvider, ChatRequest, FinishReason, ProviderError, Usage};

use crate::server::{Reply, Server, anthropic_stream, openai_answer, openai_stream};
use crate::{anthropic, ends, openai, question};

/// Every piece told, with when it came.
#[derive(Default, Clone)]
struct Pieces(Arc<Mutex<Vec<(String, Instant)>>>);

impl Pieces {
    fn push(&self, text: &str) {
        self.0
            .lock()
            .unwrap()
            .push((text.to_owned(), Instant::now()));
    }

    fn texts(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
    }

    fn times(&self) -> Vec<Instant> {
        self.0.lock().unwrap().iter().map(|(_, t)| *t).collect()
    }
}

fn sse(events: Vec<String>, gap_ms: u64) -> Reply {
    Reply::Sse {
        events,
        gap: Duration::from_millis(gap_ms),
        stall: false,
    }
}

async fn streamed(
    provider: &dyn ChatProvider,
    req: &ChatRequest,
) -> (Result<llm::Completion, ProviderError>, Pieces) {
    let pieces = Pieces::default();
    let sink = pieces.clone();
    let push = move |text: &str| sink.push(text);
    let result = ends(provider.stream(req, &push)).await;
    (result, pieces)
}

#[tokio::test]
async fn an_openai_stream_arrives_piece_by_piece_as_it_is_sent() {
    let server = Server::start(sse(openai_stream(&["Refunds ", "take ", "14 days."]), 100)).await;
    let provider = openai("primary", &server, Some("sk-key"), Duration::from_secs(5));
    let (result, pieces) = streamed(&provider, &question("How long?")).await;
    let completion = result.expect("a completion");
    assert_eq!(pieces.texts(), ["Refunds ", "take ", "14 days."]);
    assert_eq!(completion.text, "Refunds take 14 days.");
    assert_eq!(completion.model, "openai/gpt-x");
    assert_eq!(completion.finish_reason, FinishReason::Stop);
    assert_eq!(
        completion.usage,
        Usage {
            prompt_tokens: 11,
            completion_tokens: 5
        }
    );
    // Each piece was told when it came, not all at the end (they were sent 100 ms apart).
    let times = pieces.times();
    assert!(times[2].duration_since(times[0]) >= Duration::from_millis(150));
    let body = &server.captured()[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn an_anthropic_stream_arrives_piece_by_piece_with_its_usage() {
    let server = Server::start(sse(
        anthropic_stream(&["Refunds ", "take ", "14 days."]),
        50,
    ))
    .await;
    let provider = anthropic("claude", &server, Some("key"), Duration::from_secs(5));
    let (result, pieces) = streamed(&provider, &question("How long?")).await;
    let completion = result.expect("a completion");
    assert_eq!(pieces.texts(), ["Refunds ", "take ", "14 days."]);
    assert_eq!(completion.text, "Refunds take 14 days.");
    assert_eq!(completion.model, "anthropic/claude-x");
    assert_eq!(completion.finish_reason, FinishReason::Stop);
    assert_eq!(
        completion.usage,
        Usage {
            prompt_tokens: 13,
            completion_tokens: 6
        }
    );
    assert_eq!(server.captured()[0].body["stream"], true);
}

#[tokio::test]
async fn a_server_that_answers_one_body_instead_of_a_stream_is_read_as_such() {
    let server = Server::start(Reply::Json(openai_answer("All at once.", 3, 3))).await;
    let provider = openai("primary", &server, None, Duration::from_secs(5));
    let (result, pieces) = streamed(&provider, &question("Hi")).await;
    assert_eq!(result.expect("a completion").text, "All at once.");
    assert_eq!(pieces.texts(), ["All at once."]);
}

#[tokio::test]
async fn streams_cut_short_or_stalled_or_in_error_are_failures_not_answers() {
    let mut cut = openai_stream(&["half an ", "answer"]);
    cut.truncate(2);
    let error_event = vec![
        "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}".to_owned(),
    ];
    let mut stalled = anthropic_stream(&["still ", "thinking"]);
    stalled.truncate(4);
    for (reply, anthropic_api) in [
        (sse(cut, 10), false),
        (sse(error_event, 10), true),
        (
            Reply::Sse {
                events: stalled,
                gap: Duration::from_millis(10),
                stall: true,
            },
            true,
        ),
    ] {
        let server = Server::start(reply).await;
        let provider: Box<dyn ChatProvider> = if anthropic_api {
            Box::new(anthropic("a", &server, None, Duration::from_millis(800)))
        } else {
            Box::new(openai("o", &server, None, Duration::from_millis(800)))
        };
        let (result, _) = streamed(provider.as_ref(), &question("Hi")).await;
        let error = result.expect_err("no completion");
        assert!(error.is_retryable(), "{error:?}");
    }
}

#[tokio::test]
async fn the_router_numbers_pieces_by_attempt_so_a_fallback_replaces_a_failed_start() {
    let mut cut = openai_stream(&["a wrong ", "start"]);
    cut.truncate(1);
    let failing = Server::start(sse(cut, 10)).await;
    let backup = Server::start(sse(openai_stream(&["the ", "answer"]), 10)).await;
    let router = Router::builder(RouterSettings::default())
        .provider(
            Arc::new(openai("a", &failing, None, Duration::from_secs(5))),
            ProviderPolicy {
                retries: 0,
                ..ProviderPolicy::default()
            },
        )
        .provider(
            Arc::new(openai("b", &backup, None, Duration::from_secs(5))),
            ProviderPolicy::default(),
        )
        .route("reply", ["a", "b"])
        .build()
        .expect("router");
    let seen: Arc<Mutex<Vec<(u32, String)>>> = Arc::default();
    let sink = seen.clone();
    let deltas =
        move |attempt: u32, text: &str| sink.lock().unwrap().push((attempt, text.to_owned()));
    let routed = ends(router.route_streaming("reply", "t1", &question("Hi"), &deltas))
        .await
        .expect("the backup answers");
    assert_eq!(routed.completion.text, "the answer");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (0, "a wrong ".to_owned()),
            (1, "the ".to_owned()),
            (1, "answer".to_owned())
        ]
    );
    assert_eq!(routed.attempts.len(), 2);
}
