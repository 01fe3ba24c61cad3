//! Who sees what inside a tenant, on every endpoint of both APIs: a member sees and
//! changes the conversations they started (and their documents); admins, auditors and
//! services see the whole tenant; another member's conversation does not exist for a
//! member, in status, body and timing, position tokens included.

use std::time::{Duration, Instant};

use e2e::Services;
use platform::auth::Role;
use reqwest::StatusCode;
use serde_json::json;
use testkit::tokens::SECRET;

use e2e::caller::Caller;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_sees_and_changes_only_their_own_conversations() {
    let services = Services::spawn().await;
    let projector = services.projector().await;
    let (cmd, q) = (&services.commands.base, &services.query_base);
    let ann = Caller::new(SECRET, "ann", &[Role::Member]);
    let bob = Caller::new(SECRET, "bob", &[Role::Member]);
    let admin = Caller::new(SECRET, "root", &[Role::Admin]);
    let auditor = Caller::new(SECRET, "eve", &[Role::Auditor]);
    let assistant = Caller::new(SECRET, "assistant", &[Role::Service]);

    let (status, started) = ann
        .post(
            format!("{cmd}/v1/conversations"),
            json!({"title": "Ann's plan"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let (status, _) = ann
        .post(
            format!("{cmd}/v1/conversations/{id}/messages"),
            json!({"role": "user", "content": "Ship in May"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, doc) = ann
        .post(
            format!("{cmd}/v1/conversations/{id}/documents"),
            json!({"kind": "summary"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    let doc_id = doc["id"].as_str().unwrap().to_owned();
    let position = doc["position"].as_str().unwrap().to_owned();
    // The assistant (a service) answers in any conversation of the tenant.
    let (status, answered) = assistant
        .post(
            format!("{cmd}/v1/conversations/{id}/messages"),
            json!({"role": "assistant", "content": "May it is"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answered}");
    let latest = answered["position"].as_str().unwrap().to_owned();
    let (status, _) = ann
        .get(format!("{q}/v1/conversations/{id}?position={latest}"))
        .await;
    assert_eq!(status, StatusCode::OK);

    // Bob: every command on Ann's conversation answers as for one that does not exist.
    for (path, body) in [
        ("messages", json!({"role": "user", "content": "mine now"})),
        ("rename", json!({"title": "Bob's now"})),
        ("end", json!({})),
        ("documents", json!({"kind": "summary"})),
    ] {
        let (status, problem) = bob
            .post(format!("{cmd}/v1/conversations/{id}/{path}"), body)
            .await;
        assert_eq!(
            (status, problem["code"].clone()),
            (StatusCode::NOT_FOUND, json!("not_found")),
            "bob {path}"
        );
    }
    // ...and every read.
    for path in [
        format!("/v1/conversations/{id}"),
        format!("/v1/conversations/{id}/messages"),
        format!("/v1/conversations/{id}/documents"),
        format!("/v1/documents/{doc_id}"),
    ] {
        let (status, problem) = bob.get(format!("{q}{path}")).await;
        assert_eq!(
            (status, problem["code"].clone()),
            (StatusCode::NOT_FOUND, json!("not_found")),
            "bob GET {path}"
        );
    }
    let (_, listed) = bob.get(format!("{q}/v1/conversations")).await;
    assert_eq!(listed["items"], json!([]), "bob lists none of Ann's");
    // A position token of Ann's waits and answers like one of nothing.
    let started_at = Instant::now();
    let (status, body) = bob
        .get(format!(
            "{q}/v1/conversations?position={position}&wait_ms=300"
        ))
        .await;
    assert!(started_at.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        (
            status,
            body["code"].clone(),
            body["applied_version"].clone()
        ),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!("position_not_reached"),
            json!(0)
        )
    );
    // Audit streams are for auditors and admins, never members.
    let (status, _) = bob
        .get(format!("{q}/v1/audit/conversation/{id}/events"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Ann, the admin and the auditor see it all.
    for (who, caller) in [("ann", &ann), ("admin", &admin), ("auditor", &auditor)] {
        let (status, conversation) = caller.get(format!("{q}/v1/conversations/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{who}");
        assert_eq!(conversation["message_count"], 2, "{who}");
        let (_, listed) = caller.get(format!("{q}/v1/conversations")).await;
        assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{who}");
        let (status, _) = caller.get(format!("{q}/v1/documents/{doc_id}")).await;
        assert_eq!(status, StatusCode::OK, "{who}");
        let (status, _) = caller
            .get(format!("{q}/v1/conversations?position={position}"))
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{who} waits for the token and gets it"
        );
    }
    // The admin may change it; Ann may end it.
    let (status, _) = admin
        .post(
            format!("{cmd}/v1/conversations/{id}/rename"),
            json!({"title": "Renamed by the admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = ann
        .post(format!("{cmd}/v1/conversations/{id}/end"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    projector.stop().await;
}
