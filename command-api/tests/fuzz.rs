//! Bad input never produces a 5xx or a write: random JSON bodies (wrong types, odd
//! strings with control and non-BMP characters, extra fields, deep nesting) and random
//! header values against every command endpoint, mostly as mutations of valid bodies,
//! where bugs hide. Fixed seeds keep runs repeatable; set FUZZ_SEED to explore others.
//! (With metadata values unchecked, seeds 1, 3 and 5 each found the NUL-in-jsonb 500.)

mod common;

use common::TestApp;
use platform::auth::Role;
use serde_json::{Map, Value, json};
use testkit::fuzz::FuzzRng as Rng;

/// A valid body for each endpoint, to mutate: most bugs hide behind otherwise valid input.
fn template(endpoint: usize) -> Value {
    match endpoint {
        0 => json!({"title": "Plan", "metadata": {"channel": "web"}}),
        1 | 4 => {
            json!({"role": "user", "content": "Hello", "model": "m", "prompt_tokens": 1, "completion_tokens": 2})
        }
        2 => json!({"title": "Renamed"}),
        _ => json!({"kind": "summary", "title": "Doc"}),
    }
}

/// One to three random changes: a field set to a random value or string, a field
/// removed, an unknown field added, or a random metadata value.
fn mutate(rng: &mut Rng, mut body: Value) -> Value {
    for _ in 0..=rng.below(3) {
        let Some(obj) = body.as_object_mut() else {
            break;
        };
        let keys: Vec<String> = obj.keys().cloned().collect();
        if keys.is_empty() {
            obj.insert(rng.string(), rng.value(1));
            continue;
        }
        let key = keys[rng.below(keys.len() as u64) as usize].clone();
        match rng.below(5) {
            0 => {
                obj.insert(key, rng.value(1));
            }
            1 => {
                obj.insert(key, json!(rng.string()));
            }
            2 => {
                obj.remove(&key);
            }
            3 => {
                obj.insert(rng.string(), rng.value(1));
            }
            _ => {
                // A valid key with a random value.
                let entry = ("channel".to_owned(), json!(rng.string()));
                obj.insert("metadata".into(), Value::Object(Map::from_iter([entry])));
            }
        }
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bad_input_never_gets_a_server_error_or_a_partial_write() {
    // Three fixed seeds (1,800 requests) unless FUZZ_SEED names one.
    let seeds: Vec<u64> = match std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => vec![1, 3, 5],
    };
    let app = TestApp::spawn().await;
    let token = app.token("acme", &[Role::Admin]);
    let http = reqwest::Client::new();
    let started: Value = http
        .post(format!("{}/v1/conversations", app.base))
        .bearer_auth(&token)
        .json(&json!({"title": "Fuzzed"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["id"].as_str().unwrap().to_owned();
    let mut rng = Rng(1);
    let endpoints: Vec<(String, &[&str])> = vec![
        ("/v1/conversations".into(), &["title", "metadata"]),
        (
            format!("/v1/conversations/{id}/messages"),
            &[
                "role",
                "content",
                "model",
                "prompt_tokens",
                "completion_tokens",
            ],
        ),
        (format!("/v1/conversations/{id}/rename"), &["title"]),
        (
            format!("/v1/conversations/{id}/documents"),
            &["kind", "title"],
        ),
        (
            "/v1/conversations/not-a-uuid/messages".into(),
            &["role", "content"],
        ),
    ];
    // What the OpenAPI document says each endpoint may answer.
    let doc: Value = http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let templates = [
        "/v1/conversations",
        "/v1/conversations/{id}/messages",
        "/v1/conversations/{id}/rename",
        "/v1/conversations/{id}/documents",
        "/v1/conversations/{id}/messages",
    ];
    let mut accepted = 0;
    for (seed, case) in seeds.iter().flat_map(|s| (0..600).map(move |c| (*s, c))) {
        if case == 0 {
            rng = Rng(seed | 1);
        }
        let (path, fields) = &endpoints[case % endpoints.len()];
        let body = match rng.below(4) {
            0 => rng.value(0),
            1 => Value::Object(rng.object(0, fields)),
            _ => mutate(&mut rng, template(case % endpoints.len())),
        };
        let before: i64 = app.event_count().await;
        // Mostly POST, the commands' method; now and then another one, or one made up.
        let method = rng.method_mostly("POST");
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let head = method == reqwest::Method::HEAD;
        let post = method == reqwest::Method::POST;
        let mut req = http
            .request(method, format!("{}{path}", app.base))
            .bearer_auth(&token)
            .json(&body);
        for name in [
            "if-match",
            "idempotency-key",
            "x-correlation-id",
            "traceparent",
        ] {
            if rng.below(4) == 0 {
                let value: String = rng
                    .string()
                    .chars()
                    .filter(|c| !c.is_control() && c.is_ascii())
                    .collect();
                req = req.header(name, value);
            }
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        if post {
            let template = templates[case % endpoints.len()];
            let documented = &doc["paths"][template]["post"]["responses"][status.as_str()];
            assert!(
                !documented.is_null(),
                "case {case}: POST {template} answered {status}, which its OpenAPI entry does not list"
            );
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status.as_u16() < 500,
            "case {case} (seed {seed}): {path} {body} -> {status} {text}"
        );
        let after = app.event_count().await;
        if status.is_success() {
            accepted += 1;
            assert_eq!(
                after,
                before + 1,
                "case {case}: one accepted command, one event"
            );
        } else {
            assert_eq!(
                after, before,
                "case {case}: {status} appended events: {body}"
            );
            let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            // A HEAD answer has no body: its content type says it is a problem.
            assert!(
                problem["code"].is_string() || (head && content_type == "application/problem+json"),
                "case {case}: {status} without a problem code: {text}"
            );
        }
    }
    eprintln!(
        "{accepted} of {} random requests were valid commands",
        seeds.len() * 600
    );
    // Mutations of valid bodies are meant to reach the handlers: a server that refused
    // everything would pass every check above, so require that some got through (the
    // fixed seeds give 61 of 1,800).
    assert!(
        accepted * 60 >= seeds.len() * 600,
        "only {accepted} of {} requests were accepted: the fuzzer no longer reaches the handlers",
        seeds.len() * 600
    );
}
