//! Request metrics. The Prometheus recorder is global to a process, so this test has a
//! test binary of its own: no other test's requests can move the counters it reads.

mod common;

use common::TestApp;
use platform::auth::Role;
use serde_json::json;

/// The value of `http_requests_total{method="POST",route="/v1/conversations",status="201"}`
/// in a scrape (0 if absent).
async fn created_count(app: &TestApp) -> f64 {
    let text = reqwest::get(format!("{}/metrics", app.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("http_requests_total{")
                && l.contains("method=\"POST\"")
                && l.contains("route=\"/v1/conversations\"")
                && l.contains("status=\"201\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_requests() {
    let app = TestApp::spawn().await;
    let before = created_count(&app).await;
    let http = reqwest::Client::new();
    for n in 0..3 {
        let resp = http
            .post(format!("{}/v1/conversations", app.base))
            .bearer_auth(app.token("acme", &[Role::Member]))
            .json(&json!({"title": format!("Counted {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    assert_eq!(
        created_count(&app).await - before,
        3.0,
        "each of this test's three accepted commands is counted once"
    );
}

/// Label sets of `http_requests_total` in a scrape.
async fn series(app: &TestApp) -> std::collections::BTreeSet<String> {
    let text = reqwest::get(format!("{}/metrics", app.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ').map(|(labels, _)| labels.to_owned()))
        .collect()
}

#[tokio::test]
async fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    // Warm up the label sets an anonymous caller can reach at all.
    for (method, path) in [
        ("BREW", "/nope"),
        ("GET", "/nope"),
        ("BREW", "/v1/conversations"),
    ] {
        let _ = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", app.base),
            )
            .send()
            .await
            .unwrap();
    }
    let before = series(&app).await;
    for n in 0..300 {
        let method = reqwest::Method::from_bytes(format!("M{n}X").as_bytes()).unwrap();
        let path = if n % 2 == 0 {
            format!("/random/{n}")
        } else {
            format!("/v1/conversations/{}/messages", uuid_like(n))
        };
        let resp = http
            .request(method, format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error(), "{path}: {}", resp.status());
    }
    let after = series(&app).await;
    let grown: Vec<&String> = after.difference(&before).collect();
    assert!(
        grown.len() <= 2,
        "300 made-up requests added label sets: {grown:#?}"
    );
}

fn uuid_like(n: usize) -> String {
    format!("00000000-0000-0000-0000-{n:012}")
}
