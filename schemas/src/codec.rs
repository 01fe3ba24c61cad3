//! Confluent wire format: `0x00`, the schema id as a big-endian `u32`, then the Avro
//! binary datum written with that schema. Decoding resolves the writer's schema (found by
//! id) against the latest schema of the event type, so old records stay readable.

use apache_avro::from_value;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use thiserror::Error;

use crate::events::{Contract, Event, EventType};
use crate::registry::{REGISTRY, SchemaId};

const MAGIC: u8 = 0;

/// The largest encoded event (wire-format header and Avro datum) the command side stores:
/// half of Kafka's default 1 MB record limit, leaving room for key and headers. Consumers
/// may rely on it.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;
const HEADER_LEN: usize = 5;

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("record is {0} bytes, shorter than the 5-byte wire-format header")]
    TooShort(usize),
    #[error("wire-format magic byte is {0}, expected 0")]
    BadMagic(u8),
    #[error("schema id {0} is not in the schema table")]
    UnknownSchemaId(SchemaId),
    #[error("schema id {id} is for {found}, expected {expected}")]
    WrongEventType {
        id: SchemaId,
        expected: EventType,
        found: EventType,
    },
    #[error("{event_type} does not fit its Avro schema: {message}")]
    Encode {
        event_type: EventType,
        message: String,
    },
    #[error("{event_type} datum (schema id {id}) is invalid: {message}")]
    Decode {
        id: SchemaId,
        event_type: EventType,
        message: String,
    },
}

/// Encodes one event with the latest schema of its type.
pub fn encode<T: Contract>(event: &T) -> Result<Vec<u8>, CodecError> {
    let parsed = REGISTRY.latest(T::EVENT_TYPE);
    let fail = |e: apache_avro::Error| CodecError::Encode {
        event_type: T::EVENT_TYPE,
        message: e.to_string(),
    };
    // Ids and timestamps use their human-readable serde forms (UUID strings).
    let datum = GenericDatumWriter::builder(&parsed.schema)
        .human_readable(true)
        .build()
        .and_then(|w| w.write_ser_to_vec(event))
        .map_err(fail)?;
    let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
    out.push(MAGIC);
    out.extend_from_slice(&parsed.row.id.0.to_be_bytes());
    out.extend_from_slice(&datum);
    Ok(out)
}

/// Reads the header and returns the schema id and the datum.
pub fn split(bytes: &[u8]) -> Result<(SchemaId, &[u8]), CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::TooShort(bytes.len()));
    }
    if bytes[0] != MAGIC {
        return Err(CodecError::BadMagic(bytes[0]));
    }
    let id = SchemaId(u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]));
    Ok((id, &bytes[HEADER_LEN..]))
}

/// The event type a record holds, from its schema id alone.
pub fn event_type_of(bytes: &[u8]) -> Result<EventType, CodecError> {
    let (id, _) = split(bytes)?;
    REGISTRY
        .get(id)
        .map(|p| p.row.event_type)
        .ok_or(CodecError::UnknownSchemaId(id))
}

/// Decodes one event of a known type.
pub fn decode<T: Contract>(bytes: &[u8]) -> Result<T, CodecError> {
    let (id, mut datum) = split(bytes)?;
    let writer = REGISTRY.get(id).ok_or(CodecError::UnknownSchemaId(id))?;
    if writer.row.event_type != T::EVENT_TYPE {
        return Err(CodecError::WrongEventType {
            id,
            expected: T::EVENT_TYPE,
            found: writer.row.event_type,
        });
    }
    let reader = REGISTRY.latest(T::EVENT_TYPE);
    let fail = |e: apache_avro::Error| CodecError::Decode {
        id,
        event_type: T::EVENT_TYPE,
        message: e.to_string(),
    };
    let value = GenericDatumReader::builder(&writer.schema)
        .reader_schema(&reader.schema)
        .human_readable(true)
        .build()
        .and_then(|r| r.read_value(&mut datum))
        .map_err(fail)?;
    if !datum.is_empty() {
        return Err(CodecError::Decode {
            id,
            event_type: T::EVENT_TYPE,
            message: format!("{} trailing bytes after the datum", datum.len()),
        });
    }
    from_value(&value).map_err(fail)
}

/// Counts what a serializer writes, keeping nothing.
struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Event {
    /// An upper bound of [`Event::encode`]'s length, from the length of the event's JSON
    /// text, without encoding it (a fifth of the cost). Avro never spends more than JSON
    /// on a value: no field names; a string's length prefix (at most 5 bytes) against two
    /// quotes and any escapes; an integer's zig-zag varint is no longer than its decimal
    /// digits; a float's 4 or 8 bytes against at least 3 characters (`0.0`) and its field
    /// name; a union's index byte against `null` or a field name. Twice the JSON plus the
    /// header and a byte for each field JSON leaves out is a wide margin;
    /// `every_event_encodes_within_its_size_bound` (tests/contract.rs) holds it.
    pub fn encoded_len_bound(&self) -> usize {
        let mut counted = Counted(0);
        match serde_json::to_writer(&mut counted, self) {
            Ok(()) => counted.0.saturating_mul(2).saturating_add(HEADER_LEN + 64),
            // Not serialisable as JSON: no bound, the caller encodes.
            Err(_) => usize::MAX,
        }
    }

    /// Encodes with the latest schema of the event's type.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        match self {
            Event::ConversationStarted(e) => encode(e),
            Event::MessageSent(e) => encode(e),
            Event::ConversationRenamed(e) => encode(e),
            Event::ConversationEnded(e) => encode(e),
            Event::DocumentGenerated(e) => encode(e),
            Event::KnowledgeDocumentAdded(e) => encode(e),
            Event::KnowledgeDocumentRemoved(e) => encode(e),
            Event::AssistantReplyFailed(e) => encode(e),
            Event::AssistantReplyRequested(e) => encode(e),
            Event::DocumentRequested(e) => encode(e),
            Event::DocumentGenerationFailed(e) => encode(e),
            Event::WebhookEndpointCreated(e) => encode(e),
            Event::WebhookEndpointUpdated(e) => encode(e),
            Event::WebhookSecretRotated(e) => encode(e),
            Event::WebhookEndpointDisabled(e) => encode(e),
            Event::WebhookEndpointEnabled(e) => encode(e),
            Event::WebhookEndpointDeleted(e) => encode(e),
            Event::WebhookMessageFailed(e) => encode(e),
            Event::WebhookRedeliveryRequested(e) => encode(e),
            Event::NotificationsRead(e) => encode(e),
            Event::SubjectErased(e) => encode(e),
        }
    }

    /// Decodes any event; the type comes from the schema id.
    pub fn decode(bytes: &[u8]) -> Result<Event, CodecError> {
        Ok(match event_type_of(bytes)? {
            EventType::ConversationStarted => Event::ConversationStarted(decode(bytes)?),
            EventType::MessageSent => Event::MessageSent(decode(bytes)?),
            EventType::ConversationRenamed => Event::ConversationRenamed(decode(bytes)?),
            EventType::ConversationEnded => Event::ConversationEnded(decode(bytes)?),
            EventType::DocumentGenerated => Event::DocumentGenerated(decode(bytes)?),
            EventType::KnowledgeDocumentAdded => Event::KnowledgeDocumentAdded(decode(bytes)?),
            EventType::KnowledgeDocumentRemoved => Event::KnowledgeDocumentRemoved(decode(bytes)?),
            EventType::AssistantReplyFailed => Event::AssistantReplyFailed(decode(bytes)?),
            EventType::AssistantReplyRequested => Event::AssistantReplyRequested(decode(bytes)?),
            EventType::DocumentRequested => Event::DocumentRequested(decode(bytes)?),
            EventType::DocumentGenerationFailed => Event::DocumentGenerationFailed(decode(bytes)?),
            EventType::WebhookEndpointCreated => Event::WebhookEndpointCreated(decode(bytes)?),
            EventType::WebhookEndpointUpdated => Event::WebhookEndpointUpdated(decode(bytes)?),
            EventType::WebhookSecretRotated => Event::WebhookSecretRotated(decode(bytes)?),
            EventType::WebhookEndpointDisabled => Event::WebhookEndpointDisabled(decode(bytes)?),
            EventType::WebhookEndpointEnabled => Event::WebhookEndpointEnabled(decode(bytes)?),
            EventType::WebhookEndpointDeleted => Event::WebhookEndpointDeleted(decode(bytes)?),
            EventType::WebhookMessageFailed => Event::WebhookMessageFailed(decode(bytes)?),
            EventType::WebhookRedeliveryRequested => {
                Event::WebhookRedeliveryRequested(decode(bytes)?)
            }
            EventType::NotificationsRead => Event::NotificationsRead(decode(bytes)?),
            EventType::SubjectErased => Event::SubjectErased(decode(bytes)?),
        })
    }
}
