//! The edge in front of every API: rate limits per subject, tenant and peer, CORS,
//! security headers. A real HTTP server and client.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use platform::auth::{AuthConfig, Authenticator, KeySource, Principal};
use platform::edge::{EdgeConfig, Rate};
use platform::http::{HttpLimits, serve};

const SECRET: &[u8] = b"edge-test-secret-edge-test-secret-!!";

fn token(tenant: &str, subject: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": subject, "tenant_id": tenant, "roles": ["member"], "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn rate(per_second: u32, burst: u32) -> Rate {
    Rate {
        per_second: NonZeroU32::new(per_second).unwrap(),
        burst: NonZeroU32::new(burst).unwrap(),
    }
}

async fn start(config: EdgeConfig) -> String {
    let auth = Authenticator::new(AuthConfig {
        keys: KeySource::Hs256 {
            secret: SECRET.to_vec(),
        },
        issuer: None,
        audience: None,
        leeway: 0,
        jwks_min_refresh: Duration::from_secs(10),
    });
    #[derive(Clone)]
    struct S(Arc<Authenticator>);
    impl axum::extract::FromRef<S> for Arc<Authenticator> {
        fn from_ref(s: &S) -> Self {
            s.0.clone()
        }
    }
    let app = Router::new()
        .route("/whoami", get(|who: Principal| async move { who.subject }))
        .route("/open", get(|| async { "open" }))
        .with_state(S(auth.clone()));
    let app = platform::edge::apply(app, &config, auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let limits = HttpLimits {
        header_read: Duration::from_secs(5),
        request: Duration::from_secs(5),
        body: 1024,
    };
    tokio::spawn(serve(listener, app, limits, std::future::pending()));
    format!("http://{addr}")
}

#[tokio::test]
async fn callers_are_limited_per_subject_tenant_and_peer_with_429_and_headers() {
    let mut config = EdgeConfig::permissive();
    config.per_subject = rate(1, 3);
    config.per_tenant = rate(1, 5);
    config.per_peer = rate(1, 2);
    let base = start(config).await;
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<String>| {
        let mut req = http.get(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    // One subject: three in a burst, then 429 with when to retry.
    for n in 0..3 {
        let resp = get("/whoami", Some(token("acme", "ann"))).await.unwrap();
        assert_eq!(resp.status(), 200, "request {n}");
        assert_eq!(resp.headers()["ratelimit-limit"], "3");
        assert_eq!(resp.headers()["ratelimit-remaining"], &(2 - n).to_string());
    }
    let refused = get("/whoami", Some(token("acme", "ann"))).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    // Another subject of the same tenant still gets through, until the tenant's own
    // limit (5 in a burst) is spent.
    assert_eq!(
        get("/whoami", Some(token("acme", "bob")))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get("/whoami", Some(token("acme", "bob")))
            .await
            .unwrap()
            .status(),
        429
    );
    // Another tenant is not affected.
    assert_eq!(
        get("/whoami", Some(token("globex", "cy")))
            .await
            .unwrap()
            .status(),
        200
    );
    // Without a valid token, the peer address is limited.
    assert_eq!(get("/open", None).await.unwrap().status(), 200);
    assert_eq!(
        get("/open", Some("garbage".into())).await.unwrap().status(),
        200
    );
    assert_eq!(get("/open", None).await.unwrap().status(), 429);
}

#[tokio::test]
async fn only_allowed_origins_get_cors_and_every_answer_carries_security_headers() {
    let mut config = EdgeConfig::permissive();
    config.cors_origins = vec!["https://app.example".parse().unwrap()];
    let base = start(config).await;
    let http = reqwest::Client::new();
    let allowed = http
        .get(format!("{base}/open"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(allowed.headers()[name], value, "{name}");
    }
    let other = http
        .get(format!("{base}/open"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{base}/whoami"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert!(
        preflight.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
}
