//! Cutting a text into overlapping windows of tokens, each small enough for the model:
//! what the embeddings projection indexes, one point per window.

use std::ops::Range;

/// Window size and overlap, in tokens of the model's tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    size: usize,
    overlap: usize,
}

/// Why a chunk configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "chunks of {size} tokens overlapping by {overlap} are invalid: the size must be 1 to {max} and the overlap smaller than the size"
)]
pub struct BadChunkConfig {
    pub size: usize,
    pub overlap: usize,
    pub max: usize,
}

/// How long texts are cut (embeddings-projector reads it; changing it needs a rebuild).
#[derive(Debug, Clone, Copy, clap::Args)]
#[command(next_help_heading = "Embeddings")]
pub struct ChunkSettings {
    /// A text longer than this many tokens is indexed as overlapping windows of it
    /// (default 200, or the model's limit if smaller).
    #[arg(long = "embedding-chunk-tokens", env = "EMBEDDING_CHUNK_TOKENS")]
    pub tokens: Option<usize>,
    /// Tokens consecutive windows share (default 40, or half a window if smaller).
    #[arg(long = "embedding-chunk-overlap", env = "EMBEDDING_CHUNK_OVERLAP")]
    pub overlap: Option<usize>,
}

impl ChunkSettings {
    /// The windows for a model that takes at most `max` tokens.
    pub fn config(self, max: usize) -> Result<ChunkConfig, common::config::ConfigError> {
        let size = self.tokens.unwrap_or(200usize.min(max));
        let overlap = self.overlap.unwrap_or(40usize.min(size / 2));
        ChunkConfig::new(size, overlap, max).map_err(|e| {
            common::config::ConfigError::invalid("EMBEDDING_CHUNK_TOKENS", size.to_string(), e)
        })
    }
}

impl ChunkConfig {
    /// Windows of `size` tokens, each starting `size - overlap` tokens after the last;
    /// `size` at most `max` (the model's limit).
    pub fn new(size: usize, overlap: usize, max: usize) -> Result<Self, BadChunkConfig> {
        if size == 0 || size > max || overlap >= size {
            return Err(BadChunkConfig { size, overlap, max });
        }
        Ok(ChunkConfig { size, overlap })
    }

    pub fn from_env(max: usize) -> Result<Self, common::config::ConfigError> {
        common::config::from_env::<ChunkSettings>()?.config(max)
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn overlap(&self) -> usize {
        self.overlap
    }
}

/// One window of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// 0, 1, 2, ... in the order of the text.
    pub index: usize,
    /// Where it is in the text, in bytes.
    pub bytes: Range<usize>,
    pub text: String,
}

/// The windows of `text` whose token byte ranges are `spans` (ascending, inside `text`):
/// none for a text without tokens, one for a text that fits, else overlapping windows of
/// `config.size` tokens, the last one ending with the text.
pub fn chunks(text: &str, spans: &[Range<usize>], config: ChunkConfig) -> Vec<Chunk> {
    let mut out = Vec::new();
    let step = config.size - config.overlap;
    let mut first = 0;
    while first < spans.len() {
        let last = (first + config.size).min(spans.len()) - 1;
        let bytes = spans[first].start..spans[last].end;
        if let Some(piece) = text.get(bytes.clone()) {
            out.push(Chunk {
                index: out.len(),
                bytes,
                text: piece.to_owned(),
            });
        }
        if last + 1 == spans.len() {
            break;
        }
        first += step;
    }
    out
}

/// Approximate token spans for a provider whose tokenizer is not available here (an
/// OpenAI-compatible server): a punctuation mark is a token, a word is one token per
/// four characters. Close to what BPE tokenizers count for English prose; windows sized
/// with it stay far below such models' limits (thousands of tokens).
pub fn approximate_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut word: Option<(usize, usize)> = None; // start, characters so far
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() {
            match &mut word {
                Some((_, n)) if *n < 4 => *n += 1,
                Some((start, _)) => {
                    spans.push(*start..i);
                    word = Some((i, 1));
                }
                None => word = Some((i, 1)),
            }
            continue;
        }
        if let Some((start, _)) = word.take() {
            spans.push(start..i);
        }
        if !c.is_whitespace() {
            spans.push(i..i + c.len_utf8());
        }
    }
    if let Some((start, _)) = word {
        spans.push(start..text.len());
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Range<usize>> {
        let mut spans = Vec::new();
        let mut at = 0;
        for w in text.split(' ') {
            spans.push(at..at + w.len());
            at += w.len() + 1;
        }
        spans
    }

    #[test]
    fn windows_overlap_and_the_last_ends_with_the_text() {
        let text = "a b c d e f g";
        let got: Vec<String> = chunks(text, &words(text), ChunkConfig::new(3, 1, 10).unwrap())
            .into_iter()
            .map(|c| c.text)
            .collect();
        assert_eq!(got, ["a b c", "c d e", "e f g"]);
        let text = "a b c d";
        let got: Vec<_> = chunks(text, &words(text), ChunkConfig::new(3, 1, 10).unwrap())
            .into_iter()
            .map(|c| (c.index, c.text))
            .collect();
        assert_eq!(got, [(0, "a b c".into()), (1, "c d".into())]);
    }

    #[test]
    fn a_short_text_is_one_chunk_and_an_empty_one_none() {
        let cfg = ChunkConfig::new(200, 40, 256).unwrap();
        assert_eq!(chunks("hi there", &words("hi there"), cfg).len(), 1);
        assert!(chunks("", &[], cfg).is_empty());
    }

    #[test]
    fn configurations_that_cannot_progress_or_do_not_fit_are_refused() {
        assert!(ChunkConfig::new(0, 0, 256).is_err());
        assert!(ChunkConfig::new(10, 10, 256).is_err());
        assert!(ChunkConfig::new(300, 10, 256).is_err());
    }

    #[test]
    fn approximate_tokens_are_short_word_pieces_and_punctuation() {
        let text = "Launch, internationalisation é!";
        let pieces: Vec<&str> = approximate_spans(text)
            .into_iter()
            .map(|r| &text[r])
            .collect();
        assert_eq!(
            pieces,
            [
                "Laun", "ch", ",", "inte", "rnat", "iona", "lisa", "tion", "é", "!"
            ]
        );
    }
}
