//! Slow and idle clients against `platform::http::serve`, over raw TCP: each kind is cut
//! off within the configured limits while a well-behaved client keeps being served.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use platform::http::{HttpLimits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMITS: HttpLimits = HttpLimits {
    header_read: Duration::from_millis(500),
    request: Duration::from_millis(1000),
    body: 1000,
};

async fn start() -> String {
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route(
            "/refuse",
            post(|| async { (axum::http::StatusCode::UNAUTHORIZED, "refused") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(serve(listener, app, LIMITS, std::future::pending()));
    addr
}

/// Reads until the server closes the connection (or `within` passes: then panics).
/// Returns what it sent.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection is still open after {within:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// A client that keeps getting answers while the others misbehave.
async fn well_behaved(addr: String, until: Instant) -> (u32, Duration) {
    let http = reqwest::Client::new();
    let (mut served, mut slowest) = (0, Duration::ZERO);
    while Instant::now() < until {
        let started = Instant::now();
        let resp = http.get(format!("http://{addr}/ok")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        slowest = slowest.max(started.elapsed());
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (served, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slow_and_lying_clients_are_cut_off_while_others_are_served() {
    let addr = start().await;
    let good = tokio::spawn(well_behaved(
        addr.clone(),
        Instant::now() + Duration::from_secs(3),
    ));

    // Connects and sends nothing.
    let idle = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            read_until_closed(&mut s, Duration::from_secs(2)).await
        })
    };
    // Sends its headers a byte every 100 ms (slowloris).
    let slow_headers = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            let started = Instant::now();
            for b in b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = read_until_closed(&mut s, Duration::from_secs(2)).await;
            started.elapsed()
        })
    };
    // Sends a body a byte every 100 ms.
    let slow_body = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
                .await
                .unwrap();
            let started = Instant::now();
            let mut answer = String::new();
            for _ in 0..100 {
                if s.write_all(b"a").await.is_err() {
                    break;
                }
                let mut buf = [0u8; 512];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await
                {
                    answer.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if n == 0 || answer.contains("\r\n\r\n") {
                        break;
                    }
                }
            }
            (answer, started.elapsed())
        })
    };
    // Announces far more than it sends.
    let liar = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            let started = Instant::now();
            s.write_all(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{\"a\":\"bcdefgh\"}",
            )
            .await
            .unwrap();
            let answer = read_until_closed(&mut s, Duration::from_secs(2)).await;
            (answer, started.elapsed())
        })
    };
    // Asks once, then keeps the connection open and idle.
    let keep_alive = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            read_until_closed(&mut s, Duration::from_secs(2)).await
        })
    };

    assert_eq!(idle.await.unwrap(), "", "an idle connection is closed");
    let took = slow_headers.await.unwrap();
    assert!(
        took < Duration::from_secs(2),
        "slow headers cut off after {took:?}"
    );
    let (answer, took) = slow_body.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        took < Duration::from_millis(2000),
        "slow body cut off after {took:?}"
    );
    let (answer, took) = liar.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(
        took < Duration::from_millis(500),
        "refused from its Content-Length: {took:?}"
    );
    let answer = keep_alive.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let (served, slowest) = good.await.unwrap();
    assert!(served >= 20, "served {served}");
    assert!(
        slowest < Duration::from_millis(500),
        "slowest answer {slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_is_not_held_up_by_an_idle_keep_alive_client() {
    let app = Router::new().route("/ok", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = HttpLimits {
        header_read: Duration::from_secs(30),
        ..LIMITS
    };
    let server = tokio::spawn(serve(listener, app, limits, async move {
        let _ = stopped.await;
    }));
    // A client that keeps its connection open after an answer.
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("http://{addr}/ok"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let started = Instant::now();
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stopped")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    drop(http);
}

/// Reads one answer's head (up to the blank line) from `stream`.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed before the head ended: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.push(byte[0]);
    }
    String::from_utf8_lossy(&got).to_ascii_lowercase()
}

/// A server that answers before reading a request's body cannot keep the connection (the
/// rest of the body would be read as the next request), so it must say it closes it: a
/// client that pools the connection without being told sends its next request into a
/// closing socket and gets an incomplete answer. A body that was read keeps the
/// connection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_given_before_the_body_was_read_closes_the_connection_and_says_so() {
    let addr = start().await;
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    // The head only: the body is still on its way when the route refuses the request.
    stream
        .write_all(b"POST /refuse HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    read_until_closed(&mut stream, Duration::from_secs(5)).await;

    // A body the route read: the same connection serves the next request.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .unwrap();
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        let mut body = [0u8; 5];
        stream.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"hello");
    }
}
