//! Both provider kinds against LiteLLM's proxy (PyPI `litellm[proxy]`, pinned in the
//! test tools' venv by `dev/stack`), a real third-party implementation of the OpenAI
//! Chat Completions and Anthropic Messages APIs, run offline with `mock_response`
//! models: the normal path, streaming, a 429, an outage (a model whose upstream is
//! unreachable, and the proxy itself gone), and the router's fallback across them.
//! Our own fake (`tests/llm/server.rs`) keeps the failures only it can script
//! (Retry-After, stalls, garbage, huge bodies).
//!
//! Seen with LiteLLM 1.108.7: its Anthropic route answers a streamed request with one JSON
//! body when the model is a mock (the provider reads that as one piece), and its 429
//! carries no `Retry-After`.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llm::anthropic::{AnthropicConfig, AnthropicProvider};
use llm::openai::{OpenAiConfig, OpenAiProvider};
use llm::router::{Outcome, ProviderPolicy, Router, RouterSettings};
use llm::{ChatMessage, ChatProvider, ChatRequest, FinishReason, ProviderError, Secret};

const KEY: &str = "sk-threadline-test-master";
const ANSWER: &str = "Refunds take fourteen days.";

const CONFIG: &str = r#"
model_list:
  - model_name: gpt-mock
    litellm_params: {model: openai/gpt-4o-mini, api_key: sk-unused, mock_response: "Refunds take fourteen days."}
  - model_name: claude-mock
    litellm_params: {model: anthropic/claude-3-5-haiku-20241022, api_key: sk-unused, mock_response: "Refunds take fourteen days."}
  - model_name: gpt-throttled
    litellm_params: {model: openai/gpt-4o-mini, api_key: sk-unused, mock_response: "litellm.RateLimitError"}
  - model_name: claude-throttled
    litellm_params: {model: anthropic/claude-3-5-haiku-20241022, api_key: sk-unused, mock_response: "litellm.RateLimitError"}
  - model_name: gpt-down
    litellm_params: {model: openai/gpt-4o-mini, api_key: sk-unused, api_base: "http://127.0.0.1:9/v1"}
  - model_name: claude-down
    litellm_params: {model: anthropic/claude-3-5-haiku-20241022, api_key: sk-unused, api_base: "http://127.0.0.1:9"}
litellm_settings:
  num_retries: 0
  request_timeout: 5
general_settings:
  master_key: sk-threadline-test-master
"#;

/// The proxy, stopped when dropped.
struct LiteLlm {
    child: Child,
    base: String,
    _dir: std::path::PathBuf,
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LiteLlm {
    async fn start() -> LiteLlm {
        let python = std::env::var("THREADLINE_TEST_PYTHON").expect(
            "THREADLINE_TEST_PYTHON: run the tests through dev/stack test (it installs LiteLLM)",
        );
        let litellm = std::path::Path::new(&python).with_file_name("litellm");
        assert!(
            litellm.exists(),
            "{} is missing: dev/stack test installs it",
            litellm.display()
        );
        let dir = std::env::temp_dir().join(format!("litellm-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a directory for the config");
        std::fs::write(dir.join("config.yaml"), CONFIG).expect("write the config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.join("litellm.log")).expect("a log file");
        let child = Command::new(&litellm)
            .args(["--config", "config.yaml", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .current_dir(&dir)
            // Nothing of the test's environment: with DATABASE_URL set (dev/stack sets it)
            // the proxy would take the stack's database for its own and never start.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &dir)
            // Offline: the price map it would fetch at start is the one it ships.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("NO_DOCS", "True")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start LiteLLM's proxy");
        let proxy = LiteLlm {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        // Its Python imports take seconds on a quiet machine, more under a full test run.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let up = http
                .get(format!("{}/health/liveliness", proxy.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return proxy;
            }
            if Instant::now() >= deadline {
                let log =
                    std::fs::read_to_string(proxy._dir.join("litellm.log")).unwrap_or_default();
                let tail: String = log
                    .chars()
                    .rev()
                    .take(3000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                panic!("LiteLLM's proxy did not start; its log ends:\n{tail}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn openai(&self, model: &str) -> OpenAiProvider {
        OpenAiProvider::new(OpenAiConfig {
            name: model.into(),
            // The server's root: the provider finds /v1/chat/completions under it.
            base_url: self.base.clone(),
            model: model.into(),
            api_key: Some(Secret::new(KEY)),
            timeout: Duration::from_secs(20),
        })
        .expect("provider")
    }

    fn anthropic(&self, model: &str) -> AnthropicProvider {
        AnthropicProvider::new(AnthropicConfig {
            name: model.into(),
            base_url: format!("{}/v1", self.base),
            model: model.into(),
            api_key: Some(Secret::new(KEY)),
            default_max_tokens: 256,
            timeout: Duration::from_secs(20),
        })
        .expect("provider")
    }
}

fn question() -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::system("Answer from the knowledge base."),
            ChatMessage::user("How long do refunds take?"),
        ],
        max_tokens: Some(200),
        ..ChatRequest::default()
    }
}

async fn stream(
    provider: &dyn ChatProvider,
) -> (Result<llm::Completion, ProviderError>, Vec<String>) {
    let pieces: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = pieces.clone();
    let push = move |text: &str| sink.lock().unwrap().push(text.to_owned());
    let result = provider.stream(&question(), &push).await;
    let pieces = pieces.lock().unwrap().clone();
    (result, pieces)
}

fn unavailable(result: Result<llm::Completion, ProviderError>, what: &str) {
    match result {
        Err(e @ ProviderError::Unavailable { .. }) => assert!(e.is_retryable(), "{what}"),
        other => panic!("{what}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_provider_kinds_against_litellms_proxy() {
    let proxy = LiteLlm::start().await;

    // OpenAI-compatible: an answer, and a stream in several pieces.
    let gpt = proxy.openai("gpt-mock");
    let answer = gpt.complete(&question()).await.expect("an answer");
    assert_eq!(answer.text, ANSWER);
    assert_eq!(answer.model, "openai/gpt-mock");
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    assert!(answer.usage.completion_tokens > 0);
    let (streamed, pieces) = stream(&gpt).await;
    let streamed = streamed.expect("a streamed answer");
    assert_eq!(streamed.text, ANSWER);
    assert!(pieces.len() > 1, "{pieces:?}");
    assert_eq!(pieces.concat(), ANSWER);
    assert!(
        streamed.usage.completion_tokens > 0,
        "the usage chunk was read"
    );

    // Anthropic Messages: an answer, and a streamed request.
    let claude = proxy.anthropic("claude-mock");
    let answer = claude.complete(&question()).await.expect("an answer");
    assert_eq!(answer.text, ANSWER);
    assert_eq!(answer.model, "anthropic/claude-mock");
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    let (streamed, pieces) = stream(&claude).await;
    assert_eq!(streamed.expect("a streamed answer").text, ANSWER);
    assert_eq!(pieces.concat(), ANSWER);

    // 429 and an upstream that is down: retryable unavailability, for both kinds.
    for (what, result) in [
        (
            "openai 429",
            proxy.openai("gpt-throttled").complete(&question()).await,
        ),
        (
            "anthropic 429",
            proxy
                .anthropic("claude-throttled")
                .complete(&question())
                .await,
        ),
        (
            "openai outage",
            proxy.openai("gpt-down").complete(&question()).await,
        ),
        (
            "anthropic outage",
            proxy.anthropic("claude-down").complete(&question()).await,
        ),
    ] {
        unavailable(result, what);
    }
    let (result, pieces) = stream(&proxy.openai("gpt-throttled")).await;
    unavailable(result, "openai 429 while streaming");
    assert!(pieces.is_empty());

    // The router moves on from a throttled provider to the next of the route.
    let router = Router::builder(RouterSettings::default())
        .provider(
            Arc::new(proxy.openai("gpt-throttled")),
            ProviderPolicy {
                retries: 0,
                ..ProviderPolicy::default()
            },
        )
        .provider(
            Arc::new(proxy.anthropic("claude-mock")),
            ProviderPolicy::default(),
        )
        .route("reply", ["gpt-throttled", "claude-mock"])
        .build()
        .expect("router");
    let routed = router
        .route("reply", "acme", &question())
        .await
        .expect("the second provider answers");
    assert_eq!(routed.completion.text, ANSWER);
    assert!(matches!(routed.attempts[0].outcome, Outcome::Failed(_)));

    // The proxy itself gone: a connection refused is an outage too.
    drop(proxy.openai("gpt-mock"));
    let base = proxy.base.clone();
    drop(proxy);
    let gone = OpenAiProvider::new(OpenAiConfig {
        name: "gone".into(),
        base_url: base,
        model: "gpt-mock".into(),
        api_key: Some(Secret::new(KEY)),
        timeout: Duration::from_secs(5),
    })
    .expect("provider");
    unavailable(gone.complete(&question()).await, "the proxy is gone");
}
