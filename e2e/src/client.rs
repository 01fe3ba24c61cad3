//! A caller of both HTTP APIs with one token: the requests the end-to-end tests and
//! benchmarks make again and again.

use std::time::Duration;

use serde_json::{Value, json};

pub struct Client {
    pub http: reqwest::Client,
    pub token: String,
    commands: String,
    queries: String,
}

impl Client {
    pub fn new(services: &crate::Services, token: String) -> Client {
        Client {
            http: reqwest::Client::new(),
            token,
            commands: services.commands.base.clone(),
            queries: services.query_base.clone(),
        }
    }

    /// `POST` a JSON command to the command API; panics unless it succeeds.
    pub async fn command(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.commands))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("send the command");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("a JSON answer")
    }

    /// Starts a conversation; its id.
    pub async fn start(&self, title: &str, assistant: bool) -> String {
        let started = self
            .command(
                "/v1/conversations",
                json!({"title": title, "assistant": assistant}),
            )
            .await;
        started["id"].as_str().expect("an id").to_owned()
    }

    /// Sends a user message; the command's answer (with `message_id` and `position`).
    pub async fn ask(&self, conversation: &str, text: &str) -> Value {
        self.command(
            &format!("/v1/conversations/{conversation}/messages"),
            json!({"role": "user", "content": text}),
        )
        .await
    }

    /// `GET` from the query API.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.queries))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("send the read")
    }

    /// Opens the conversation's live stream, once the read model has the conversation
    /// (it is 404 until then).
    pub async fn stream(&self, conversation: &str) -> reqwest::Response {
        let path = format!("/v1/conversations/{conversation}/stream");
        for _ in 0..400 {
            let resp = self.get(&path).await;
            if resp.status() == 200 {
                return resp;
            }
            assert_eq!(resp.status(), 404, "opening {path}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{path} stayed 404 for 10 s");
    }
}
