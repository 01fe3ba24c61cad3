//! `GET /v1/analytics/usage` over HTTP: admins only, JSON or CSV, bounded ranges,
//! `position` waits like every read.

mod common;

use std::sync::Arc;

use common::ReadStack;
use platform::auth::Role;
use projection::TableSink;
use reqwest::StatusCode;
use serde_json::Value;
use testkit::commands::{meta, user_message};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admins_read_usage_by_day_or_hour_as_json_or_csv() {
    let stack = ReadStack::spawn().await;
    let _analytics = stack
        .projector(Arc::new(TableSink(analytics::Analytics)))
        .await;
    let _read_model = stack.read_model().await;
    let service = &stack.commands.service;
    let c = service
        .start_conversation("Usage".into(), Default::default(), &meta("acme"))
        .await
        .expect("start")
        .aggregate_id;
    let mut last = None;
    for n in 0..3 {
        last = Some(
            service
                .send_message(c, user_message(&format!("m{n}")), None, &meta("acme"))
                .await
                .expect("send"),
        );
    }
    let position = last
        .map(|a| format!("conversation:{}:{}", a.aggregate_id, a.version.0))
        .expect("a position");
    let http = reqwest::Client::new();
    let admin = stack.commands.token("acme", &[Role::Admin]);
    let url = |q: &str| format!("{}/v1/analytics/usage{q}", stack.query_base);

    let resp = http
        .get(url(&format!("?bucket=hour&position={position}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("usage");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["bucket"], "hour");
    let value = |metric: &str, dimension: &str| {
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|r| r["metric"] == metric && r["dimension"] == dimension)
            .map(|r| r["value"].as_f64().unwrap_or_default())
            .sum::<f64>()
    };
    assert_eq!(value("messages", "user"), 3.0, "{body}");
    assert_eq!(value("conversations_started", ""), 1.0);
    assert_eq!(value("active_users", ""), 1.0);

    let csv = http
        .get(url(&format!("?position={position}")))
        .bearer_auth(&admin)
        .header("accept", "text/csv")
        .send()
        .await
        .expect("csv");
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/csv"))
    );
    let text = csv.text().await.expect("text");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("bucket,metric,dimension,value"));
    assert!(lines.any(|l| l.contains(",messages,user,3")), "{text}");

    // Totals per metric.
    let totals: Value = http
        .get(url(&format!("?group_by=metric&position={position}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("totals")
        .json()
        .await
        .expect("json");
    let messages: Vec<&Value> = totals["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|r| r["metric"] == "messages")
        .collect();
    assert_eq!(messages.len(), 1, "{totals}");
    assert_eq!(messages[0]["dimension"], "");
    assert_eq!(messages[0]["value"].as_f64(), Some(3.0));

    // One conversation's summary, from the read model.
    let summary: Value = http
        .get(format!(
            "{}/v1/analytics/conversations/{c}?position={position}",
            stack.query_base
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("summary")
        .json()
        .await
        .expect("json");
    assert_eq!(summary["user_messages"], 3, "{summary}");
    assert_eq!(summary["assistant_messages"], 0);
    assert_eq!(summary["status"], "open");
    let elsewhere = http
        .get(format!(
            "{}/v1/analytics/conversations/{c}",
            stack.query_base
        ))
        .bearer_auth(stack.commands.token("globex", &[Role::Admin]))
        .send()
        .await
        .expect("another tenant's summary")
        .status();
    assert_eq!(elsewhere, StatusCode::NOT_FOUND);

    // Another tenant's admin sees none of it; members may not read usage.
    let other: Value = http
        .get(url(""))
        .bearer_auth(stack.commands.token("globex", &[Role::Admin]))
        .send()
        .await
        .expect("other tenant")
        .json()
        .await
        .expect("json");
    assert_eq!(other["items"], Value::Array(Vec::new()), "{other}");
    let member = http
        .get(url(""))
        .bearer_auth(stack.commands.token("acme", &[Role::Member]))
        .send()
        .await
        .expect("member")
        .status();
    assert_eq!(member, StatusCode::FORBIDDEN);
    for bad in [
        "?bucket=week",
        "?bucket=hour&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
        "?from=2026-03-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "?from=yesterday",
        "?colour=blue",
        "?group_by=tenant",
    ] {
        let status = http
            .get(url(bad))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("bad")
            .status();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}
