//! The command side's REST API: one small handler per command over the command service
//! (`commands` crate), the relay's status, OpenAPI. `main.rs` also runs the outbox relay
//! (`relay` crate) in this process. See docs/ARCHITECTURE.md.

pub mod http;
