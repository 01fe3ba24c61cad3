//! The Anthropic Messages provider: what it sends, what it makes of the answers.

use std::time::Duration;

use llm::{ChatMessage, ChatProvider, ChatRequest, FinishReason, ProviderError, Usage};
use serde_json::json;

use crate::server::{Reply, Server, anthropic_answer};
use crate::{anthropic, ends};

#[tokio::test]
async fn a_message_is_sent_as_the_messages_api_and_parsed() {
    let server = Server::start(Reply::Json(json!({
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [
            {"type": "thinking", "thinking": "hidden"},
            {"type": "text", "text": "Refunds take "},
            {"type": "text", "text": "14 days."}
        ],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 40, "output_tokens": 7}
    })))
    .await;
    let provider = anthropic(
        "claude",
        &server,
        Some("sk-ant-test"),
        Duration::from_secs(5),
    );
    let req = ChatRequest {
        messages: vec![
            ChatMessage::system("Be brief."),
            ChatMessage::system("Answer in English."),
            ChatMessage::user("How long do refunds take?"),
            ChatMessage::assistant("Which plan?"),
            ChatMessage::user("Annual."),
        ],
        temperature: Some(0.5),
        ..ChatRequest::default()
    };
    let c = ends(provider.complete(&req)).await.expect("completed");
    assert_eq!(c.text, "Refunds take 14 days.");
    assert_eq!(c.model, "anthropic/claude-haiku-4-5-20251001");
    assert_eq!(c.provider, "claude");
    assert_eq!(
        c.usage,
        Usage {
            prompt_tokens: 40,
            completion_tokens: 7
        }
    );
    assert_eq!(c.finish_reason, FinishReason::Length);

    let sent = server.captured();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].uri, "/v1/messages");
    assert_eq!(sent[0].headers["x-api-key"], "sk-ant-test");
    assert_eq!(sent[0].headers["anthropic-version"], "2023-06-01");
    assert!(sent[0].headers.get("authorization").is_none());
    assert_eq!(
        sent[0].body,
        json!({
            "model": "claude-haiku-4-5",
            "max_tokens": 1024,
            "system": "Be brief.\n\nAnswer in English.",
            "messages": [
                {"role": "user", "content": "How long do refunds take?"},
                {"role": "assistant", "content": "Which plan?"},
                {"role": "user", "content": "Annual."}
            ],
            "temperature": 0.5
        })
    );
}

#[tokio::test]
async fn stop_reasons_are_mapped_and_the_request_max_tokens_wins() {
    let server = Server::start(Reply::Json(anthropic_answer("Hello.", 3, 2))).await;
    let provider = anthropic("claude", &server, None, Duration::from_secs(5));
    let req = ChatRequest {
        messages: vec![ChatMessage::user("Hi")],
        max_tokens: Some(64),
        ..ChatRequest::default()
    };
    let c = ends(provider.complete(&req)).await.expect("completed");
    assert_eq!(c.finish_reason, FinishReason::Stop);
    let body = &server.captured()[0].body;
    assert_eq!(body["max_tokens"], 64);
    assert!(body.get("system").is_none() && body.get("temperature").is_none());
    assert!(server.captured()[0].headers.get("x-api-key").is_none());

    let mut refusal = anthropic_answer("", 3, 0);
    refusal["content"] = json!([]);
    refusal["stop_reason"] = json!("refusal");
    server.set_default(Reply::Json(refusal));
    let c = ends(provider.complete(&req))
        .await
        .expect("a refusal is an answer");
    assert_eq!(c.finish_reason, FinishReason::ContentFilter);
}

#[tokio::test]
async fn overloaded_is_retryable_a_bad_request_is_not_and_nothing_to_answer_sends_nothing() {
    let server = Server::start(Reply::Json(anthropic_answer("ok", 1, 1))).await;
    let provider = anthropic(
        "claude",
        &server,
        Some("sk-ant-test"),
        Duration::from_secs(5),
    );
    let req = ChatRequest {
        messages: vec![ChatMessage::user("Hi")],
        ..ChatRequest::default()
    };
    server.script([Reply::Status(529), Reply::RetryAfter(429, "3")]);
    let e = ends(provider.complete(&req)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unavailable { .. }), "{e:?}");
    let e = ends(provider.complete(&req)).await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Unavailable { retry_after: Some(d), .. } if d == Duration::from_secs(3)),
        "{e:?}"
    );
    server.script([Reply::Status(400)]);
    let e = ends(provider.complete(&req)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Rejected(_)), "{e:?}");
    let calls = server.calls();
    let only_system = ChatRequest {
        messages: vec![ChatMessage::system("You are helpful.")],
        ..ChatRequest::default()
    };
    let e = ends(provider.complete(&only_system)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Rejected(_)), "{e:?}");
    assert_eq!(server.calls(), calls, "nothing was sent");
}
