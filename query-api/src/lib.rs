//! The read side's REST API: read models (with read-your-writes) through the queries of
//! each projection's crate, and audit endpoints that replay event streams from the event
//! store. Links no Kafka client. See docs/ARCHITECTURE.md.

pub mod audit;
pub mod http;
