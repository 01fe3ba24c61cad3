//! A caller of both APIs by URL, with a token of its own: for tests that speak to
//! services started apart (`dev/stack run`) or compare what several callers see.

use platform::auth::Role;
use reqwest::StatusCode;
use serde_json::Value;

pub struct Caller {
    http: reqwest::Client,
    token: String,
}

impl Caller {
    /// `subject` of tenant `acme` with `roles`, its token signed with the HS256 `secret`.
    pub fn new(secret: &[u8], subject: &str, roles: &[Role]) -> Caller {
        Caller {
            http: reqwest::Client::new(),
            token: testkit::tokens::hs256_token(secret, "acme", subject, roles, 600),
        }
    }

    /// POSTs `body` as JSON: the status and the JSON answer (`null` when there is none).
    pub async fn post(&self, url: String, body: Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("the request is sent");
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, url: String) -> (StatusCode, Value) {
        let resp = self.send_get(url).await;
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    async fn send_get(&self, url: String) -> reqwest::Response {
        self.http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("the request is sent")
    }

    /// Starts a conversation titled `title` through command-api at `commands`; its id.
    pub async fn start(&self, commands: &str, title: &str) -> String {
        let (status, started) = self
            .post(
                format!("{commands}/v1/conversations"),
                serde_json::json!({"title": title}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{started}");
        started["id"].as_str().expect("an id").to_owned()
    }

    /// Asks `question` in conversation `id` through command-api at `commands`.
    pub async fn ask(&self, commands: &str, id: &str, question: &str) {
        let (status, sent) = self
            .post(
                format!("{commands}/v1/conversations/{id}/messages"),
                serde_json::json!({"role": "user", "content": question}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{sent}");
    }

    /// Starts a conversation titled `title` through command-api at `commands` and asks
    /// `question` in it (the assistant answers it); the conversation's id.
    pub async fn start_and_ask(&self, commands: &str, title: &str, question: &str) -> String {
        let id = self.start(commands, title).await;
        self.ask(commands, &id, question).await;
        id
    }

    /// Subscribes `url` to every event of the tenant through command-api at `commands`
    /// (the caller an admin); the endpoint's id.
    pub async fn subscribe(&self, commands: &str, url: &str) -> String {
        let (status, created) = self
            .post(
                format!("{commands}/v1/webhooks/endpoints"),
                serde_json::json!({"url": url, "event_types": ["*"]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"].as_str().expect("an id").to_owned()
    }

    /// GETs a body that is not one JSON document (NDJSON, say) as text.
    pub async fn get_text(&self, url: String) -> (StatusCode, String) {
        let resp = self.send_get(url).await;
        (resp.status(), resp.text().await.unwrap_or_default())
    }
}
