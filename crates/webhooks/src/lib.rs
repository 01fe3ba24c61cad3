//! Building blocks of webhook delivery (issue 13): [`signature`] (Standard Webhooks:
//! `whsec_` secrets, `v1,` HMAC-SHA256 signatures over `id.timestamp.body`, several at
//! once during a rotation) and [`ssrf`] (which endpoint addresses may be called at all,
//! checked at registration and again, resolved, at every delivery), and [`sealed`]
//! (secrets at rest, encrypted with a key from the environment).
//!
//! No I/O but DNS resolution in [`ssrf::Guard::resolve`].

pub mod sealed;
pub mod signature;
pub mod ssrf;
