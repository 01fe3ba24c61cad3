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

/// A JWKS endpoint whose key set the test can change; counts fetches.
struct Jwks {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<Mutex<u32>>,
}

async fn serve_jwks(keys: &[&str]) -> Jwks {
    let keys = Arc::new(Mutex::new(
        keys.iter()
            .map(|k| serde_json::from_str(k).unwrap())
            .collect::<Vec<Value>>(),
    ));
    let fetches = Arc::new(Mutex::new(0));
    let (k, f) = (keys.clone(), fetches.clone());
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            let (k, f) = (k.clone(), f.clone());
            async move {
                *f.lock().unwrap() += 1;
                axum::Json(json!({"keys": *k.lock().unwrap()}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Jwks { url, keys, fetches }
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
        matches!(result, Err(AuthError::KeysUnavailable(_))),
        "{result:?}"
    );
}
