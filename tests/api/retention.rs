//! Retention and deletion (API.md, Retention and deletion; issue 14):
//! truncation, tombstones, policies applied by the sweep, and erased events
//! gone from every read and feed.

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem, backend_tests, event};

backend_tests!(
    truncation_erases_the_oldest_and_keeps_the_version,
    a_deleted_stream_is_gone_for_good,
    policies_are_kept_and_the_sweep_applies_them,
    bad_retention_input_changes_nothing,
    deleting_a_stream_ends_its_feed_and_a_category_feed_goes_on,
);

/// Appends `count` events tagged by stream, from datum `from`; their ids.
async fn append_n(app: &TestApp, stream: &str, from: i64, count: i64) -> Vec<String> {
    let batch: Vec<Value> = (from..from + count)
        .map(|i| json!({"type": "E", "data": i, "tags": [format!("s:{stream}")]}))
        .collect();
    let response = app.append(stream, &json!(batch), &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED, "append to {stream}");
    let body: Value = response.json().await.unwrap();
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The stream positions a read of events holds.
fn positions(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect()
}

/// The `(stream, position)` of every event of `/all`.
async fn whole_log(app: &TestApp) -> Vec<(String, i64)> {
    let page = app.get_json("/all?limit=1000").await;
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let stream = e["stream"].as_str().unwrap().to_owned();
            (stream, e["position"].as_i64().unwrap())
        })
        .collect()
}

async fn truncation_erases_the_oldest_and_keeps_the_version(app: TestApp) {
    let ids = append_n(&app, "acc-1", 0, 10).await;
    append_n(&app, "acc-2", 0, 2).await;
    for version in [2, 4, 8] {
        let snapshot = json!({"version": version, "state": version});
        let response = app.post_json("/snapshots/acc-1", snapshot).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let truncated = app
        .post_json("/streams/acc-1/truncate", json!({"before": 5}))
        .await;
    assert_eq!(truncated.status(), StatusCode::OK);
    let truncated: Value = truncated.json().await.unwrap();
    assert_eq!(
        truncated,
        json!({"stream": "acc-1", "version": 9, "erased": 5})
    );

    let page = app.get_json("/streams/acc-1").await;
    assert_eq!(
        (positions(&page), &page["version"]),
        (vec![5, 6, 7, 8, 9], &json!(9))
    );
    let backward = app.get_json("/streams/acc-1?direction=backward").await;
    assert_eq!(positions(&backward), [9, 8, 7, 6, 5]);
    assert_eq!(backward["end"], true);
    let from_two = app.get_json("/streams/acc-1?position=2&limit=2").await;
    assert_eq!(positions(&from_two), [5, 6]);
    assert_problem(
        app.get(&format!("/events/{}", ids[0])).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(
        app.get_json(&format!("/events/{}", ids[5])).await["position"],
        5
    );
    let category = app.get_json("/categories/acc").await;
    assert_eq!(category["events"].as_array().unwrap().len(), 7);
    let tagged = app.get_json("/events?tag=s:acc-1").await;
    assert_eq!(positions(&tagged), [5, 6, 7, 8, 9], "{tagged}");
    // Snapshots of erased states only are gone; the one an aggregate loads
    // from after the truncation stays.
    assert_problem(
        app.get("/snapshots/acc-1?until_version=3").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let kept = app.get_json("/snapshots/acc-1?until_version=4").await;
    assert_eq!(kept["version"], 4);
    let loaded = app.get_json("/streams/acc-1?from_snapshot=true").await;
    assert_eq!(
        (&loaded["snapshot"]["version"], positions(&loaded)),
        (&json!(8), vec![9])
    );

    // Truncating again below what is left erases nothing; the whole stream
    // may go, and it still exists.
    let again = app
        .post_json("/streams/acc-1/truncate", json!({"before": 3}))
        .await;
    assert_eq!(again.json::<Value>().await.unwrap()["erased"], 0);
    let all = app
        .post_json("/streams/acc-1/truncate", json!({"before": 10}))
        .await;
    assert_eq!(all.json::<Value>().await.unwrap()["erased"], 5);
    let empty = app.get_json("/streams/acc-1").await;
    assert_eq!(
        (&empty["events"], &empty["version"], &empty["end"]),
        (&json!([]), &json!(9), &json!(true))
    );
    let listed = app.get_json("/streams?prefix=acc-1").await;
    assert_eq!(listed["streams"][0]["version"], 9, "{listed}");
    // The head stays where it was even when its event is gone, and the next
    // append continues after it.
    app.post_json("/streams/acc-2/truncate", json!({"before": 2}))
        .await;
    assert!(whole_log(&app).await.is_empty());
    let checkpoint = app
        .put_json("/checkpoints/w", json!({"position": 12}))
        .await;
    assert_eq!(checkpoint.status(), StatusCode::OK);
    let next = app.append("acc-1", &event("E", json!(10)), &[]).await;
    let next: Value = next.json().await.unwrap();
    assert_eq!(
        (
            &next["events"][0]["position"],
            &next["events"][0]["global_position"]
        ),
        (&json!(10), &json!(13))
    );
}

async fn a_deleted_stream_is_gone_for_good(app: TestApp) {
    append_n(&app, "order-1", 0, 3).await;
    append_n(&app, "order-2", 0, 2).await;
    app.post_json("/snapshots/order-2", json!({"version": 1, "state": {}}))
        .await;
    app.put_json("/streams/order-2/retention", json!({"max_count": 10}))
        .await;
    let deleted = app.delete("/streams/order-2").await;
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(
        deleted.json::<Value>().await.unwrap(),
        json!({"stream": "order-2", "version": 1, "erased": 2})
    );

    for path in [
        "/streams/order-2",
        "/streams/order-2/last",
        "/streams/order-2?position=0",
    ] {
        let problem = assert_problem(app.get(path).await, StatusCode::GONE).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("deleted"),
            "{path}"
        );
    }
    let head = app
        .client
        .head(format!("{}/streams/order-2", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::GONE);
    let feed = app
        .client
        .get(format!("{}/streams/order-2", app.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_problem(feed, StatusCode::GONE).await;
    for headers in [vec![], vec![("if-none-match", "*")]] {
        let append = app.append("order-2", &event("E", json!(1)), &headers).await;
        assert_problem(append, StatusCode::GONE).await;
    }
    let multi = json!({"events": [
        {"stream": "order-1", "type": "E", "data": 1},
        {"stream": "order-2", "type": "E", "data": 1},
    ]});
    assert_problem(app.post_json("/events", multi).await, StatusCode::GONE).await;
    let truncate = app
        .post_json("/streams/order-2/truncate", json!({"before": 0}))
        .await;
    assert_problem(truncate, StatusCode::GONE).await;
    assert_problem(app.delete("/streams/order-2").await, StatusCode::GONE).await;
    let policy = app
        .put_json("/streams/order-2/retention", json!({"max_count": 1}))
        .await;
    assert_problem(policy, StatusCode::GONE).await;
    assert_problem(
        app.get("/streams/order-2/retention").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(app.delete("/streams/order-9").await, StatusCode::NOT_FOUND).await;

    // Nothing of it is left anywhere else, and nothing else was touched.
    assert_eq!(
        whole_log(&app).await,
        [0, 1, 2].map(|p| ("order-1".to_owned(), p))
    );
    let listed = app.get_json("/streams?prefix=order").await;
    assert_eq!(listed["streams"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        app.get_json("/events?tag=s:order-2").await["events"],
        json!([])
    );
    assert_problem(app.get("/snapshots/order-2").await, StatusCode::NOT_FOUND).await;
    // The head never went back: the next event follows the deleted ones.
    let next = app.append("order-1", &event("E", json!(3)), &[]).await;
    let next: Value = next.json().await.unwrap();
    assert_eq!(next["events"][0]["global_position"], 6);
}

/// Waits until `/streams/{stream}` holds exactly `expected` positions.
async fn until_positions(app: &TestApp, stream: &str, expected: &[i64]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = app.get_json(&format!("/streams/{stream}")).await;
        if positions(&page) == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{stream} holds {:?}, not {expected:?}",
            positions(&page)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn policies_are_kept_and_the_sweep_applies_them(app: TestApp) {
    let created = app
        .put_json("/categories/log/retention", json!({"max_count": 3}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(
        created.json::<Value>().await.unwrap(),
        json!({"max_age_s": null, "max_count": 3})
    );
    let own = json!({"max_count": 5, "max_age_s": 3600});
    assert_eq!(
        app.put_json("/streams/log-keep/retention", own.clone())
            .await
            .status(),
        StatusCode::CREATED
    );
    let replaced = app
        .put_json("/streams/log-keep/retention", json!({"max_count": 5}))
        .await;
    assert_eq!(replaced.status(), StatusCode::OK);
    assert_eq!(
        app.get_json("/streams/log-keep/retention").await,
        json!({"max_age_s": null, "max_count": 5})
    );
    app.put_json("/streams/fresh-1/retention", json!({"max_age_s": 1}))
        .await;
    append_n(&app, "log-a", 0, 10).await;
    append_n(&app, "log-keep", 0, 10).await;
    append_n(&app, "fresh-1", 0, 2).await;
    append_n(&app, "other-1", 0, 4).await;

    // A server sweeping every second applies them.
    let sweeping = app.sibling_with(&["--retention-sweep-secs", "1"]).await;
    until_positions(&sweeping, "log-a", &[7, 8, 9]).await;
    until_positions(&sweeping, "log-keep", &[5, 6, 7, 8, 9]).await;
    until_positions(&sweeping, "fresh-1", &[]).await;
    until_positions(&sweeping, "other-1", &[0, 1, 2, 3]).await;
    assert_eq!(sweeping.get_json("/streams/fresh-1").await["version"], 1);

    // Without its own policy, a stream follows its category's again.
    assert_eq!(
        app.delete("/streams/log-keep/retention").await.status(),
        StatusCode::NO_CONTENT
    );
    until_positions(&sweeping, "log-keep", &[7, 8, 9]).await;
    assert_eq!(
        app.delete("/categories/log/retention").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        app.get("/categories/log/retention").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    append_n(&app, "log-a", 10, 5).await;
    assert_eq!(
        positions(&app.get_json("/streams/log-a").await).len(),
        8,
        "no policy, nothing erased"
    );
    sweeping.shut_down();
}

async fn bad_retention_input_changes_nothing(app: TestApp) {
    append_n(&app, "acc-1", 0, 3).await;
    for body in [
        json!({}),
        json!({"max_count": 0}),
        json!({"max_count": -3}),
        json!({"max_age_s": 0}),
        json!({"max_age_s": -1}),
        json!({"max_count": "3"}),
        json!({"max_count": 1.5}),
        json!({"max_count": 3, "keep": true}),
        json!({"max_age_s": i64::MAX}),
        json!([3]),
    ] {
        for path in ["/streams/acc-1/retention", "/categories/acc/retention"] {
            let response = app.put_json(path, body.clone()).await;
            assert_problem(response, StatusCode::BAD_REQUEST).await;
        }
    }
    for path in [
        "/categories/acc-x/retention",
        "/streams/%24acc/retention",
        "/streams/a%20b/truncate",
    ] {
        let response = app.put_json(path, json!({"max_count": 1})).await;
        assert!(response.status().is_client_error(), "{path}");
    }
    for body in [
        json!({"before": -1}),
        json!({"before": "1"}),
        json!({}),
        json!({"before": 1, "after": 2}),
    ] {
        let response = app.post_json("/streams/acc-1/truncate", body).await;
        assert_problem(response, StatusCode::BAD_REQUEST).await;
    }
    let beyond = app
        .post_json("/streams/acc-1/truncate", json!({"before": 4}))
        .await;
    let problem = assert_problem(beyond, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains('3'),
        "{problem}"
    );
    let unknown = app
        .post_json("/streams/acc-9/truncate", json!({"before": 0}))
        .await;
    assert_problem(unknown, StatusCode::NOT_FOUND).await;
    assert_problem(
        app.delete("/streams/acc-1/retention").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // Nothing was erased or stored by any of it.
    assert_eq!(positions(&app.get_json("/streams/acc-1").await), [0, 1, 2]);
    assert_problem(
        app.get("/categories/acc/retention").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

async fn deleting_a_stream_ends_its_feed_and_a_category_feed_goes_on(app: TestApp) {
    append_n(&app, "cart-1", 0, 2).await;
    let open = |path: &str| {
        let request = app
            .client
            .get(format!("{}{path}", app.url))
            .header("accept", "text/event-stream");
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response
                .bytes_stream()
                .eventsource()
                .map(|e| e.expect("well-formed SSE"))
                .filter(|e| std::future::ready(e.event == "message"))
                .boxed()
        }
    };
    let mut stream_feed = open("/streams/cart-1").await;
    let mut category_feed = open("/categories/cart").await;
    let patience = Duration::from_secs(20);
    for feed in [&mut stream_feed, &mut category_feed] {
        for _ in 0..2 {
            tokio::time::timeout(patience, feed.next())
                .await
                .unwrap()
                .unwrap();
        }
    }
    assert_eq!(app.delete("/streams/cart-1").await.status(), StatusCode::OK);
    // The stream's feed ends, cleanly, with nothing more.
    let ended = tokio::time::timeout(patience, stream_feed.next()).await;
    assert!(matches!(ended, Ok(None)), "the feed goes on: {ended:?}");
    append_n(&app, "cart-2", 0, 1).await;
    let next = tokio::time::timeout(patience, category_feed.next())
        .await
        .unwrap()
        .unwrap();
    let next: Value = serde_json::from_str(&next.data).unwrap();
    assert_eq!(next["stream"], "cart-2");
}
