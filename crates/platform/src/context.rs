//! Correlation, causation and W3C trace context of a request.
//!
//! `X-Correlation-Id` is kept if the caller sent one (else a new UUID); `X-Causation-Id`
//! defaults to this request's id; `traceparent`/`tracestate` are kept when well-formed,
//! else a new trace is started. All of them are echoed in the response and stored on
//! every event the request appends.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub struct RequestContext {
    pub request_id: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub traceparent: String,
    pub tracestate: Option<String>,
}

fn header(headers: &HeaderMap, name: &str, max: usize) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= max && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero.
pub fn valid_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

impl RequestContext {
    fn from_headers(headers: &HeaderMap) -> Self {
        let request_id = Uuid::now_v7().to_string();
        // This request is a new span: of the caller's trace when it sent one, else of a new trace.
        let span = Uuid::new_v4().simple().to_string()[..16].to_owned();
        let traceparent = match header(headers, "traceparent", 55).filter(|t| valid_traceparent(t))
        {
            Some(parent) => format!("00-{}-{span}-{}", &parent[3..35], &parent[53..55]),
            None => format!("00-{}-{span}-01", Uuid::new_v4().simple()),
        };
        RequestContext {
            correlation_id: header(headers, "x-correlation-id", 128)
                .unwrap_or_else(|| request_id.clone()),
            causation_id: header(headers, "x-causation-id", 128)
                .unwrap_or_else(|| request_id.clone()),
            tracestate: header(headers, "tracestate", 512),
            traceparent,
            request_id,
        }
    }
}

/// Middleware: builds the context, runs the request inside a span that carries it, and
/// echoes the ids in the response.
pub async fn propagate(mut req: Request, next: Next) -> Response {
    let mut ctx = RequestContext::from_headers(req.headers());
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %ctx.request_id,
        correlation_id = %ctx.correlation_id,
        traceparent = tracing::field::Empty,
    );
    // With traces exported, this request's span continues the caller's trace and its
    // own ids become the traceparent passed on (to events, and from them to Kafka).
    if let Some(parent) = header(req.headers(), "traceparent", 55).filter(|t| valid_traceparent(t))
    {
        crate::telemetry::continue_trace(&span, &parent, ctx.tracestate.as_deref());
    }
    if let Some(own) = crate::telemetry::traceparent_of(&span) {
        ctx.traceparent = own;
    }
    span.record("traceparent", ctx.traceparent.as_str());
    // Metric labels an outsider cannot multiply: known methods, route templates.
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    req.extensions_mut().insert(ctx.clone());
    let started = std::time::Instant::now();
    let mut response = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            elapsed_ms = elapsed.as_millis() as u64,
            "request handled"
        )
    });
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-request-id", &ctx.request_id),
        ("x-correlation-id", &ctx.correlation_id),
        ("traceparent", &ctx.traceparent),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    response
}

/// The method as a metric label: one of the standard ones, or `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_else(|| RequestContext::from_headers(&parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_validation() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn a_context_is_always_complete() {
        let ctx = RequestContext::from_headers(&HeaderMap::new());
        assert!(valid_traceparent(&ctx.traceparent));
        assert_eq!(ctx.correlation_id, ctx.request_id);
        let mut h = HeaderMap::new();
        h.insert("x-correlation-id", HeaderValue::from_static("corr-1"));
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let ctx = RequestContext::from_headers(&h);
        assert_eq!(ctx.correlation_id, "corr-1");
        assert!(
            ctx.traceparent
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "same trace"
        );
        assert!(
            !ctx.traceparent.contains("00f067aa0ba902b7"),
            "a new span id"
        );
        assert!(valid_traceparent(&ctx.traceparent));
    }
}
