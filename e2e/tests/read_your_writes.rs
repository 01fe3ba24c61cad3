//! The read path end to end across both services: commands over HTTP, the relay, the
//! read-model projector, reads over HTTP that wait for the command's position.

use e2e::Services;
use platform::auth::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Http {
    client: reqwest::Client,
    token: String,
}

impl Http {
    fn new(stack: &Services, tenant: &str, roles: &[Role]) -> Http {
        Http {
            client: reqwest::Client::new(),
            token: stack.commands.token(tenant, roles),
        }
    }

    async fn post(&self, url: String, body: Value) -> Value {
        let resp = self
            .client
            .post(url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("post");
        assert!(resp.status().is_success(), "{}", resp.status());
        resp.json().await.expect("json")
    }

    async fn get(&self, url: String) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("get");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commands_result_is_visible_through_its_position_token() {
    let stack = Services::spawn().await;
    let cmd = &stack.commands.base;
    let q = &stack.query_base;
    let http = Http::new(&stack, "acme", &[Role::Member]);

    let started = http
        .post(
            format!("{cmd}/v1/conversations"),
            json!({"title": "Launch plan"}),
        )
        .await;
    let id = started["id"].as_str().unwrap().to_owned();
    // No projector yet: the read model cannot reach the position.
    let (status, body) = http
        .get(format!(
            "{q}/v1/conversations/{id}?position={}&wait_ms=300",
            started["position"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        (body["code"].clone(), body["applied_version"].clone()),
        (json!("position_not_reached"), json!(0))
    );

    let projector = stack.projector().await;
    let sent = http
        .post(
            format!("{cmd}/v1/conversations/{id}/messages"),
            json!({"role": "user", "content": "Ship in May"}),
        )
        .await;
    let position = sent["position"].as_str().unwrap();
    let (status, page) = http
        .get(format!(
            "{q}/v1/conversations/{id}/messages?position={position}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"][0]["content"], "Ship in May");
    assert_eq!(page["items"][0]["message_id"], sent["message_id"]);
    let (_, conversation) = http
        .get(format!("{q}/v1/conversations/{id}?position={position}"))
        .await;
    assert_eq!(
        (
            conversation["message_count"].clone(),
            conversation["version"].clone()
        ),
        (json!(1), json!(2))
    );

    let doc = http
        .post(
            format!("{cmd}/v1/conversations/{id}/documents"),
            json!({"kind": "summary"}),
        )
        .await;
    let (status, document) = http
        .get(format!(
            "{q}/v1/documents/{}?position={}",
            doc["id"].as_str().unwrap(),
            doc["position"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{document}");
    assert_eq!(document["conversation_id"], id.as_str());
    assert!(
        document["content"]
            .as_str()
            .unwrap()
            .contains("Ship in May")
    );

    let (status, list) = http.get(format!("{q}/v1/conversations?status=open")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (status, body) = http
        .get(format!("{q}/v1/conversations?cursor=garbage"))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_cursor"))
    );
    let (status, body) = http
        .get(format!("{q}/v1/conversations/{id}?position=nonsense"))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_position"))
    );

    let other = Http::new(&stack, "globex", &[Role::Member]);
    let (status, _) = other.get(format!("{q}/v1/conversations/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, theirs) = other.get(format!("{q}/v1/conversations")).await;
    assert_eq!(theirs["items"], json!([]));
    projector.stop().await;
}
