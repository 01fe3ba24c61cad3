//! Signing tokens, for tests, benchmarks and local development only. Production verifies
//! RS256 tokens from the issuer's JWKS and signs nothing.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header, encode};
use platform::auth::{AuthConfig, Authenticator, KeySource, Role};
use serde_json::json;

/// The HS256 secret test servers accept.
pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

/// An HS256 token for `tenant`/`subject` with `roles`, valid for `ttl_secs` (negative: expired).
pub fn hs256_token(
    secret: &[u8],
    tenant: &str,
    subject: &str,
    roles: &[Role],
    ttl_secs: i64,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let claims = json!({
        "sub": subject,
        "tenant_id": tenant,
        "roles": roles,
        "iat": now,
        "exp": now + ttl_secs,
    });
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap_or_default()
}

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
