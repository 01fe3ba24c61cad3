//! Reading an uploaded file into the text a knowledge document carries: checks the
//! declared media type against the bytes and extracts the text: UTF-8 as is, PDF through
//! the `extractor` program in a child process under operating-system limits
//! ([`extractor`]). No parser of uploaded files runs in this process.

mod extractor;

use std::sync::Arc;

use domain::knowledge::MEDIA_TYPES;
use thiserror::Error;

pub use extractor::{Extractor, ExtractorArgs, ExtractorSettings};

/// The default largest upload: 10 MiB.
pub const DEFAULT_MAX_BYTES: usize = 10 * 1024 * 1024;

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
    /// The parser refused the file (what it said is logged, not shown to the uploader).
    #[error("the PDF is malformed and cannot be read")]
    Unreadable,
    /// The file needs more than the extractor's limits allow.
    #[error("the PDF is too complex to read: {0}")]
    TooComplex(&'static str),
    /// The extractor could not be run: this server's fault, not the file's.
    #[error("the text extractor cannot run: {0}")]
    ExtractorUnavailable(String),
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
/// refused. A PDF is read by `extractor`, bounded as its settings say.
pub async fn extract(
    extractor: &Extractor,
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
    let text = extractor.pdf(bytes).await?;
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
