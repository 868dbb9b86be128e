//! Correctness under concurrency (issue 2): racing writers, contiguous
//! positions and batches, and a global order no reader can see out of order.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, backend_tests, event};

backend_tests!(
    racing_writers_exactly_one_wins,
    concurrent_batches_stay_contiguous,
    readers_never_see_the_global_order_out_of_order,
);

/// Two instances on one store, as in production: the check must hold in the
/// database, not in one process.
async fn two_instances(app: TestApp) -> Arc<[TestApp; 2]> {
    let sibling = app.sibling().await;
    Arc::new([app, sibling])
}

async fn racing_writers_exactly_one_wins(app: TestApp) {
    app.append("race-1", &event("First", json!(null)), &[])
        .await;
    let apps = two_instances(app).await;
    for round in 0..3 {
        let expected = format!("\"{round}\"");
        let attempts = (0..16).map(|i| {
            let (apps, expected) = (apps.clone(), expected.clone());
            async move {
                apps[i % 2]
                    .append(
                        "race-1",
                        &event("Race", json!(i)),
                        &[("if-match", &expected)],
                    )
                    .await
                    .status()
            }
        });
        let codes = join_all(attempts).await;
        assert_eq!(
            codes.iter().filter(|c| **c == StatusCode::CREATED).count(),
            1,
            "{codes:?}"
        );
        assert_eq!(
            codes
                .iter()
                .filter(|c| **c == StatusCode::PRECONDITION_FAILED)
                .count(),
            15,
            "{codes:?}"
        );
    }
    let page = apps[0].get_json("/streams/race-1").await;
    let positions: Vec<_> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [0, 1, 2, 3]);
}

async fn concurrent_batches_stay_contiguous(app: TestApp) {
    let apps = two_instances(app).await;
    let writes = (0..40).map(|i| {
        let apps = apps.clone();
        async move {
            let batch = json!([
                event("P", json!(i)),
                event("P", json!(i)),
                event("P", json!(i))
            ]);
            apps[i % 2].append("batch-1", &batch, &[]).await.status()
        }
    });
    assert!(
        join_all(writes)
            .await
            .iter()
            .all(|c| *c == StatusCode::CREATED)
    );
    let page = apps[0].get_json("/streams/batch-1?limit=1000").await;
    let events = page["events"].as_array().unwrap();
    let positions: Vec<_> = events
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, (0..120).collect::<Vec<_>>());
    for triple in events.chunks(3) {
        assert!(
            triple.iter().all(|e| e["data"] == triple[0]["data"]),
            "a batch was split: {triple:?}"
        );
    }
}

/// Several writers append while a reader polls `/all` from a recorded start.
/// The reader must end with exactly the acknowledged events, each once, in
/// increasing order: an event that became visible behind one already read
/// would be missed.
async fn readers_never_see_the_global_order_out_of_order(app: TestApp) {
    let start = app
        .append("order-0", &event("Start", json!(null)), &[])
        .await;
    let start: Value = start.json().await.unwrap();
    let start = start["events"][0]["global_position"].as_i64().unwrap() + 1;
    let apps = two_instances(app).await;
    let writing = Arc::new(AtomicBool::new(true));

    let reader = {
        let (apps, writing) = (apps.clone(), writing.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut position = start;
            loop {
                let done = !writing.load(Ordering::SeqCst);
                let page = apps[0]
                    .get_json(&format!("/all?position={position}&limit=50"))
                    .await;
                for e in page["events"].as_array().unwrap() {
                    seen.push((
                        e["global_position"].as_i64().unwrap(),
                        e["id"].as_str().unwrap().to_owned(),
                    ));
                }
                position = page["next_position"].as_i64().unwrap();
                if done && page["end"] == true {
                    return seen;
                }
            }
        })
    };
    let writers = (0..8).map(|w| {
        let apps = apps.clone();
        async move {
            let mut acknowledged = Vec::new();
            for i in 0..25 {
                let batch = json!([event("W", json!([w, i])), event("W", json!([w, i]))]);
                let r = apps[w % 2].append(&format!("order-{w}"), &batch, &[]).await;
                assert_eq!(r.status(), StatusCode::CREATED);
                let body: Value = r.json().await.unwrap();
                for e in body["events"].as_array().unwrap() {
                    acknowledged.push(e["id"].as_str().unwrap().to_owned());
                }
            }
            acknowledged
        }
    });
    let acknowledged: HashSet<String> = join_all(writers).await.into_iter().flatten().collect();
    writing.store(false, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let globals: Vec<i64> = seen.iter().map(|(g, _)| *g).collect();
    assert!(
        globals.windows(2).all(|w| w[0] < w[1]),
        "out of order: {globals:?}"
    );
    let ids: Vec<&String> = seen.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), acknowledged.len(), "missed or repeated events");
    assert!(ids.iter().all(|id| acknowledged.contains(*id)));
}
