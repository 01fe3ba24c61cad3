//! Platform code every Threadline binary shares, so each concern lives in one place:
//!
//! * [`backoff`]: exponential backoff with random jitter, for every retry loop.
//! * [`auth`]: JWT authentication (HS256 or RS256/JWKS), roles, the `Principal` extractor.
//! * [`problem`]: problem+json errors and a JSON extractor that rejects with them.
//! * [`context`]: correlation, causation and W3C trace context of each request (middleware).
//! * [`config`]: reading settings from the environment, with clear errors.
//! * [`telemetry`]: structured logging (tracing), OTLP traces, the Prometheus recorder.
//! * [`db`]: the PostgreSQL pool.
//! * [`edge`]: rate limits per caller, CORS, security headers, what operational routes show.
//! * [`http`]: serving an axum app with graceful shutdown, health endpoints.
//! * [`shutdown`]: stop signals, and a stop that always ends within a grace period.
//! * The process's allocator (mimalloc), for every binary that links this crate.
//!
//! Kafka client setup is in the `kafka` crate, so services without Kafka do not link
//! librdkafka; test fixtures are in `testkit`, a dev-dependency only.

/// Every process that links the platform (the services, their tests and benchmarks)
/// allocates through mimalloc: glibc's malloc and free were 31% of a command's
/// instructions (callgrind, docs/benchmarks.md), the largest single cost of the HTTP path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod auth;
/// Re-exported from `common`, the leaf that crates needing only these depend on.
pub use common::{backoff, config};
pub mod context;
pub mod db;
pub mod edge;
pub mod http;
pub mod problem;
pub mod shutdown;
pub mod telemetry;
pub mod whole_number;

/// The settings both APIs read: the database, how tokens are verified, the edge's limits,
/// HTTP timeouts, stopping, and logs and traces.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiSettings {
    #[command(flatten)]
    pub database: db::DbConfig,
    #[command(flatten)]
    pub auth: auth::AuthSettings,
    #[command(flatten)]
    pub edge: edge::EdgeConfig,
    #[command(flatten)]
    pub http: http::HttpTimeouts,
    #[command(flatten)]
    pub shutdown: shutdown::Shutdown,
    #[command(flatten)]
    pub telemetry: telemetry::TelemetrySettings,
}
