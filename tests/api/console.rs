//! The web console's files (`GET /console`): served from the binary with a
//! policy that keeps every request on this origin, revalidated by entity
//! tag, compressed, and nothing else under the path. Its behaviour in a
//! browser is tested end to end by `console/e2e` (run by `.ci/run`).

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH,
};

use crate::common::{TestApp, assert_problem, backend_tests};

backend_tests!(the_console_is_served_from_the_binary);

async fn the_console_is_served_from_the_binary(app: TestApp) {
    let page = app.get("/console").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(page.headers()[CACHE_CONTROL], "no-cache");
    let policy = page.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/console/app.js">"#));
    for (file, media_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("views/live.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ] {
        let response = app.get(&format!("/console/{file}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        assert_eq!(response.headers()[CONTENT_TYPE], media_type, "{file}");
    }
    assert_eq!(
        app.get("/console/").await.text().await.unwrap(),
        html,
        "/console/ is the page too"
    );

    // A browser that holds the file gets 304.
    let script = app.get("/console/app.js").await;
    let etag = script.headers()[ETAG].clone();
    let again = app
        .client
        .get(format!("{}/console/app.js", app.url))
        .header(IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[ETAG], etag);

    // On a slow link it travels compressed.
    let compressed = app
        .client
        .get(format!("{}/console/app.js", app.url))
        .header(ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(compressed.headers()[CONTENT_ENCODING], "gzip");

    // Only its own files: no path leads anywhere else.
    for path in [
        "/console/nope.js",
        "/console/../Cargo.toml",
        "/console/%2e%2e/Cargo.toml",
        "/console/e2e/console.test.mjs",
        "/console/package.json",
    ] {
        assert_problem(app.get(path).await, StatusCode::NOT_FOUND).await;
    }
}
