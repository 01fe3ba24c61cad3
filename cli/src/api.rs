//! The APIs as the command line reaches them: base URLs, the token, and how an answer
//! that is not a success becomes a [`Failure`] (and so an exit code).

use std::time::Duration;

use serde::de::DeserializeOwned;

/// Where the APIs are and the token they check.
#[derive(Debug, Clone, clap::Args)]
pub struct Apis {
    /// command-api's base URL (`dev/stack run` listens on the default).
    #[arg(
        long = "command-api",
        env = "THREADLINE_COMMAND_API",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub command_api: String,
    /// query-api's base URL (`dev/stack run` listens on the default).
    #[arg(
        long = "query-api",
        env = "THREADLINE_QUERY_API",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    pub query_api: String,
    /// The bearer token the APIs check (`threadline token` signs a development one).
    #[arg(
        long = "token",
        env = "THREADLINE_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

/// Why a command did not succeed; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The API answered 4xx: what it said.
    #[error("{0}")]
    Refused(String),
    /// The API could not be reached, or answered 5xx.
    #[error("{0}")]
    Unavailable(String),
    /// `status` found something that needs attention (already printed).
    #[error("something needs attention")]
    Attention,
    /// `verify` found the audit chain broken (the break already printed).
    #[error("the audit chain is broken")]
    Broken,
    #[error("{0}")]
    Other(String),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Other(_) => 1,
            Failure::Refused(_) => 3,
            Failure::Unavailable(_) => 4,
            Failure::Attention => 5,
            Failure::Broken => 6,
        }
    }

    pub fn other(e: impl std::fmt::Display) -> Failure {
        Failure::Other(e.to_string())
    }
}

/// Which API a request goes to.
#[derive(Debug, Clone, Copy)]
pub enum Api {
    Commands,
    Queries,
}

/// A client of the APIs with the caller's token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    apis: Apis,
}

/// Longest a plain request (not a stream) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    pub fn new(apis: &Apis) -> Result<Client, Failure> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(Failure::other)?;
        Ok(Client {
            http,
            apis: apis.clone(),
        })
    }

    fn url(&self, api: Api, path: &str) -> String {
        let base = match api {
            Api::Commands => &self.apis.command_api,
            Api::Queries => &self.apis.query_api,
        };
        format!("{}{path}", base.trim_end_matches('/'))
    }

    /// `GET path` of `api` with the token; any answer but a success is a [`Failure`].
    /// Without `timeout` the answer may stream for as long as it takes.
    pub async fn get(
        &self,
        api: Api,
        path: &str,
        timeout: bool,
    ) -> Result<reqwest::Response, Failure> {
        let url = self.url(api, path);
        let mut request = self.http.get(&url);
        if let Some(token) = &self.apis.token {
            request = request.bearer_auth(token);
        }
        if timeout {
            request = request.timeout(REQUEST_TIMEOUT);
        }
        let response = request.send().await.map_err(|e| unreachable(&url, e))?;
        checked(&url, response).await
    }

    /// `GET path` of `api`, its JSON answer.
    pub async fn get_json<T: DeserializeOwned>(&self, api: Api, path: &str) -> Result<T, Failure> {
        let url = self.url(api, path);
        self.get(api, path, true)
            .await?
            .json()
            .await
            .map_err(|e| Failure::Other(format!("{url}: the answer does not parse: {e}")))
    }

    /// `POST path` of `api` with `body` as JSON and the token, its JSON answer (`null`
    /// for none). A command has an idempotency key: sent again, it is not done twice.
    pub async fn post_json(
        &self,
        api: Api,
        path: &str,
        body: &serde_json::Value,
        idempotency_key: &str,
    ) -> Result<serde_json::Value, Failure> {
        self.send_json(reqwest::Method::POST, api, path, body, idempotency_key)
            .await
    }

    /// [`Client::post_json`] with another method (`PUT`).
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        api: Api,
        path: &str,
        body: &serde_json::Value,
        idempotency_key: &str,
    ) -> Result<serde_json::Value, Failure> {
        let url = self.url(api, path);
        let mut request = self
            .http
            .request(method, &url)
            .json(body)
            .header("idempotency-key", idempotency_key)
            .timeout(REQUEST_TIMEOUT);
        if let Some(token) = &self.apis.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| unreachable(&url, e))?;
        let text = checked(&url, response)
            .await?
            .text()
            .await
            .map_err(|e| Failure::Unavailable(format!("{url}: the answer was cut: {e}")))?;
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// `GET url` without the token (a projector's health address), its JSON answer.
    pub async fn get_open_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, Failure> {
        let response = self
            .http
            .get(url)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| unreachable(url, e))?;
        checked(url, response)
            .await?
            .json()
            .await
            .map_err(|e| Failure::Other(format!("{url}: the answer does not parse: {e}")))
    }
}

fn unreachable(url: &str, e: reqwest::Error) -> Failure {
    // The cause chain says what failed (refused, timed out, name not resolved).
    let mut why = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        why = format!("{why}: {cause}");
        source = cause.source();
    }
    Failure::Unavailable(format!("{url} cannot be reached: {why}"))
}

/// The response when it is a success; else a failure saying what the problem document
/// (RFC 9457) says.
async fn checked(url: &str, response: reqwest::Response) -> Result<reqwest::Response, Failure> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let said = [&problem["title"], &problem["detail"]]
        .iter()
        .filter_map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(": ");
    let said = if said.is_empty() {
        body.chars().take(200).collect()
    } else {
        said
    };
    let text = format!("{url} answered {status}: {said}");
    Err(if status.is_client_error() {
        Failure::Refused(text)
    } else {
        Failure::Unavailable(text)
    })
}

/// An idempotency key for one run of a command: a retry of its request is not done twice,
/// running the command again does it again.
pub fn run_key() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("threadline-{}-{nanos}", std::process::id())
}
