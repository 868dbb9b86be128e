//! Snapshots and loading an aggregate from one (API.md, Snapshots; issue 5).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem, backend_tests, event};

backend_tests!(
    snapshots_are_kept_and_chosen_by_version,
    snapshot_rules,
    load_from_snapshot_within_bounds,
    load_from_snapshot_is_one_consistent_read,
);

async fn post_snapshot(app: &TestApp, stream: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/snapshots/{stream}", app.url))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn append_n(app: &TestApp, stream: &str, range: std::ops::Range<i64>) {
    let batch: Vec<Value> = range.map(|i| event("E", json!(i))).collect();
    assert_eq!(
        app.append(stream, &json!(batch), &[]).await.status(),
        StatusCode::CREATED
    );
}

fn positions(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect()
}

async fn snapshots_are_kept_and_chosen_by_version(app: TestApp) {
    append_n(&app, "acc-1", 0..10).await;
    let r = post_snapshot(
        &app,
        "acc-1",
        json!({"version": 4, "state": {"sum": 10}, "type": "Acc"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let posted: Value = r.json().await.unwrap();
    assert_eq!(
        (posted["stream"].as_str(), posted["version"].as_i64()),
        (Some("acc-1"), Some(4))
    );
    assert!(posted["time"].as_str().unwrap().ends_with('Z'));
    post_snapshot(&app, "acc-1", json!({"version": 8, "state": {"sum": 36}})).await;
    post_snapshot(
        &app,
        "acc-1",
        json!({"version": 8, "state": {"sum": 36, "again": true}}),
    )
    .await;

    let newest = app.get_json("/snapshots/acc-1").await;
    assert_eq!(
        (newest["version"].as_i64(), newest["type"].clone()),
        (Some(8), Value::Null)
    );
    assert_eq!(
        newest["state"],
        json!({"sum": 36, "again": true}),
        "of equal versions, the last posted"
    );
    let older = app.get_json("/snapshots/acc-1?until_version=7").await;
    assert_eq!(
        (older["version"].as_i64(), older["type"].as_str()),
        (Some(4), Some("Acc"))
    );
    for before_any in ["3", "-1"] {
        assert_problem(
            app.get(&format!("/snapshots/acc-1?until_version={before_any}"))
                .await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }

    // The state reads back as the very JSON that was written.
    let raw = r#"{"z":1,"a":"\u0000","n":1.50}"#;
    let r = app
        .client
        .post(format!("{}/snapshots/acc-1", app.url))
        .header("content-type", "application/json")
        .body(format!(r#"{{"version":9,"state":{raw}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let text = app.get("/snapshots/acc-1").await.text().await.unwrap();
    assert!(text.contains(&format!(r#""state":{raw}"#)), "{text}");
}

async fn snapshot_rules(app: TestApp) {
    assert_problem(
        post_snapshot(&app, "r-1", json!({"version": 0, "state": {}})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    append_n(&app, "r-1", 0..2).await;
    assert_problem(
        post_snapshot(&app, "r-1", json!({"version": 5, "state": {}})).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_problem(app.get("/snapshots/r-1").await, StatusCode::NOT_FOUND).await;
    for bad in [
        json!({"version": 1}),
        json!({"state": {}}),
        json!({"version": -1, "state": {}}),
        json!({"version": 1, "state": {}, "extra": 1}),
        json!({"version": 1, "state": {}, "type": "has space"}),
        json!([]),
    ] {
        assert_problem(
            post_snapshot(&app, "r-1", bad).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    assert_problem(
        post_snapshot(&app, "$bad", json!({"version": 0, "state": {}})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        app.get("/snapshots/r-1?until_version=-2").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        app.get("/streams/r-1?from_snapshot=maybe").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        app.get("/streams/r-1?from_snapshot=true&direction=backward")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(
        app.get("/snapshots/r-1").await.status(),
        StatusCode::NOT_FOUND,
        "nothing was stored"
    );
}

async fn load_from_snapshot_within_bounds(app: TestApp) {
    append_n(&app, "l-1", 0..5).await;
    let instant = app.get_json("/streams/l-1/last").await["time"]
        .as_str()
        .unwrap()
        .to_owned();
    append_n(&app, "l-1", 5..10).await;
    // Posted after `instant`, but version 3 was already in the stream then.
    post_snapshot(&app, "l-1", json!({"version": 3, "state": "at 3"})).await;
    post_snapshot(&app, "l-1", json!({"version": 7, "state": "at 7"})).await;

    let page = app.get_json("/streams/l-1?from_snapshot=true").await;
    assert_eq!(page["snapshot"]["state"], "at 7");
    assert_eq!(positions(&page), [8, 9]);
    assert_eq!(
        (page["version"].as_i64(), page["end"].as_bool()),
        (Some(9), Some(true))
    );

    let page = app
        .get_json("/streams/l-1?from_snapshot=true&until_version=6")
        .await;
    assert_eq!(page["snapshot"]["version"], 3);
    assert_eq!(positions(&page), [4, 5, 6]);

    let page = app
        .get_json(&format!("/streams/l-1?from_snapshot=true&as_of={instant}"))
        .await;
    assert_eq!(page["snapshot"]["version"], 3);
    assert_eq!(positions(&page), [4]);

    let page = app
        .get_json("/streams/l-1?from_snapshot=true&until_version=2")
        .await;
    assert_eq!(page["snapshot"], Value::Null);
    assert_eq!(positions(&page), [0, 1, 2]);

    let page = app
        .get_json("/streams/l-1?from_snapshot=true&limit=1")
        .await;
    assert_eq!(positions(&page), [8]);
    assert_eq!(
        (page["next_position"].as_i64(), page["end"].as_bool()),
        (Some(9), Some(false))
    );

    let plain = app.get_json("/streams/l-1").await;
    assert!(
        plain.get("snapshot").is_none(),
        "snapshot only when asked for"
    );
}

/// Writers append and post snapshots while readers load the aggregate: every
/// load sees the snapshot and exactly the events after it up to the version
/// it reports, with nothing slipping in between the two halves.
async fn load_from_snapshot_is_one_consistent_read(app: TestApp) {
    append_n(&app, "c-1", 0..1).await;
    post_snapshot(&app, "c-1", json!({"version": 0, "state": 0})).await;
    let app = Arc::new(app);
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (app, writing) = (app.clone(), writing.clone());
        tokio::spawn(async move {
            for i in 1..150 {
                app.append("c-1", &event("E", json!(i)), &[]).await;
                if i % 10 == 0 {
                    let version = app
                        .get_json("/streams/c-1?limit=1&direction=backward")
                        .await["version"]
                        .as_i64()
                        .unwrap();
                    post_snapshot(&app, "c-1", json!({"version": version, "state": version})).await;
                }
            }
            writing.store(false, Ordering::SeqCst);
        })
    };
    let mut loads = 0;
    while writing.load(Ordering::SeqCst) || loads < 20 {
        let page = app
            .get_json("/streams/c-1?from_snapshot=true&limit=1000")
            .await;
        let from = page["snapshot"]["version"].as_i64().unwrap() + 1;
        let version = page["version"].as_i64().unwrap();
        assert_eq!(
            positions(&page),
            (from..=version).collect::<Vec<_>>(),
            "{page}"
        );
        assert_eq!(page["end"], true);
        loads += 1;
    }
    writer.await.unwrap();
}
