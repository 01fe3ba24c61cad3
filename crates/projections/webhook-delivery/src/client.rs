//! One delivery attempt over HTTP: the URL checked by the SSRF guard, the host resolved
//! by a resolver that refuses forbidden addresses (so the connection goes to an address
//! that was checked, whatever the DNS says a moment later), redirects not followed,
//! success only for a 2xx within the timeout, the answer read up to a few bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use webhooks::signature::{self, Secret};
use webhooks::ssrf::Guard;

use crate::ledger::Attempt;

/// The most of an answer kept in the ledger.
pub const RESPONSE_MAX: usize = 2 * 1024;

/// Resolves through the guard: a name that gives any forbidden address fails to resolve.
struct GuardedResolver(Guard);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0;
        Box::pin(async move {
            let addrs = guard.resolve_host(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

pub struct Client {
    http: reqwest::Client,
    guard: Guard,
}

impl Client {
    pub fn new(guard: Guard, timeout: Duration) -> Result<Client, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .dns_resolver(Arc::new(GuardedResolver(guard)))
            .user_agent("Threadline-Webhooks/1")
            .pool_max_idle_per_host(8)
            .build()?;
        Ok(Client { http, guard })
    }

    /// POSTs `body` as message `id`, signed with every secret in `secrets`.
    pub async fn send(&self, url: &str, id: &str, secrets: &[Secret], body: &str) -> Attempt {
        let at = chrono::Utc::now();
        let started = Instant::now();
        let failed = |error: String, status: Option<u16>, response: Option<String>| Attempt {
            at,
            url: url.to_owned(),
            status_code: status,
            latency_ms: elapsed_ms(started),
            error: Some(error),
            response,
            succeeded: false,
        };
        if let Err(refused) = self.guard.check_url(url) {
            return failed(format!("refused: {refused}"), None, None);
        }
        let timestamp = at.timestamp();
        let request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature::header(secrets, id, timestamp, body.as_bytes()),
            )
            .body(body.to_owned());
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return failed(transport_error(&e), None, None),
        };
        let status = response.status();
        let mut kept = Vec::new();
        while kept.len() < RESPONSE_MAX {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    kept.extend_from_slice(&chunk[..chunk.len().min(RESPONSE_MAX - kept.len())])
                }
                Ok(None) => break,
                // The status is what counts; a body cut short is only less to show.
                Err(_) => break,
            }
        }
        let text = (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned());
        if status.is_success() {
            return Attempt {
                at,
                url: url.to_owned(),
                status_code: Some(status.as_u16()),
                latency_ms: elapsed_ms(started),
                error: None,
                response: text,
                succeeded: true,
            };
        }
        let error = if status.is_redirection() {
            format!("HTTP {} (redirects are not followed)", status.as_u16())
        } else {
            format!("HTTP {}", status.as_u16())
        };
        failed(error, Some(status.as_u16()), text)
    }
}

fn elapsed_ms(started: Instant) -> i32 {
    i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX)
}

/// A transport failure in one line, with its cause (the guard's refusal shows here).
fn transport_error(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "transport error".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
