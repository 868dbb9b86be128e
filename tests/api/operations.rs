//! Health, metrics, the OpenAPI document and Swagger UI (API.md, Operations).

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{TestApp, backend_tests, event};

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
