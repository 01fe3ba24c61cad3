//! console: the operators' web console (docs/OPERATIONS.md, "The console"). It serves
//! its pages under `/console/` and puts the APIs and the projectors' statuses under the
//! same origin (`/api/commands/…`, `/api/queries/…`, `/api/status`), so the pages need
//! nothing but their own origin: the CSP allows only it, and no API needs CORS. It keeps
//! no session and no secret: the browser holds the user's token (for the tab's life) and
//! every call carries it to the APIs, which decide what it may do.
//!
//!     console                 serve until SIGTERM/Ctrl-C (`run` also works)
//!     console check-settings  check the settings without connecting to anything, exit
//!     console --help          every setting

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use platform::{http, shutdown::Shutdown, telemetry};
use serde_json::{Value, json};

/// The console's settings.
#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(subcommand)]
    command: Option<Verb>,
    /// Where the console is served.
    #[arg(
        long = "console-addr",
        env = "CONSOLE_ADDR",
        default_value = "127.0.0.1:8090"
    )]
    addr: SocketAddr,
    /// command-api's base URL.
    #[arg(
        long = "console-command-api",
        env = "CONSOLE_COMMAND_API",
        default_value = "http://127.0.0.1:8080"
    )]
    command_api: String,
    /// query-api's base URL.
    #[arg(
        long = "console-query-api",
        env = "CONSOLE_QUERY_API",
        default_value = "http://127.0.0.1:8081"
    )]
    query_api: String,
    /// Each projector as NAME=URL of its health address, comma-separated.
    #[arg(
        long = "console-projectors",
        env = "CONSOLE_PROJECTORS",
        value_delimiter = ',',
        value_parser = ops_report::named_url
    )]
    projectors: Vec<(String, String)>,
    #[command(flatten)]
    http: http::HttpTimeouts,
    #[command(flatten)]
    shutdown: Shutdown,
    #[command(flatten)]
    telemetry: telemetry::TelemetrySettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
enum Verb {
    /// Serve until SIGTERM/Ctrl-C (also what no command does).
    Run,
    /// Check the settings without connecting to anything; exit 0 when they hold.
    CheckSettings,
}

/// The largest request body passed on (a knowledge upload).
const BODY_MAX: usize = 16 * 1024 * 1024;

#[derive(Clone)]
struct Upstreams {
    http: reqwest::Client,
    command_api: String,
    query_api: String,
    projectors: Vec<(String, String)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = platform::config::parse("console");
    for (what, url) in [
        ("CONSOLE_COMMAND_API", cli.command_api.as_str()),
        ("CONSOLE_QUERY_API", cli.query_api.as_str()),
    ]
    .into_iter()
    .chain(
        cli.projectors
            .iter()
            .map(|(_, url)| ("CONSOLE_PROJECTORS", url.as_str())),
    ) {
        let parsed = reqwest::Url::parse(url).ok();
        if !parsed.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) {
            anyhow::bail!("{what}: {url:?} is not an http(s) URL");
        }
    }
    if cli.command == Some(Verb::CheckSettings) {
        println!("console: settings ok");
        return Ok(());
    }
    let telemetry = telemetry::init("console", &cli.telemetry);
    let upstreams = Upstreams {
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?,
        command_api: cli.command_api.trim_end_matches('/').to_owned(),
        query_api: cli.query_api.trim_end_matches('/').to_owned(),
        projectors: cli.projectors,
    };
    let listener = tokio::net::TcpListener::bind(cli.addr)
        .await
        .with_context(|| format!("binding {}", cli.addr))?;
    let served = http::serve(
        listener,
        app(upstreams),
        http::HttpLimits::new(cli.http, BODY_MAX),
        cli.shutdown.requested(),
    )
    .await;
    telemetry.shutdown().await;
    served.context("serving the console")
}

fn app(upstreams: Upstreams) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route(
            "/console/",
            get(|| async {
                page(
                    "text/html; charset=utf-8",
                    include_str!("../assets/index.html"),
                )
            }),
        )
        .route(
            "/console/app.js",
            get(|| async {
                page(
                    "text/javascript; charset=utf-8",
                    include_str!("../assets/app.js"),
                )
            }),
        )
        .route(
            "/console/app.css",
            get(|| async { page("text/css; charset=utf-8", include_str!("../assets/app.css")) }),
        )
        .route("/api/commands/{*rest}", any(commands))
        .route("/api/queries/{*rest}", any(queries))
        .route("/api/status", get(status))
        // It holds no state and needs nothing to serve its pages: alive is ready.
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .layer(axum::middleware::map_response(secured))
        .with_state(upstreams)
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Every answer: only this origin's scripts, styles and connections; no framing, no
/// sniffing, no referrer, no caching.
async fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn commands(
    State(up): State<Upstreams>,
    Path(rest): Path<String>,
    request: Request,
) -> Response {
    let base = up.command_api.clone();
    forward(&up, &base, &rest, request).await
}

async fn queries(
    State(up): State<Upstreams>,
    Path(rest): Path<String>,
    request: Request,
) -> Response {
    let base = up.query_api.clone();
    forward(&up, &base, &rest, request).await
}

/// The headers a request keeps on its way to an API, and an answer on its way back.
const REQUEST_HEADERS: &[header::HeaderName] = &[
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::IF_MATCH,
];
const ANSWER_HEADERS: &[header::HeaderName] =
    &[header::CONTENT_TYPE, header::ETAG, header::RETRY_AFTER];

/// Passes `request` to `base/rest` and streams the answer back (an NDJSON replay arrives
/// as the API writes it).
async fn forward(up: &Upstreams, base: &str, rest: &str, request: Request) -> Response {
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let url = format!("{base}/{rest}{query}");
    let method = request.method().clone();
    let mut headers = HeaderMap::new();
    for name in REQUEST_HEADERS {
        if let Some(value) = request.headers().get(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    for name in ["idempotency-key", "last-event-id"] {
        if let Some(value) = request.headers().get(name) {
            headers.insert(name, value.clone());
        }
    }
    let body = match axum::body::to_bytes(request.into_body(), BODY_MAX).await {
        Ok(body) => body,
        Err(_) => return problem(StatusCode::PAYLOAD_TOO_LARGE, "the request is too large"),
    };
    let sent = up
        .http
        .request(method, &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(%url, error = %e, "an API did not answer");
            return problem(
                StatusCode::BAD_GATEWAY,
                "the API could not be reached; retry",
            );
        }
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for name in ANSWER_HEADERS {
        if let Some(value) = answer.headers().get(name) {
            response = response.header(name.clone(), value.clone());
        }
    }
    // Chunk by chunk as it arrives; an error ends the body (the client sees it cut).
    let stream = futures::stream::unfold(Some(answer), |answer| async move {
        let mut answer = answer?;
        match answer.chunk().await {
            Ok(Some(bytes)) => Some((Ok::<_, reqwest::Error>(bytes), Some(answer))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| {
            problem(
                StatusCode::BAD_GATEWAY,
                "the API's answer could not be passed on",
            )
        })
}

fn problem(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        json!({"type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail}).to_string(),
    )
        .into_response()
}

/// The relay's status (command-api, with the caller's token: only an admin gets it) and,
/// once that was allowed, every projector's.
async fn status(State(up): State<Upstreams>, headers: HeaderMap) -> Response {
    let mut request = up
        .http
        .get(format!("{}/v1/admin/relay", up.command_api))
        .timeout(Duration::from_secs(10));
    if let Some(token) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, token.clone());
    }
    let relay = match request.send().await {
        Ok(r) if r.status().is_success() => match r.json::<Value>().await {
            Ok(status) => ops_report::Component::relay(status),
            Err(e) => ops_report::Component::unreachable("relay", e.to_string()),
        },
        Ok(r) => {
            let code = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            return problem(
                code,
                "the relay's status was refused to this token (an admin's is needed)",
            );
        }
        Err(_) => return problem(StatusCode::BAD_GATEWAY, "command-api could not be reached"),
    };
    let mut projectors = Vec::new();
    for (name, url) in &up.projectors {
        let answer = up
            .http
            .get(format!("{url}/status"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let status = match answer {
            Ok(r) => r.json::<Value>().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        projectors.push(match status {
            Ok(status) => ops_report::Component::projector(name, status),
            Err(error) => ops_report::Component::unreachable(name, error),
        });
    }
    axum::Json(ops_report::Report { relay, projectors }.to_json()).into_response()
}
