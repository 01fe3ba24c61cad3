//! The offline default, `local` (model `local/extractive-v1`): no network, no model, no
//! randomness. It answers the last user message with the sentences of the retrieved
//! context that share the most words with it (ties broken by retrieval score, then by
//! position), each prefixed by the title and id of its source; with no shared word, the
//! opening sentence of the best-scored passage; with no context, a fixed sentence saying
//! it found nothing. The same request gives the same answer, byte for byte. Tokens are
//! counted approximately (words).

use std::collections::HashSet;
use std::time::Instant;

use crate::{
    ChatProvider, ChatRequest, Completion, ContextItem, FinishReason, ProviderError, Usage,
    approximate_tokens,
};

/// The model name every local answer carries: it says the answer is extractive.
pub const MODEL: &str = "local/extractive-v1";

/// The answer when there is no context to answer from.
pub const NOTHING_FOUND: &str = "I found nothing relevant in the available context, \
     and this assistant runs without a language model, so I cannot answer that.";

const HEADER: &str = "From the retrieved context (extractive answer, no language model):";
const CLOSEST_HEADER: &str = "Nothing in the retrieved context matches the question's \
     words; the closest passage (extractive answer, no language model):";

/// Sentences quoted at most.
const MAX_SENTENCES: usize = 3;
/// Words of one quoted sentence at most.
const MAX_SENTENCE_WORDS: usize = 60;

const STOPWORDS: &[&str] = &[
    "a", "about", "all", "an", "and", "any", "are", "as", "at", "be", "but", "by", "can", "could",
    "did", "do", "does", "for", "from", "had", "has", "have", "how", "i", "if", "in", "is", "it",
    "its", "me", "my", "no", "not", "of", "on", "or", "our", "please", "so", "tell", "that", "the",
    "their", "them", "there", "they", "this", "to", "us", "was", "we", "were", "what", "when",
    "where", "which", "who", "why", "will", "with", "would", "you", "your",
];

/// The `local` provider under its configured name.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    name: String,
}

impl LocalProvider {
    pub fn new(name: impl Into<String>) -> Self {
        LocalProvider { name: name.into() }
    }
}

#[async_trait::async_trait]
impl ChatProvider for LocalProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(&self, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let started = Instant::now();
        let (text, finish_reason) = answer(req);
        let prompt_tokens = req
            .messages
            .iter()
            .map(|m| approximate_tokens(&m.content))
            .chain(req.context.iter().map(|c| approximate_tokens(&c.text)))
            .fold(0u32, u32::saturating_add);
        Ok(Completion {
            usage: Usage {
                prompt_tokens,
                completion_tokens: approximate_tokens(&text),
            },
            text,
            model: MODEL.to_owned(),
            provider: self.name.clone(),
            finish_reason,
            latency: started.elapsed(),
        })
    }
}

/// The extractive answer to `req` (a pure function of it) and why it ends.
pub fn answer(req: &ChatRequest) -> (String, FinishReason) {
    let text = if req.context.is_empty() {
        NOTHING_FOUND.to_owned()
    } else {
        let question = words(req.last_user_message().unwrap_or_default());
        let ranked = rank(&req.context, &question);
        if ranked.is_empty() {
            closest(&req.context)
        } else {
            let lines: Vec<String> = ranked
                .iter()
                .map(|c| cite(&req.context[c.item], &c.sentence))
                .collect();
            format!("{HEADER}\n{}", lines.join("\n"))
        }
    };
    limit(text, req.max_tokens)
}

/// A sentence worth quoting and where it comes from.
struct Candidate {
    shared: usize,
    item: usize,
    position: usize,
    sentence: String,
}

/// The best sentences sharing at least one word with the question, best first, no
/// sentence twice.
fn rank(context: &[ContextItem], question: &HashSet<String>) -> Vec<Candidate> {
    let mut candidates: Vec<Candidate> = context
        .iter()
        .enumerate()
        .flat_map(|(item, c)| {
            sentences(&c.text)
                .into_iter()
                .enumerate()
                .map(move |(position, sentence)| Candidate {
                    shared: words(&sentence).intersection(question).count(),
                    item,
                    position,
                    sentence,
                })
        })
        .filter(|c| c.shared > 0)
        .collect();
    candidates.sort_by(|a, b| {
        b.shared
            .cmp(&a.shared)
            .then_with(|| context[b.item].score.total_cmp(&context[a.item].score))
            .then_with(|| a.item.cmp(&b.item))
            .then_with(|| a.position.cmp(&b.position))
    });
    let mut seen = HashSet::new();
    candidates.retain(|c| seen.insert(c.sentence.clone()));
    candidates.truncate(MAX_SENTENCES);
    candidates
}

/// The opening sentence of the best-scored passage (the first of equals).
fn closest(context: &[ContextItem]) -> String {
    let best = context
        .iter()
        .enumerate()
        .max_by(|(i, a), (j, b)| a.score.total_cmp(&b.score).then_with(|| j.cmp(i)));
    match best.and_then(|(_, item)| sentences(&item.text).into_iter().next().map(|s| (item, s))) {
        Some((item, sentence)) => format!("{CLOSEST_HEADER}\n{}", cite(item, &sentence)),
        None => NOTHING_FOUND.to_owned(),
    }
}

fn cite(item: &ContextItem, sentence: &str) -> String {
    let title = item.title.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("- From \"{title}\" ({}): {sentence}", item.source_id)
}

/// The sentences of a text, whitespace collapsed, each at most [`MAX_SENTENCE_WORDS`].
/// A sentence ends at `.`, `!` or `?` followed by whitespace, or at a line break.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let ends = match c {
            '\n' | '\r' => true,
            '.' | '!' | '?' => chars.peek().is_none_or(|n| n.is_whitespace()),
            _ => false,
        };
        if c != '\n' && c != '\r' {
            current.push(c);
        }
        if ends {
            push_sentence(&mut out, &current);
            current.clear();
        }
    }
    push_sentence(&mut out, &current);
    out
}

fn push_sentence(out: &mut Vec<String>, raw: &str) {
    let words: Vec<&str> = raw.split_whitespace().collect();
    if words.is_empty() {
        return;
    }
    let mut sentence = words
        .iter()
        .take(MAX_SENTENCE_WORDS)
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    if words.len() > MAX_SENTENCE_WORDS {
        sentence.push_str(" …");
    }
    out.push(sentence);
}

/// The lowercase content words of a text (no stopwords, no single letters).
fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() > 1)
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// `text` cut to `max_tokens` words, if it is longer.
fn limit(text: String, max_tokens: Option<u32>) -> (String, FinishReason) {
    let Some(max) = max_tokens.map(|m| m as usize) else {
        return (text, FinishReason::Stop);
    };
    if text.split_whitespace().count() <= max {
        return (text, FinishReason::Stop);
    }
    let cut = text
        .split_whitespace()
        .take(max)
        .collect::<Vec<_>>()
        .join(" ");
    (cut, FinishReason::Length)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::ChatMessage;

    fn item(n: u128, title: &str, text: &str, score: f32) -> ContextItem {
        ContextItem {
            source_id: Uuid::from_u128(n),
            title: title.into(),
            text: text.into(),
            score,
        }
    }

    fn request(question: &str, context: Vec<ContextItem>) -> ChatRequest {
        ChatRequest {
            messages: vec![
                ChatMessage::system("You are a helpful assistant."),
                ChatMessage::user("hello"),
                ChatMessage::assistant("Hi!"),
                ChatMessage::user(question),
            ],
            context,
            ..ChatRequest::default()
        }
    }

    fn handbook() -> Vec<ContextItem> {
        vec![
            item(
                1,
                "Refund policy",
                "Refunds are issued within 14 days. Contact billing for a refund of an annual plan!\nShipping is free.",
                0.5,
            ),
            item(
                2,
                "Pricing\n2024",
                "The team plan costs 10 euros per seat. Annual plans get two months free.",
                0.9,
            ),
        ]
    }

    #[tokio::test]
    async fn the_answer_quotes_the_most_related_sentences_and_cites_their_sources() {
        let provider = LocalProvider::new("local");
        let req = request("How are refunds of an annual plan issued?", handbook());
        let c = provider.complete(&req).await.unwrap();
        assert_eq!(c.model, "local/extractive-v1");
        assert_eq!(c.provider, "local");
        assert_eq!(c.finish_reason, FinishReason::Stop);
        let id1 = Uuid::from_u128(1);
        let id2 = Uuid::from_u128(2);
        assert_eq!(
            c.text,
            format!(
                "{HEADER}\n\
                 - From \"Refund policy\" ({id1}): Refunds are issued within 14 days.\n\
                 - From \"Refund policy\" ({id1}): Contact billing for a refund of an annual plan!\n\
                 - From \"Pricing 2024\" ({id2}): The team plan costs 10 euros per seat."
            )
        );
        assert_eq!(c.usage.completion_tokens, approximate_tokens(&c.text));
        assert!(c.usage.prompt_tokens > 20);
    }

    #[tokio::test]
    async fn the_same_request_gives_the_same_answer_byte_for_byte() {
        let provider = LocalProvider::new("local");
        let req = request("annual plan refund pricing seat", handbook());
        let first = provider.complete(&req).await.unwrap();
        for _ in 0..20 {
            let again = provider.complete(&req).await.unwrap();
            assert_eq!(again.text.as_bytes(), first.text.as_bytes());
            assert_eq!(again.usage, first.usage);
        }
        // Ties between equally related sentences go to the better-scored passage.
        let (text, _) = answer(&request("free", handbook()));
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("Annual plans get two months free."),
            "{text}"
        );
        assert!(lines[2].contains("Shipping is free."), "{text}");
    }

    #[test]
    fn no_context_says_it_found_nothing_and_unrelated_context_gives_the_closest_passage() {
        assert_eq!(answer(&request("refunds?", vec![])).0, NOTHING_FOUND);
        let (text, _) = answer(&request("parking garage", handbook()));
        assert!(text.starts_with(CLOSEST_HEADER), "{text}");
        assert!(
            text.contains("The team plan costs 10 euros per seat."),
            "{text}"
        );
        let (text, _) = answer(&request("parking", vec![item(3, "Empty", " \n ", 1.0)]));
        assert_eq!(text, NOTHING_FOUND);
    }

    #[test]
    fn long_answers_stop_at_max_tokens_and_long_sentences_are_cut() {
        let mut req = request("refund annual plan", handbook());
        req.max_tokens = Some(5);
        let (text, finish) = answer(&req);
        assert_eq!(finish, FinishReason::Length);
        assert_eq!(text.split_whitespace().count(), 5);
        let long = "word ".repeat(500);
        let s = sentences(&long);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].split_whitespace().count(), MAX_SENTENCE_WORDS + 1);
        assert!(s[0].ends_with(" …"));
        assert_eq!(sentences("v1.2 is out. Yes"), vec!["v1.2 is out.", "Yes"]);
    }
}
