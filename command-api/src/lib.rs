//! The command side: aggregates, the PostgreSQL event store, REST commands and the
//! outbox relay to Kafka. See docs/ARCHITECTURE.md.

pub mod domain;
pub mod http;
pub mod relay;
pub mod service;
pub mod store;
pub mod testing;
