//! Document generators: what writes a document's text from a conversation's transcript.
//! The command service calls one before the Document aggregate decides.

use domain::document::template;
use domain::{GeneratedDocument, Transcript};
use schemas::DocumentKind;

/// Produces a document from a transcript. Implementations must be safe to call again on
/// a retry (the command may be re-run after a storage conflict). An LLM-backed generator
/// implements this.
#[async_trait::async_trait]
pub trait DocumentGenerator: Send + Sync {
    async fn generate(
        &self,
        kind: DocumentKind,
        transcript: &Transcript,
    ) -> Result<GeneratedDocument, String>;
}

/// The deterministic generator ([`domain::document::template`]): no network, same
/// transcript, same document.
pub struct TemplateGenerator;

#[async_trait::async_trait]
impl DocumentGenerator for TemplateGenerator {
    async fn generate(
        &self,
        kind: DocumentKind,
        transcript: &Transcript,
    ) -> Result<GeneratedDocument, String> {
        Ok(template(kind, transcript))
    }
}
