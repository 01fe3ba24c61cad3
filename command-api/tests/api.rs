//! The REST command API against a real PostgreSQL, through a real HTTP server.

mod common;

use common::TestApp;
use platform::auth::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::tokens::{SECRET, hs256_token};

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(app: &TestApp, tenant: &str, roles: &[Role]) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: app.base.clone(),
            token: app.token(tenant, roles),
        }
    }

    /// A caller of `tenant` with its own subject (`Client::new` is `user-1`).
    fn as_user(app: &TestApp, tenant: &str, subject: &str, roles: &[Role]) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: app.base.clone(),
            token: hs256_token(SECRET, tenant, subject, roles, 3600),
        }
    }

    async fn post(
        &self,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body, headers)
    }

    async fn start(&self, title: &str) -> String {
        let (status, body, _) = self
            .post("/v1/conversations", json!({"title": title}), &[])
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().expect("id").to_owned()
    }
}

fn member(app: &TestApp) -> Client {
    Client::new(app, "acme", &[Role::Member])
}

fn assert_problem(status: StatusCode, body: &Value, want_status: StatusCode, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], want_status.as_u16(), "{body}");
}

#[tokio::test]
async fn commands_answer_with_versions_and_position_tokens() {
    let app = TestApp::spawn().await;
    let c = member(&app);
    let (status, started, headers) = c
        .post(
            "/v1/conversations",
            json!({"title": "Plan", "metadata": {"channel": "web"}}),
            &[("x-correlation-id", "corr-42")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    assert_eq!(started["version"], 1);
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(headers["x-correlation-id"], "corr-42");
    let id = started["id"].as_str().unwrap();
    assert_eq!(started["position"], format!("conversation:{id}:1"));

    let (status, sent, _) = c
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"role": "user", "content": "We need a shop"}),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    assert_eq!(sent["version"], 2);
    assert!(sent["message_id"].as_str().is_some());

    let (status, renamed, _) = c
        .post(
            &format!("/v1/conversations/{id}/rename"),
            json!({"title": "Shop"}),
            &[],
        )
        .await;
    assert_eq!(
        (status, renamed["version"].clone()),
        (StatusCode::OK, json!(3))
    );

    let (status, doc, _) = c
        .post(
            &format!("/v1/conversations/{id}/documents"),
            json!({"kind": "requirements_spec"}),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    assert_eq!(
        (doc["aggregate"].clone(), doc["version"].clone()),
        (json!("document"), json!(1))
    );
    assert_eq!(doc["conversation_id"], id);

    let (status, ended, _) = c
        .post(
            &format!("/v1/conversations/{id}/end"),
            json!({"reason": "done"}),
            &[],
        )
        .await;
    assert_eq!(
        (status, ended["version"].clone()),
        (StatusCode::OK, json!(4))
    );
    let (status, body, _) = c
        .post(
            &format!("/v1/conversations/{id}/messages"),
            json!({"role": "user", "content": "late"}),
            &[],
        )
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "conversation_ended");

    // Every event carries the request's metadata.
    let meta: Value =
        sqlx::query_scalar("SELECT metadata FROM events WHERE aggregate_id = $1 AND sequence = 1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(meta["tenant_id"], "acme");
    assert_eq!(meta["correlation_id"], "corr-42");
    assert!(
        meta["traceparent"].as_str().is_some_and(|t| t.len() == 55),
        "{meta}"
    );
    assert!(meta["causation_id"].as_str().is_some(), "{meta}");
    assert_eq!(app.event_count().await, 5);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_request() {
    let app = TestApp::spawn().await;
    let c = member(&app);
    let id = c.start("Idem").await;
    let path = format!("/v1/conversations/{id}/messages");
    let body = json!({"role": "user", "content": "once"});
    let key = [("idempotency-key", "key-1")];
    let (s1, first, _) = c.post(&path, body.clone(), &key).await;
    let (s2, second, h2) = c.post(&path, body.clone(), &key).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first["message_id"], second["message_id"]);
    assert_eq!(
        (first["version"].clone(), second["version"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(
        (first["replayed"].clone(), second["replayed"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(app.event_count().await, 2);

    let (status, refused, _) = c
        .post(&path, json!({"role": "user", "content": "other"}), &key)
        .await;
    assert_problem(
        status,
        &refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    assert_eq!(app.event_count().await, 2);

    // Concurrent duplicates of a create: one conversation, one answer.
    let create_key = [("idempotency-key", "create-1")];
    let answers = futures::future::join_all(
        (0..8).map(|_| c.post("/v1/conversations", json!({"title": "Once"}), &create_key)),
    )
    .await;
    let ids: std::collections::HashSet<_> = answers
        .iter()
        .map(|(s, b, _)| {
            assert_eq!(*s, StatusCode::CREATED, "{b}");
            b["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "all duplicates answer with the same conversation"
    );
    assert_eq!(app.event_count().await, 3);
}

#[tokio::test]
async fn an_idempotency_key_is_its_callers_own() {
    let app = TestApp::spawn().await;
    let alice = member(&app);
    let bob = Client::as_user(&app, "acme", "user-2", &[Role::Member]);
    let id = alice.start("Alice's").await;
    let path = format!("/v1/conversations/{id}/messages");
    let body = json!({"role": "user", "content": "mine"});
    let key = [("idempotency-key", "shared-key")];
    let (status, first, _) = alice.post(&path, body.clone(), &key).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    // Bob sends the same key and body: a request of his own, on a conversation he does
    // not see, so the 404 every other request of his gets, not Alice's answer.
    let (status, answer, headers) = bob.post(&path, body, &key).await;
    assert_problem(status, &answer, StatusCode::NOT_FOUND, "not_found");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(app.event_count().await, 2);

    // Another admin with the first admin's key and body creates an endpoint of their own:
    // the first endpoint's signing secret goes to nobody else.
    let endpoint = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["message.sent"]});
    let hook_key = [("idempotency-key", "hook-key")];
    let admin = Client::as_user(&app, "acme", "admin-1", &[Role::Admin]);
    let other = Client::as_user(&app, "acme", "admin-2", &[Role::Admin]);
    let (status, created, _) = admin
        .post("/v1/webhooks/endpoints", endpoint.clone(), &hook_key)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, theirs, _) = other
        .post("/v1/webhooks/endpoints", endpoint.clone(), &hook_key)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{theirs}");
    assert_eq!(theirs["replayed"], false, "{theirs}");
    assert_ne!(theirs["id"], created["id"]);
    assert_ne!(theirs["secret"], created["secret"]);
    // The first admin's retry is still a replay, with the answer they lost.
    let (status, again, _) = admin
        .post("/v1/webhooks/endpoints", endpoint, &hook_key)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(
        (
            again["replayed"].clone(),
            again["id"].clone(),
            again["secret"].clone()
        ),
        (
            json!(true),
            created["id"].clone(),
            created["secret"].clone()
        )
    );
}

#[tokio::test]
async fn an_if_match_mismatch_answers_412_with_the_current_version_and_appends_nothing() {
    let app = TestApp::spawn().await;
    let c = member(&app);
    let id = c.start("Versions").await;
    let path = format!("/v1/conversations/{id}/rename");
    let (status, body, headers) = c
        .post(&path, json!({"title": "New"}), &[("if-match", "\"7\"")])
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::PRECONDITION_FAILED,
        "version_mismatch",
    );
    assert_eq!(
        (
            body["current_version"].clone(),
            body["expected_version"].clone()
        ),
        (json!(1), json!(7))
    );
    assert_eq!(headers["etag"], "\"1\"");
    let (status, body, _) = c
        .post(&path, json!({"title": "New"}), &[("if-match", "soon")])
        .await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "invalid_if_match");
    assert_eq!(app.event_count().await, 1);
    let (status, _, _) = c
        .post(&path, json!({"title": "New"}), &[("if-match", "1")])
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn another_tenants_conversation_is_not_found_and_untouched() {
    let app = TestApp::spawn().await;
    let id = member(&app).start("Mine").await;
    let other = Client::new(&app, "globex", &[Role::Admin]);
    for (path, body) in [
        (
            format!("/v1/conversations/{id}/messages"),
            json!({"role": "user", "content": "hi"}),
        ),
        (
            format!("/v1/conversations/{id}/rename"),
            json!({"title": "Theirs"}),
        ),
        (format!("/v1/conversations/{id}/end"), json!({})),
        (
            format!("/v1/conversations/{id}/documents"),
            json!({"kind": "summary"}),
        ),
    ] {
        let (status, problem, _) = other.post(&path, body, &[]).await;
        assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(app.event_count().await, 1);
}

fn unsigned_token(claims: &Value) -> String {
    use base64_free::encode;
    format!(
        "{}.{}.",
        encode(br#"{"alg":"none","typ":"JWT"}"#),
        encode(claims.to_string().as_bytes())
    )
}

/// Minimal base64url (no padding), to build an `alg: none` token by hand.
mod base64_free {
    pub fn encode(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}

#[tokio::test]
async fn missing_expired_forged_and_unsigned_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now().timestamp();
    let tokens = [
        ("", "unauthenticated"),
        (
            &hs256_token(SECRET, "acme", "u", &[Role::Member], -120)[..],
            "token_expired",
        ),
        (
            &hs256_token(
                b"another-secret-another-secret-00",
                "acme",
                "u",
                &[Role::Member],
                3600,
            )[..],
            "invalid_token",
        ),
        (
            &unsigned_token(
                &json!({"sub": "u", "tenant_id": "acme", "roles": ["admin"], "exp": now + 3600}),
            )[..],
            "invalid_token",
        ),
        ("not.a.jwt", "invalid_token"),
        (
            &hs256_token(SECRET, "ac\u{0}me", "u", &[Role::Member], 3600)[..],
            "invalid_token",
        ),
    ];
    let http = reqwest::Client::new();
    for (token, code) in tokens {
        let mut req = http
            .post(format!("{}/v1/conversations", app.base))
            .json(&json!({"title": "x"}));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let body: Value = resp.json().await.unwrap();
        assert_problem(status, &body, StatusCode::UNAUTHORIZED, code);
    }
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn roles_limit_what_a_caller_may_do() {
    let app = TestApp::spawn().await;
    let id = member(&app).start("Roles").await;
    let auditor = Client::new(&app, "acme", &[Role::Auditor]);
    let (status, body, _) = auditor
        .post("/v1/conversations", json!({"title": "x"}), &[])
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let path = format!("/v1/conversations/{id}/messages");
    let (status, body, _) = member(&app)
        .post(
            &path,
            json!({"role": "assistant", "content": "I am the bot"}),
            &[],
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(app.event_count().await, 1);
    let service = Client::new(&app, "acme", &[Role::Service]);
    let (status, _, _) = service
        .post(&path, json!({"role": "assistant", "content": "Hello", "model": "m", "prompt_tokens": 3, "completion_tokens": 1}), &[])
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn an_admin_asks_a_projections_projector_to_redrive_and_it_takes_the_request_once() {
    let app = TestApp::spawn().await;
    let path = "/v1/admin/projections/read_model/redrive";
    let (status, body, _) = member(&app).post(path, json!({}), &[]).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let admin = Client::new(&app, "acme", &[Role::Admin]);
    let (status, body, _) = admin.post(path, json!({}), &[]).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
    // Once its projector has made the projection, the request is recorded for it.
    let pool = &app.stack.db.pool;
    sqlx::query(
        "INSERT INTO projections (name, generation, schema_name) VALUES ('read_model', 1, 'read_model_g1')",
    )
    .execute(pool)
    .await
    .expect("a projection");
    let (status, body, _) = admin.post(path, json!({}), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["projection"], "read_model");
    assert!(
        projection::take_redrive_request(pool, "read_model")
            .await
            .expect("take")
    );
    assert!(
        !projection::take_redrive_request(pool, "read_model")
            .await
            .expect("take"),
        "a request is taken once"
    );
}

#[tokio::test]
async fn malformed_requests_answer_4xx_problems_and_append_nothing() {
    let app = TestApp::spawn().await;
    let c = member(&app);
    let id = c.start("Input").await;
    let msgs = format!("{}/v1/conversations/{id}/messages", app.base);
    let http = reqwest::Client::new();
    let raw = |body: String, content_type: &'static str| {
        http.post(&msgs)
            .bearer_auth(&c.token)
            .header("content-type", content_type)
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            raw(
                "{\"role\": \"user\", \"content\": ".into(),
                "application/json",
            ),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            raw(
                r#"{"role": "user", "content": 5}"#.into(),
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            raw(
                r#"{"role": "user", "content": "x", "extra": 1}"#.into(),
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            raw(
                r#"{"role": "robot", "content": "x"}"#.into(),
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            raw(r#"{"role": "user"}"#.into(), "application/json"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            raw(
                r#"{"role": "user", "content": "   "}"#.into(),
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            raw(
                json!({"role": "user", "content": "x".repeat(32_769)}).to_string(),
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            raw(
                json!({"role": "user", "content": "x".repeat(300_000)}).to_string(),
                "application/json",
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            raw(r#"{"role": "user", "content": "x"}"#.into(), "text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            raw(
                r#"{"role": "user", "content": "x", "prompt_tokens": -1}"#.into(),
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            http.post(format!("{}/v1/conversations/not-a-uuid/messages", app.base))
                .bearer_auth(&c.token)
                .json(&json!({"role": "user", "content": "x"})),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            http.post(format!("{}/v1/conversations", app.base))
                .bearer_auth(&c.token)
                .json(&json!({"title": ""})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            http.post(format!("{}/v1/conversations", app.base))
                .bearer_auth(&c.token)
                .json(&json!({"title": "ok", "metadata": {"k": "nul \u{0} here"}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            http.post(format!("{}/v1/conversations", app.base))
                .bearer_auth(&c.token)
                .json(&json!({"title": "nul \u{0} title"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            raw(
                r#"{"role": "user", "content": "nul \u0000 in content"}"#.into(),
                "application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            http.post(format!("{}/v1/conversations", app.base))
                .bearer_auth(&c.token)
                .header("idempotency-key", "x".repeat(300))
                .json(&json!({"title": "ok"})),
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
        ),
    ];
    for (i, (req, status, code)) in cases.into_iter().enumerate() {
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), status, "case {i}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "case {i}"
        );
        let body: Value = resp.json().await.expect("problem body");
        assert_eq!(body["code"], code, "case {i}: {body}");
    }
    assert_eq!(app.event_count().await, 1, "only the start was appended");
}

#[tokio::test]
async fn thirty_two_concurrent_clients_on_one_conversation_all_succeed() {
    let app = TestApp::spawn().await;
    let c = member(&app);
    let id = c.start("Hot").await;
    let path = format!("/v1/conversations/{id}/messages");
    let results = futures::future::join_all((0..32).map(|i| {
        let client = Client::new(&app, "acme", &[Role::Member]);
        let path = path.clone();
        async move {
            client
                .post(
                    &path,
                    json!({"role": "user", "content": format!("message {i}")}),
                    &[],
                )
                .await
        }
    }))
    .await;
    let mut versions: Vec<u64> = results
        .iter()
        .map(|(s, b, _)| {
            assert_eq!(*s, StatusCode::CREATED, "{b}");
            b["version"].as_u64().unwrap()
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..=33).collect::<Vec<_>>(),
        "each message got its own version"
    );
    let mut contents: Vec<String> = sqlx::query_scalar(
        "SELECT payload->'MessageSent'->>'content' FROM events WHERE aggregate_id = $1 AND event_type = 'MessageSent'",
    )
    .bind(&id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    contents.sort();
    let mut expected: Vec<String> = (0..32).map(|i| format!("message {i}")).collect();
    expected.sort();
    assert_eq!(contents, expected);
}

#[tokio::test]
async fn the_openapi_document_and_health_are_served() {
    let app = TestApp::spawn().await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", app.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["paths"]["/v1/conversations/{id}/messages"]["post"].is_object(),
        "{doc}"
    );
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["MessageRole"]["enum"],
        json!(["user", "assistant", "system"])
    );
    assert_eq!(
        schemas["SendMessage"]["properties"]["content"]["maxLength"],
        32768
    );
    // Every operation lists the problems any request can meet.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for status in ["400", "401", "403", "404", "408", "413", "429", "503"] {
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {path} does not document {status}"
                );
            }
            if operation["requestBody"].is_object() {
                for status in ["409", "412", "415", "422"] {
                    assert!(
                        operation["responses"][status].is_object(),
                        "{method} {path} does not document {status}"
                    );
                }
            }
        }
    }
    assert!(schemas["Problem"]["properties"]["code"].is_object());
    let ready = reqwest::get(format!("{}/readyz", app.base)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let missing = reqwest::get(format!("{}/v2/nothing", app.base))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_expired_idempotency_key_makes_a_new_request() {
    let app = TestApp::spawn().await;
    let c = member(&app);
    let key = [("idempotency-key", "short-lived")];
    let (_, first, _) = c
        .post("/v1/conversations", json!({"title": "Once"}), &key)
        .await;
    let (_, replay, _) = c
        .post("/v1/conversations", json!({"title": "Once"}), &key)
        .await;
    assert_eq!(first["id"], replay["id"]);
    let kept = app
        .service
        .expire_idempotency_keys(std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(kept, 0, "a fresh key is kept");
    let removed = app
        .service
        .expire_idempotency_keys(std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let (status, again, _) = c
        .post("/v1/conversations", json!({"title": "Once"}), &key)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(
        again["id"], first["id"],
        "after expiry the key no longer replays"
    );
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_answers_503_with_retry_after() {
    // A pool whose database is gone (nothing listens on port 1).
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://threadline@127.0.0.1:1/gone")
        .unwrap();
    let service = std::sync::Arc::new(commands::CommandService::new(
        pool,
        std::sync::Arc::new(commands::TemplateGenerator),
    ));
    let app = command_api::http::router(command_api::http::AppState {
        service,
        auth: testkit::tokens::authenticator(),
        relay: None,
        relay_name: "test".into(),
        edge: platform::edge::EdgeConfig::permissive(),
    });
    let (base, server) = testkit::serve(app).await;
    let token = testkit::tokens::token("acme", &[Role::Member]);
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/conversations"))
        .bearer_auth(&token)
        .json(&json!({"title": "During the outage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "database_unavailable", "{body}");
    server.abort();
}

impl Client {
    /// Uploads a file to the knowledge base.
    async fn upload(&self, title: &str, content_type: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(
                reqwest::Url::parse_with_params(
                    &format!("{}/v1/knowledge", self.base),
                    [("title", title)],
                )
                .expect("url"),
            )
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    }
}

/// The text the stored `KnowledgeDocumentAdded` event of `id` carries, and its sha256.
async fn stored_knowledge(app: &TestApp, id: &str) -> (String, String, String) {
    let row: (String, String, String) = sqlx::query_as(
        "SELECT payload->'KnowledgeDocumentAdded'->>'text', payload->'KnowledgeDocumentAdded'->>'sha256', \
                payload->'KnowledgeDocumentAdded'->>'media_type' \
         FROM events WHERE aggregate_type = 'knowledge' AND aggregate_id = $1 AND sequence = 1",
    )
    .bind(id)
    .fetch_one(&app.db.pool)
    .await
    .expect("the added event");
    row
}

#[tokio::test]
async fn an_admin_adds_text_markdown_and_pdf_files_to_the_knowledge_base() {
    let app = TestApp::spawn().await;
    let admin = Client::new(&app, "acme", &[Role::Admin]);

    let (status, body) = admin
        .upload(
            "Shipping",
            "text/plain; charset=utf-8",
            "Launch is planned for May.\n".into(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["aggregate"], "knowledge");
    assert_eq!(body["version"], 1);
    let (text, sha256, media) =
        stored_knowledge(&app, body["id"].as_str().unwrap_or_default()).await;
    assert_eq!(text, "Launch is planned for May.\n");
    assert_eq!(media, "text/plain");
    assert_eq!(
        sha256,
        event_store::blobs::sha256_hex(b"Launch is planned for May.\n")
    );

    let pdf =
        testkit::files::pdf_with_text(&["Refunds are issued within 14 days.", "Ask (politely)."]);
    let (status, body) = admin
        .upload("Refund policy", "application/pdf", pdf.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (text, sha256, media) =
        stored_knowledge(&app, body["id"].as_str().unwrap_or_default()).await;
    assert!(
        text.contains("Refunds are issued within 14 days."),
        "{text:?}"
    );
    assert!(text.contains("Ask (politely)."), "{text:?}");
    assert_eq!(media, "application/pdf");
    // The original is kept by its hash, byte for byte, outside the event.
    let original = event_store::blobs::get(&app.db.pool, &sha256)
        .await
        .expect("read blob")
        .expect("the original is stored");
    assert_eq!(original.bytes, pdf);
    assert_eq!(original.media_type, "application/pdf");

    let (status, body) = admin
        .upload(
            "Notes",
            "text/markdown",
            "# Pricing\n\nThe basic plan costs 10 EUR.".into(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(app.scalar("SELECT count(*) FROM blobs").await, 3);
}

#[tokio::test]
async fn files_the_knowledge_base_does_not_take_are_refused_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let admin = Client::new(&app, "acme", &[Role::Admin]);
    let refusals: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "text/plain",
            vec![],
            StatusCode::UNPROCESSABLE_ENTITY,
            "file_empty",
        ),
        (
            "text/plain",
            b" \n\t\n".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "file_empty",
        ),
        (
            "application/pdf",
            testkit::files::pdf_without_text(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "pdf_without_text",
        ),
        (
            "text/plain",
            testkit::files::pdf_with_text(&["hi"]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "media_type_mismatch",
        ),
        (
            "application/pdf",
            b"just text".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "media_type_mismatch",
        ),
        (
            "text/markdown",
            vec![0xff, 0xfe, 0x41, 0x00],
            StatusCode::UNPROCESSABLE_ENTITY,
            "media_type_mismatch",
        ),
        (
            "application/pdf",
            b"%PDF-1.7\nnot really a pdf".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "file_unreadable",
        ),
        (
            "image/png",
            b"\x89PNG\r\n".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "text/plain; charset=iso-8859-1",
            b"caf\xe9".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "text/plain",
            vec![b'a'; commands::intake::DEFAULT_MAX_BYTES + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (content_type, bytes, want_status, code) in refusals {
        let (status, body) = admin.upload("Refused", content_type, bytes).await;
        assert_problem(status, &body, want_status, code);
    }
    // A title the aggregate refuses: the file was fine, the command is not.
    let (status, body) = admin.upload("", "text/plain", b"fine".to_vec()).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    // Only members: the knowledge base is curated by admins.
    let (status, body) = member(&app)
        .upload("Mine", "text/plain", b"text".to_vec())
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(app.event_count().await, 0);
    // The refused title's file was read before the title was refused: its blob is the
    // one harmless leftover (content-addressed, reused by the next upload of it).
    assert!(app.scalar("SELECT count(*) FROM blobs").await <= 1);
}

#[tokio::test]
async fn a_removed_knowledge_document_is_gone_and_another_tenant_cannot_remove_one() {
    let app = TestApp::spawn().await;
    let admin = Client::new(&app, "acme", &[Role::Admin]);
    let (status, body) = admin
        .upload("Doc", "text/plain", b"Some fact.".to_vec())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let path = format!("/v1/knowledge/{}", body["id"].as_str().unwrap_or_default());

    let globex = Client::new(&app, "globex", &[Role::Admin]);
    let (status, body) = globex.delete(&path).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = member(&app).delete(&path).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");

    let (status, body) = admin.delete(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2);
    let (status, body) = admin.delete(&path).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = admin.delete("/v1/knowledge/not-a-uuid").await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(app.event_count().await, 2);
}

impl Client {
    async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .patch(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn an_admin_manages_webhook_endpoints_and_sees_each_secret_once() {
    let app = TestApp::spawn().await;
    let admin = Client::new(&app, "acme", &[Role::Admin]);
    let endpoint = json!({"url": "http://127.0.0.1:9/hook", "event_types": ["message.sent", "message.sent"], "description": "CRM"});
    let (status, body, headers) = admin
        .post(
            "/v1/webhooks/endpoints",
            endpoint.clone(),
            &[("idempotency-key", "hook-1")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["aggregate"], "webhook_endpoint");
    assert_eq!(headers["cache-control"], "no-store");
    let secret = body["secret"].as_str().expect("a secret").to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    let id = body["id"].as_str().expect("id").to_owned();
    // The same request again: the same answer, the same secret.
    let (status, again, _) = admin
        .post(
            "/v1/webhooks/endpoints",
            endpoint,
            &[("idempotency-key", "hook-1")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(
        (
            again["id"].clone(),
            again["secret"].clone(),
            again["replayed"].clone()
        ),
        (json!(id), json!(secret), json!(true))
    );

    let (status, rotated, _) = admin
        .post(
            &format!("/v1/webhooks/endpoints/{id}/rotate-secret"),
            json!({"grace_seconds": 3600}),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert!(
        rotated["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_") && s != secret)
    );

    let (status, body) = admin
        .patch(
            &format!("/v1/webhooks/endpoints/{id}"),
            json!({"event_types": ["*"]}),
        )
        .await;
    assert_eq!(
        (status, body["version"].clone()),
        (StatusCode::OK, json!(3)),
        "{body}"
    );
    let disable = format!("/v1/webhooks/endpoints/{id}/disable");
    let (status, body, _) = admin
        .post(&disable, json!({"reason": "maintenance"}), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body, _) = admin.post(&disable, json!({}), &[]).await;
    assert_problem(status, &body, StatusCode::CONFLICT, "unchanged");
    let (status, body, _) = admin
        .post(
            &format!("/v1/webhooks/endpoints/{id}/enable"),
            json!({}),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let redeliver = format!("/v1/webhooks/endpoints/{id}/redeliver");
    let (status, body, _) = admin.post(&redeliver, json!({}), &[]).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, body, _) = admin
        .post(&redeliver, json!({"since": "2026-01-01T00:00:00Z"}), &[])
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // Another tenant's admin does not see it; a member may not manage endpoints.
    let other = Client::new(&app, "globex", &[Role::Admin]);
    let (status, body, _) = other.post(&disable, json!({}), &[]).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body, _) = member(&app)
        .post(
            "/v1/webhooks/endpoints",
            json!({"url": "https://h.example/x", "event_types": ["*"]}),
            &[],
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");

    let (status, body) = admin.delete(&format!("/v1/webhooks/endpoints/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = admin.delete(&format!("/v1/webhooks/endpoints/{id}")).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn bad_webhook_endpoints_are_refused_with_problems_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let admin = Client::new(&app, "acme", &[Role::Admin]);
    for (body, status, code) in [
        (
            json!({"url": "https://h.example/x", "event_types": ["message.snt"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"url": "https://h.example/x", "event_types": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"url": "ftp://h.example/x", "event_types": ["*"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "url_refused",
        ),
        (
            json!({"url": "https://10.1.2.3/x", "event_types": ["*"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "url_refused",
        ),
        (
            json!({"url": "https://169.254.169.254/latest", "event_types": ["*"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "url_refused",
        ),
        (
            json!({"url": "https://user:pw@h.example/x", "event_types": ["*"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "url_refused",
        ),
        (
            json!({"url": "not a url", "event_types": ["*"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "url_refused",
        ),
        (
            json!({"url": "https://h.example/x", "event_types": ["*"], "secret": "mine"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ] {
        let (got, problem, _) = admin
            .post("/v1/webhooks/endpoints", body.clone(), &[])
            .await;
        assert_eq!(got, status, "{body} → {problem}");
        assert_eq!(problem["code"], code, "{body} → {problem}");
    }
    let (status, body, _) = admin
        .post(
            &format!(
                "/v1/webhooks/endpoints/{}/rotate-secret",
                uuid::Uuid::new_v4()
            ),
            json!({"grace_seconds": 9_000_000_000_000_000_000i64}),
            &[],
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn registration_refuses_every_internal_address_unless_loopback_is_allowed_explicitly() {
    use webhooks::ssrf::Guard;
    let app = TestApp::spawn().await;
    let strict = commands::CommandService::new(
        app.db.pool.clone(),
        std::sync::Arc::new(commands::TemplateGenerator),
    )
    .with_webhooks(commands::WebhookSettings {
        guard: Guard::default(),
        ..testkit::webhooks::settings()
    });
    let meta = testkit::commands::meta("acme");
    for url in [
        "https://127.0.0.1/x",
        "https://localhost/x",
        "https://10.0.0.1/",
        "https://172.16.5.4/",
        "https://192.168.1.1/",
        "https://100.64.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[fd00::1]/",
        "https://[fe80::1]/",
        "https://224.0.0.1/",
        "https://0.0.0.0/",
        "https://2130706433/",
        "http://h.example/plain-http",
    ] {
        let refused = strict
            .create_webhook_endpoint(
                commands::NewEndpoint {
                    url: url.into(),
                    event_types: vec!["*".into()],
                    description: None,
                },
                &meta,
            )
            .await;
        assert!(
            matches!(
                refused,
                Err(commands::CommandError::Webhook(
                    commands::WebhookError::UrlRefused(_)
                ))
            ),
            "{url}: {refused:?}"
        );
    }
    assert_eq!(app.event_count().await, 0);
}
