//! Category and global reads (API.md, Reading).

use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::common::{TestApp, backend_tests, event};

backend_tests!(
    category_interleaves_streams_in_global_order,
    filters_by_type_and_correlation,
    consumer_groups_partition_by_message_db_hash,
    rare_filters_answer_short_pages_and_carry_on,
    all_reads_everything_in_order,
    pages_stop_at_the_byte_budget,
);

/// Pages through a global read from position 1 to its end; returns every event.
async fn read_to_end(app: &TestApp, path: &str, query: &str, limit: usize) -> Vec<Value> {
    read_from(app, path, 1, query, limit).await
}

/// Pages through a read from `position` to its end; returns every event.
async fn read_from(
    app: &TestApp,
    path: &str,
    mut position: i64,
    query: &str,
    limit: usize,
) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let page = app
            .get_json(&format!("{path}?position={position}&limit={limit}{query}"))
            .await;
        let got = page["events"].as_array().unwrap();
        assert!(got.len() <= limit);
        events.extend(got.iter().cloned());
        position = page["next_position"].as_i64().unwrap();
        if page["end"] == true {
            return events;
        }
    }
}

fn streams_of(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["stream"].as_str().unwrap())
        .collect()
}

async fn category_interleaves_streams_in_global_order(app: TestApp) {
    for i in 0..3 {
        for s in ["a", "b"] {
            app.append(&format!("cat-{s}"), &event("E", json!(i)), &[])
                .await;
        }
    }
    app.append("cat", &event("Bare", json!(null)), &[]).await;
    app.append("catx-1", &event("Other", json!(null)), &[])
        .await;
    app.append("cat:command-1", &event("Sub", json!(null)), &[])
        .await;
    let events = read_to_end(&app, "/categories/cat", "", 4).await;
    assert_eq!(
        streams_of(&events),
        ["cat-a", "cat-b", "cat-a", "cat-b", "cat-a", "cat-b", "cat"]
    );
    let globals: Vec<_> = events
        .iter()
        .map(|e| e["global_position"].as_i64().unwrap())
        .collect();
    assert!(globals.windows(2).all(|w| w[0] < w[1]));
    let sub = read_to_end(&app, "/categories/cat:command", "", 10).await;
    assert_eq!(streams_of(&sub), ["cat:command-1"]);
    let from_third = app
        .get_json(&format!("/categories/cat?position={}", globals[2]))
        .await;
    assert_eq!(from_third["events"].as_array().unwrap().len(), 5);
    assert_eq!(from_third["category"], "cat");
}

async fn filters_by_type_and_correlation(app: TestApp) {
    app.append("f-1", &json!([event("A", json!(0)), event("B", json!(1)), {"type": "A", "data": 2, "correlation_id": "x"}]), &[]).await;
    app.append(
        "f-2",
        &json!([{"type": "C", "data": 3, "correlation_id": "x"}, event("A", json!(4))]),
        &[],
    )
    .await;
    let data = |events: Vec<Value>| {
        events
            .iter()
            .map(|e| e["data"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        data(read_to_end(&app, "/categories/f", "&type=A", 2).await),
        [0, 2, 4]
    );
    assert_eq!(
        data(read_to_end(&app, "/categories/f", "&type=A&type=C", 2).await),
        [0, 2, 3, 4]
    );
    assert_eq!(
        data(read_to_end(&app, "/categories/f", "&correlation_id=x", 2).await),
        [2, 3]
    );
    assert_eq!(data(read_to_end(&app, "/all", "&type=B", 2).await), [1]);
}

/// Message DB's member for a cardinal id, computed independently of the server.
fn member(cardinal: &str, size: i64) -> i64 {
    let digest = Md5::digest(cardinal.as_bytes());
    let hash = i64::from_be_bytes(digest[..8].try_into().unwrap());
    (i128::from(hash).abs() % i128::from(size)) as i64
}

async fn consumer_groups_partition_by_message_db_hash(app: TestApp) {
    let ids: Vec<String> = (0..30).map(|i| format!("{i}")).collect();
    for id in &ids {
        app.append(&format!("g-{id}"), &event("E", json!(null)), &[])
            .await;
    }
    app.append("g-5+eu", &event("E", json!(null)), &[]).await;
    for m in 0..4 {
        let events = read_to_end(
            &app,
            "/categories/g",
            &format!("&consumer_group_member={m}&consumer_group_size=4"),
            7,
        )
        .await;
        let mut expected: Vec<String> = ids
            .iter()
            .filter(|id| member(id, 4) == m)
            .map(|id| format!("g-{id}"))
            .collect();
        if member("5", 4) == m {
            expected.push("g-5+eu".into());
        }
        assert_eq!(streams_of(&events), expected, "member {m}");
    }
}

async fn rare_filters_answer_short_pages_and_carry_on(app: TestApp) {
    let filler: Vec<Value> = (0..1000).map(|i| event("Common", json!(i))).collect();
    for _ in 0..3 {
        app.append("w-1", &json!(filler), &[]).await;
    }
    app.append("w-2", &event("Rare", json!("found")), &[]).await;
    let first = app.get_json("/all?position=1&type=Rare").await;
    assert_eq!(first["events"], json!([]));
    assert_eq!(first["end"], false);
    assert!(first["next_position"].as_i64().unwrap() > 1);
    let events = read_to_end(&app, "/all", "&type=Rare", 100).await;
    assert_eq!(streams_of(&events), ["w-2"]);
}

async fn all_reads_everything_in_order(app: TestApp) {
    for i in 0..5 {
        app.append(&format!("x{i}-1"), &event("E", json!(i)), &[])
            .await;
    }
    let events = read_to_end(&app, "/all", "", 2).await;
    let globals: Vec<_> = events
        .iter()
        .map(|e| e["global_position"].as_i64().unwrap())
        .collect();
    assert_eq!(globals, [1, 2, 3, 4, 5]);
    let end = app.get_json("/all?position=6").await;
    assert_eq!(
        (end["next_position"].as_i64(), end["end"].as_bool()),
        (Some(6), Some(true))
    );
}

/// A page stops once its events pass the byte budget (at least one event a
/// page, `end: false`), and paging on still reads every event once, in order:
/// on a stream, a category and the whole log.
async fn pages_stop_at_the_byte_budget(app: TestApp) {
    let app = app.sibling_with(&["--max-page-bytes", "3000"]).await;
    let big = "x".repeat(2000);
    for i in 0..6 {
        let stream = format!("budget-{}", i % 2);
        app.append(&stream, &event("E", json!({"i": i, "pad": big})), &[])
            .await;
    }
    let first = app.get_json("/all?position=1&limit=100").await;
    let got = first["events"].as_array().unwrap().len();
    assert!(
        (1..=2).contains(&got),
        "{got} events of 2 KB in a 3,000-byte page"
    );
    assert_eq!(first["end"], false);
    let numbers = |events: &[Value]| -> Vec<i64> {
        events
            .iter()
            .map(|e| e["data"]["i"].as_i64().unwrap())
            .collect()
    };
    let all = read_to_end(&app, "/all", "", 100).await;
    assert_eq!(numbers(&all), [0, 1, 2, 3, 4, 5]);
    let category = read_to_end(&app, "/categories/budget", "", 100).await;
    assert_eq!(numbers(&category), [0, 1, 2, 3, 4, 5]);
    let stream = read_from(&app, "/streams/budget-0", 0, "", 100).await;
    assert_eq!(numbers(&stream), [0, 2, 4]);
    // Backward, the page that reaches position 0 is the last: `end: true`,
    // never a `next_position` of -1 to ask for.
    let mut backward = Vec::new();
    let mut path = "/streams/budget-0?direction=backward".to_owned();
    loop {
        let page = app.get_json(&path).await;
        backward.extend(page["events"].as_array().unwrap().iter().cloned());
        let next = page["next_position"].as_i64().unwrap();
        if page["end"] == true {
            break;
        }
        assert!(next >= 0, "{page}");
        path = format!("/streams/budget-0?direction=backward&position={next}");
    }
    assert_eq!(numbers(&backward), [4, 2, 0]);
}
