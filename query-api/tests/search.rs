//! `GET /v1/search` over HTTP: the embeddings projector indexing through the
//! OpenAI-compatible provider talking to a real HTTP server standing in for one (a bag
//! of hashed words: a keyword finds its source), the tenant taken from the token.

mod common;

use std::sync::Arc;

use common::ReadStack;
use embeddings::chunk::ChunkConfig;
use platform::auth::Role;
use projection::EffectSink;
use reqwest::StatusCode;
use semantic_index::SemanticIndex;
use serde_json::Value;
use testkit::commands::{meta, user_message};
use testkit::embeddings_server::EmbeddingsServer;
use testkit::tokens::{SECRET, hs256_token};

async fn get(url: String, token: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_finds_sources_after_their_position_and_only_in_the_callers_tenant() {
    let server = EmbeddingsServer::start().await;
    let stack = ReadStack::with_search(vec![server.embedder("bow")]).await;
    let pool = stack.commands.db.pool.clone();
    let store = Arc::new(
        vectors::pg::PgStore::new(pool.clone())
            .await
            .expect("vector tables"),
    );
    let sink = SemanticIndex::new(
        server.embedder("bow"),
        store,
        ChunkConfig::new(64, 8, 512).expect("chunking"),
        pool,
    );
    let projector = stack.projector(Arc::new(EffectSink::new(sink))).await;
    let service = stack.commands.service.clone();
    let mut conversations = Vec::new();
    let mut last = None;
    for tenant in ["acme", "globex"] {
        let mut m = meta(tenant);
        m.user_id = "user-1".into();
        let id = service
            .start_conversation("Launch plan".into(), Default::default(), &m)
            .await
            .expect("start")
            .aggregate_id;
        last = Some(
            service
                .send_message(id, user_message("the launch happens in May"), None, &m)
                .await
                .expect("send"),
        );
        conversations.push(id);
    }
    let sent = last.expect("a message");
    let q = &stack.query_base;
    let globex = testkit::tokens::token("globex", &[Role::Member]);
    let (status, body) = get(
        format!("{q}/v1/search?q=launch&position={}", sent.token()),
        &globex,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model"], "openai/bow");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{body}");
    let hit = &items[0];
    assert_eq!(hit["source"]["kind"], "message");
    assert_eq!(
        hit["source"]["conversation_id"],
        conversations[1].to_string()
    );
    assert_eq!(hit["source"]["position"], 2);
    assert_eq!(hit["title"], "Launch plan");
    assert_eq!(hit["snippet"], "the launch happens in May");
    assert!(hit["score"].as_f64().unwrap_or(0.0) > 0.3, "{hit}");

    // Another tenant's conversation, crafted into the query: nothing.
    let (status, body) = get(
        format!(
            "{q}/v1/search?q=launch&conversation_id={}",
            conversations[0]
        ),
        &globex,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(0), "{body}");
    // Another member of the tenant does not see user-1's conversation.
    let other = hs256_token(SECRET, "globex", "user-2", &[Role::Member], 600);
    let (_, body) = get(format!("{q}/v1/search?q=launch"), &other).await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(0), "{body}");
    let admin = testkit::tokens::token("globex", &[Role::Admin]);
    let (_, body) = get(
        format!("{q}/v1/search?q=launch&scope=messages&limit=5&min_score=0.1"),
        &admin,
    )
    .await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{body}");
    let (_, body) = get(format!("{q}/v1/search?q=launch&scope=knowledge"), &admin).await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(0), "{body}");
    projector.stop().await;
}

#[tokio::test]
async fn bad_search_requests_are_problems() {
    let server = EmbeddingsServer::start().await;
    let stack = ReadStack::with_search(vec![server.embedder("bow")]).await;
    let q = &stack.query_base;
    let member = testkit::tokens::token("acme", &[Role::Member]);
    for (query, status, code) in [
        ("", StatusCode::BAD_REQUEST, "invalid_query"),
        ("q=", StatusCode::BAD_REQUEST, "invalid_query"),
        ("q=%20%20", StatusCode::BAD_REQUEST, "invalid_query"),
        ("q=a%00b", StatusCode::BAD_REQUEST, "invalid_query"),
        (
            "q=x&scope=everything",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "q=x&conversation_id=nope",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        ("q=x&limit=0", StatusCode::BAD_REQUEST, "invalid_limit"),
        ("q=x&limit=51", StatusCode::BAD_REQUEST, "invalid_limit"),
        ("q=x&min_score=2", StatusCode::BAD_REQUEST, "invalid_query"),
        (
            "q=x&min_score=NaN",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "q=x&position=garbage",
            StatusCode::BAD_REQUEST,
            "invalid_position",
        ),
        ("q=x&unknown=1", StatusCode::BAD_REQUEST, "invalid_query"),
        ("q=x&wait_ms=-1", StatusCode::BAD_REQUEST, "invalid_wait"),
        (
            "q=x&wait_ms=99999999999999999999",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        // Nothing indexed yet: the projector has not made its index.
        (
            "q=x",
            StatusCode::SERVICE_UNAVAILABLE,
            "search_index_unavailable",
        ),
    ] {
        let (got, body) = get(format!("{q}/v1/search?{query}"), &member).await;
        assert_eq!(got, status, "{query}: {body}");
        assert_eq!(body["code"], code, "{query}: {body}");
    }
    let long = "x".repeat(1001);
    let (got, body) = get(format!("{q}/v1/search?q={long}"), &member).await;
    assert_eq!(
        (got, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    let resp = reqwest::Client::new()
        .get(format!("{q}/v1/search?q=x"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
