//! Managed subscriptions (API.md, Managed subscriptions), on both stores:
//! leases, acknowledgements, expiry, parking and replay, ordering, the SSE
//! delivery feed, webhooks, several instances, and bad input.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem, backend_tests};

/// `POST` a JSON body, expecting `200`; the answer.
async fn post_ok(app: &TestApp, path: &str, body: Value) -> Value {
    let response = app.post_json(path, body).await;
    assert_eq!(response.status(), StatusCode::OK, "POST {path}");
    response.json().await.unwrap()
}

/// Creates a subscription, expecting `201`.
async fn subscribe(app: &TestApp, name: &str, definition: Value) -> Value {
    let response = app
        .put_json(&format!("/subscriptions/{name}"), definition)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// Appends events of `type` to a stream, one per datum.
async fn append(app: &TestApp, stream: &str, event_type: &str, data: &[Value]) {
    let events: Vec<Value> = data
        .iter()
        .map(|d| json!({"type": event_type, "data": d}))
        .collect();
    let response = app.append(stream, &json!(events), &[]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// Claims for a consumer; the deliveries.
async fn claim(app: &TestApp, name: &str, consumer: &str, max: u64, wait_ms: u64) -> Vec<Value> {
    let answer = post_ok(
        app,
        &format!("/subscriptions/{name}/claim"),
        json!({"consumer": consumer, "max": max, "wait_ms": wait_ms}),
    )
    .await;
    answer["deliveries"].as_array().unwrap().clone()
}

/// Settles leases (`ack`, or `nack` with a body's extra members).
async fn settle(app: &TestApp, name: &str, verb: &str, leases: &[&str], extra: Value) -> Value {
    let mut body = json!({"leases": leases});
    if let Value::Object(extra) = extra {
        body.as_object_mut().unwrap().extend(extra);
    }
    post_ok(app, &format!("/subscriptions/{name}/{verb}"), body).await
}

/// The leases of deliveries.
fn leases(deliveries: &[Value]) -> Vec<&str> {
    deliveries
        .iter()
        .map(|d| d["lease"].as_str().unwrap())
        .collect()
}

/// `(stream, position, attempt)` of each delivery.
fn seen(deliveries: &[Value]) -> Vec<(String, i64, i64)> {
    deliveries
        .iter()
        .map(|d| {
            (
                d["event"]["stream"].as_str().unwrap().to_owned(),
                d["event"]["position"].as_i64().unwrap(),
                d["attempt"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// `GET` a URL of a server started by the test, expecting `200`; the JSON.
async fn get_json(client: &reqwest::Client, url: String) -> Value {
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    response.json().await.unwrap()
}

/// A subscription's state.
async fn state(app: &TestApp, name: &str) -> Value {
    app.get_json(&format!("/subscriptions/{name}")).await
}

async fn creation_is_idempotent_and_a_different_definition_conflicts(app: TestApp) {
    append(&app, "account-1", "Opened", &[json!(1)]).await;
    let created = subscribe(&app, "s", json!({"source": {"category": "account"}})).await;
    assert_eq!(created["ordering"], "stream");
    assert_eq!(created["ack_timeout_ms"], 30000);
    assert_eq!(created["max_deliveries"], 5);
    assert_eq!(created["start"], "beginning");
    assert_eq!(created["position"], 0);
    assert_eq!(created["lag"], 1);
    assert_eq!(created["head"], 1);
    // The same definition, defaults spelled out: 200.
    let same = json!({"source": {"category": "account"}, "start": "beginning",
                      "ordering": "stream", "ack_timeout_ms": 30000, "max_deliveries": 5});
    let response = app.put_json("/subscriptions/s", same).await;
    assert_eq!(response.status(), StatusCode::OK);
    let different = json!({"source": {"category": "account"}, "ordering": "none"});
    assert_problem(
        app.put_json("/subscriptions/s", different).await,
        StatusCode::CONFLICT,
    )
    .await;
    // `end` starts after the head; a position starts there (inclusive).
    append(&app, "account-1", "Deposited", &[json!(2), json!(3)]).await;
    let end = subscribe(
        &app,
        "from-end",
        json!({"source": {"all": true}, "start": "end"}),
    )
    .await;
    assert_eq!(
        (end["position"].as_i64(), end["lag"].as_i64()),
        (Some(3), Some(0))
    );
    let at = subscribe(&app, "from-2", json!({"source": {"all": true}, "start": 2})).await;
    assert_eq!(
        (at["position"].as_i64(), at["lag"].as_i64()),
        (Some(1), Some(2))
    );
    let listed = app.get_json("/subscriptions").await;
    let names: Vec<&str> = listed["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["from-2", "from-end", "s"]);
    let response = app.delete("/subscriptions/s").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get("/subscriptions/s").await, StatusCode::NOT_FOUND).await;
    let response = app.delete("/subscriptions/s").await;
    assert_problem(response, StatusCode::NOT_FOUND).await;
}

async fn claims_are_acknowledged_once_and_the_state_follows(app: TestApp) {
    for stream in ["account-1", "account-2"] {
        append(&app, stream, "Deposited", &[json!(1), json!(2), json!(3)]).await;
    }
    append(&app, "other-1", "Deposited", &[json!(1)]).await;
    subscribe(
        &app,
        "s",
        json!({"source": {"category": "account"}, "ordering": "none"}),
    )
    .await;
    let first = claim(&app, "s", "w1", 4, 0).await;
    let positions: Vec<i64> = first
        .iter()
        .map(|d| d["event"]["global_position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    assert!(first.iter().all(|d| d["attempt"] == 1));
    // Another consumer gets the rest, none of the first's.
    let second = claim(&app, "s", "w2", 10, 0).await;
    assert_eq!(seen(&second).len(), 2);
    let view = state(&app, "s").await;
    assert_eq!(view["in_flight"], 6);
    assert_eq!(view["position"], 0);
    assert_eq!(view["lag"], 6);
    let consumers: HashMap<String, i64> = view["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["consumer"].as_str().unwrap().to_owned(),
                c["in_flight"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        consumers,
        HashMap::from([("w1".into(), 4), ("w2".into(), 2)])
    );
    // Acknowledging the second, then the first: the position moves once
    // everything before it is settled.
    let done = settle(&app, "s", "ack", &leases(&second), json!({})).await;
    assert_eq!(done, json!({"done": 2, "stale": []}));
    assert_eq!(state(&app, "s").await["position"], 0);
    let done = settle(&app, "s", "ack", &leases(&first), json!({})).await;
    assert_eq!(done["done"], 4);
    let view = state(&app, "s").await;
    assert_eq!(
        (view["position"].as_i64(), view["lag"].as_i64()),
        (Some(7), Some(0))
    );
    assert_eq!(view["in_flight"], 0);
    // A second ack of the same leases is stale; nothing more to claim.
    let again = settle(&app, "s", "ack", &leases(&first), json!({})).await;
    assert_eq!(again["done"], 0);
    assert_eq!(again["stale"].as_array().unwrap().len(), 4);
    assert!(claim(&app, "s", "w1", 10, 0).await.is_empty());
    // A new event arrives: a waiting claim gets it.
    let waiting = {
        let app_url = app.url.clone();
        let client = app.client.clone();
        tokio::spawn(async move {
            let answer: Value = client
                .post(format!("{app_url}/subscriptions/s/claim"))
                .json(&json!({"consumer": "w3", "wait_ms": 10000}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(&app, "account-3", "Opened", &[json!(0)]).await;
    let answer = waiting.await.unwrap();
    assert_eq!(
        seen(answer["deliveries"].as_array().unwrap()),
        [("account-3".into(), 0, 1)]
    );
}

async fn a_claim_acknowledged_in_parts_is_settled_once_each(app: TestApp) {
    append(&app, "order-1", "Placed", &[json!(1), json!(2), json!(3)]).await;
    append(&app, "order-2", "Placed", &[json!(1), json!(2)]).await;
    subscribe(
        &app,
        "parts",
        json!({"source": {"category": "order"}, "ordering": "none"}),
    )
    .await;
    let first = claim(&app, "parts", "w1", 3, 0).await;
    let second = claim(&app, "parts", "w2", 10, 0).await;
    let (first, second) = (leases(&first), leases(&second));
    assert_eq!((first.len(), second.len()), (3, 2));
    // Part of a claim, one lease named twice: counted once.
    let done = settle(&app, "parts", "ack", &[first[1], first[1]], json!({})).await;
    assert_eq!(done, json!({"done": 1, "stale": [first[1]]}));
    assert_eq!(state(&app, "parts").await["in_flight"], 4);
    // The rest of the first claim beside all of the second, and the lease
    // settled already: the rest done, that one stale.
    let mut rest = vec![first[0], first[1], first[2]];
    rest.extend(&second);
    let done = settle(&app, "parts", "ack", &rest, json!({})).await;
    assert_eq!(done, json!({"done": 4, "stale": [first[1]]}));
    let view = state(&app, "parts").await;
    assert_eq!(
        (
            view["in_flight"].as_i64(),
            view["position"].as_i64(),
            view["lag"].as_i64()
        ),
        (Some(0), Some(5), Some(0))
    );
    // Nothing comes back, not even once the leases would have run out.
    assert!(claim(&app, "parts", "w3", 10, 0).await.is_empty());
    // A claim's leases retried in part: the retried one comes back alone,
    // and the others are acknowledged whole afterwards.
    append(&app, "order-3", "Placed", &[json!(1), json!(2)]).await;
    let third = claim(&app, "parts", "w1", 10, 0).await;
    let third = leases(&third);
    assert_eq!(third.len(), 2);
    let retried = settle(
        &app,
        "parts",
        "nack",
        &[third[0]],
        json!({"action": "retry"}),
    )
    .await;
    assert_eq!(retried["done"], 1);
    let again = claim(&app, "parts", "w2", 10, 0).await;
    assert_eq!(seen(&again), [("order-3".into(), 0, 2)]);
    let done = settle(
        &app,
        "parts",
        "ack",
        &[third[1], leases(&again)[0]],
        json!({}),
    )
    .await;
    assert_eq!(done, json!({"done": 2, "stale": []}));
    assert_eq!(state(&app, "parts").await["position"], 7);
}

async fn an_expired_lease_reaches_another_consumer(app: TestApp) {
    append(&app, "job-1", "Queued", &[json!(1), json!(2)]).await;
    subscribe(
        &app,
        "jobs",
        json!({"source": {"category": "job"}, "ordering": "none", "ack_timeout_ms": 300}),
    )
    .await;
    // The first consumer claims and dies.
    let lost = claim(&app, "jobs", "dies", 10, 0).await;
    assert_eq!(lost.len(), 2);
    assert!(claim(&app, "jobs", "lives", 10, 0).await.is_empty());
    // Once the leases run out, the events reach the other one, attempt 2.
    let redelivered = claim(&app, "jobs", "lives", 10, 5000).await;
    assert_eq!(
        seen(&redelivered),
        [("job-1".into(), 0, 2), ("job-1".into(), 1, 2)]
    );
    // The dead consumer's late acknowledgement is stale; the live one's
    // counts, even named after it in the same request.
    let late = settle(&app, "jobs", "ack", &leases(&lost), json!({})).await;
    assert_eq!(late["done"], 0);
    let both = [leases(&lost), leases(&redelivered)].concat();
    let done = settle(&app, "jobs", "ack", &both, json!({})).await;
    assert_eq!(done["done"], 2);
    assert_eq!(done["stale"], json!(leases(&lost)));
    assert_eq!(state(&app, "jobs").await["lag"], 0);
}

async fn a_poison_event_is_parked_and_the_rest_flow_past_it(app: TestApp) {
    append(&app, "pay-1", "Paid", &[json!("poison"), json!("fine")]).await;
    append(&app, "pay-2", "Paid", &[json!("fine")]).await;
    subscribe(
        &app,
        "pay",
        json!({"source": {"category": "pay"}, "max_deliveries": 3}),
    )
    .await;
    let mut acked = Vec::new();
    let mut attempts_of_poison = Vec::new();
    for _ in 0..10 {
        let deliveries = claim(&app, "pay", "w", 10, 0).await;
        if deliveries.is_empty() {
            break;
        }
        for delivery in &deliveries {
            let lease = delivery["lease"].as_str().unwrap();
            if delivery["event"]["data"] == "poison" {
                attempts_of_poison.push(delivery["attempt"].as_i64().unwrap());
                let body = json!({"action": "retry", "reason": "cannot parse"});
                assert_eq!(settle(&app, "pay", "nack", &[lease], body).await["done"], 1);
            } else {
                settle(&app, "pay", "ack", &[lease], json!({})).await;
                acked.push(seen(std::slice::from_ref(delivery))[0].clone());
            }
        }
    }
    assert_eq!(attempts_of_poison, [1, 2, 3]);
    // Its stream's next event went on once it was parked.
    acked.sort();
    assert_eq!(acked, [("pay-1".into(), 1, 1), ("pay-2".into(), 0, 1)]);
    let view = state(&app, "pay").await;
    assert_eq!(
        (view["parked"].as_i64(), view["lag"].as_i64()),
        (Some(1), Some(0))
    );
    let parked = app.get_json("/subscriptions/pay/parked").await;
    let entry = &parked["parked"][0];
    assert_eq!(entry["event"]["data"], "poison");
    assert_eq!(entry["reason"], "cannot parse");
    assert_eq!(entry["attempts"], 3);
    assert_eq!(parked["end"], true);
    // Replay brings it back, with a fresh count; then it can be parked outright.
    let replayed = post_ok(&app, "/subscriptions/pay/replay", json!({})).await;
    assert_eq!(replayed["replayed"], 1);
    let back = claim(&app, "pay", "w", 10, 0).await;
    assert_eq!(seen(&back), [("pay-1".into(), 0, 1)]);
    let body = json!({"action": "park", "reason": "manual"});
    settle(&app, "pay", "nack", &leases(&back), body).await;
    let replayed = post_ok(
        &app,
        "/subscriptions/pay/replay",
        json!({"positions": [2, 3]}),
    )
    .await;
    assert_eq!(
        replayed["replayed"], 0,
        "positions not parked are passed over"
    );
    let replayed = post_ok(&app, "/subscriptions/pay/replay", json!({"positions": [1]})).await;
    assert_eq!(replayed["replayed"], 1);
    let back = claim(&app, "pay", "w", 10, 0).await;
    settle(&app, "pay", "ack", &leases(&back), json!({})).await;
    let view = state(&app, "pay").await;
    assert_eq!(
        (view["parked"].as_i64(), view["position"].as_i64()),
        (Some(0), Some(3))
    );
}

async fn a_lease_that_runs_out_after_the_last_delivery_parks_its_event(app: TestApp) {
    append(&app, "mail-1", "Queued", &[json!("lost"), json!("next")]).await;
    subscribe(
        &app,
        "mail",
        json!({"source": {"category": "mail"}, "max_deliveries": 2, "ack_timeout_ms": 200}),
    )
    .await;
    // Two deliveries of the stream's first event, each left to run out.
    for attempt in [1, 2] {
        let deliveries = claim(&app, "mail", "dies", 10, 5000).await;
        assert_eq!(seen(&deliveries), [("mail-1".into(), 0, attempt)]);
    }
    // The next claim parks it, and the stream's next event comes instead.
    let next = claim(&app, "mail", "lives", 10, 5000).await;
    assert_eq!(seen(&next), [("mail-1".into(), 1, 1)]);
    let parked = app.get_json("/subscriptions/mail/parked").await;
    let entry = &parked["parked"][0];
    assert_eq!(entry["event"]["data"], "lost");
    assert_eq!(entry["attempts"], 2);
    assert_eq!(
        entry["reason"],
        "not acknowledged within ack_timeout_ms (200) after 2 deliveries"
    );
    let view = state(&app, "mail").await;
    assert_eq!(
        (view["parked"].as_i64(), view["in_flight"].as_i64()),
        (Some(1), Some(1))
    );
}

/// Claims and acks that arrive together share turns of the store (one
/// consumer may claim several times at once): each claim gets events of its
/// own, and a lease acknowledged twice at once counts once.
async fn concurrent_claims_and_acks_share_turns(app: TestApp) {
    const EVENTS: usize = 60;
    let data: Vec<Value> = (0..EVENTS).map(|i| json!(i)).collect();
    append(&app, "task-1", "Queued", &data).await;
    subscribe(
        &app,
        "tasks",
        json!({"source": {"category": "task"}, "ordering": "none"}),
    )
    .await;
    let claims = (0..12).map(|c| claim(&app, "tasks", ["a", "b", "c"][c % 3], 5, 0));
    let answers = join_all(claims).await;
    let mut positions: Vec<i64> = answers
        .iter()
        .flatten()
        .map(|d| d["event"]["position"].as_i64().unwrap())
        .collect();
    assert!(answers.iter().all(|deliveries| deliveries.len() <= 5));
    positions.sort_unstable();
    assert_eq!(positions, (0..EVENTS as i64).collect::<Vec<_>>());
    let all: Vec<Value> = answers.into_iter().flatten().collect();
    let all = leases(&all);
    let acks = (0..4).map(|_| settle(&app, "tasks", "ack", &all, json!({})));
    let settled = join_all(acks).await;
    let done: u64 = settled.iter().map(|s| s["done"].as_u64().unwrap()).sum();
    let stale: usize = settled
        .iter()
        .map(|s| s["stale"].as_array().unwrap().len())
        .sum();
    assert_eq!((done, stale), (EVENTS as u64, 3 * EVENTS));
    let view = state(&app, "tasks").await;
    assert_eq!(
        (view["lag"].as_i64(), view["in_flight"].as_i64()),
        (Some(0), Some(0))
    );
}

async fn ordering_by_stream_holds_back_a_streams_later_events(app: TestApp) {
    append(&app, "cart-a", "Added", &[json!(0), json!(1), json!(2)]).await;
    append(&app, "cart-b", "Added", &[json!(0), json!(1)]).await;
    subscribe(&app, "carts", json!({"source": {"category": "cart"}})).await;
    // One event of each stream at a time, the earliest.
    let first = claim(&app, "carts", "w1", 10, 0).await;
    assert_eq!(
        seen(&first),
        [("cart-a".into(), 0, 1), ("cart-b".into(), 0, 1)]
    );
    assert!(claim(&app, "carts", "w2", 10, 0).await.is_empty());
    settle(&app, "carts", "ack", &leases(&first[..1]), json!({})).await;
    let next = claim(&app, "carts", "w2", 10, 0).await;
    assert_eq!(seen(&next), [("cart-a".into(), 1, 1)]);
    // A retried event keeps its place: the stream waits for it.
    let body = json!({"action": "retry"});
    settle(&app, "carts", "nack", &leases(&next), body).await;
    let again = claim(&app, "carts", "w2", 10, 0).await;
    assert_eq!(seen(&again), [("cart-a".into(), 1, 2)]);
    // With ordering none, every event goes at once.
    subscribe(
        &app,
        "loose",
        json!({"source": {"category": "cart"}, "ordering": "none"}),
    )
    .await;
    assert_eq!(claim(&app, "loose", "w", 10, 0).await.len(), 5);
    // A stream longer than one scan's chunk: its later events wait too,
    // though the claim that scanned them has not written its rows yet.
    let long: Vec<Value> = (0..250).map(|i| json!(i)).collect();
    append(&app, "line-1", "Queued", &long).await;
    subscribe(&app, "lines", json!({"source": {"category": "line"}})).await;
    let first = claim(&app, "lines", "w", 100, 0).await;
    assert_eq!(seen(&first), [("line-1".into(), 0, 1)]);
    // A replayed event waits while a later one of its stream is in flight.
    append(&app, "bin-1", "Dropped", &[json!(0), json!(1), json!(2)]).await;
    subscribe(&app, "bins", json!({"source": {"category": "bin"}})).await;
    let parked = claim(&app, "bins", "w", 10, 0).await;
    let body = json!({"action": "park", "reason": "later"});
    settle(&app, "bins", "nack", &leases(&parked), body).await;
    let later = claim(&app, "bins", "w", 10, 0).await;
    assert_eq!(seen(&later), [("bin-1".into(), 1, 1)]);
    post_ok(&app, "/subscriptions/bins/replay", json!({})).await;
    assert!(claim(&app, "bins", "w", 10, 0).await.is_empty());
    settle(&app, "bins", "ack", &leases(&later), json!({})).await;
    let replayed = claim(&app, "bins", "w", 10, 0).await;
    assert_eq!(seen(&replayed), [("bin-1".into(), 0, 1)]);
}

async fn sources_and_types_select_the_events(app: TestApp) {
    append(&app, "account-1", "Opened", &[json!(1)]).await;
    append(&app, "account-1", "Deposited", &[json!(2)]).await;
    append(&app, "order-1", "Placed", &[json!(3)]).await;
    let tagged = json!([{"type": "Tagged", "data": 4, "tags": ["customer:ada"]}]);
    assert_eq!(
        app.append("other-1", &tagged, &[]).await.status(),
        StatusCode::CREATED
    );
    let cases = [
        (json!({"source": {"all": true}}), vec![1, 2, 3, 4]),
        (
            json!({"source": {"all": true}, "types": ["Deposited", "Placed"]}),
            vec![2, 3],
        ),
        (json!({"source": {"stream": "account-1"}}), vec![1, 2]),
        (
            json!({"source": {"category": "account"}, "types": ["Opened"]}),
            vec![1],
        ),
        (
            json!({"source": {"query": [{"tags": ["customer:ada"]}]}}),
            vec![4],
        ),
        (
            json!({"source": {"query": [{"types": ["Placed", "Opened"]}]}, "types": ["Placed"]}),
            vec![3],
        ),
    ];
    for (i, (definition, expected)) in cases.into_iter().enumerate() {
        let name = format!("s{i}");
        let mut definition = definition;
        definition["ordering"] = json!("none");
        let created = subscribe(&app, &name, definition.clone()).await;
        assert_eq!(
            created["lag"].as_i64(),
            Some(expected.len() as i64),
            "{definition}"
        );
        let deliveries = claim(&app, &name, "w", 100, 0).await;
        let positions: Vec<i64> = deliveries
            .iter()
            .map(|d| d["event"]["global_position"].as_i64().unwrap())
            .collect();
        assert_eq!(positions, expected, "{definition}");
        settle(&app, &name, "ack", &leases(&deliveries), json!({})).await;
        assert_eq!(state(&app, &name).await["position"], 4, "{definition}");
    }
}

async fn the_delivery_feed_keeps_its_consumer_within_max_in_flight(app: TestApp) {
    append(
        &app,
        "feed-1",
        "E",
        &(0..5).map(|i| json!(i)).collect::<Vec<_>>(),
    )
    .await;
    subscribe(
        &app,
        "f",
        json!({"source": {"category": "feed"}, "ordering": "none"}),
    )
    .await;
    let response = app
        .client
        .get(format!(
            "{}/subscriptions/f/deliveries?consumer=w&max_in_flight=2",
            app.url
        ))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut messages = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    let mut next = async || {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("a delivery in time")
            .unwrap()
            .unwrap();
        let delivery: Value = serde_json::from_str(&message.data).unwrap();
        assert_eq!(message.id, delivery["lease"].as_str().unwrap());
        delivery
    };
    let (a, b) = (next().await, next().await);
    assert_eq!(state(&app, "f").await["in_flight"], 2);
    // Held at two until one is acknowledged.
    settle(&app, "f", "ack", &[a["lease"].as_str().unwrap()], json!({})).await;
    let c = next().await;
    let positions: Vec<i64> = [&a, &b, &c]
        .iter()
        .map(|d| d["event"]["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [0, 1, 2]);
    // JSON is not what it serves.
    let response = app
        .client
        .get(format!("{}/subscriptions/f/deliveries?consumer=w", app.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_ACCEPTABLE).await;
}

async fn bad_input_is_refused_and_changes_nothing(app: TestApp) {
    append(&app, "account-1", "Opened", &[json!(1), json!(2)]).await;
    subscribe(
        &app,
        "s",
        json!({"source": {"category": "account"}, "ordering": "none"}),
    )
    .await;
    subscribe(
        &app,
        "t",
        json!({"source": {"category": "account"}, "ordering": "none"}),
    )
    .await;
    let secret = "whsec_not-base64-at-all!!";
    let definitions = [
        json!({"source": {"planet": "mars"}}),
        json!({"source": {}}),
        json!({"source": {"all": false}}),
        json!({"source": {"all": true, "category": "account"}}),
        json!({"source": {"category": "bad name"}}),
        json!({"source": {"query": []}}),
        json!({"source": {"all": true}, "types": ["has space"]}),
        json!({"source": {"all": true}, "start": "middle"}),
        json!({"source": {"all": true}, "start": -1}),
        json!({"source": {"all": true}, "ordering": "chaos"}),
        json!({"source": {"all": true}, "ack_timeout_ms": 0}),
        json!({"source": {"all": true}, "max_deliveries": 0}),
        json!({"source": {"all": true}, "push": {"url": "ftp://example.com/hook"}}),
        json!({"source": {"all": true}, "push": {"url": "not a url"}}),
        json!({"source": {"all": true}, "push": {"url": "file:///etc/passwd"}}),
        json!({"source": {"all": true}, "push": {"url": "http://x.test/", "secret": secret}}),
        json!({"source": {"all": true}, "push": {"url": "http://x.test/", "max_in_flight": 0}}),
        json!({"source": {"all": true}, "surprise": 1}),
    ];
    for definition in definitions {
        let problem = assert_problem(
            app.put_json("/subscriptions/new", definition.clone()).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            !problem["detail"].as_str().unwrap().contains("not-base64"),
            "{problem}"
        );
    }
    assert_problem(app.get("/subscriptions/new").await, StatusCode::NOT_FOUND).await;
    assert_problem(
        app.put_json("/subscriptions/$reserved", json!({"source": {"all": true}}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    for body in [
        json!({"consumer": "w", "max": 0}),
        json!({"consumer": "w", "max": 1_000_000}),
        json!({"consumer": "w", "wait_ms": 60_000}),
        json!({"consumer": "$push"}),
        json!({"max": 1}),
    ] {
        assert_problem(
            app.post_json("/subscriptions/s/claim", body).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    assert_problem(
        app.post_json("/subscriptions/none/claim", json!({"consumer": "w"}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let held = claim(&app, "s", "w", 10, 0).await;
    let lease = held[0]["lease"].as_str().unwrap();
    // Forged, malformed and another subscription's leases: 400, nothing settled.
    let (position, rest) = lease.split_once('.').unwrap();
    let forged = format!("{}.{rest}", position.parse::<i64>().unwrap() + 1);
    for bad in [forged.as_str(), "garbage", "", "1.2.3"] {
        let body = json!({"leases": [lease, bad]});
        assert_problem(
            app.post_json("/subscriptions/s/ack", body).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let body = json!({"leases": [lease]});
    assert_problem(
        app.post_json("/subscriptions/t/ack", body).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let body = json!({"leases": [lease], "action": "explode"});
    assert_problem(
        app.post_json("/subscriptions/s/nack", body).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let many: Vec<String> = (0..1001).map(|_| lease.to_owned()).collect();
    let body = json!({"leases": many});
    assert_problem(
        app.post_json("/subscriptions/s/ack", body).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let body = json!({"positions": [0]});
    assert_problem(
        app.post_json("/subscriptions/s/replay", body).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(state(&app, "s").await["in_flight"], 2);
    // The lease still works where it belongs.
    let done = settle(&app, "s", "ack", &leases(&held), json!({})).await;
    assert_eq!(done["done"], 2);
}

async fn a_read_key_claims_only_within_its_reach(app: TestApp) {
    const ADMIN: &str = "cairn_subscriptions-admin-key-0123456789abcdef";
    let secured = app.sibling_with(&["--admin-key", ADMIN]).await;
    let as_admin = |request: reqwest::RequestBuilder| request.bearer_auth(ADMIN);
    let created = as_admin(secured.client.post(format!("{}/keys", secured.url)))
        .json(&json!({"name": "reader", "scopes": ["read"], "streams": ["account"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let key = created.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    append(&app, "account-1", "Opened", &[json!(1)]).await;
    for (name, source) in [
        ("mine", json!({"category": "account"})),
        ("all", json!({"all": true})),
    ] {
        let response = as_admin(
            secured
                .client
                .put(format!("{}/subscriptions/{name}", secured.url)),
        )
        .json(&json!({"source": source}))
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let claim_as = |name: &str| {
        secured
            .client
            .post(format!("{}/subscriptions/{name}/claim", secured.url))
            .bearer_auth(&key)
            .json(&json!({"consumer": "w"}))
            .send()
    };
    assert_eq!(claim_as("mine").await.unwrap().status(), StatusCode::OK);
    assert_problem(claim_as("all").await.unwrap(), StatusCode::FORBIDDEN).await;
    let response = secured
        .client
        .put(format!("{}/subscriptions/x", secured.url))
        .bearer_auth(&key)
        .json(&json!({"source": {"category": "account"}}))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::FORBIDDEN).await;
    let response = secured
        .client
        .get(format!("{}/subscriptions/mine", secured.url))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED).await;
}

async fn metrics_follow_each_subscription(app: TestApp) {
    append(&app, "m-1", "E", &[json!(1), json!(2), json!(3)]).await;
    subscribe(
        &app,
        "watched",
        json!({"source": {"category": "m"}, "ordering": "none"}),
    )
    .await;
    let deliveries = claim(&app, "watched", "w", 2, 0).await;
    let body = json!({"action": "park", "reason": "bad"});
    settle(&app, "watched", "nack", &leases(&deliveries[..1]), body).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for line in [
        "cairn_subscription_deliveries_total{subscription=\"watched\"} 2",
        "cairn_subscription_failures_total{subscription=\"watched\"} 1",
        "cairn_subscription_parked{subscription=\"watched\"} 1",
        "cairn_subscription_in_flight{subscription=\"watched\"} 1",
        // Event 1 is parked, 2 in flight: the position is 1.
        "cairn_subscription_lag{subscription=\"watched\"} 2",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    let response = app.delete("/subscriptions/watched").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(!text.contains("subscription=\"watched\""), "{text}");
}

/// Issue 13's first correctness test: 8 consumers on two instances claim
/// and acknowledge 10,000 events while 4 writers append them. (On SQLite,
/// on one instance: a SQLite file is meant for one process, whose writers
/// queue; two would contend for its lock.)
async fn competing_consumers_on_two_instances_settle_every_event_once(app: TestApp) {
    const EVENTS: usize = 10_000;
    const STREAMS: usize = 40;
    let app = Arc::new(app);
    let second = match app.database_url.starts_with("postgres") {
        true => Arc::new(app.sibling().await),
        false => app.clone(),
    };
    subscribe(
        &app,
        "orders",
        json!({"source": {"category": "order"}, "ack_timeout_ms": 60000}),
    )
    .await;
    let writers = (0..4).map(|w| {
        let app = app.clone();
        tokio::spawn(async move {
            for batch in 0..(EVENTS / 4 / 50) {
                let stream = format!("order-{}", (w * 7 + batch) % STREAMS);
                let events: Vec<Value> = (0..50)
                    .map(|_| json!({"type": "Placed", "data": {}}))
                    .collect();
                let response = app.append(&stream, &json!(events), &[]).await;
                assert_eq!(response.status(), StatusCode::CREATED);
            }
        })
    });
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let acked: Arc<Mutex<Vec<(String, i64, String)>>> = Arc::default();
    let consumers = (0..8).map(|c| {
        let app = if c % 2 == 0 {
            app.clone()
        } else {
            second.clone()
        };
        let (in_flight, acked) = (in_flight.clone(), acked.clone());
        tokio::spawn(async move {
            let consumer = format!("w{c}");
            while acked.lock().unwrap().len() < EVENTS {
                let deliveries = claim(&app, "orders", &consumer, 100, 200).await;
                for d in &deliveries {
                    let id = d["event"]["id"].as_str().unwrap().to_owned();
                    assert_eq!(d["attempt"], 1);
                    assert!(
                        in_flight.lock().unwrap().insert(id),
                        "an event leased twice at once"
                    );
                }
                if deliveries.is_empty() {
                    continue;
                }
                // Recorded before the ack is sent: the next of a stream
                // can only come once it is answered.
                for d in &deliveries {
                    let event = &d["event"];
                    let id = event["id"].as_str().unwrap().to_owned();
                    in_flight.lock().unwrap().remove(&id);
                    let stream = event["stream"].as_str().unwrap().to_owned();
                    acked
                        .lock()
                        .unwrap()
                        .push((stream, event["position"].as_i64().unwrap(), id));
                }
                let done = settle(&app, "orders", "ack", &leases(&deliveries), json!({})).await;
                assert_eq!(done["done"].as_u64(), Some(deliveries.len() as u64));
            }
        })
    });
    for writer in join_all(writers).await {
        writer.unwrap();
    }
    let finished = tokio::time::timeout(Duration::from_secs(120), join_all(consumers)).await;
    for consumer in finished.expect("every event settled in time") {
        consumer.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), EVENTS);
    let ids: HashSet<&String> = acked.iter().map(|(_, _, id)| id).collect();
    assert_eq!(ids.len(), EVENTS, "every event acknowledged exactly once");
    let mut next: HashMap<&str, i64> = HashMap::new();
    for (stream, position, _) in &acked {
        let expected = next.entry(stream).or_insert(0);
        assert_eq!(position, expected, "{stream} acknowledged in stream order");
        *expected += 1;
    }
    let view = state(&app, "orders").await;
    assert_eq!(
        (view["lag"].as_i64(), view["in_flight"].as_i64()),
        (Some(0), Some(0))
    );
}

/// A webhook receiver on a free port: checks each push's Standard Webhooks
/// signature by hand (HMAC-SHA256 over `id.timestamp.body`), fails an
/// event's first `fail` attempts with `500`, never answers events marked
/// `hang` in time, and records what it took.
struct Receiver {
    url: String,
    /// Per event id: the attempts received, in order.
    attempts: Arc<Mutex<HashMap<String, Vec<i64>>>>,
    /// Event ids answered `2xx`, in order.
    taken: Arc<Mutex<Vec<String>>>,
    /// Requests under way now, and the most at once.
    concurrent: Arc<Mutex<(usize, usize)>>,
    /// Pushes whose signature did not verify.
    forged: Arc<Mutex<usize>>,
}

impl Receiver {
    /// Starts a receiver expecting pushes signed with `secret` (unsigned
    /// when `None`), answering each after `delay`.
    async fn start(secret: Option<&[u8]>, delay: Duration) -> Receiver {
        use axum::body::Bytes;
        use axum::http::HeaderMap;
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        let key = secret.map(|secret| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret));
        let receiver = Receiver {
            url: String::new(),
            attempts: Arc::default(),
            taken: Arc::default(),
            concurrent: Arc::default(),
            forged: Arc::default(),
        };
        let (attempts, taken, concurrent, forged) = (
            receiver.attempts.clone(),
            receiver.taken.clone(),
            receiver.concurrent.clone(),
            receiver.forged.clone(),
        );
        let handler = move |headers: HeaderMap, body: Bytes| {
            let (attempts, taken, concurrent, forged) = (
                attempts.clone(),
                taken.clone(),
                concurrent.clone(),
                forged.clone(),
            );
            let key = key.clone();
            async move {
                let header = |name: &str| headers[name].to_str().unwrap().to_owned();
                let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
                let signed = format!("{id}.{timestamp}.{}", std::str::from_utf8(&body).unwrap());
                let signature = headers
                    .get("webhook-signature")
                    .map(|v| v.to_str().unwrap());
                let expected = key.as_ref().map(|key| {
                    format!(
                        "v1,{}",
                        STANDARD.encode(ring::hmac::sign(key, signed.as_bytes()))
                    )
                });
                if signature != expected.as_deref() {
                    *forged.lock().unwrap() += 1;
                }
                let push: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(push["event"]["id"].as_str(), Some(id.as_str()));
                let attempt = push["attempt"].as_i64().unwrap();
                attempts
                    .lock()
                    .unwrap()
                    .entry(id.clone())
                    .or_default()
                    .push(attempt);
                {
                    let mut c = concurrent.lock().unwrap();
                    c.0 += 1;
                    c.1 = c.1.max(c.0);
                }
                tokio::time::sleep(delay).await;
                let data = &push["event"]["data"];
                let status = if data["hang"] == true {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    StatusCode::OK
                } else if attempt <= data["fail"].as_i64().unwrap_or(0) {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    taken.lock().unwrap().push(id);
                    StatusCode::NO_CONTENT
                };
                concurrent.lock().unwrap().0 -= 1;
                axum::http::StatusCode::from_u16(status.as_u16()).unwrap()
            }
        };
        let router = axum::Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver { url, ..receiver }
    }
}

/// Waits (polling the state) until a subscription's state satisfies `done`.
async fn until_state(app: &TestApp, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let view = state(app, name).await;
        if done(&view) {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{name} never reached the state wanted: {}",
        state(app, name).await
    );
}

async fn webhooks_are_signed_retried_and_parked(app: TestApp) {
    use base64::Engine;
    let secret = [7u8; 32];
    let receiver = Receiver::start(Some(&secret), Duration::ZERO).await;
    append(
        &app,
        "hook-1",
        "E",
        &[json!({}), json!({"fail": 2}), json!({})],
    )
    .await;
    append(
        &app,
        "hook-2",
        "E",
        &[json!({"hang": true}), json!({"fail": 1})],
    )
    .await;
    append(&app, "hook-3", "E", &[json!({})]).await;
    let whsec = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(secret)
    );
    let created = subscribe(
        &app,
        "hooks",
        json!({"source": {"category": "hook"}, "max_deliveries": 3, "ordering": "none",
               "push": {"url": receiver.url, "secret": whsec, "timeout_ms": 300}}),
    )
    .await;
    assert_eq!(created["push"]["signed"], true);
    assert!(
        !created.to_string().contains("whsec_"),
        "the secret is never shown"
    );
    // Parked counts as settled: the position reaches the head.
    let view = until_state(&app, "hooks", |v| {
        v["parked"] == 1 && v["in_flight"] == 0 && v["position"] == 6
    })
    .await;
    assert_eq!(view["lag"], 0);
    assert_eq!(*receiver.forged.lock().unwrap(), 0);
    let taken = receiver.taken.lock().unwrap().clone();
    assert_eq!(taken.len(), 5);
    assert_eq!(
        taken.iter().collect::<HashSet<_>>().len(),
        5,
        "each taken once"
    );
    let attempts = receiver.attempts.lock().unwrap().clone();
    let mut counts: Vec<Vec<i64>> = attempts.values().cloned().collect();
    counts.sort();
    assert_eq!(
        counts,
        [
            vec![1],
            vec![1],
            vec![1],
            vec![1, 2],
            vec![1, 2, 3],
            vec![1, 2, 3]
        ]
    );
    let parked = app.get_json("/subscriptions/hooks/parked").await;
    assert_eq!(parked["parked"][0]["event"]["data"]["hang"], true);
    let reason = parked["parked"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("300 ms"), "{reason}");
}

async fn one_instance_pushes_a_subscription(app: TestApp) {
    let receiver = Receiver::start(None, Duration::from_millis(20)).await;
    let second = app.sibling().await;
    append(
        &app,
        "one-1",
        "E",
        &(0..20).map(|_| json!({})).collect::<Vec<_>>(),
    )
    .await;
    subscribe(
        &app,
        "single",
        json!({"source": {"category": "one"}, "ordering": "none",
               "push": {"url": receiver.url, "max_in_flight": 1}}),
    )
    .await;
    until_state(&second, "single", |v| v["lag"] == 0).await;
    let taken = receiver.taken.lock().unwrap().clone();
    assert_eq!(taken.len(), 20);
    assert_eq!(
        *receiver.forged.lock().unwrap(),
        0,
        "unsigned without a secret"
    );
    assert_eq!(
        receiver.concurrent.lock().unwrap().1,
        1,
        "one push at a time, both instances up"
    );
}

backend_tests!(
    creation_is_idempotent_and_a_different_definition_conflicts,
    claims_are_acknowledged_once_and_the_state_follows,
    a_claim_acknowledged_in_parts_is_settled_once_each,
    an_expired_lease_reaches_another_consumer,
    a_poison_event_is_parked_and_the_rest_flow_past_it,
    a_lease_that_runs_out_after_the_last_delivery_parks_its_event,
    concurrent_claims_and_acks_share_turns,
    ordering_by_stream_holds_back_a_streams_later_events,
    sources_and_types_select_the_events,
    the_delivery_feed_keeps_its_consumer_within_max_in_flight,
    bad_input_is_refused_and_changes_nothing,
    a_read_key_claims_only_within_its_reach,
    metrics_follow_each_subscription,
    competing_consumers_on_two_instances_settle_every_event_once,
    webhooks_are_signed_retried_and_parked,
    one_instance_pushes_a_subscription,
    an_erased_event_leaves_its_subscription,
);

/// An event erased while it is leased, or while it waits behind its
/// stream, leaves its subscription: it is never delivered again and holds
/// nothing up (issue 14).
async fn an_erased_event_leaves_its_subscription(app: TestApp) {
    let data: Vec<Value> = (0..4).map(|i| json!(i)).collect();
    append(&app, "bin-1", "Put", &data).await;
    append(&app, "bin-2", "Put", &data[..1]).await;
    subscribe(
        &app,
        "bins",
        json!({"source": {"category": "bin"}, "ordering": "stream", "ack_timeout_ms": 300}),
    )
    .await;
    // Each stream's first event is leased; bin-1's others wait behind it.
    let lost = claim(&app, "bins", "dies", 10, 0).await;
    assert_eq!(
        seen(&lost),
        [("bin-1".into(), 0, 1), ("bin-2".into(), 0, 1)]
    );
    settle(&app, "bins", "ack", &leases(&lost)[1..], json!({})).await;
    let truncated = app
        .post_json("/streams/bin-1/truncate", json!({"before": 2}))
        .await;
    assert_eq!(truncated.status(), StatusCode::OK);
    // Once the lease runs out, the stream goes on after what was erased.
    let next = claim(&app, "bins", "lives", 10, 5000).await;
    assert_eq!(seen(&next), [("bin-1".into(), 2, 1)]);
    settle(&app, "bins", "ack", &leases(&next), json!({})).await;
    let last = claim(&app, "bins", "lives", 10, 0).await;
    assert_eq!(seen(&last), [("bin-1".into(), 3, 1)]);
    settle(&app, "bins", "ack", &leases(&last), json!({})).await;
    assert!(claim(&app, "bins", "lives", 10, 0).await.is_empty());
    let state = state(&app, "bins").await;
    assert_eq!(
        (&state["lag"], &state["parked"]),
        (&json!(0), &json!(0)),
        "{state}"
    );
}

/// Issue 13's fifth correctness test: a `kill -9` of the server loses no
/// acknowledgement and no event. What was acknowledged (the answer
/// received) never comes back; what was claimed and not acknowledged comes
/// back once its lease runs out; the rest is delivered after the restart.
#[tokio::test]
async fn a_crash_loses_no_acknowledgement_and_no_event() {
    use crate::binary::Server;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let server = Server::start_with(&["--data-dir", &data_dir]).await;
    let client = reqwest::Client::new();
    let call = |url: String, body: Value| {
        let client = client.clone();
        async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        }
    };
    let events: Vec<Value> = (0..100).map(|i| json!({"type": "E", "data": i})).collect();
    let url = &server.url;
    let response = client
        .post(format!("{url}/streams/crash-1"))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = client
        .put(format!("{url}/subscriptions/c"))
        .json(&json!({"source": {"category": "crash"}, "ordering": "none", "ack_timeout_ms": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let claimed = call(
        format!("{url}/subscriptions/c/claim"),
        json!({"consumer": "w", "max": 30}),
    )
    .await;
    let claimed = claimed["deliveries"].as_array().unwrap().clone();
    let acked = &claimed[..20];
    let answer = call(
        format!("{url}/subscriptions/c/ack"),
        json!({"leases": leases(acked)}),
    )
    .await;
    assert_eq!(answer["done"], 20);
    let positions = |deliveries: &[Value]| -> HashSet<i64> {
        deliveries
            .iter()
            .map(|d| d["event"]["global_position"].as_i64().unwrap())
            .collect()
    };
    let (acked, unacked) = (positions(acked), positions(&claimed[20..]));
    drop(server); // SIGKILL
    let server = Server::start_with(&["--data-dir", &data_dir]).await;
    let url = &server.url;
    let mut after: Vec<Value> = Vec::new();
    while after.len() < 80 {
        let answer = call(
            format!("{url}/subscriptions/c/claim"),
            json!({"consumer": "w2", "max": 100, "wait_ms": 3000}),
        )
        .await;
        let deliveries = answer["deliveries"].as_array().unwrap().clone();
        assert!(!deliveries.is_empty(), "the rest arrives after the restart");
        let answer = call(
            format!("{url}/subscriptions/c/ack"),
            json!({"leases": leases(&deliveries)}),
        )
        .await;
        assert_eq!(answer["done"].as_u64(), Some(deliveries.len() as u64));
        after.extend(deliveries);
    }
    let again = positions(&after);
    assert_eq!(again.len(), 80, "nothing twice after the restart");
    assert!(again.is_disjoint(&acked), "nothing acknowledged comes back");
    assert!(unacked.is_subset(&again), "the unacknowledged come back");
    for delivery in &after {
        let position = delivery["event"]["global_position"].as_i64().unwrap();
        let attempt = if unacked.contains(&position) { 2 } else { 1 };
        assert_eq!(delivery["attempt"], attempt);
    }
    let view = get_json(&client, format!("{url}/subscriptions/c")).await;
    assert_eq!(
        (view["position"].as_i64(), view["lag"].as_i64()),
        (Some(100), Some(0))
    );
}

/// A store whose subscription leased events under the layout before
/// migration 0007 (a row per event, its lease in the row) is upgraded by the
/// next start: an event still leased is not handed to a second consumer
/// before its lease would have run out, one leased at its last allowed
/// delivery is parked, and the rest flows. The old layout is made by hand
/// from a store the server wrote, then the server starts on it again.
async fn an_upgraded_store_keeps_its_leases_promises(database: Database) {
    use crate::binary::Server;
    let flags = database.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start_with(&flags).await;
    let client = reqwest::Client::new();
    let url = server.url.clone();
    let events: Vec<Value> = (0..3).map(|i| json!({"type": "E", "data": i})).collect();
    let response = client
        .post(format!("{url}/streams/upgrade-1"))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let definition =
        json!({"source": {"category": "upgrade"}, "ordering": "none", "max_deliveries": 3});
    let response = client
        .put(format!("{url}/subscriptions/u"))
        .json(&definition)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    drop(server);

    // Back to the layout of migration 0006: events 1 and 2 scanned and
    // leased for an hour, event 2 at its last allowed delivery.
    let in_an_hour = (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp_micros();
    database
        .execute(&[
            "DROP TABLE subscription_leases".to_owned(),
            "DELETE FROM _sqlx_migrations WHERE version = 7".to_owned(),
            "ALTER TABLE subscription_events ADD COLUMN lease TEXT".to_owned(),
            "ALTER TABLE subscription_events ADD COLUMN consumer TEXT".to_owned(),
            "ALTER TABLE subscription_events ADD COLUMN lease_expires BIGINT".to_owned(),
            "UPDATE subscriptions SET cursor = 2".to_owned(),
            format!(
                "INSERT INTO subscription_events (subscription, global_position, stream, attempt, \
             lease, consumer, lease_expires, available_at) VALUES \
             ('u', 1, 'upgrade-1', 1, '1.a', 'w1', {in_an_hour}, 0), \
             ('u', 2, 'upgrade-1', 3, '2.a', 'w1', {in_an_hour}, 0)"
            ),
        ])
        .await;

    let server = Server::start_with(&flags).await;
    let url = &server.url;
    let claimed: Value = client
        .post(format!("{url}/subscriptions/u/claim"))
        .json(&json!({"consumer": "w2", "max": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let positions: Vec<i64> = claimed["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event"]["global_position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [3], "only the event nobody held");
    let parked = get_json(&client, format!("{url}/subscriptions/u/parked")).await;
    let parked = parked["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0]["event"]["global_position"], 2);
    assert_eq!(parked[0]["attempts"], 3);
    let view = get_json(&client, format!("{url}/subscriptions/u")).await;
    assert_eq!(
        (view["position"].as_i64(), view["parked"].as_i64()),
        (Some(0), Some(1))
    );
}

/// A store for [`an_upgraded_store_keeps_its_leases_promises`]: a data
/// directory or a fresh Postgres database.
enum Database {
    Sqlite(tempfile::TempDir),
    Postgres(crate::common::postgres::TestDatabase),
}

impl Database {
    /// The server's flags for it.
    fn flags(&self) -> Vec<String> {
        match self {
            Database::Sqlite(dir) => vec!["--data-dir".into(), dir.path().display().to_string()],
            Database::Postgres(db) => vec!["--database-url".into(), db.url().to_owned()],
        }
    }

    /// Runs statements on a connection of its own, the server stopped.
    async fn execute(&self, statements: &[String]) {
        use sqlx::{Connection, Executor};
        match self {
            Database::Sqlite(dir) => {
                let url = format!("sqlite://{}", dir.path().join("cairn.db").display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                for statement in statements {
                    conn.execute(statement.as_str()).await.unwrap();
                }
            }
            Database::Postgres(db) => {
                let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
                for statement in statements {
                    conn.execute(statement.as_str()).await.unwrap();
                }
            }
        }
    }
}

#[tokio::test]
async fn an_upgraded_sqlite_store_keeps_its_leases_promises() {
    let dir = tempfile::tempdir().unwrap();
    an_upgraded_store_keeps_its_leases_promises(Database::Sqlite(dir)).await;
}

#[tokio::test]
async fn an_upgraded_postgres_store_keeps_its_leases_promises() {
    let Some(database) = crate::common::postgres::fresh_database().await else {
        return;
    };
    an_upgraded_store_keeps_its_leases_promises(Database::Postgres(database)).await;
}
