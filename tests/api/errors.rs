//! Bad input of every kind gets the right 4xx problem and writes nothing
//! (API.md, Errors).

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{TestApp, assert_problem, backend_tests, event};

backend_tests!(
    bad_bodies_are_400_and_write_nothing,
    bad_names_and_headers_are_400,
    limits_are_413,
    wrong_media_types_are_415_and_406,
    bad_query_parameters_are_400,
    unknown_routes_and_methods_are_problems,
);

async fn assert_nothing_written(app: &TestApp) {
    let all = app.get_json("/all").await;
    assert_eq!(all["events"], json!([]), "something was written");
}

async fn raw_post(app: &TestApp, stream: &str, body: &'static str) -> reqwest::Response {
    app.client
        .post(format!("{}/streams/{stream}", app.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn bad_bodies_are_400_and_write_nothing(app: TestApp) {
    let same = "0192b1a4-7c1e-7cc0-9a53-2d1f7c0b9e11";
    for body in [
        json!({"data": {}}),
        json!({"type": "A"}),
        json!({"type": "A", "data": {}, "metdata": {}}),
        json!([]),
        json!({"type": "", "data": {}}),
        json!({"type": "has space", "data": {}}),
        json!({"type": "A", "data": {}, "id": "not-a-uuid"}),
        json!({"type": "A", "data": {}, "causation_id": "nope"}),
        json!({"type": "A", "data": {}, "metadata": [1]}),
        json!({"type": "A", "data": {}, "metadata": "text"}),
        json!({"type": "A", "data": {}, "correlation_id": ""}),
        json!({"type": "A", "data": {}, "correlation_id": "x".repeat(256)}),
        json!({"type": "A", "data": {}, "correlation_id": "nul\u{0}inside"}),
        json!([{"type": "A", "data": 1, "id": same}, {"type": "B", "data": 2, "id": same}]),
        json!([event("A", json!(1)), {"type": "B"}]),
        json!(42),
        json!(null),
        // Positional arrays where an event (an object) belongs.
        json!(["A", 1]),
        json!([["A", 1]]),
        json!({"type": 7, "data": 1}),
        json!({"type": "A", "data": 1, "id": 5}),
        // Deeper than the default cap of 128 levels, in data or in metadata.
        json!({"type": "A", "data": nested(129)}),
        json!({"type": "A", "data": 1, "metadata": {"m": nested(128)}}),
    ] {
        assert_problem(
            app.append("bad-1", &body, &[]).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    for body in [
        "{not json",
        "",
        "[{\"type\":\"A\",\"data\":1}",
        "{\"type\":\"A\",\"data\":1} trailing",
    ] {
        assert_problem(raw_post(&app, "bad-1", body).await, StatusCode::BAD_REQUEST).await;
    }
    // A checkpoint and a snapshot: JSON types as documented, objects only.
    for body in [
        json!({"position": "5"}),
        json!([5]),
        json!({"position": 1.5}),
    ] {
        let answer = app
            .client
            .put(format!("{}/checkpoints/w-bad", app.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(answer, StatusCode::BAD_REQUEST).await;
    }
    assert_problem(app.get("/checkpoints/w-bad").await, StatusCode::NOT_FOUND).await;
    let deep_snapshot = app
        .client
        .post(format!("{}/snapshots/bad-1", app.url))
        .json(&json!({"version": 0, "state": nested(129)}))
        .send()
        .await
        .unwrap();
    assert_problem(deep_snapshot, StatusCode::BAD_REQUEST).await;
    assert_nothing_written(&app).await;
}

/// An array nested `depth` levels deep: `nested(2)` is `[[0]]`.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(0), |inner, _| json!([inner]))
}

async fn bad_names_and_headers_are_400(app: TestApp) {
    let e = event("A", json!(1));
    let long = "x".repeat(256);
    for name in [
        "$all",
        "has%20space",
        "tab%09name",
        "nl%0Aname",
        "q%3Fmark",
        "hash%23",
        long.as_str(),
        // Format characters: a right-to-left override, a zero-width space, a BOM.
        "acc%E2%80%AEount-1",
        "zero%E2%80%8Bwidth",
        "%EF%BB%BFbom",
    ] {
        assert_problem(app.append(name, &e, &[]).await, StatusCode::BAD_REQUEST).await;
        assert_problem(
            app.get(&format!("/streams/{name}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    for header in [
        ("if-match", "\"banana\""),
        ("if-match", "\"-2\""),
        ("if-match", "\"1.5\""),
        ("if-match", "\"5"),
        ("if-none-match", "\"5\""),
    ] {
        assert_problem(
            app.append("h-1", &e, &[header]).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let both = app
        .append("h-1", &e, &[("if-match", "\"0\""), ("if-none-match", "*")])
        .await;
    assert_problem(both, StatusCode::BAD_REQUEST).await;
    assert_problem(
        app.get("/categories/has-dash").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // `.` and `..` as names: a URL library would resolve them away, so these
    // go over the socket as they are.
    for path in [
        "/streams/.",
        "/streams/..",
        "/streams/%2E%2E",
        "/checkpoints/..",
    ] {
        let method = if path.starts_with("/checkpoints") {
            "PUT"
        } else {
            "POST"
        };
        let body = if method == "PUT" {
            r#"{"position":0}"#
        } else {
            r#"{"type":"A","data":1}"#
        };
        let answer = raw_request(&app, method, path, body).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    let spoofing_type = event("Deposit\u{202E}ed", json!(1));
    assert_problem(
        app.append("t-1", &spoofing_type, &[]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_nothing_written(&app).await;
}

/// Sends one request over a fresh connection exactly as given (no URL
/// normalisation) and returns the start of the answer.
async fn raw_request(app: &TestApp, method: &str, path: &str, body: &str) -> String {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let address = app.url.trim_start_matches("http://");
    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    connection.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

async fn limits_are_413(app: TestApp) {
    // A body declared larger than the limit is refused before it is read. (A
    // client that sends it all anyway may see the connection close before it
    // reads the answer, so this speaks HTTP by hand and sends headers only.)
    let declared = 4 * 1024 * 1024 + 1;
    let head = format!(
        "POST /streams/big-1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    let address = app.url.trim_start_matches("http://");
    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
    connection.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let read = connection.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).to_lowercase();
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(
        answer.contains("content-type: application/problem+json"),
        "{answer}"
    );
    let batch: Vec<_> = (0..1001).map(|i| event("E", json!(i))).collect();
    assert_problem(
        app.append("big-1", &json!(batch), &[]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_nothing_written(&app).await;
    let batch: Vec<_> = (0..1000).map(|i| event("E", json!(i))).collect();
    assert_eq!(
        app.append("big-1", &json!(batch), &[]).await.status(),
        StatusCode::CREATED
    );
    // The depth cap: 128 levels are stored and read back; the cap is a flag.
    let deepest = event("E", nested(128));
    assert_eq!(
        app.append("deep-1", &deepest, &[]).await.status(),
        StatusCode::CREATED
    );
    // (The page around it adds three levels, past serde_json's own limit of
    // 128, so the test looks for the data in the text.)
    let read = app.get("/streams/deep-1").await.text().await.unwrap();
    let data = format!(r#""data":{}"#, nested(128));
    assert!(read.contains(&data), "{read}");
    let shallow = app.sibling_with(&["--max-json-depth", "2"]).await;
    let three = event("E", nested(3));
    assert_problem(
        shallow.append("deep-2", &three, &[]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

async fn wrong_media_types_are_415_and_406(app: TestApp) {
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = app
            .client
            .post(format!("{}/streams/m-1", app.url))
            .header("content-type", content_type)
            .body(r#"{"type":"A","data":{}}"#)
            .send()
            .await
            .unwrap();
        assert_problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    }
    let r = app
        .client
        .post(format!("{}/streams/m-1", app.url))
        .body(r#"{"type":"A","data":{}}"#)
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let r = app
        .client
        .get(format!("{}/all", app.url))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::NOT_ACCEPTABLE).await;
    let ok = app
        .client
        .get(format!("{}/all", app.url))
        .header("accept", "text/html, application/json;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_nothing_written(&app).await;
}

async fn bad_query_parameters_are_400(app: TestApp) {
    app.append("q-1", &event("A", json!(1)), &[]).await;
    for query in [
        "position=minus",
        "position=-1",
        "direction=sideways",
        "as_of=yesterday",
        "limit=0",
        "limit=1001",
        "limit=1&limit=2",
        "until_version=-3",
        "unknown=1",
    ] {
        assert_problem(
            app.get(&format!("/streams/q-1?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    for query in [
        "limit=100000",
        "position=x",
        "position=1&position=2",
        "consumer_group_member=0",
        "consumer_group_member=3&consumer_group_size=3",
        "consumer_group_member=-1&consumer_group_size=3",
        "consumer_group_member=0&consumer_group_size=0",
        "type=",
        "correlation_id=",
    ] {
        assert_problem(
            app.get(&format!("/categories/q?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_problem(
            app.get(&format!("/all?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    for path in [
        "/streams?limit=0",
        "/streams?prefix=a%00",
        "/streams?after=%01",
        "/all?type=%FF",
        "/streams/q-1?as_of=%FF",
        "/correlations/a%00b",
        "/all?correlation_id=a%00b",
    ] {
        assert_problem(app.get(path).await, StatusCode::BAD_REQUEST).await;
    }
}

async fn unknown_routes_and_methods_are_problems(app: TestApp) {
    assert_problem(app.get("/no/such/route").await, StatusCode::NOT_FOUND).await;
    let r = app
        .client
        .patch(format!("{}/streams/s-1", app.url))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
    let r = app
        .client
        .put(format!("{}/all", app.url))
        .send()
        .await
        .unwrap();
    assert_problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
}
