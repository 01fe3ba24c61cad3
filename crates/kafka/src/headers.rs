//! The contract's event headers ([`schemas::headers`]) on rdkafka records.

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use schemas::EventHeaders;
use schemas::headers::BadHeader;

/// The rdkafka headers of a published event.
pub fn to_owned_headers(headers: &EventHeaders) -> OwnedHeaders {
    let pairs = headers.to_pairs();
    let mut out = OwnedHeaders::new_with_capacity(pairs.len());
    for (key, value) in &pairs {
        out = out.insert(Header {
            key,
            value: Some(value.as_str()),
        });
    }
    out
}

/// A header's value as text, if present and UTF-8.
pub fn header<'a, M: Message>(msg: &'a M, name: &str) -> Option<&'a str> {
    msg.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Every contract header of a record.
pub fn read<M: Message>(msg: &M) -> Result<EventHeaders, BadHeader> {
    EventHeaders::read(|name| header(msg, name))
}

/// The record's headers with `extra` appended (a dead-letter copy keeps the original
/// headers and says why it was parked).
pub fn with_extra<M: Message>(msg: &M, extra: &[(&str, &str)]) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(original) = msg.headers() {
        for h in original.iter() {
            out = out.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    for (key, value) in extra {
        out = out.insert(Header {
            key,
            value: Some(*value),
        });
    }
    out
}
