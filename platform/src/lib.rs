//! Platform code every Threadline binary shares, so each concern lives in one place:
//!
//! * [`auth`]: JWT authentication (HS256 or RS256/JWKS), roles, the `Principal` extractor.
//! * [`problem`]: problem+json errors and a JSON extractor that rejects with them.
//! * [`context`]: correlation, causation and W3C trace context of each request (middleware).
//! * [`config`]: reading settings from the environment, with clear errors.
//! * [`telemetry`]: structured logging (tracing) and the Prometheus metrics recorder.
//! * [`kafka`]: rdkafka client settings, producers, consumers, topic creation.
//! * [`db`]: the PostgreSQL pool.
//! * [`http`]: serving an axum app with graceful shutdown, health endpoints.
//! * [`testenv`]: fresh databases and topic prefixes for tests and benchmarks, against the
//!   stack `dev/stack` provides.

pub mod auth;
pub mod config;
pub mod context;
pub mod db;
pub mod http;
pub mod kafka;
pub mod problem;
pub mod telemetry;
pub mod testenv;
