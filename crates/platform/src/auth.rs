//! Authentication and authorisation, shared by command-api and query-api.
//!
//! Bearer JWTs: HS256 with a shared secret for development (`JWT_HS256_SECRET`), or RS256
//! with keys from a JWKS URL for production (`JWT_JWKS_URL`, refreshed when a token names
//! an unknown `kid`). `exp` is required, `nbf` is checked, `iss`/`aud` are required when
//! configured. The tenant comes from the token only (claim `tenant_id`).

use access::{Reach, Scope};
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

/// Longest a JWKS fetch may take (connect and answer).
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(3);

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

    /// How much of the tenant the caller reaches: the whole of it for admins, auditors and
    /// services; what a member sees (`access::MEMBER_SEES`) for the rest.
    pub fn reach(&self) -> Reach {
        if self.has_any(&[Role::Admin, Role::Auditor, Role::Service]) {
            Reach::Tenant
        } else {
            Reach::Own
        }
    }

    /// What the caller sees: every read and command filters by it.
    pub fn scope(&self) -> Scope<'_> {
        Scope::new(&self.tenant_id, &self.subject, self.reach())
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

/// An HS256 token for `tenant`/`subject` with `roles`, valid for `ttl_secs` from now
/// (negative: already expired), signed with `secret`: what a development stack
/// (`JWT_HS256_SECRET`), the tests and the benchmarks sign with. Production verifies
/// RS256 tokens of its issuer and signs nothing.
pub fn sign_hs256(
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
    let claims = serde_json::json!({
        "sub": subject,
        "tenant_id": tenant,
        "roles": roles,
        "iat": now,
        "exp": now + ttl_secs,
    });
    // Signing a JSON object with an HMAC key cannot fail.
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap_or_default()
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
    /// Why, in a fixed phrase: never parser internals.
    #[error("the token is not valid: {0}")]
    Invalid(&'static str),
    #[error("the token's signing key is unknown")]
    UnknownKey,
    /// The key set could not be fetched (the reason is logged, not shown: it names an
    /// internal service).
    #[error("the signing keys cannot be fetched right now; retry later")]
    KeysUnavailable,
}

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        let (status, code) = match e {
            AuthError::Missing => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            AuthError::Expired => (StatusCode::UNAUTHORIZED, "token_expired"),
            AuthError::Invalid(_) | AuthError::UnknownKey => {
                (StatusCode::UNAUTHORIZED, "invalid_token")
            }
            AuthError::KeysUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable"),
        };
        let problem = Problem::new(status, code, "Authentication failed").detail(e.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            problem.retry_after(5)
        } else {
            problem
        }
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

/// How tokens are verified: the settings both APIs read.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Tokens (both APIs)")]
pub struct AuthSettings {
    /// HS256 secret, 32 bytes or more (development; `dev/stack` sets one for local use).
    /// Set this or `JWT_JWKS_URL`, not both.
    #[arg(
        long = "jwt-hs256-secret",
        env = "JWT_HS256_SECRET",
        hide_env_values = true
    )]
    pub hs256_secret: Option<String>,
    /// Where the RS256 keys are published (production).
    #[arg(long = "jwt-jwks-url", env = "JWT_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// The `iss` every token must carry, when set.
    #[arg(long = "jwt-issuer", env = "JWT_ISSUER")]
    pub issuer: Option<String>,
    /// The `aud` every token must carry, when set.
    #[arg(long = "jwt-audience", env = "JWT_AUDIENCE")]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(
        long = "jwt-leeway-secs",
        env = "JWT_LEEWAY_SECS",
        default_value_t = 30
    )]
    pub leeway: u64,
    /// How often a token naming an unknown `kid` may refetch the key set, in seconds.
    #[arg(long = "jwt-jwks-min-refresh-secs", env = "JWT_JWKS_MIN_REFRESH_SECS", default_value = "10", value_parser = config::secs)]
    pub jwks_min_refresh: Duration,
}

impl TryFrom<AuthSettings> for AuthConfig {
    type Error = ConfigError;

    fn try_from(settings: AuthSettings) -> Result<Self, ConfigError> {
        let keys = match (settings.jwks_url, settings.hs256_secret) {
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
            issuer: settings.issuer,
            audience: settings.audience,
            leeway: settings.leeway,
            jwks_min_refresh: settings.jwks_min_refresh,
        })
    }
}

/// Verifies bearer tokens. Cheap to share (`Arc`).
///
/// Keys known are looked up under a read lock that a refresh takes only to swap the set
/// in, never while fetching: a slow or failing key server does not hold up callers whose
/// key is known. A token naming an unknown `kid` triggers at most one fetch per
/// `jwks_min_refresh`, whether the previous one succeeded or not, and a fetch has its own
/// timeout; concurrent unknown `kid`s wait for the one fetch in flight.
pub struct Authenticator {
    config: AuthConfig,
    validation: Validation,
    keys: RwLock<JwkSet>,
    /// When the key set was last fetched, and whether that fetch failed.
    refresh: tokio::sync::Mutex<Option<(Instant, bool)>>,
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
            keys: RwLock::new(JwkSet { keys: Vec::new() }),
            refresh: tokio::sync::Mutex::new(None),
            http: reqwest::Client::builder()
                .timeout(JWKS_FETCH_TIMEOUT)
                .connect_timeout(JWKS_FETCH_TIMEOUT)
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
        refuse_critical_headers(token)?;
        let key = match &self.config.keys {
            KeySource::Hs256 { secret } => DecodingKey::from_secret(secret),
            KeySource::Jwks { url } => self.jwks_key(url, token).await?,
        };
        let data = decode::<Claims>(token, &key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            other => AuthError::Invalid(reason(other)),
        })?;
        let claims = data.claims;
        // Both end up in every event's metadata: refuse what could not be stored.
        let usable =
            |s: &str| !s.trim().is_empty() && s.len() <= 256 && !s.chars().any(char::is_control);
        if !usable(&claims.tenant_id) || !usable(&claims.sub) {
            return Err(AuthError::Invalid(
                "sub and tenant_id must be 1-256 printable characters",
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
        let header = decode_header(token).map_err(|e| AuthError::Invalid(reason(e.kind())))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid("algorithm not accepted"));
        }
        let kid = header.kid.ok_or(AuthError::Invalid("no kid in header"))?;
        if let Some(key) = self.find_key(&kid).await {
            return key;
        }
        {
            // One fetch at a time; the others wait for it rather than fetch again.
            let mut last_attempt = self.refresh.lock().await;
            let due = last_attempt.is_none_or(|(t, _)| t.elapsed() >= self.config.jwks_min_refresh);
            if due && self.find_key(&kid).await.is_none() {
                let fetched = self.fetch(url).await;
                *last_attempt = Some((Instant::now(), fetched.is_err()));
                match fetched {
                    Ok(set) => *self.keys.write().await = set,
                    Err(e) => {
                        tracing::warn!(error = %e, "fetching the JWKS failed");
                        return Err(AuthError::KeysUnavailable);
                    }
                }
            } else if last_attempt.is_some_and(|(_, failed)| failed)
                && self.find_key(&kid).await.is_none()
            {
                // The key set could not be fetched and is not asked again yet: a key it
                // may hold is unknown for that reason, not because the token is bad.
                return Err(AuthError::KeysUnavailable);
            }
        }
        self.find_key(&kid)
            .await
            .unwrap_or(Err(AuthError::UnknownKey))
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, reqwest::Error> {
        self.http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json::<JwkSet>()
            .await
    }

    async fn find_key(&self, kid: &str) -> Option<Result<DecodingKey, AuthError>> {
        let keys = self.keys.read().await;
        keys.find(kid).map(|jwk| {
            DecodingKey::from_jwk(jwk)
                .map_err(|_| AuthError::Invalid("the signing key is unusable"))
        })
    }
}

/// A fixed phrase for why a token was refused.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "algorithm not accepted",
        ErrorKind::ImmatureSignature => "not valid yet",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSubject => "wrong subject",
        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
        ErrorKind::InvalidKeyFormat | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidEcdsaKey => {
            "the signing key is unusable"
        }
        _ => "malformed token",
    }
}

/// RFC 7515 section 4.1.11: a token whose header names critical extensions must be refused
/// by a recipient that does not understand them, and this one understands none.
fn refuse_critical_headers(token: &str) -> Result<(), AuthError> {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap_or_default();
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        // Malformed: the decoder below refuses it with its reason.
        return Ok(());
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) if v.get("crit").is_some() => Err(AuthError::Invalid(
            "critical header parameters are not supported",
        )),
        _ => Ok(()),
    }
}

impl<S> FromRequestParts<S> for Principal
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Verified once already at the edge (`crate::edge`), when it ran.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let auth = Arc::<Authenticator>::from_ref(state);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        auth.authenticate(header).await.map_err(Problem::from)
    }
}
