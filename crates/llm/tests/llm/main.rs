//! The providers and the router against real HTTP servers started by each test
//! ([`server::Server`]), scripted per request.

mod anthropic;
mod bad_output;
mod openai;
mod router;
mod server;
mod streaming;

use std::future::Future;
use std::time::Duration;

use llm::anthropic::{AnthropicConfig, AnthropicProvider};
use llm::openai::{OpenAiConfig, OpenAiProvider};
use llm::{ChatMessage, ChatRequest, Secret};
use server::Server;

/// An OpenAI-compatible provider named `name` for `server` (base `…/v1`).
pub fn openai(name: &str, server: &Server, key: Option<&str>, timeout: Duration) -> OpenAiProvider {
    OpenAiProvider::new(OpenAiConfig {
        name: name.into(),
        base_url: format!("{}/v1", server.base_url),
        model: "gpt-4o-mini".into(),
        api_key: key.map(Secret::new),
        timeout,
    })
    .expect("provider")
}

pub fn anthropic(
    name: &str,
    server: &Server,
    key: Option<&str>,
    timeout: Duration,
) -> AnthropicProvider {
    AnthropicProvider::new(AnthropicConfig {
        name: name.into(),
        base_url: server.base_url.clone(),
        model: "claude-haiku-4-5".into(),
        api_key: key.map(Secret::new),
        default_max_tokens: 1024,
        timeout,
    })
    .expect("provider")
}

pub fn question(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::system("You answer from the customer's knowledge base."),
            ChatMessage::user(text),
        ],
        ..ChatRequest::default()
    }
}

/// `f`, which must end (with whatever outcome) well within 20 s: nothing hangs.
pub async fn ends<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the call ended instead of hanging")
}
