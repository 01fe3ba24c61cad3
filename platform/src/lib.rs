//! Platform code every Threadline binary shares, so each concern lives in one place:
//!
//! * [`config`]: reading settings from the environment, with clear errors.
//! * [`telemetry`]: structured logging (tracing).
//! * [`kafka`]: rdkafka client settings, producers, consumers, topic creation.
//! * [`db`]: the PostgreSQL pool.
//! * [`http`]: serving an axum app with graceful shutdown, health endpoints.
//! * [`testenv`]: fresh databases and topic prefixes for tests and benchmarks, against the
//!   stack `dev/stack` provides.

pub mod config;
pub mod db;
pub mod http;
pub mod kafka;
pub mod telemetry;
pub mod testenv;
