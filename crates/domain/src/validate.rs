//! Input limits shared by the aggregates. Lengths are in characters.

use super::DomainError;

pub const TITLE_MAX: usize = 200;
pub const CONTENT_MAX: usize = 32_768;
pub const REASON_MAX: usize = 1_000;
pub const MODEL_MAX: usize = 200;
pub const METADATA_MAX_ENTRIES: usize = 32;
pub const METADATA_KEY_MAX: usize = 64;
pub const METADATA_VALUE_MAX: usize = 1_024;

fn invalid(field: &'static str, reason: impl Into<String>) -> DomainError {
    DomainError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Non-blank text of at most `max` characters, without control characters other than
/// line breaks and tabs (when `multiline`). Returns the text trimmed.
pub fn text(
    field: &'static str,
    value: &str,
    max: usize,
    multiline: bool,
) -> Result<String, DomainError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    let len = trimmed.chars().count();
    if len > max {
        return Err(invalid(
            field,
            format!("is {len} characters, at most {max} allowed"),
        ));
    }
    let allowed = |c: char| !c.is_control() || (multiline && matches!(c, '\n' | '\r' | '\t'));
    if !trimmed.chars().all(allowed) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(trimmed.to_owned())
}

pub fn optional_text(
    field: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, DomainError> {
    value.map(|v| text(field, v, max, true)).transpose()
}

pub fn tokens(field: &'static str, value: Option<i32>) -> Result<Option<i32>, DomainError> {
    match value {
        Some(n) if n < 0 => Err(invalid(field, "must not be negative")),
        other => Ok(other),
    }
}

pub fn metadata(
    map: &std::collections::BTreeMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>, DomainError> {
    if map.len() > METADATA_MAX_ENTRIES {
        return Err(invalid(
            "metadata",
            format!("at most {METADATA_MAX_ENTRIES} entries"),
        ));
    }
    map.iter()
        .map(|(k, v)| {
            let key = text("metadata", k, METADATA_KEY_MAX, false)?;
            if v.chars().count() > METADATA_VALUE_MAX {
                return Err(invalid(
                    "metadata",
                    format!("value of {key} exceeds {METADATA_VALUE_MAX} characters"),
                ));
            }
            if v.chars().any(char::is_control) {
                return Err(invalid(
                    "metadata",
                    format!("value of {key} contains control characters"),
                ));
            }
            Ok((key, v.clone()))
        })
        .collect()
}

pub const SOURCES_MAX: usize = 20;

/// The sources of an assistant reply: a few, of known kinds, with scores of cosines.
pub fn sources(
    sources: Vec<schemas::MessageSource>,
) -> Result<Vec<schemas::MessageSource>, DomainError> {
    if sources.len() > SOURCES_MAX {
        return Err(invalid("sources", format!("at most {SOURCES_MAX}")));
    }
    for source in &sources {
        if !matches!(source.kind.as_str(), "message" | "document" | "knowledge") {
            return Err(invalid(
                "sources",
                "kind must be message, document or knowledge",
            ));
        }
        if !(source.score.is_finite() && (-1.0..=1.0).contains(&source.score)) {
            return Err(invalid("sources", "score must be from -1 to 1"));
        }
        text("sources", &source.title, TITLE_MAX, true)?;
    }
    Ok(sources)
}
