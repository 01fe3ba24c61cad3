//! Finding things by meaning: the local all-MiniLM-L6-v2 model (the default provider) over
//! a small corpus of paraphrases, through the whole path (commands, the relay, the
//! projector, the vector store, the search). Each query shares no content word with the
//! text it must find (checked below, so the corpus cannot drift into keyword matching),
//! and distractors sit beside them.

use std::collections::HashSet;
use std::sync::Arc;

use access::{Reach, Scope};
use embeddings::chunk::ChunkConfig;
use embeddings::local::LocalEmbedder;
use embeddings::{Embedder, EmbeddingConfig};
use projection::EffectSink;
use semantic_index::{Search, SearchRequest, SemanticIndex};
use testkit::commands::{add_knowledge, meta, user_message};
use testkit::{Stack, wait_until};
use uuid::Uuid;
use vectors::pg::PgStore;
use vectors::{SourceKind, VectorStore};

/// (query, the text it must find). The texts are stored as messages of one conversation
/// (even rows) or as knowledge documents (odd rows).
const PAIRS: [(&str, &str); 12] = [
    ("When do we ship?", "Launch is planned for May."),
    (
        "How much does it cost?",
        "The price is forty dollars per seat monthly.",
    ),
    (
        "Who should I call about a broken laptop?",
        "Contact the IT helpdesk for hardware repairs.",
    ),
    (
        "Can I work from home?",
        "Remote employees are allowed to telecommute on Fridays.",
    ),
    (
        "What is the refund policy?",
        "Customers get their money back within thirty days of purchase.",
    ),
    (
        "Where is the office?",
        "Our headquarters are located in Berlin near the central station.",
    ),
    (
        "How many vacation days do I get?",
        "Staff receive twenty-five paid holidays annually.",
    ),
    (
        "Is the server down?",
        "The website outage began at noon and engineers are investigating.",
    ),
    (
        "Who runs the company?",
        "Maria leads the firm as chief executive.",
    ),
    (
        "What is the wifi password?",
        "To join the wireless network, enter the code tiger42.",
    ),
    (
        "How do I reset my login?",
        "Forgotten credentials can be recovered from the account settings page.",
    ),
    (
        "Did the client sign the contract?",
        "The customer agreed to the deal and returned the paperwork yesterday.",
    ),
];

const DISTRACTORS: [&str; 8] = [
    "The cafeteria serves lunch between twelve and two.",
    "Parking spaces are assigned by the facilities team.",
    "The board meets every third Thursday.",
    "Please recycle paper in the blue bins.",
    "Our logo was redesigned last autumn.",
    "The fire drill happens twice a year.",
    "Printer toner is stored in the supply closet.",
    "The team celebrated the anniversary with cake.",
];

const STOPWORDS: [&str; 52] = [
    "a", "about", "an", "and", "are", "as", "at", "back", "by", "can", "do", "does", "did", "for",
    "from", "get", "how", "i", "in", "is", "it", "many", "much", "my", "near", "of", "on", "or",
    "our", "per", "should", "the", "their", "to", "we", "what", "when", "where", "who", "with",
    "within", "be", "been", "this", "that", "these", "those", "you", "your", "its", "has", "have",
];

/// Content words, cut to their first four letters: "shipping" and "ship" count as one.
fn stems(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(&w.as_str()))
        .map(|w| w.chars().take(4).collect())
        .collect()
}

#[test]
fn no_query_shares_a_content_word_with_the_text_it_must_find() {
    for (query, text) in PAIRS {
        let shared: Vec<_> = stems(query).intersection(&stems(text)).cloned().collect();
        assert!(shared.is_empty(), "{query:?} and {text:?} share {shared:?}");
    }
}

async fn local_model() -> Arc<dyn Embedder> {
    match EmbeddingConfig::from_env().expect("embedding configuration") {
        EmbeddingConfig::Local(config) => Arc::new(
            LocalEmbedder::load(config)
                .await
                .expect("the model files (dev/stack installs them and sets EMBEDDING_MODEL_DIR)"),
        ),
        other => panic!("this test runs the local model, not {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paraphrase_finds_its_source_among_distractors() {
    let stack = Stack::new().await;
    let store = Arc::new(PgStore::new(stack.db.pool.clone()).await.expect("vectors"));
    let model = local_model().await;
    let chunking = ChunkConfig::from_env(model.max_tokens()).expect("chunking");
    let _relay = stack.relay();
    let projector = stack
        .projector(Arc::new(EffectSink::new(SemanticIndex::new(
            model.clone(),
            store.clone(),
            chunking,
            stack.db.pool.clone(),
        ))))
        .await;

    let tenant = "acme";
    let conversation = stack
        .service
        .start_conversation("Questions".into(), Default::default(), &meta(tenant))
        .await
        .expect("start")
        .aggregate_id;
    // What each query must find: a message id or a knowledge id.
    let mut sources: Vec<Uuid> = Vec::new();
    for (n, (_, text)) in PAIRS.iter().enumerate() {
        let id = if n % 2 == 0 {
            let sent = stack
                .service
                .send_message(conversation, user_message(text), None, &meta(tenant))
                .await
                .expect("send");
            match sent.events.as_slice() {
                [schemas::Event::MessageSent(m)] => m.message_id,
                other => panic!("sending a message appended {other:?}"),
            }
        } else {
            add_knowledge(
                &stack.service,
                tenant,
                "Note",
                "text/plain",
                text.as_bytes(),
            )
            .await
            .aggregate_id
        };
        sources.push(id);
    }
    for text in DISTRACTORS {
        stack
            .service
            .send_message(conversation, user_message(text), None, &meta(tenant))
            .await
            .expect("send");
    }
    let search = Search::new(stack.db.pool.clone(), store.clone(), vec![model]);
    let total = (PAIRS.len() + DISTRACTORS.len()) as u64;
    wait_until("the corpus indexed", || async {
        match search.live_index().await {
            Ok((index, _)) => store.count(&index, None).await.unwrap_or(0) == total,
            Err(_) => false,
        }
    })
    .await;

    let mut misses = Vec::new();
    for ((query, text), source) in PAIRS.iter().zip(&sources) {
        let found = search
            .search(&SearchRequest {
                scope: Scope::new(tenant, "admin", Reach::Tenant),
                text: query,
                kinds: &SourceKind::ALL,
                conversation_id: None,
                limit: 3,
                min_score: None,
            })
            .await
            .expect("search");
        assert_eq!(found.model.name, "local/all-MiniLM-L6-v2");
        assert!(!found.hits.is_empty(), "{query:?}: no hits");
        if !found.hits.iter().any(|h| h.payload.source_id == *source) {
            misses.push(format!(
                "{query:?} did not find {text:?} in {:?}",
                found.hits
            ));
        }
    }
    assert!(misses.is_empty(), "{}", misses.join("\n"));
    projector.stop().await;
}
