//! The read side's REST API: read models (with read-your-writes), and audit endpoints
//! that replay event streams from the event store. See docs/ARCHITECTURE.md.

pub mod audit;
pub mod http;
pub mod reads;
pub mod testing;
