//! Test kit, a dev-dependency only: nothing here ships in a service.
//!
//! * [`env`]: a fresh database and a topic prefix per test, on the stack `dev/stack test`
//!   provides (a missing `DATABASE_URL`/`KAFKA_BROKERS` fails the test; it never skips).
//! * [`stack`]: the command service, relay and projectors of one test, without HTTP.
//! * [`commands`]: writing events through the command service.
//! * [`projection`]: given commands, then the rows or effects a projection should show.
//! * [`receiver`]: a real HTTP server standing in for a third-party endpoint.
//! * [`embeddings_server`]: a real HTTP server standing in for an OpenAI-compatible
//!   embeddings provider, with scripted outages.
//! * [`chat_server`]: a real HTTP server standing in for an OpenAI-compatible chat
//!   provider, counting calls (and those in flight at once) and keeping the prompts,
//!   with a model's latency, outages, 429s and streamed answers scripted.
//! * [`semantic`]: the points the semantic index must hold, counted from the event store.
//! * [`tokens`]: HS256 tokens and the authenticator test servers use.
//! * [`fuzz`]: the seeded input generator of the fuzz tests.
//! * [`net`]: free local addresses, never the same one twice in a test process.
//! * [`procs`]: what `/proc` says of a process and its children.
//! * [`files`]: uploadable files built byte by byte (PDFs with and without text, and
//!   hostile ones).
//!

pub mod chat_server;
pub mod commands;
pub mod embeddings_server;
pub mod env;
pub mod files;
pub mod fuzz;
pub mod latency;
pub mod net;
pub mod procs;
pub mod projection;
pub mod receiver;
pub mod semantic;
pub mod smtp;
pub mod stack;
pub mod tokens;
pub mod webhooks;
pub mod workspace;

pub use stack::{RunningProjector, RunningRelay, Stack, serve, serve_with, wait_until};
