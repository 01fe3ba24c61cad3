//! Authentication and authorisation, shared by command-api and query-api.
//!
//! Bearer JWTs: HS256 with a shared secret for development (`JWT_HS256_SECRET`), or RS256
//! with keys from a JWKS URL for production (`JWT_JWKS_URL`, refreshed when a token names
//! an unknown `kid`). `exp` is required, `nbf` is checked, `iss`/`aud` are required when
//! configured. The tenant comes from the token only (claim `tenant_id`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::RwLock;

use crate::config::{self, ConfigError};
use crate::problem::Problem;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A person using an app: starts conversations, sends user messages, generates documents.
    Member,
    /// Everything a member can, plus assistant/system messages and administration.
    Admin,
    /// Reads event streams and read models; sends no commands.
    Auditor,
    /// Another system (the assistant backend): sends assistant and system messages.
    Service,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub tenant_id: String,
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }

    /// `Ok` when the caller has one of `roles`, else a 403 problem.
    pub fn require_any(&self, roles: &[Role]) -> Result<(), Problem> {
        if self.has_any(roles) {
            Ok(())
        } else {
            Err(
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                    .detail(format!("requires one of the roles {roles:?}")),
            )
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    tenant_id: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token's signing key is unknown")]
    UnknownKey,
    #[error("the key set could not be fetched: {0}")]
    KeysUnavailable(String),
}

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        let (status, code) = match e {
            AuthError::Missing => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            AuthError::Expired => (StatusCode::UNAUTHORIZED, "token_expired"),
            AuthError::Invalid(_) | AuthError::UnknownKey => {
                (StatusCode::UNAUTHORIZED, "invalid_token")
            }
            AuthError::KeysUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable"),
        };
        Problem::new(status, code, "Authentication failed").detail(e.to_string())
    }
}

#[derive(Debug, Clone)]
pub enum KeySource {
    Hs256 { secret: Vec<u8> },
    Jwks { url: String },
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub keys: KeySource,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds (`JWT_LEEWAY_SECS`, default 30).
    pub leeway: u64,
    /// A token naming an unknown `kid` refetches the JWKS at most this often
    /// (`JWT_JWKS_MIN_REFRESH_SECS`, default 10), so bad tokens cannot flood the issuer.
    pub jwks_min_refresh: Duration,
}

impl AuthConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let keys = match (config::var("JWT_JWKS_URL"), config::var("JWT_HS256_SECRET")) {
            (Some(url), None) => KeySource::Jwks { url },
            (None, Some(secret)) if secret.len() >= 32 => KeySource::Hs256 {
                secret: secret.into_bytes(),
            },
            (None, Some(secret)) => {
                return Err(ConfigError::Invalid {
                    name: "JWT_HS256_SECRET",
                    value: "<redacted>".into(),
                    reason: format!("{} bytes; at least 32 required", secret.len()),
                });
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    name: "JWT_JWKS_URL",
                    value: "<set>".into(),
                    reason: "set either JWT_JWKS_URL (RS256) or JWT_HS256_SECRET, not both".into(),
                });
            }
            (None, None) => {
                return Err(ConfigError::Missing {
                    name: "JWT_HS256_SECRET or JWT_JWKS_URL",
                });
            }
        };
        Ok(Self {
            keys,
            issuer: config::var("JWT_ISSUER"),
            audience: config::var("JWT_AUDIENCE"),
            leeway: config::parse_or("JWT_LEEWAY_SECS", 30)?,
            jwks_min_refresh: Duration::from_secs(config::parse_or(
                "JWT_JWKS_MIN_REFRESH_SECS",
                10,
            )?),
        })
    }
}

struct Jwks {
    set: JwkSet,
    fetched: Option<Instant>,
}

/// Verifies bearer tokens. Cheap to share (`Arc`).
pub struct Authenticator {
    config: AuthConfig,
    validation: Validation,
    jwks: RwLock<Jwks>,
    http: reqwest::Client,
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Arc<Self> {
        let algorithm = match config.keys {
            KeySource::Hs256 { .. } => Algorithm::HS256,
            KeySource::Jwks { .. } => Algorithm::RS256,
        };
        // Exactly one algorithm is accepted: no `none`, no HS/RS confusion.
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Arc::new(Self {
            config,
            validation,
            jwks: RwLock::new(Jwks {
                set: JwkSet { keys: Vec::new() },
                fetched: None,
            }),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        })
    }

    /// Verifies an `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let key = match &self.config.keys {
            KeySource::Hs256 { secret } => DecodingKey::from_secret(secret),
            KeySource::Jwks { url } => self.jwks_key(url, token).await?,
        };
        let data = decode::<Claims>(token, &key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            other => AuthError::Invalid(format!("{other:?}")),
        })?;
        let claims = data.claims;
        // Both end up in every event's metadata: refuse what could not be stored.
        let usable =
            |s: &str| !s.trim().is_empty() && s.len() <= 256 && !s.chars().any(char::is_control);
        if !usable(&claims.tenant_id) || !usable(&claims.sub) {
            return Err(AuthError::Invalid(
                "sub and tenant_id must be 1-256 printable characters".into(),
            ));
        }
        let roles = claims
            .roles
            .iter()
            .filter_map(|r| serde_json::from_value(serde_json::Value::String(r.clone())).ok())
            .collect();
        Ok(Principal {
            subject: claims.sub,
            tenant_id: claims.tenant_id,
            roles,
        })
    }

    async fn jwks_key(&self, url: &str, token: &str) -> Result<DecodingKey, AuthError> {
        let header =
            decode_header(token).map_err(|e| AuthError::Invalid(format!("{:?}", e.kind())))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Invalid("no kid in header".into()))?;
        if let Some(key) = self.find_key(&kid).await {
            return key;
        }
        {
            let mut jwks = self.jwks.write().await;
            let stale = jwks
                .fetched
                .is_none_or(|t| t.elapsed() >= self.config.jwks_min_refresh);
            if stale && jwks.set.find(&kid).is_none() {
                let set = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| AuthError::KeysUnavailable(e.to_string()))?
                    .json::<JwkSet>()
                    .await
                    .map_err(|e| AuthError::KeysUnavailable(e.to_string()))?;
                *jwks = Jwks {
                    set,
                    fetched: Some(Instant::now()),
                };
            }
        }
        self.find_key(&kid)
            .await
            .unwrap_or(Err(AuthError::UnknownKey))
    }

    async fn find_key(&self, kid: &str) -> Option<Result<DecodingKey, AuthError>> {
        let jwks = self.jwks.read().await;
        jwks.set.find(kid).map(|jwk| {
            DecodingKey::from_jwk(jwk)
                .map_err(|e| AuthError::Invalid(format!("bad key: {:?}", e.kind())))
        })
    }
}

impl<S> FromRequestParts<S> for Principal
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Authenticator>::from_ref(state);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        auth.authenticate(header).await.map_err(Problem::from)
    }
}
