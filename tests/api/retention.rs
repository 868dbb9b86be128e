//! Retention and deletion (API.md, Retention and deletion; issue 14):
//! truncation, tombstones, policies applied by the sweep, and erased events
//! gone from every read and feed.

use std::time::{Duration, Instant};

use eventsource_stream::{Event, Eventsource};
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem, backend_tests, event};

backend_tests!(
    truncation_erases_the_oldest_and_keeps_the_version,
    a_deleted_stream_is_gone_for_good,
    policies_are_kept_and_the_sweep_applies_them,
    bad_retention_input_changes_nothing,
    deleting_a_stream_ends_its_feed_and_a_category_feed_goes_on,
    a_sweep_among_writers_hides_nothing_from_a_feed,
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

/// Opens a feed; its event messages.
async fn open_feed(app: &TestApp, path: &str) -> BoxStream<'static, Event> {
    let response = app
        .client
        .get(format!("{}{path}", app.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response
        .bytes_stream()
        .eventsource()
        .map(|e| e.expect("well-formed SSE"))
        .filter(|e| std::future::ready(e.event == "message"))
        .boxed()
}

/// Reads a feed of `/all` until an event of type `Done`; each event's
/// global position and id.
async fn read_until_done(feed: &mut BoxStream<'static, Event>) -> Vec<(i64, String)> {
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(message) = feed.next().await {
            let event: Value = serde_json::from_str(&message.data).unwrap();
            let id = event["id"].as_str().unwrap().to_owned();
            seen.push((event["global_position"].as_i64().unwrap(), id));
            if event["type"] == "Done" {
                return;
            }
        }
        panic!("the feed ended");
    })
    .await
    .expect("the feed delivers within a minute");
    seen
}

/// Every event `/all` holds, paged: global position and id.
async fn stored(app: &TestApp) -> Vec<(i64, String)> {
    let (mut all, mut position) = (Vec::new(), 1);
    loop {
        let page = app
            .get_json(&format!("/all?position={position}&limit=1000"))
            .await;
        for event in page["events"].as_array().unwrap() {
            let id = event["id"].as_str().unwrap().to_owned();
            all.push((event["global_position"].as_i64().unwrap(), id));
        }
        if page["end"] == true {
            return all;
        }
        position = page["next_position"].as_i64().unwrap();
    }
}

/// Issue 14's third correctness test, its feed half: while 8 writers append
/// and the sweep erases, a feed of `/all` misses nothing that stays, and a
/// feed opened after the erasure never sees what was erased.
async fn a_sweep_among_writers_hides_nothing_from_a_feed(app: TestApp) {
    let sweeping = app.sibling_with(&["--retention-sweep-secs", "1"]).await;
    let policy = json!({"max_count": 5});
    sweeping
        .put_json("/categories/load/retention", policy)
        .await;
    let mut live = open_feed(&sweeping, "/all").await;
    let reader = tokio::spawn(async move { read_until_done(&mut live).await });
    let writers = (0..8).map(|writer| {
        let app = &sweeping;
        async move {
            for i in 0..40 {
                let stream = format!("load-{writer}-{}", i % 4);
                let response = app.append(&stream, &event("E", json!(i)), &[]).await;
                assert_eq!(response.status(), StatusCode::CREATED);
            }
        }
    });
    futures::future::join_all(writers).await;
    let done = app.append("end-1", &event("Done", json!(null)), &[]).await;
    assert_eq!(done.status(), StatusCode::CREATED);
    let delivered = reader.await.unwrap();
    // Wait for the sweep to bring every stream down to its last 5 events.
    let deadline = Instant::now() + Duration::from_secs(20);
    while stored(&app).await.len() > 8 * 4 * 5 + 1 {
        assert!(Instant::now() < deadline, "the sweep did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = stored(&app).await;
    assert_eq!(stored.len(), 8 * 4 * 5 + 1);

    assert!(
        delivered.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "in order, once each"
    );
    let missed: Vec<_> = stored.iter().filter(|e| !delivered.contains(e)).collect();
    assert!(missed.is_empty(), "the feed missed {missed:?}");
    let mut fresh = open_feed(&app, "/all?position=1").await;
    assert_eq!(read_until_done(&mut fresh).await, stored);
}

async fn deleting_a_stream_ends_its_feed_and_a_category_feed_goes_on(app: TestApp) {
    append_n(&app, "cart-1", 0, 2).await;
    let mut stream_feed = open_feed(&app, "/streams/cart-1").await;
    let mut category_feed = open_feed(&app, "/categories/cart").await;
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
