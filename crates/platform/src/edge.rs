//! What every API does at its edge before a handler runs: rate limits per caller, CORS,
//! security headers, and which operational routes are exposed.
//!
//! Rate limits (GCRA, the `governor` crate) apply per subject and per tenant of a
//! verified token, and per peer address for requests without one. The verified
//! [`Principal`] is kept in the request's extensions, so handlers do not verify the token
//! again. A request over a limit is a 429 `rate_limited` problem with `Retry-After`;
//! answers carry `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
//! (draft-ietf-httpapi-ratelimit-headers) of the tightest limit that applied.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::auth::Authenticator;
use crate::problem::Problem;

type Limiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One rate: `per_second` sustained, bursts of `burst`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

impl std::str::FromStr for Rate {
    type Err = &'static str;

    fn from_str(raw: &str) -> Result<Rate, Self::Err> {
        let parse = || -> Option<Rate> {
            let (rate, burst) = raw.split_once('/')?;
            Some(Rate {
                per_second: rate.trim().parse().ok()?,
                burst: burst.trim().parse().ok()?,
            })
        };
        parse().ok_or("expected <requests per second>/<burst>, both above 0")
    }
}

fn origin(o: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(o.trim()).map_err(|_| format!("{o:?} is not a valid origin"))
}

/// Settings of the edge of both APIs.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Edge (both APIs)")]
pub struct EdgeConfig {
    /// Requests per second / burst, per subject of a token.
    #[arg(
        long = "rate-limit-subject",
        env = "RATE_LIMIT_SUBJECT",
        default_value = "50/100"
    )]
    pub per_subject: Rate,
    /// The same per tenant, all its subjects together.
    #[arg(
        long = "rate-limit-tenant",
        env = "RATE_LIMIT_TENANT",
        default_value = "500/1000"
    )]
    pub per_tenant: Rate,
    /// The same per peer address, for requests without a valid token.
    #[arg(
        long = "rate-limit-anonymous",
        env = "RATE_LIMIT_ANONYMOUS",
        default_value = "20/40"
    )]
    pub per_peer: Rate,
    /// Comma-separated origins browsers may call from (none: no CORS headers at all).
    #[arg(long = "cors-allowed-origins", env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = origin)]
    pub cors_origins: Vec<HeaderValue>,
    /// Serve `/metrics`.
    #[arg(long = "expose-metrics", env = "EXPOSE_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub expose_metrics: bool,
    /// Serve `/openapi.json` and `/docs` (often off in public deployments).
    #[arg(long = "expose-docs", env = "EXPOSE_DOCS", default_value_t = true, action = clap::ArgAction::Set)]
    pub expose_docs: bool,
}

impl EdgeConfig {
    /// Generous limits, for tests that do not test limits.
    pub fn permissive() -> Self {
        let lots = Rate {
            per_second: NonZeroU32::new(100_000).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(100_000).unwrap_or(NonZeroU32::MIN),
        };
        EdgeConfig {
            per_subject: lots,
            per_tenant: lots,
            per_peer: lots,
            cors_origins: Vec::new(),
            expose_metrics: true,
            expose_docs: true,
        }
    }
}

struct Limits {
    auth: Arc<Authenticator>,
    subjects: Limiter<(String, String)>,
    tenants: Limiter<String>,
    peers: Limiter<IpAddr>,
    rates: (Rate, Rate, Rate),
    cors: Vec<HeaderValue>,
}

/// Wraps `app` in the edge: security headers, CORS, rate limits. Call it last, so it is
/// the outermost layer.
pub fn apply(app: Router, config: &EdgeConfig, auth: Arc<Authenticator>) -> Router {
    metrics::counter!("http_rate_limited_total").increment(0);
    let limits = Arc::new(Limits {
        auth,
        subjects: RateLimiter::keyed(config.per_subject.quota())
            .with_middleware::<StateInformationMiddleware>(),
        tenants: RateLimiter::keyed(config.per_tenant.quota())
            .with_middleware::<StateInformationMiddleware>(),
        peers: RateLimiter::keyed(config.per_peer.quota())
            .with_middleware::<StateInformationMiddleware>(),
        rates: (config.per_subject, config.per_tenant, config.per_peer),
        cors: config.cors_origins.clone(),
    });
    // Forget callers idle for a while, so the key stores stay bounded.
    let sweeper = Arc::downgrade(&limits);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            let Some(limits) = sweeper.upgrade() else {
                return;
            };
            limits.subjects.retain_recent();
            limits.tenants.retain_recent();
            limits.peers.retain_recent();
        }
    });
    app.layer(axum::middleware::from_fn_with_state(limits, edge))
}

/// Which limit decided, and what is left of it.
struct Verdict {
    limit: u32,
    remaining: u32,
    reset_secs: u64,
}

fn snapshot_verdict(snapshot: governor::middleware::StateSnapshot, rate: Rate) -> Verdict {
    let remaining = snapshot.remaining_burst_capacity();
    let refill = Duration::from_secs_f64(
        f64::from(rate.burst.get() - remaining.min(rate.burst.get()))
            / f64::from(rate.per_second.get()),
    );
    Verdict {
        limit: rate.burst.get(),
        remaining,
        reset_secs: refill.as_secs_f64().ceil() as u64,
    }
}

fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: &Limiter<K>,
    key: &K,
    rate: Rate,
) -> Result<Verdict, Duration> {
    match limiter.check_key(key) {
        Ok(snapshot) => Ok(snapshot_verdict(snapshot, rate)),
        Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
    }
}

async fn edge(State(limits): State<Arc<Limits>>, mut req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed_origin = origin.filter(|o| limits.cors.contains(o));
    if req.method() == Method::OPTIONS && allowed_origin.is_some() {
        let mut response = StatusCode::NO_CONTENT.into_response();
        cors_headers(&mut response, allowed_origin.as_ref(), true);
        secure(&mut response);
        return response;
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let verdicts = match limits.auth.authenticate(authorization.as_deref()).await {
        Ok(principal) => {
            let subject = (principal.tenant_id.clone(), principal.subject.clone());
            let verdicts = [
                check(&limits.subjects, &subject, limits.rates.0),
                check(&limits.tenants, &principal.tenant_id, limits.rates.1),
            ];
            req.extensions_mut().insert(principal);
            verdicts.into_iter().collect::<Result<Vec<_>, _>>()
        }
        Err(_) => {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
            check(&limits.peers, &peer, limits.rates.2).map(|v| vec![v])
        }
    };
    let mut response = match verdicts {
        Err(wait) => {
            metrics::counter!("http_rate_limited_total").increment(1);
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
            )
            .detail(format!("slow down: retry in {seconds} s"))
            .header(header::RETRY_AFTER, &seconds.to_string())
            .header(HeaderName::from_static("ratelimit-remaining"), "0")
            .header(
                HeaderName::from_static("ratelimit-reset"),
                &seconds.to_string(),
            )
            .into_response()
        }
        Ok(verdicts) => {
            let tightest = verdicts.into_iter().min_by_key(|v| v.remaining);
            let mut response = next.run(req).await;
            if let Some(v) = tightest {
                let headers = response.headers_mut();
                for (name, value) in [
                    ("ratelimit-limit", v.limit.to_string()),
                    ("ratelimit-remaining", v.remaining.to_string()),
                    ("ratelimit-reset", v.reset_secs.to_string()),
                ] {
                    if let Ok(value) = HeaderValue::from_str(&value) {
                        headers.insert(HeaderName::from_static(name), value);
                    }
                }
            }
            response
        }
    };
    cors_headers(&mut response, allowed_origin.as_ref(), false);
    secure(&mut response);
    response
}

fn cors_headers(response: &mut Response, origin: Option<&HeaderValue>, preflight: bool) {
    let Some(origin) = origin else { return };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "etag, x-request-id, x-correlation-id, traceparent, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset, idempotent-replayed",
        ),
    );
    if preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(
                "authorization, content-type, idempotency-key, if-match, x-correlation-id, x-causation-id, traceparent, tracestate",
            ),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
}

/// Headers every answer carries: no sniffing, no framing, no caching of personal data,
/// no referrer, and HTTPS only once the browser has seen it over HTTPS.
fn secure(response: &mut Response) {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    // The interactive docs need their own scripts and styles; everything else is data.
    if !headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"))
    {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
}
