//! RS256 tokens verified against keys from a JWKS URL, served by a real HTTP server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use platform::auth::{AuthConfig, AuthError, Authenticator, KeySource, Role};
use serde_json::{Value, json};

const RSA1: &[u8] = include_bytes!("fixtures/rsa1.der");
const RSA2: &[u8] = include_bytes!("fixtures/rsa2.der");
const JWK1: &str = include_str!("fixtures/rsa1.jwk.json");
const JWK2: &str = include_str!("fixtures/rsa2.jwk.json");

/// How the JWKS endpoint behaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Serve,
    Fail,
    Stall,
}

/// A JWKS endpoint whose key set and behaviour the test can change; counts fetches.
struct Jwks {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<Mutex<u32>>,
    mode: Arc<Mutex<Mode>>,
}

async fn serve_jwks(keys: &[&str]) -> Jwks {
    let keys = Arc::new(Mutex::new(
        keys.iter()
            .map(|k| serde_json::from_str(k).unwrap())
            .collect::<Vec<Value>>(),
    ));
    let fetches = Arc::new(Mutex::new(0));
    let mode = Arc::new(Mutex::new(Mode::Serve));
    let (k, f, m) = (keys.clone(), fetches.clone(), mode.clone());
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            let (k, f, m) = (k.clone(), f.clone(), m.clone());
            async move {
                *f.lock().unwrap() += 1;
                let mode = *m.lock().unwrap();
                match mode {
                    Mode::Serve => {}
                    Mode::Fail => return Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
                    Mode::Stall => tokio::time::sleep(Duration::from_secs(30)).await,
                }
                let keys = k.lock().unwrap().clone();
                Ok(axum::Json(json!({ "keys": keys })))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Jwks {
        url,
        keys,
        fetches,
        mode,
    }
}

fn authenticator(url: &str, refresh: Duration) -> Arc<Authenticator> {
    Authenticator::new(AuthConfig {
        keys: KeySource::Jwks { url: url.into() },
        issuer: Some("https://issuer.example".into()),
        audience: Some("threadline".into()),
        leeway: 0,
        jwks_min_refresh: refresh,
    })
}

fn claims(exp_in: i64) -> Value {
    let now = chrono_now();
    json!({"sub": "svc-1", "tenant_id": "acme", "roles": ["service", "unknown-role"],
           "iss": "https://issuer.example", "aud": "threadline", "iat": now, "exp": now + exp_in})
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn rs256(der: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    encode(&header, claims, &EncodingKey::from_rsa_der(der)).unwrap()
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test]
async fn a_valid_rs256_token_yields_the_principal_from_its_claims() {
    let jwks = serve_jwks(&[JWK1]).await;
    let auth = authenticator(&jwks.url, Duration::from_secs(10));
    let who = auth
        .authenticate(Some(&bearer(&rs256(RSA1, "key-1", &claims(600)))))
        .await
        .unwrap();
    assert_eq!(
        (who.subject.as_str(), who.tenant_id.as_str()),
        ("svc-1", "acme")
    );
    assert_eq!(who.roles, vec![Role::Service], "unknown roles are dropped");
    // The key set is cached.
    auth.authenticate(Some(&bearer(&rs256(RSA1, "key-1", &claims(600)))))
        .await
        .unwrap();
    assert_eq!(*jwks.fetches.lock().unwrap(), 1);
}

#[tokio::test]
async fn wrong_keys_claims_and_algorithms_are_refused() {
    let jwks = serve_jwks(&[JWK1]).await;
    let auth = authenticator(&jwks.url, Duration::from_secs(10));
    let check = |token: String| {
        let auth = auth.clone();
        async move { auth.authenticate(Some(&bearer(&token))).await }
    };
    // Signed by key 2 but claiming to be key 1.
    assert!(matches!(
        check(rs256(RSA2, "key-1", &claims(600))).await,
        Err(AuthError::Invalid(_))
    ));
    // A kid the issuer never published.
    assert!(matches!(
        check(rs256(RSA2, "key-9", &claims(600))).await,
        Err(AuthError::UnknownKey)
    ));
    assert!(matches!(
        check(rs256(RSA1, "key-1", &claims(-10))).await,
        Err(AuthError::Expired)
    ));
    let mut wrong_aud = claims(600);
    wrong_aud["aud"] = json!("someone-else");
    assert!(matches!(
        check(rs256(RSA1, "key-1", &wrong_aud)).await,
        Err(AuthError::Invalid(_))
    ));
    let mut no_iss = claims(600);
    no_iss.as_object_mut().unwrap().remove("iss");
    assert!(matches!(
        check(rs256(RSA1, "key-1", &no_iss)).await,
        Err(AuthError::Invalid(_))
    ));
    // HS256 with the public key as the secret (algorithm confusion).
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("key-1".into());
    let confused = encode(
        &hs,
        &claims(600),
        &EncodingKey::from_secret(JWK1.as_bytes()),
    )
    .unwrap();
    assert!(matches!(check(confused).await, Err(AuthError::Invalid(_))));
    assert!(matches!(
        auth.authenticate(None).await,
        Err(AuthError::Missing)
    ));
}

#[tokio::test]
async fn a_rotated_key_is_fetched_when_a_token_names_it() {
    let jwks = serve_jwks(&[JWK1]).await;
    let auth = authenticator(&jwks.url, Duration::from_millis(200));
    auth.authenticate(Some(&bearer(&rs256(RSA1, "key-1", &claims(600)))))
        .await
        .unwrap();
    jwks.keys
        .lock()
        .unwrap()
        .push(serde_json::from_str(JWK2).unwrap());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let who = auth
        .authenticate(Some(&bearer(&rs256(RSA2, "key-2", &claims(600)))))
        .await
        .unwrap();
    assert_eq!(who.tenant_id, "acme");
    assert_eq!(*jwks.fetches.lock().unwrap(), 2);
}

#[tokio::test]
async fn unknown_kids_do_not_refetch_the_key_set_more_often_than_the_minimum_interval() {
    let jwks = serve_jwks(&[JWK1]).await;
    let auth = authenticator(&jwks.url, Duration::from_secs(600));
    let unknown = bearer(&rs256(RSA2, "key-7", &claims(600)));
    for _ in 0..5 {
        assert!(matches!(
            auth.authenticate(Some(&unknown)).await,
            Err(AuthError::UnknownKey)
        ));
    }
    assert_eq!(*jwks.fetches.lock().unwrap(), 1);
}

#[tokio::test]
async fn an_unreachable_key_set_is_reported_as_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    drop(listener);
    let auth = authenticator(&url, Duration::from_secs(10));
    let result = auth
        .authenticate(Some(&bearer(&rs256(RSA1, "key-1", &claims(600)))))
        .await;
    assert!(
        matches!(result, Err(AuthError::KeysUnavailable)),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_failing_key_server_is_asked_once_per_refresh_interval_and_not_named() {
    let jwks = serve_jwks(&[JWK1]).await;
    *jwks.mode.lock().unwrap() = Mode::Fail;
    let auth = authenticator(&jwks.url, Duration::from_secs(60));
    let mut answers = Vec::new();
    for n in 0..30 {
        let token = rs256(RSA1, &format!("unknown-{n}"), &claims(300));
        answers.push(auth.authenticate(Some(&bearer(&token))).await.unwrap_err());
    }
    assert_eq!(
        *jwks.fetches.lock().unwrap(),
        1,
        "one fetch, although it failed"
    );
    // Every one of them: while the key set cannot be had, a token is not known to be bad
    // (it was 401 invalid_token after the first, which is also what a handler verifying a
    // second time behind the edge answered).
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, AuthError::KeysUnavailable)),
        "{answers:?}"
    );
    for answer in &answers {
        let shown = platform::problem::Problem::from(clone_error(answer));
        let text = format!("{shown:?}");
        assert!(
            !text.contains(&jwks.url) && !text.contains("127.0.0.1"),
            "{text}"
        );
    }
}

fn clone_error(e: &AuthError) -> AuthError {
    match e {
        AuthError::Missing => AuthError::Missing,
        AuthError::Expired => AuthError::Expired,
        AuthError::Invalid(r) => AuthError::Invalid(r),
        AuthError::UnknownKey => AuthError::UnknownKey,
        AuthError::KeysUnavailable => AuthError::KeysUnavailable,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalling_key_server_does_not_slow_callers_whose_key_is_known() {
    let jwks = serve_jwks(&[JWK1]).await;
    // No refresh limit at all: the worst case for the callers with a known key.
    let auth = authenticator(&jwks.url, Duration::ZERO);
    let known = rs256(RSA1, "key-1", &claims(300));
    auth.authenticate(Some(&bearer(&known))).await.unwrap();
    *jwks.mode.lock().unwrap() = Mode::Stall;
    // Two anonymous clients keep naming unknown keys.
    let attackers: Vec<_> = (0..2)
        .map(|a| {
            let auth = auth.clone();
            tokio::spawn(async move {
                for n in 0..5 {
                    let token = rs256(RSA2, &format!("nope-{a}-{n}"), &claims(300));
                    let _ = auth.authenticate(Some(&bearer(&token))).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = std::time::Instant::now();
        auth.authenticate(Some(&bearer(&known))).await.unwrap();
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_millis(250),
        "a caller with a known key waited {slowest:?}"
    );
    for a in attackers {
        a.abort();
    }
}

#[tokio::test]
async fn tokens_with_critical_header_extensions_are_refused_and_errors_hide_internals() {
    use base64::Engine as _;
    let jwks = serve_jwks(&[JWK1]).await;
    let auth = authenticator(&jwks.url, Duration::from_secs(10));
    let valid = rs256(RSA1, "key-1", &claims(300));
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    parts[0] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(r#"{"alg":"RS256","kid":"key-1","crit":["exp-ext"],"exp-ext":1}"#);
    let crit = parts.join(".");
    let err = auth.authenticate(Some(&bearer(&crit))).await.unwrap_err();
    assert!(err.to_string().contains("critical"), "{err}");
    // Garbage that makes the JSON parser talk: the answer says only that it is malformed.
    let deep = format!(
        "{}.{}.sig",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("[".repeat(200)),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("{}")
    );
    let err = auth.authenticate(Some(&bearer(&deep))).await.unwrap_err();
    assert_eq!(err.to_string(), "the token is not valid: malformed token");
}
