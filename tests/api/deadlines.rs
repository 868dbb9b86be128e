//! Deadlines and the connection cap, at the socket (API.md, Limits and
//! deadlines). The limits here are a second or two so the tests are quick;
//! the defaults are in the README.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use serde_json::json;

use crate::common::{HALF_SENT_APPEND, TestApp, event};

/// Connects to a test server.
async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (or `patience` runs out);
/// what it sent, and how long that took.
async fn read_until_closed(stream: &mut TcpStream, patience: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(patience, stream.read_to_end(&mut answer)).await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open for {patience:?}"
    );
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// A client that never finishes its header section, or never sends a byte,
/// is disconnected after the header deadline.
#[tokio::test]
async fn unfinished_headers_and_silent_sockets_are_closed() {
    let app = TestApp::sqlite().await;
    let app = app.sibling_with(&["--header-timeout-secs", "1"]).await;
    let mut partial = connect(&app).await;
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut silent = connect(&app).await;
    let (_, waited) = read_until_closed(&mut partial, Duration::from_secs(5)).await;
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
    read_until_closed(&mut silent, Duration::from_secs(5)).await;
    // Meanwhile the server answers everyone else.
    assert_eq!(app.get_json("/health").await["status"], "ok");
}

/// Sends a `GET /health` on a kept-alive connection and reads its answer
/// in full (its head, then as many body bytes as `Content-Length` says).
async fn health_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "closed mid-answer: {answer:?}");
        answer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .expect("a content-length")
                .parse()
                .unwrap();
            if body.len() >= length {
                return text;
            }
        }
    }
}

/// Between requests a connection may idle past the header deadline, up to
/// the idle deadline; once a new request's first byte arrives, its header
/// section is under the header deadline again.
#[tokio::test]
async fn kept_alive_connections_idle_longer_than_a_header_may_take() {
    let app = TestApp::sqlite().await;
    let app = app
        .sibling_with(&["--header-timeout-secs", "1", "--idle-timeout-secs", "3"])
        .await;
    let mut kept = connect(&app).await;
    assert!(health_on(&mut kept).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(health_on(&mut kept).await.starts_with("HTTP/1.1 200"));
    let (_, waited) = read_until_closed(&mut kept, Duration::from_secs(6)).await;
    assert!(
        waited >= Duration::from_millis(2500),
        "closed after {waited:?}"
    );

    let mut resumed = connect(&app).await;
    assert!(health_on(&mut resumed).await.starts_with("HTTP/1.1 200"));
    resumed
        .write_all(b"GET /health HTTP/1.1\r\n")
        .await
        .unwrap();
    let (_, waited) = read_until_closed(&mut resumed, Duration::from_secs(5)).await;
    assert!(waited < Duration::from_secs(2), "closed after {waited:?}");
}

/// A client that stops reading an answer (here a feed, whose answer never
/// ends) is disconnected after the idle timeout, instead of holding its
/// socket for ever.
#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected() {
    let app = TestApp::sqlite().await;
    let big = "x".repeat(3_000_000);
    for _ in 0..2 {
        let appended = app.append("big-1", &event("A", json!(big)), &[]).await;
        assert_eq!(appended.status(), reqwest::StatusCode::CREATED);
    }
    let app = app.sibling_with(&["--idle-timeout-secs", "1"]).await;
    // A small receive window, so that the 6 MB answer cannot all sit in
    // the client's buffers.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = app.url.trim_start_matches("http://").parse().unwrap();
    let mut stalled = socket.connect(address).await.unwrap();
    stalled
        .write_all(
            b"GET /streams/big-1 HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (answer, _) = read_until_closed(&mut stalled, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"));
    assert!(answer.len() < 6_000_000, "the whole answer arrived");
}

/// A request whose body never arrives in full gets `408` as a problem and
/// the connection is closed.
#[tokio::test]
async fn a_body_that_never_arrives_is_408() {
    let app = TestApp::sqlite().await;
    let app = app.sibling_with(&["--request-timeout-secs", "1"]).await;
    let mut slow = connect(&app).await;
    slow.write_all(
        b"POST /streams/slow-1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"type\":",
    )
    .await
    .unwrap();
    let (answer, _) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");
    assert_eq!(
        app.get("/streams/slow-1").await.status(),
        reqwest::StatusCode::NOT_FOUND
    );
}

/// Past the connection cap a new connection waits; it is served as soon as
/// another one closes.
#[tokio::test]
async fn past_the_connection_cap_new_connections_wait() {
    let app = TestApp::sqlite().await;
    let app = app.sibling_with(&["--max-connections", "2"]).await;
    let first = connect(&app).await;
    let second = connect(&app).await;
    let mut third = connect(&app).await;
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "the third connection was served past the cap"
    );
    drop(first);
    let (answer, _) = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(second);
}

/// Past the shutdown grace period, a connection still under way is closed.
#[tokio::test]
async fn shutdown_closes_what_is_left_after_the_grace_period() {
    let app = TestApp::sqlite().await;
    let app = app.sibling_with(&["--shutdown-grace-secs", "1"]).await;
    let mut stuck = connect(&app).await;
    stuck.write_all(HALF_SENT_APPEND).await.unwrap();
    // The request is under way (its body is awaited) before shutdown starts.
    assert_eq!(app.get_json("/health").await["status"], "ok");
    app.shut_down();
    let (_, waited) = read_until_closed(&mut stuck, Duration::from_secs(5)).await;
    assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
}

/// Request bodies in flight are bounded in bytes: past the budget a request
/// waits to be read until another one is done.
#[tokio::test]
async fn request_bodies_in_flight_are_bounded() {
    let app = TestApp::sqlite().await;
    let app = app
        .sibling_with(&["--max-body-bytes-in-flight", "100"])
        .await;
    let request = |stream: &str, body: &str| {
        format!(
            "POST /streams/{stream} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let (prefix, suffix) = (r#"{"type":"A","data":""#, r#""}"#);
    let large = format!(
        "{prefix}{}{suffix}",
        "x".repeat(90 - prefix.len() - suffix.len())
    );
    let large = request("inflight-1", &large);
    let (head, rest) = large.split_at(large.len() - 10);
    let mut first = connect(&app).await;
    first.write_all(head.as_bytes()).await.unwrap();
    // The first request holds 90 of the 100 bytes while its body trickles in.
    assert_eq!(app.get_json("/health").await["status"], "ok");
    let mut second = connect(&app).await;
    let small = request("inflight-2", r#"{"type":"A","data":1}"#);
    second.write_all(small.as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut byte)).await;
    assert!(early.is_err(), "the second body was read past the budget");
    first.write_all(rest.as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut first, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let (answer, _) = read_until_closed(&mut second, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}
