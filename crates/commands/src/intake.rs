//! Reading an uploaded file into the text a knowledge document carries: checks the
//! declared media type against the bytes and extracts the text (UTF-8 as is, PDF through
//! `pdf-extract`). Pure CPU work; [`extract`] runs it off the async threads, bounded in
//! concurrency and time, and turns a panic of the PDF parser into a refusal.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use domain::knowledge::MEDIA_TYPES;
use thiserror::Error;
use tokio::sync::Semaphore;

/// The default largest upload: 10 MiB.
pub const DEFAULT_MAX_BYTES: usize = 10 * 1024 * 1024;

/// How long one extraction may take before the upload is refused.
const EXTRACT_TIMEOUT: Duration = Duration::from_secs(30);

/// Extractions running at once in this process: PDF parsing is CPU-bound and must not
/// take every core from the request handlers.
static EXTRACTIONS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(2));

/// Why an upload is refused. Nothing is stored for any of them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IntakeError {
    #[error(
        "media type {0:?} is not accepted; use one of text/plain, text/markdown, application/pdf"
    )]
    UnsupportedMediaType(String),
    #[error("the file is {bytes} bytes; at most {max} are accepted")]
    TooLarge { bytes: usize, max: usize },
    #[error("the file is empty")]
    Empty,
    #[error("the file is not {declared}: {reason}")]
    MediaTypeMismatch {
        declared: &'static str,
        reason: &'static str,
    },
    #[error("the PDF has no extractable text (a scan needs OCR first)")]
    PdfWithoutText,
    #[error("the PDF cannot be read: {0}")]
    Unreadable(String),
}

/// A media type the knowledge base takes, parsed from a `Content-Type` value:
/// `text/plain; charset=utf-8` is `text/plain`; another charset is not accepted (text is
/// stored as UTF-8 and not transcoded).
pub fn media_type(content_type: &str) -> Result<&'static str, IntakeError> {
    let unsupported =
        || IntakeError::UnsupportedMediaType(content_type.chars().take(100).collect());
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let known = MEDIA_TYPES
        .iter()
        .find(|m| **m == essence)
        .ok_or_else(unsupported)?;
    for param in parts {
        let (name, value) = param.split_once('=').ok_or_else(unsupported)?;
        if name.trim().eq_ignore_ascii_case("charset") {
            let value = value.trim().trim_matches('"');
            if !(value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("us-ascii")) {
                return Err(unsupported());
            }
        }
    }
    Ok(known)
}

/// The text of `bytes` read as `media_type` (one of [`MEDIA_TYPES`]), or why it is
/// refused. Off the async threads; at most a few at once; bounded in time.
pub async fn extract(
    media_type: &'static str,
    bytes: Arc<[u8]>,
    max_bytes: usize,
) -> Result<String, IntakeError> {
    if bytes.is_empty() {
        return Err(IntakeError::Empty);
    }
    if bytes.len() > max_bytes {
        return Err(IntakeError::TooLarge {
            bytes: bytes.len(),
            max: max_bytes,
        });
    }
    if media_type != "application/pdf" {
        return text(media_type, &bytes);
    }
    if !bytes.starts_with(b"%PDF-") {
        return Err(IntakeError::MediaTypeMismatch {
            declared: "application/pdf",
            reason: "it does not start with %PDF-",
        });
    }
    let _permit = EXTRACTIONS
        .acquire()
        .await
        .map_err(|_| IntakeError::Unreadable("extraction is shut down".into()))?;
    let work = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(&bytes))
    });
    let text = match tokio::time::timeout(EXTRACT_TIMEOUT, work).await {
        Err(_) => return Err(IntakeError::Unreadable("reading it took too long".into())),
        Ok(Err(joined)) => return Err(IntakeError::Unreadable(joined.to_string())),
        // The parser panicked on this file: a malformed PDF, refused like any other.
        Ok(Ok(Err(_panic))) => return Err(IntakeError::Unreadable("malformed".into())),
        Ok(Ok(Ok(Err(e)))) => return Err(IntakeError::Unreadable(e.to_string())),
        Ok(Ok(Ok(Ok(text)))) => text,
    };
    let text = tidy(&text);
    if text.is_empty() {
        return Err(IntakeError::PdfWithoutText);
    }
    Ok(text)
}

/// A text upload: UTF-8 (a byte-order mark dropped), not binary, not a PDF.
fn text(declared: &'static str, bytes: &[u8]) -> Result<String, IntakeError> {
    let mismatch = |reason| IntakeError::MediaTypeMismatch { declared, reason };
    if bytes.starts_with(b"%PDF-") {
        return Err(mismatch("it is a PDF (send it as application/pdf)"));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|_| mismatch("it is not UTF-8 text"))?;
    if text.contains('\u{0}') {
        return Err(mismatch("it contains NUL bytes (binary data)"));
    }
    if text.trim().is_empty() {
        return Err(IntakeError::Empty);
    }
    Ok(text.to_owned())
}

/// Extracted PDF text with its layout noise removed: trailing spaces, runs of blank
/// lines, NUL and other control characters the parser may emit.
fn tidy(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut blank_run = 0;
    for line in raw.lines() {
        let line: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank_run += 1;
            if blank_run > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_parsed_to_the_accepted_media_types() {
        assert_eq!(media_type("text/plain"), Ok("text/plain"));
        assert_eq!(
            media_type("Text/Markdown; charset=UTF-8"),
            Ok("text/markdown")
        );
        assert_eq!(media_type("application/pdf"), Ok("application/pdf"));
        for refused in [
            "",
            "image/png",
            "text/html",
            "text/plain; charset=latin1",
            "text/plain; garbage",
            "application/pdfx",
        ] {
            assert!(
                matches!(
                    media_type(refused),
                    Err(IntakeError::UnsupportedMediaType(_))
                ),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn text_must_be_utf8_without_nul_and_not_a_pdf() {
        assert_eq!(
            text("text/plain", "\u{feff}héllo".as_bytes()),
            Ok("héllo".into())
        );
        for (bytes, want) in [
            (&b"\xff\xfe\x00"[..], "it is not UTF-8 text"),
            (&b"a\0b"[..], "it contains NUL bytes (binary data)"),
            (
                &b"%PDF-1.4 ..."[..],
                "it is a PDF (send it as application/pdf)",
            ),
        ] {
            assert_eq!(
                text("text/plain", bytes),
                Err(IntakeError::MediaTypeMismatch {
                    declared: "text/plain",
                    reason: want
                })
            );
        }
        assert_eq!(text("text/markdown", b" \n\t "), Err(IntakeError::Empty));
    }

    #[test]
    fn extracted_text_loses_its_layout_noise() {
        assert_eq!(
            tidy("\n\n  Title  \n\n\n\nBody\u{0}\x0c line \n\n"),
            "  Title\n\nBody line"
        );
        assert_eq!(tidy(" \n \n"), "");
    }
}
