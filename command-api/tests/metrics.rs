//! Request metrics. The Prometheus recorder is global to a process, so this test has a
//! test binary of its own: no other test's requests can move the counters it reads.

mod common;

use common::TestApp;
use platform::auth::Role;
use serde_json::json;

/// The value of `http_requests_total{method="POST",status="201"}` in a scrape (0 if absent).
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
