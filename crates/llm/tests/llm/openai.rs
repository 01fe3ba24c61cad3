//! The OpenAI-compatible provider: what it sends, what it makes of the answers.

use std::time::Duration;

use llm::{ChatMessage, ChatProvider, ChatRequest, FinishReason, ProviderError, Usage};
use serde_json::json;

use crate::server::{Reply, Server, openai_answer};
use crate::{ends, openai, question};

#[tokio::test]
async fn a_completion_is_sent_as_chat_completions_and_parsed() {
    let server = Server::start(Reply::Json(openai_answer("Refunds take 14 days.", 31, 6))).await;
    let provider = openai(
        "primary",
        &server,
        Some("sk-test-key"),
        Duration::from_secs(5),
    );
    let req = ChatRequest {
        messages: vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("How long do refunds take?"),
            ChatMessage::assistant("Which plan?"),
            ChatMessage::user("Annual."),
        ],
        max_tokens: Some(100),
        temperature: Some(0.2),
        context: Vec::new(),
    };
    let c = ends(provider.complete(&req)).await.expect("completed");
    assert_eq!(c.text, "Refunds take 14 days.");
    assert_eq!(c.model, "openai/gpt-4o-mini-2024-07-18");
    assert_eq!(c.provider, "primary");
    assert_eq!(
        c.usage,
        Usage {
            prompt_tokens: 31,
            completion_tokens: 6
        }
    );
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert!(c.latency > Duration::ZERO);

    let sent = server.captured();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].uri, "/v1/chat/completions");
    assert_eq!(sent[0].headers["authorization"], "Bearer sk-test-key");
    assert_eq!(sent[0].headers["content-type"], "application/json");
    assert_eq!(
        sent[0].body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "How long do refunds take?"},
                {"role": "assistant", "content": "Which plan?"},
                {"role": "user", "content": "Annual."}
            ],
            "stream": false,
            "max_tokens": 100,
            "temperature": 0.2
        })
    );
}

#[tokio::test]
async fn without_a_key_no_authorization_is_sent_and_unset_options_are_left_out() {
    let server = Server::start(Reply::Json(openai_answer("ok", 1, 1))).await;
    let provider = openai("ollama", &server, None, Duration::from_secs(5));
    ends(provider.complete(&question("hi")))
        .await
        .expect("completed");
    let sent = &server.captured()[0];
    assert!(sent.headers.get("authorization").is_none());
    let body = sent.body.as_object().expect("object");
    assert!(!body.contains_key("max_tokens") && !body.contains_key("temperature"));
}

#[tokio::test]
async fn missing_usage_is_estimated_and_finish_reasons_are_mapped() {
    let server = Server::start(Reply::Json(json!({
        "choices": [{"message": {"content": "one two three"}, "finish_reason": "length"}]
    })))
    .await;
    let provider = openai("p", &server, None, Duration::from_secs(5));
    let c = ends(provider.complete(&question("four five")))
        .await
        .expect("completed");
    assert_eq!(c.finish_reason, FinishReason::Length);
    assert_eq!(
        c.model, "openai/gpt-4o-mini",
        "the configured model when none is named"
    );
    assert_eq!(c.usage.completion_tokens, 3);
    assert_eq!(c.usage.prompt_tokens, 9, "words of every message");

    server.set_default(Reply::Json(json!({
        "choices": [{"message": {"content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}]
    })));
    let c = ends(provider.complete(&question("?")))
        .await
        .expect("a refusal is an answer");
    assert_eq!(c.text, "I can't help with that.");
    assert_eq!(c.finish_reason, FinishReason::ContentFilter);

    server.set_default(Reply::Json(json!({
        "choices": [{"message": {"content": "x"}, "finish_reason": "tool_calls"}]
    })));
    let c = ends(provider.complete(&question("?")))
        .await
        .expect("completed");
    assert_eq!(c.finish_reason, FinishReason::Other("tool_calls".into()));
}

#[tokio::test]
async fn statuses_are_classified_retryable_refused_or_misconfigured() {
    let server = Server::start(Reply::Status(200)).await;
    let provider = openai("p", &server, Some("sk-test-key"), Duration::from_secs(5));
    let req = question("hi");
    server.script([Reply::RetryAfter(429, "7")]);
    assert_eq!(
        ends(provider.complete(&req)).await.unwrap_err(),
        ProviderError::Unavailable {
            reason: "the provider answered 429 Too Many Requests".into(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
    for code in [500, 502, 503, 504, 408] {
        server.script([Reply::Status(code)]);
        let e = ends(provider.complete(&req)).await.unwrap_err();
        assert!(e.is_retryable(), "{code}: {e:?}");
    }
    for code in [400, 404, 413, 422] {
        server.script([Reply::Status(code)]);
        let e = ends(provider.complete(&req)).await.unwrap_err();
        assert!(
            matches!(&e, ProviderError::Rejected(m) if m.contains(&code.to_string()) && m.contains("scripted")),
            "{code}: {e:?}"
        );
    }
    for code in [401, 403] {
        server.script([Reply::Status(code)]);
        let e = ends(provider.complete(&req)).await.unwrap_err();
        assert!(
            matches!(&e, ProviderError::Config(m) if m.contains("API key")),
            "{code}: {e:?}"
        );
    }
    let gone = llm::openai::OpenAiProvider::new(llm::openai::OpenAiConfig {
        name: "gone".into(),
        base_url: "http://127.0.0.1:1/v1".into(),
        model: "m".into(),
        api_key: None,
        timeout: Duration::from_secs(5),
    })
    .expect("provider");
    let e = ends(gone.complete(&req)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unavailable { .. }), "{e:?}");
}
