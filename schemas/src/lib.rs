//! The event contract that external systems subscribe to. Does no I/O and links no
//! Kafka or database client.
//!
//! * [`events`]: one Rust type per event, matching one Avro schema file under `schemas/avro/`.
//! * [`registry`]: the schema-id table (every schema version ever published, with a stable id).
//! * [`codec`]: Confluent wire format (magic byte 0, big-endian schema id, Avro datum).
//! * [`topics`]: topic names per aggregate type.
//! * [`headers`]: the Kafka header names of a published event, and their typed form.
//! * [`positions`]: `CommitPosition`, `Version`, `VersionToken` and their text forms.
//! * [`published`]: the contract as data (schema-id table, AsyncAPI), for other languages.
//!
//! Schema files are append-only: a new version is a new file (`vN.avsc`) and a new row
//! in the registry; the latest version of each event must read every older one.

pub mod codec;
pub mod events;
pub mod headers;
pub mod personal;
pub mod positions;
pub mod published;
pub mod registry;
pub mod subjects;
pub mod topics;

pub use codec::{CodecError, MAX_EVENT_BYTES, decode, encode};
pub use events::*;
pub use headers::EventHeaders;
pub use positions::{CommitPosition, Version, VersionToken};
pub use registry::{SchemaId, SchemaVersion};
pub use subjects::Subject;
pub use topics::AggregateKind;
