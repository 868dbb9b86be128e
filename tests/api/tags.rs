//! Tags and reads by tags and types (API.md, Tags and consistency
//! boundaries), on both stores.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem, backend_tests};

/// `POST` a JSON body to a path.
async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.url))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The `(type, stream)` of each event of a page.
fn kinds(page: &Value) -> Vec<(String, String)> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |key: &str| e[key].as_str().unwrap().to_owned();
            (text("type"), text("stream"))
        })
        .collect()
}

/// Appends the course example's events: two courses, two students.
async fn courses(app: &TestApp) {
    let batches = [
        (
            "course-c1",
            json!([
                {"type": "CourseDefined", "data": {"capacity": 2}, "tags": ["course:c1"]},
                {"type": "StudentSubscribed", "data": {}, "tags": ["course:c1", "student:s7"]},
            ]),
        ),
        (
            "course-c2",
            json!({"type": "CourseDefined", "data": {}, "tags": ["course:c2"]}),
        ),
        (
            "student-s7",
            json!({"type": "StudentRegistered", "data": {}, "tags": ["student:s7"]}),
        ),
        (
            "course-c2",
            json!({"type": "StudentSubscribed", "data": {}, "tags": ["student:s7", "course:c2"]}),
        ),
        ("other-1", json!({"type": "StudentSubscribed", "data": {}})),
    ];
    for (stream, body) in batches {
        let response = post(app, &format!("/streams/{stream}"), body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
}

/// Tags read back in the order written on every read path, `[]` when none.
async fn tags_read_back_everywhere(app: TestApp) {
    courses(&app).await;
    let stream = app.get_json("/streams/course-c2").await;
    assert_eq!(
        stream["events"][1]["tags"],
        json!(["student:s7", "course:c2"])
    );
    let all = app.get_json("/all").await;
    let tags: Vec<Value> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tags"].clone())
        .collect();
    assert_eq!(tags[0], json!(["course:c1"]));
    assert_eq!(tags[5], json!([]));
    let id = all["events"][1]["id"].as_str().unwrap();
    let one = app.get_json(&format!("/events/{id}")).await;
    assert_eq!(one["tags"], json!(["course:c1", "student:s7"]));
    let category = app.get_json("/categories/course").await;
    assert_eq!(category["events"][2]["tags"], json!(["course:c2"]));
}

/// `GET /events` and `POST /query` match items by tags (all of them) and
/// types (any of them), in global order, paged, forward and backward, with
/// the head.
async fn reads_by_tags_and_types(app: TestApp) {
    courses(&app).await;
    let c1 = app.get_json("/events?tag=course:c1").await;
    assert_eq!(
        kinds(&c1),
        [
            ("CourseDefined".into(), "course-c1".into()),
            ("StudentSubscribed".into(), "course-c1".into())
        ]
    );
    assert_eq!(
        (c1["head"].as_i64(), c1["end"].as_bool()),
        (Some(6), Some(true))
    );
    let both = app.get_json("/events?tag=student:s7&tag=course:c2").await;
    assert_eq!(
        kinds(&both),
        [("StudentSubscribed".into(), "course-c2".into())]
    );
    let typed = app
        .get_json("/events?tag=student:s7&type=StudentRegistered&type=CourseDefined")
        .await;
    assert_eq!(
        kinds(&typed),
        [("StudentRegistered".into(), "student-s7".into())]
    );
    let by_type = app
        .get_json("/events?type=StudentSubscribed&direction=backward")
        .await;
    let streams: Vec<String> = kinds(&by_type).into_iter().map(|(_, s)| s).collect();
    assert_eq!(streams, ["other-1", "course-c2", "course-c1"]);

    let query = json!({"query": [
        {"types": ["StudentSubscribed"], "tags": ["course:c1"]},
        {"types": ["CourseDefined", "StudentRegistered"], "tags": []},
    ]});
    let page = post(&app, "/query", query.clone())
        .await
        .json::<Value>()
        .await
        .unwrap();
    let types: Vec<String> = kinds(&page).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        types,
        [
            "CourseDefined",
            "StudentSubscribed",
            "CourseDefined",
            "StudentRegistered"
        ]
    );
    // Paged: two at a time, from next_position, to the end.
    let mut seen = Vec::new();
    let mut position = 0;
    loop {
        let mut body = query.clone();
        body["limit"] = json!(2);
        body["position"] = json!(position);
        let page = post(&app, "/query", body)
            .await
            .json::<Value>()
            .await
            .unwrap();
        seen.extend(kinds(&page).into_iter().map(|(t, _)| t));
        position = page["next_position"].as_i64().unwrap();
        if page["end"] == json!(true) {
            break;
        }
    }
    assert_eq!(seen, types);
    let none = app.get_json("/events?tag=course:c9").await;
    assert_eq!(
        (none["events"].clone(), none["end"].clone()),
        (json!([]), json!(true))
    );
}

/// Malformed tags and queries are `400` with a clear detail, and an append
/// with bad tags writes nothing.
async fn bad_tags_and_queries_are_400(app: TestApp) {
    let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let bad_events = [
        (json!({"type": "A", "data": {}, "tags": many}), "at most 32"),
        (
            json!({"type": "A", "data": {}, "tags": ["a", "a"]}),
            "twice",
        ),
        (json!({"type": "A", "data": {}, "tags": ["a b"]}), "a tag"),
        (json!({"type": "A", "data": {}, "tags": [""]}), "a tag"),
        (json!({"type": "A", "data": {}, "tags": "a"}), "invalid"),
        (
            json!([{"type": "A", "data": {}}, {"type": "A", "data": {}, "tags": ["$x"]}]),
            "event 1",
        ),
    ];
    for (body, says) in bad_events {
        let problem = assert_problem(
            post(&app, "/streams/t-1", body.clone()).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{body}: {problem}"
        );
    }
    assert_eq!(
        app.get("/streams/t-1").await.status(),
        StatusCode::NOT_FOUND
    );

    for query in [
        "/events",
        "/events?tag=",
        "/events?tag=a%20b",
        "/events?tag=a&limit=0",
        "/events?tag=a&nope=1",
        "/events?tag=a&position=-1",
    ] {
        assert_problem(app.get(query).await, StatusCode::BAD_REQUEST).await;
    }
    let bad_queries = [
        json!({"query": []}),
        json!({"query": [{}]}),
        json!({"query": [{"types": [], "tags": []}]}),
        json!({"query": [{"tags": ["a"]}], "extra": 1}),
        json!({"query": [{"tags": ["a"], "stream": "x"}]}),
        json!({"query": [{"tags": ["a\u{202e}"]}]}),
        json!({"query": [{"types": ["A"]}], "position": -1}),
        json!({"query": "a"}),
    ];
    for body in bad_queries {
        assert_problem(post(&app, "/query", body).await, StatusCode::BAD_REQUEST).await;
    }
}

backend_tests!(
    tags_read_back_everywhere,
    reads_by_tags_and_types,
    bad_tags_and_queries_are_400,
);
