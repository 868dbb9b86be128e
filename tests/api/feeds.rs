//! Live feeds over server-sent events, read with a real SSE client over a real
//! port (API.md, Live subscriptions and Checkpoints; issue 4).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures::future::join_all;
use futures::stream::{BoxStream, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem, backend_tests, event};

backend_tests!(
    history_then_caught_up_then_live,
    where_a_feed_starts,
    concurrent_writers_feed_opened_mid_burst,
    slow_consumer_falls_back_to_the_store,
    slow_consumer_past_the_live_byte_budget_falls_back,
    events_reach_feeds_on_another_instance,
    shutdown_ends_feeds_and_last_event_id_resumes,
    feed_requests_are_checked,
    checkpoints_round_trip,
);

/// How long a test waits for a feed before failing.
const PATIENCE: Duration = Duration::from_secs(30);

/// An open feed: SSE messages, keep-alive comments already skipped.
type Feed = BoxStream<'static, Event>;

/// Opens a feed and checks the response's headers.
async fn open(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Feed {
    let mut request = app
        .client
        .get(format!("{}{path}", app.url))
        .header("accept", "text/event-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    response
        .bytes_stream()
        .eventsource()
        .map(|e| e.expect("well-formed SSE"))
        .boxed()
}

/// Reads messages until `done` holds for what was read.
async fn read_until(feed: &mut Feed, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let mut messages = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while !done(&messages) {
            messages.push(feed.next().await.expect("the feed is open"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("feed stalled after {} messages", messages.len()));
    messages
}

fn caught_up(messages: &[Event]) -> bool {
    messages.iter().any(|m| m.event == "caught-up")
}

/// How many event messages were read (cheap: nothing is decoded).
fn count(messages: &[Event]) -> usize {
    messages.iter().filter(|m| m.event == "message").count()
}

/// The event messages of a feed, decoded.
fn events(messages: &[Event]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m.event == "message")
        .map(|m| serde_json::from_str(&m.data).unwrap())
        .collect()
}

fn data_of(messages: &[Event]) -> Vec<Value> {
    events(messages)
        .into_iter()
        .map(|e| e["data"].clone())
        .collect()
}

async fn append_n(app: &TestApp, stream: &str, range: std::ops::Range<i64>) {
    let batch: Vec<Value> = range.map(|i| event("E", json!(i))).collect();
    assert_eq!(
        app.append(stream, &json!(batch), &[]).await.status(),
        StatusCode::CREATED
    );
}

async fn history_then_caught_up_then_live(app: TestApp) {
    append_n(&app, "live-1", 0..3).await;
    let mut feed = open(&app, "/streams/live-1", &[]).await;
    let history = read_until(&mut feed, caught_up).await;
    assert_eq!(data_of(&history), [json!(0), json!(1), json!(2)]);
    let ids: Vec<&str> = history
        .iter()
        .filter(|m| m.event == "message")
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(ids, ["0", "1", "2"], "id: is the stream position");
    let marker = history.last().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&marker.data).unwrap(),
        json!({"position": 3})
    );

    append_n(&app, "live-1", 3..5).await;
    append_n(&app, "other-1", 0..1).await;
    let live = read_until(&mut feed, |m| count(m) == 2).await;
    assert_eq!(data_of(&live), [json!(3), json!(4)]);

    // A feed on a stream with no events yet waits for the first one.
    let mut empty = open(&app, "/streams/live-2", &[]).await;
    read_until(&mut empty, caught_up).await;
    append_n(&app, "live-2", 0..1).await;
    assert_eq!(
        data_of(&read_until(&mut empty, |m| count(m) > 0).await),
        [json!(0)]
    );
}

async fn where_a_feed_starts(app: TestApp) {
    append_n(&app, "start-1", 0..6).await;
    let from = |position: &str| format!("/streams/start-1?position={position}");
    let mut feed = open(&app, &from("4"), &[]).await;
    assert_eq!(
        data_of(&read_until(&mut feed, caught_up).await),
        [json!(4), json!(5)]
    );
    let mut feed = open(&app, &from("0"), &[("last-event-id", "2")]).await;
    assert_eq!(
        data_of(&read_until(&mut feed, caught_up).await),
        [json!(3), json!(4), json!(5)]
    );

    // position=end: only what commits after the feed opened.
    let mut feed = open(&app, &from("end"), &[]).await;
    let marker = read_until(&mut feed, caught_up).await;
    assert_eq!(events(&marker), Vec::<Value>::new());
    append_n(&app, "start-1", 6..7).await;
    assert_eq!(
        data_of(&read_until(&mut feed, |m| count(m) > 0).await),
        [json!(6)]
    );

    // Global feeds count global positions; a checkpoint wins over position,
    // Last-Event-ID over both; an unknown checkpoint falls back to position.
    let all: Vec<i64> =
        events(&read_until(&mut open(&app, "/categories/start", &[]).await, caught_up).await)
            .iter()
            .map(|e| e["global_position"].as_i64().unwrap())
            .collect();
    assert_eq!(all.len(), 7);
    let put = app
        .client
        .put(format!("{}/checkpoints/start-worker", app.url))
        .json(&json!({"position": all[4]}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let path = "/categories/start?checkpoint=start-worker&position=1";
    assert_eq!(
        data_of(&read_until(&mut open(&app, path, &[]).await, caught_up).await),
        [json!(5), json!(6)]
    );
    let resume = all[5].to_string();
    let with_id = read_until(
        &mut open(&app, path, &[("last-event-id", &resume)]).await,
        caught_up,
    )
    .await;
    assert_eq!(data_of(&with_id), [json!(6)]);
    let unknown = format!("/categories/start?checkpoint=nobody&position={}", all[6]);
    assert_eq!(
        data_of(&read_until(&mut open(&app, &unknown, &[]).await, caught_up).await),
        [json!(6)]
    );
    let ids: Vec<i64> = with_id
        .iter()
        .filter(|m| m.event == "message")
        .map(|m| m.id.parse().unwrap())
        .collect();
    assert_eq!(ids, [all[6]], "id: is the global position");
}

/// Writers append while a feed opens mid-burst: every acknowledged event
/// arrives exactly once, in global order.
async fn concurrent_writers_feed_opened_mid_burst(app: TestApp) {
    let app = Arc::new(app);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..25 {
                    let r = app
                        .append(&format!("burst-{w}"), &event("E", json!([w, i])), &[])
                        .await;
                    assert_eq!(r.status(), StatusCode::CREATED);
                    ids.push(
                        r.json::<Value>().await.unwrap()["events"][0]["id"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    );
                }
                ids
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await; // some history, most of it live
    let mut feed = open(&app, "/categories/burst", &[]).await;
    let acknowledged: HashSet<String> = join_all(writers)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    let messages = read_until(&mut feed, |m| count(m) >= acknowledged.len()).await;
    let got = events(&messages);
    let ids: Vec<String> = got
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), acknowledged);
    assert_eq!(ids.len(), acknowledged.len(), "duplicates delivered");
    let globals: Vec<i64> = got
        .iter()
        .map(|e| e["global_position"].as_i64().unwrap())
        .collect();
    assert!(
        globals.windows(2).all(|w| w[0] < w[1]),
        "out of global order"
    );
}

/// A consumer that stops reading while much is written misses nothing: its
/// feed falls behind the (small) live buffer and reads the store again.
async fn slow_consumer_falls_back_to_the_store(app: TestApp) {
    let app = app.sibling_with(&["--live-buffer", "2"]).await;
    slow_consumer_catches_up(&app).await;
}

/// The live buffer is bounded in bytes too: past the budget, batches lose
/// their events, and a feed behind them reads the store, losing nothing.
async fn slow_consumer_past_the_live_byte_budget_falls_back(app: TestApp) {
    let app = app
        .sibling_with(&["--live-buffer", "100000", "--live-buffer-bytes", "300000"])
        .await;
    slow_consumer_catches_up(&app).await;
}

/// A feed that reads nothing while 300 events of 64 KB are written still
/// gets every one, in order, and the server says it fell back to the store.
async fn slow_consumer_catches_up(app: &TestApp) {
    let mut feed = open(app, "/categories/slow", &[]).await;
    read_until(&mut feed, caught_up).await;
    // Large events, so the connection's buffers fill and the feed must wait.
    let blob = "x".repeat(64 * 1024);
    for i in 0..300 {
        let r = app
            .append("slow-1", &event("Big", json!({"i": i, "blob": blob})), &[])
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let got = events(&read_until(&mut feed, |m| count(m) >= 300).await);
    let order: Vec<i64> = got
        .iter()
        .map(|e| e["data"]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(order, (0..300).collect::<Vec<_>>());
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let fallbacks = metrics
        .lines()
        .find(|l| l.starts_with("cairn_feed_fallbacks_total "))
        .unwrap();
    assert_ne!(
        fallbacks, "cairn_feed_fallbacks_total 0",
        "the feed never fell behind"
    );
}

async fn events_reach_feeds_on_another_instance(app: TestApp) {
    let other = app.sibling().await;
    let mut feed = open(&other, "/all", &[]).await;
    read_until(&mut feed, caught_up).await;
    append_n(&app, "far-1", 0..3).await;
    let got = read_until(&mut feed, |m| count(m) == 3).await;
    assert_eq!(data_of(&got), [json!(0), json!(1), json!(2)]);
}

async fn shutdown_ends_feeds_and_last_event_id_resumes(app: TestApp) {
    append_n(&app, "bye-1", 0..2).await;
    let mut feed = open(&app, "/streams/bye-1", &[]).await;
    let before = read_until(&mut feed, caught_up).await;
    app.shut_down();
    let ended = tokio::time::timeout(PATIENCE, feed.next())
        .await
        .expect("the feed ends");
    assert!(ended.is_none(), "the feed ended cleanly: {ended:?}");
    // Written (through another instance: this one has stopped) while the
    // client was away; the reconnect picks up exactly there.
    let other = app.sibling().await;
    append_n(&other, "bye-1", 2..4).await;
    let last = before
        .iter()
        .rev()
        .find(|m| m.event == "message")
        .unwrap()
        .id
        .clone();
    let mut again = open(&other, "/streams/bye-1", &[("last-event-id", &last)]).await;
    assert_eq!(
        data_of(&read_until(&mut again, caught_up).await),
        [json!(2), json!(3)]
    );
}

async fn feed_requests_are_checked(app: TestApp) {
    append_n(&app, "chk-1", 0..1).await;
    let get = |path: &str, accept: &str| {
        app.client
            .get(format!("{}{path}", app.url))
            .header("accept", accept)
            .send()
    };
    for path in [
        "/streams/chk-1?direction=backward",
        "/streams/chk-1?limit=5",
        "/streams/chk-1?until_version=0",
        "/streams/chk-1?as_of=2026-01-01T00:00:00Z",
        "/streams/chk-1?from_snapshot=true",
        "/categories/chk?limit=5",
        "/all?position=soon",
    ] {
        assert_problem(
            get(path, "text/event-stream").await.unwrap(),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    for id in ["x", "-1", "9223372036854775807"] {
        let bad_id = app
            .client
            .get(format!("{}/all", app.url))
            .header("accept", "text/event-stream")
            .header("last-event-id", id)
            .send();
        assert_problem(bad_id.await.unwrap(), StatusCode::BAD_REQUEST).await;
    }
    assert_problem(
        get("/all", "text/html").await.unwrap(),
        StatusCode::NOT_ACCEPTABLE,
    )
    .await;
    assert_problem(
        get(
            "/events/0192b1a4-7c1e-7cc0-9a53-2d1f7c0b9e11",
            "text/event-stream",
        )
        .await
        .unwrap(),
        StatusCode::NOT_ACCEPTABLE,
    )
    .await;
    // JSON reads refuse what only feeds take.
    assert_problem(app.get("/all?position=end").await, StatusCode::BAD_REQUEST).await;
    assert_problem(
        app.get("/streams/chk-1?checkpoint=w").await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    // Past the configured number of feeds: 503 with Retry-After.
    let limited = app.sibling_with(&["--max-feeds", "1"]).await;
    let first = open(&limited, "/all", &[]).await;
    let second = get_from(&limited, "/all").await;
    assert!(
        second.headers().contains_key("retry-after"),
        "{:?}",
        second.status()
    );
    assert_problem(second, StatusCode::SERVICE_UNAVAILABLE).await;
    // A client that leaves gives its place back as soon as the server sees
    // the socket close (an append makes the server write to it).
    drop(first);
    let mut reopened = None;
    for attempt in 0..100 {
        append_n(&limited, &format!("leave-{attempt}"), 0..1).await;
        let response = get_from(&limited, "/all").await;
        if response.status() == StatusCode::OK {
            reopened = Some(response);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "the first feed's place was never freed");
}

async fn get_from(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap()
}

async fn checkpoints_round_trip(app: TestApp) {
    assert_problem(app.get("/checkpoints/w-1").await, StatusCode::NOT_FOUND).await;
    let batch: Vec<Value> = (0..42).map(|i| event("E", json!(i))).collect();
    assert_eq!(
        app.append("chk-all-1", &json!(batch), &[]).await.status(),
        StatusCode::CREATED
    );
    let put = |body: Value| {
        app.client
            .put(format!("{}/checkpoints/w-1", app.url))
            .json(&body)
            .send()
    };
    let r = put(json!({"position": 41})).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["consumer"].as_str(), body["position"].as_i64()),
        (Some("w-1"), Some(41))
    );
    put(json!({"position": 42})).await.unwrap();
    assert_eq!(app.get_json("/checkpoints/w-1").await["position"], 42);
    // Beyond the head (42): a conflict, and the stored position stays.
    assert_problem(
        put(json!({"position": 43})).await.unwrap(),
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(app.get_json("/checkpoints/w-1").await["position"], 42);
    for bad in [
        json!({"position": -1}),
        json!({}),
        json!({"position": 1, "x": 2}),
        json!({"position": "7"}),
    ] {
        assert_problem(put(bad).await.unwrap(), StatusCode::BAD_REQUEST).await;
    }
    let bad_name = app
        .client
        .put(format!("{}/checkpoints/$w", app.url))
        .json(&json!({"position": 1}))
        .send();
    assert_problem(bad_name.await.unwrap(), StatusCode::BAD_REQUEST).await;
}
