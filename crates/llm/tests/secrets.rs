//! Keys never show: not in logs (captured at TRACE, the HTTP client's included), not in
//! errors, not in `Debug` output, even when a provider echoes them back. A test binary of
//! its own: a thread-local log subscriber misses events whose call sites other tests'
//! threads registered at the same moment.

#[path = "llm/server.rs"]
mod server;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llm::anthropic::{AnthropicConfig, AnthropicProvider};
use llm::openai::{OpenAiConfig, OpenAiProvider};
use llm::router::{ProviderPolicy, Router, RouterSettings};
use llm::{ChatMessage, ChatRequest, Secret};
use server::{Reply, Server};

const KEY: &str = "sk-canary-7f3a9";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn keys_never_appear_in_logs_errors_or_debug_output() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let echo = |code: u16| Reply::Raw(code, format!("{{\"error\": \"bad key {KEY}\"}}"));
    let o = Server::start(echo(400)).await;
    let a = Server::start(echo(400)).await;
    let policy = ProviderPolicy {
        timeout: Duration::from_secs(5),
        retries: 0,
        ..ProviderPolicy::default()
    };
    let openai = Arc::new(
        OpenAiProvider::new(OpenAiConfig {
            name: "o".into(),
            base_url: o.base_url.clone(),
            model: "m".into(),
            api_key: Some(Secret::new(KEY)),
            timeout: Duration::from_secs(5),
        })
        .unwrap(),
    );
    let anthropic = Arc::new(
        AnthropicProvider::new(AnthropicConfig {
            name: "a".into(),
            base_url: a.base_url.clone(),
            model: "m".into(),
            api_key: Some(Secret::new(KEY)),
            default_max_tokens: 100,
            timeout: Duration::from_secs(5),
        })
        .unwrap(),
    );
    let req = ChatRequest {
        messages: vec![ChatMessage::user("hi")],
        ..ChatRequest::default()
    };
    let provider_debug = format!("{openai:?} {anthropic:?}");
    let router = Router::builder(RouterSettings::default())
        .provider(openai, policy)
        .provider(anthropic, policy)
        .route("reply", ["o", "a"])
        .build()
        .unwrap();
    let mut shown = vec![provider_debug, format!("{router:?}")];
    for code in [400, 401, 403, 422, 500] {
        o.set_default(echo(code));
        a.set_default(echo(code));
        let e = tokio::time::timeout(Duration::from_secs(20), router.route("reply", "t1", &req))
            .await
            .expect("ended")
            .unwrap_err();
        shown.push(e.to_string());
        shown.push(format!("{e:?}"));
    }
    assert_eq!(
        o.captured()[0].headers["authorization"],
        format!("Bearer {KEY}")
    );
    assert_eq!(a.captured()[0].headers["x-api-key"], KEY);

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("llm attempt failed"),
        "logs were captured: {logs}"
    );
    assert!(shown.iter().any(|s| s.contains("bad key ***")), "{shown:?}");
    assert!(!logs.contains(KEY), "{logs}");
    for s in &shown {
        assert!(!s.contains(KEY), "{s}");
    }
}
