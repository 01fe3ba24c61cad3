//! The OpenAI-compatible provider against a real HTTP server standing in for one.

use std::time::{Duration, Instant};

use embeddings::openai::{OpenAiConfig, OpenAiEmbedder};
use embeddings::{EmbedError, Embedder};
use testkit::embeddings_server::{DIMENSION, EmbeddingsServer, Scripted, bag_of_words};

fn config(server: &EmbeddingsServer) -> OpenAiConfig {
    OpenAiConfig {
        base_url: server.base_url.clone(),
        model: "test-bag-of-words".into(),
        dimension: DIMENSION,
        api_key: Some("sk-test".into()),
        batch: 2,
        timeout: Duration::from_secs(5),
        retries: 2,
        max_retry_after: Duration::from_secs(5),
    }
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("launch plan number {i}")).collect()
}

#[tokio::test]
async fn texts_are_embedded_in_batches_in_input_order() {
    let server = EmbeddingsServer::start().await;
    let embedder = OpenAiEmbedder::new(config(&server)).unwrap();
    assert_eq!(embedder.model().name, "openai/test-bag-of-words");
    let input = texts(5);
    let vectors = embedder.embed(&input).await.expect("embedded");
    assert_eq!(server.served(), 3, "5 texts in batches of 2");
    for (text, v) in input.iter().zip(&vectors) {
        let want = bag_of_words(text);
        assert!(
            v.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{text}: {v:?}"
        );
    }
}

#[tokio::test]
async fn outages_and_throttling_are_retried_honouring_retry_after() {
    let server = EmbeddingsServer::start().await;
    let embedder = OpenAiEmbedder::new(config(&server)).unwrap();
    server.script([Scripted::Status(503), Scripted::Throttle(1)]);
    let started = Instant::now();
    let vectors = embedder
        .embed(&texts(1))
        .await
        .expect("recovered within its retries");
    assert_eq!(vectors.len(), 1);
    assert_eq!(server.requests(), 3);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited as long as Retry-After asked"
    );
}

#[tokio::test]
async fn a_provider_still_failing_after_the_retries_is_unavailable_not_a_refusal() {
    let server = EmbeddingsServer::start().await;
    let embedder = OpenAiEmbedder::new(config(&server)).unwrap();
    for script in [
        vec![Scripted::Malformed; 3],
        vec![Scripted::Status(502); 3],
        vec![Scripted::Throttle(0); 3],
    ] {
        server.script(script.clone());
        let outcome = embedder.embed(&texts(1)).await;
        assert!(
            matches!(outcome, Err(EmbedError::Unavailable(_))),
            "{script:?}: {outcome:?}"
        );
        assert_eq!(server.scripted_left(), 0);
    }
    // Asked to wait longer than it may: unavailable at once, for the caller to retry later.
    server.script([Scripted::Throttle(3600)]);
    assert!(matches!(
        embedder.embed(&texts(1)).await,
        Err(EmbedError::Unavailable(_))
    ));
    // And it recovers by itself.
    assert!(embedder.embed(&texts(1)).await.is_ok());
}

#[tokio::test]
async fn a_wrong_dimension_is_a_malformed_answer_and_auth_failures_a_misconfiguration() {
    let server = EmbeddingsServer::start().await;
    let wrong = OpenAiEmbedder::new(OpenAiConfig {
        dimension: 384,
        ..config(&server)
    })
    .unwrap();
    assert!(matches!(
        wrong.embed(&texts(1)).await,
        Err(EmbedError::Unavailable(reason)) if reason.contains("384")
    ));
    server.script([Scripted::Status(401)]);
    let embedder = OpenAiEmbedder::new(config(&server)).unwrap();
    assert!(matches!(
        embedder.embed(&texts(1)).await,
        Err(EmbedError::Config(_))
    ));
    server.script([Scripted::Status(400)]);
    assert!(matches!(
        embedder.embed(&texts(1)).await,
        Err(EmbedError::Rejected(_))
    ));
    // An unreachable provider is unavailable.
    let gone = OpenAiEmbedder::new(OpenAiConfig {
        base_url: "http://127.0.0.1:1/v1".into(),
        ..config(&server)
    })
    .unwrap();
    assert!(matches!(
        gone.embed(&texts(1)).await,
        Err(EmbedError::Unavailable(_))
    ));
}
