//! Signing tokens, for tests, benchmarks and local development only. Production verifies
//! RS256 tokens from the issuer's JWKS and signs nothing.

use std::sync::Arc;
use std::time::Duration;

use platform::auth::{AuthConfig, Authenticator, KeySource, Role};

/// The HS256 secret test servers accept.
pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

/// An HS256 token for `tenant`/`subject` with `roles`, valid for `ttl_secs` (negative: expired).
pub use platform::auth::sign_hs256 as hs256_token;

/// A token signed with [`SECRET`], valid for an hour, subject `user-1`.
pub fn token(tenant: &str, roles: &[Role]) -> String {
    hs256_token(SECRET, tenant, "user-1", roles, 3600)
}

/// The authenticator test servers use: HS256 with [`SECRET`], no issuer or audience.
pub fn authenticator() -> Arc<Authenticator> {
    Authenticator::new(AuthConfig {
        keys: KeySource::Hs256 {
            secret: SECRET.to_vec(),
        },
        issuer: None,
        audience: None,
        leeway: 0,
        jwks_min_refresh: Duration::from_secs(10),
    })
}
