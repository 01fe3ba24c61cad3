//! What every crate shares and nothing more: settings read from the environment
//! ([`config`]: a variable, required or with a default, errors naming it) and the one
//! retry delay ([`backoff`]: exponential, with random jitter).
//!
//! Architecture invariant: a leaf. A crate that needs only these depends on this, not on
//! `platform` and its HTTP, auth and telemetry stack (`crates/testkit/tests/arrows.rs`).

pub mod backoff;
pub mod config;
pub mod unavailable;
