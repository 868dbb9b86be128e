//! Health, metrics, the OpenAPI document and Swagger UI (API.md, Operations).

use reqwest::StatusCode;
use serde_json::json;

use sqlx::{Connection, Executor};

use crate::common::{TestApp, assert_problem, backend_tests, event};

backend_tests!(health_metrics_and_docs);

async fn health_metrics_and_docs(app: TestApp) {
    assert_eq!(app.get_json("/health").await["status"], "ok");

    app.append(
        "m-1",
        &json!([event("A", json!(1)), event("B", json!(2))]),
        &[],
    )
    .await;
    app.get("/streams/nothing-here").await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("cairn_events_appended_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("cairn_store_errors_total 0"), "{metrics}");
    assert!(
        metrics.contains(r#"cairn_http_request_duration_seconds_count{route="/streams/{stream}",method="POST",status="201"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="/streams/{stream}",method="GET",status="404""#),
        "{metrics}"
    );

    // Labels come from a closed set: made-up methods and paths add no series.
    for n in 0..20 {
        let method = reqwest::Method::from_bytes(format!("M{n}X").as_bytes()).unwrap();
        let url = format!("{}/made-up-{n}", app.url);
        app.client.request(method, url).send().await.unwrap();
    }
    let feed = app
        .client
        .get(format!("{}/all?position=end", app.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    let scraped = app.get("/metrics").await;
    assert_eq!(
        scraped.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let metrics = scraped.text().await.unwrap();
    assert!(
        !metrics.contains("M0X") && !metrics.contains("made-up"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="unmatched",method="other",status="404"} 20"#),
        "{metrics}"
    );
    assert!(metrics.contains("cairn_feeds_open 1\n"), "{metrics}");
    assert!(metrics.contains("cairn_store_connections "), "{metrics}");
    assert!(
        metrics.contains("cairn_store_connections_idle "),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    drop(feed);

    let served = app.get_json("/openapi.json").await;
    assert_eq!(
        served,
        serde_json::to_value(cairn::http::openapi()).unwrap()
    );
    let docs = app
        .client
        .get(format!("{}/docs/", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

/// The committed document must be what the handlers generate; regenerate it
/// with `cargo run -- openapi > openapi/openapi.json`.
#[test]
fn committed_openapi_document_is_current() {
    let generated = cairn::http::openapi().to_pretty_json().unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

/// While Postgres refuses connections, `/health` and store-backed requests
/// answer `503` with `Retry-After`, and nothing else breaks; when it is back,
/// so is the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_is_503_then_recovers() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    app.append("up-1", &event("A", json!(1)), &[]).await;
    let database = app.database_url.rsplit('/').next().unwrap().to_owned();
    let admin = app
        .database_url
        .replace(&format!("/{database}"), "/postgres");
    let mut admin = sqlx::PgConnection::connect(&admin).await.unwrap();
    let outage =
        |allow: bool| format!(r#"ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {allow}"#);
    admin.execute(outage(false).as_str()).await.unwrap();
    let kill = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
    );
    admin.execute(kill.as_str()).await.unwrap();

    // Each answer comes within API.md's 2 s (and a little for the machine).
    let started = std::time::Instant::now();
    let health = app.get("/health").await;
    assert!(
        health.headers().contains_key("retry-after"),
        "{:?}",
        health.status()
    );
    assert_problem(health, StatusCode::SERVICE_UNAVAILABLE).await;
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_millis(2500),
        "/health took {waited:?}"
    );
    let started = std::time::Instant::now();
    let write = app.append("up-1", &event("B", json!(2)), &[]).await;
    assert_problem(write, StatusCode::SERVICE_UNAVAILABLE).await;
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_millis(2500),
        "the append took {waited:?}"
    );
    let started = std::time::Instant::now();
    assert_problem(
        app.get("/streams/up-1").await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_millis(2500),
        "the read took {waited:?}"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains("cairn_store_errors_total 0"), "{metrics}");

    admin.execute(outage(true).as_str()).await.unwrap();
    assert_eq!(app.get_json("/health").await["status"], "ok");
    let page = app.get_json("/streams/up-1").await;
    assert_eq!(page["version"], 0, "the refused write left nothing behind");
    assert_eq!(
        app.append("up-1", &event("C", json!(3)), &[])
            .await
            .status(),
        StatusCode::CREATED
    );
}

/// The writer keeps its connection between batches. When the server ends
/// that session while the database stays up (a restart, an idle timeout, a
/// proxy), the next append still succeeds on a fresh connection: no client
/// sees the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_writer_connection_is_replaced_unseen() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    let created = app.append("kept-1", &event("A", json!(1)), &[]).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let mut admin = sqlx::PgConnection::connect(&app.database_url)
        .await
        .unwrap();
    let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                WHERE datname = current_database() AND pid <> pg_backend_pid()";
    let killed: i64 = sqlx::query_scalar(kill)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 1, "the store's sessions were ended");
    let again = app.append("kept-1", &event("B", json!(2)), &[]).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(app.get_json("/streams/kept-1").await["version"], 1);
}

/// CORS: `*` alone lets any origin in; a comma-separated list is trimmed, so
/// every origin in it matches; an origin not listed gets no CORS headers.
#[tokio::test]
async fn cors_origins_any_and_listed() {
    let app = TestApp::sqlite().await;
    let allowed = |app: &TestApp, origin: &'static str| {
        let request = app
            .client
            .get(format!("{}/health", app.url))
            .header("origin", origin)
            .send();
        async move {
            let response = request.await.unwrap();
            let header = response.headers().get("access-control-allow-origin");
            header.map(|v| v.to_str().unwrap().to_owned())
        }
    };
    let any = app.sibling_with(&["--cors-origin", "*"]).await;
    assert_eq!(allowed(&any, "http://x.test").await.as_deref(), Some("*"));
    let listed = app
        .sibling_with(&["--cors-origin", "http://a.test, http://b.test"])
        .await;
    assert_eq!(
        allowed(&listed, "http://b.test").await.as_deref(),
        Some("http://b.test")
    );
    assert_eq!(
        allowed(&listed, "http://a.test").await.as_deref(),
        Some("http://a.test")
    );
    assert_eq!(allowed(&listed, "http://c.test").await, None);
    assert_eq!(allowed(&app, "http://a.test").await, None);
}

/// On a loopback listener with nothing authenticating requests, only
/// requests addressed to a loopback name are answered: a web page that
/// re-points a name of its own at 127.0.0.1 (DNS rebinding) is refused.
#[tokio::test]
async fn loopback_listener_answers_only_loopback_names() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::sqlite().await;
    let port = app.url.rsplit(':').next().unwrap().to_owned();
    let status_for = |host: String| {
        let address = app.url.trim_start_matches("http://").to_owned();
        async move {
            let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
            let request =
                format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            connection.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            connection.read_to_end(&mut answer).await.unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    for host in [
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_owned(),
    ] {
        let answer = status_for(host.clone()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
    for host in [
        format!("rebind.example:{port}"),
        "127.0.0.1.nip.io".to_owned(),
        "localhost.evil.example".to_owned(),
    ] {
        let answer = status_for(host.clone()).await;
        assert!(answer.starts_with("HTTP/1.1 421"), "{host}: {answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
    }
}

/// Another process holding the SQLite file's write lock makes appends wait
/// at most 2 s, then `503` with `Retry-After`; once it lets go, appends
/// succeed again.
#[tokio::test]
async fn a_locked_sqlite_file_is_503_within_two_seconds() {
    use sqlx::Connection as _;
    let app = TestApp::sqlite().await;
    app.append("lock-1", &event("A", json!(1)), &[]).await;
    let mut other = sqlx::SqliteConnection::connect(&app.database_url)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let refused = app.append("lock-1", &event("B", json!(2)), &[]).await;
    let waited = started.elapsed();
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        waited < std::time::Duration::from_millis(2800),
        "the append waited {waited:?}"
    );
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(
        app.append("lock-1", &event("C", json!(3)), &[])
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(app.get_json("/streams/lock-1").await["version"], 1);
}
