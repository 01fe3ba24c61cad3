//! The local all-MiniLM-L6-v2 provider against the real model files, which `dev/stack`
//! installs and points `EMBEDDING_MODEL_DIR` at. A missing variable is a failure, never a
//! skip.

use std::path::PathBuf;

use embeddings::local::{LocalConfig, LocalEmbedder};
use embeddings::{EmbedError, Embedder};

fn model_dir() -> PathBuf {
    testkit::env::var("EMBEDDING_MODEL_DIR")
        .unwrap_or_else(|| {
            panic!(
                "EMBEDDING_MODEL_DIR is not set: run tests through `dev/stack test` (see README), which installs the all-MiniLM-L6-v2 model files and sets it"
            )
        })
        .into()
}

async fn embedder() -> LocalEmbedder {
    let dir = model_dir();
    LocalEmbedder::load(LocalConfig {
        model_dir: dir.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("loading the model from {}: {e}", dir.display()))
}

fn texts(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn assert_unit(v: &[f32]) {
    assert_eq!(v.len(), 384);
    let norm = dot(v, v).sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Varied prose of about `words` words (deterministic).
fn long_text(words: usize) -> String {
    const SENTENCES: [&str; 6] = [
        "The quarterly report shows revenue growing faster than costs in every region.",
        "Naïve café owners in Zürich serve crème brûlée — a favourite of tourists!",
        "Retry the request after backing off exponentially, up to thirty seconds.",
        "Kafka consumers commit offsets only after the projection has written its rows.",
        "東京 and 大阪 are connected by the shinkansen, which takes about 2½ hours.",
        "She said: \"the migration finished at 03:14 UTC, with 1,024 tables converted\".",
    ];
    let mut text = String::new();
    let mut i = 0;
    while text.split_whitespace().count() < words {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(SENTENCES[i % SENTENCES.len()]);
        i += 1;
    }
    text
}

#[tokio::test]
async fn the_sentence_transformers_quick_start_similarities_are_reproduced() {
    let model = embedder().await;
    assert_eq!(model.model().name, "local/all-MiniLM-L6-v2");
    assert_eq!(model.model().dimension, 384);
    let v = model
        .embed(&texts(&[
            "The weather is lovely today.",
            "It's so sunny outside!",
            "He drove to the stadium.",
        ]))
        .await
        .expect("embed");
    assert_eq!(v.len(), 3);
    for vector in &v {
        assert_unit(vector);
    }
    for (a, b, expected) in [(0, 1, 0.6660), (0, 2, 0.1046), (1, 2, 0.1411)] {
        let cosine = dot(&v[a], &v[b]);
        assert!(
            (cosine - expected).abs() < 0.001,
            "cosine({a}, {b}) = {cosine}, expected {expected}"
        );
    }
}

#[tokio::test]
async fn a_batch_embeds_like_its_texts_one_by_one() {
    let model = embedder().await;
    // Very different lengths, so most of the batch is padding for the short ones.
    let batch = texts(&[
        "Hi",
        "",
        "A much longer sentence that makes every other text in this batch need padding, several dozen tokens of it, to see that masking keeps padding out of the mean.",
        "Hello, wörld!",
        &long_text(120),
    ]);
    let together = model.embed(&batch).await.expect("embed batch");
    assert_eq!(together.len(), batch.len());
    for (text, vector) in batch.iter().zip(&together) {
        let alone = model
            .embed(std::slice::from_ref(text))
            .await
            .expect("embed one");
        assert_unit(vector);
        let diff = max_difference(vector, &alone[0]);
        assert!(diff < 1e-4, "{text:?}: batched and alone differ by {diff}");
    }
}

#[tokio::test]
async fn a_long_text_is_embedded_in_windows_and_its_spans_slice_it() {
    let model = embedder().await;
    let text = long_text(1000);
    let spans = model.token_spans(&text);
    assert!(
        spans.len() > model.max_tokens(),
        "{} tokens should not fit one window of {}",
        spans.len(),
        model.max_tokens()
    );
    let mut previous = 0;
    for span in &spans {
        assert!(span.start >= previous && span.start <= span.end && span.end <= text.len());
        assert!(
            text.get(span.clone()).is_some(),
            "{span:?} is not on char boundaries"
        );
        previous = span.start;
    }

    let v = model
        .embed(std::slice::from_ref(&text))
        .await
        .expect("embed");
    assert_unit(&v[0]);
    // The windows' mean is about the same topics as the text's start.
    let start = model
        .embed(&[text[..spans[200].end].to_owned()])
        .await
        .expect("embed start");
    assert!(dot(&v[0], &start[0]) > 0.8);
}

#[tokio::test]
async fn token_spans_map_back_to_the_words() {
    let model = embedder().await;
    let text = "Hello, wörld!";
    let pieces: Vec<&str> = model
        .token_spans(text)
        .into_iter()
        .map(|span| &text[span])
        .collect();
    assert_eq!(pieces.first(), Some(&"Hello"));
    assert_eq!(pieces.get(1), Some(&","));
    assert_eq!(pieces.last(), Some(&"!"));
    // "wörld" is cut into word pieces that together cover it exactly.
    assert_eq!(pieces[2..pieces.len() - 1].concat(), "wörld");
    assert!(model.token_spans("").is_empty());
}

#[tokio::test]
async fn the_empty_text_and_no_texts_are_fine() {
    let model = embedder().await;
    let v = model.embed(&texts(&["", "x"])).await.expect("embed");
    assert_eq!(v.len(), 2);
    assert_unit(&v[0]);
    assert!(model.embed(&[]).await.expect("embed nothing").is_empty());
}

#[tokio::test]
async fn concurrent_callers_get_their_own_vectors() {
    let model = std::sync::Arc::new(embedder().await);
    let a = texts(&["The weather is lovely today."]);
    let b = texts(&["He drove to the stadium."]);
    let (va, vb) = tokio::join!(model.embed(&a), model.embed(&b));
    let (va, vb) = (va.expect("a"), vb.expect("b"));
    let again = model
        .embed(&[a[0].clone(), b[0].clone()])
        .await
        .expect("both");
    assert!(max_difference(&va[0], &again[0]) < 1e-4);
    assert!(max_difference(&vb[0], &again[1]) < 1e-4);
}

#[tokio::test]
async fn a_missing_model_dir_is_a_configuration_error() {
    let dir = std::env::temp_dir().join(format!("no-model-{}", std::process::id()));
    let err = LocalEmbedder::load(LocalConfig { model_dir: dir })
        .await
        .expect_err("no model files");
    match err {
        EmbedError::Config(message) => {
            assert!(message.contains("dev/stack"), "{message}");
            assert!(
                message.contains(".json") || message.contains(".safetensors"),
                "{message}"
            );
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_corrupt_model_file_is_a_configuration_error() {
    let source = model_dir();
    let dir = std::env::temp_dir().join(format!("corrupt-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(source.join(file), dir.join(file)).expect("copy");
    }
    std::fs::write(dir.join("model.safetensors"), b"not a safetensors file").expect("write");
    let err = LocalEmbedder::load(LocalConfig {
        model_dir: dir.clone(),
    })
    .await
    .expect_err("corrupt weights");
    let _ = std::fs::remove_dir_all(&dir);
    match err {
        EmbedError::Config(message) => assert!(message.contains("model.safetensors"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
