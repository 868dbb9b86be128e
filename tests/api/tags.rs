//! Tags and reads by tags and types (API.md, Tags and consistency
//! boundaries), on both stores.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem, backend_tests};

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
        let response = app.post_json(&format!("/streams/{stream}"), body).await;
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
    let page = app
        .post_json("/query", query.clone())
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
        let page = app
            .post_json("/query", body)
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
    // A tag read with `checkpoint` is a feed's only; a feed starts right
    // after the consumer's checkpoint.
    assert_problem(
        app.get("/events?tag=course:c1&checkpoint=p").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let stored = app
        .client
        .put(format!("{}/checkpoints/p", app.url))
        .json(&json!({"position": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), StatusCode::OK);
    let feed = app
        .client
        .get(format!("{}/events?tag=course:c1&checkpoint=p", app.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut body = feed.bytes_stream();
    let mut text = String::new();
    while !text.contains("caught-up") {
        use futures::StreamExt;
        text.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    assert!(
        text.contains("\nid: 2\n") && !text.contains("\nid: 1\n"),
        "{text}"
    );
    let negative = app
        .post_json(
            "/query",
            json!({"query": [{"tags": ["a"]}], "position": -1}),
        )
        .await;
    assert_problem(negative, StatusCode::BAD_REQUEST).await;
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
            app.post_json("/streams/t-1", body.clone()).await,
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
        // 65 index lookups: past the cap of 64.
        json!({"query": [{"types": (0..32).map(|i| format!("A{i}")).collect::<Vec<_>>()},
                         {"types": (0..32).map(|i| format!("B{i}")).collect::<Vec<_>>()},
                         {"types": ["C"]}]}),
    ];
    for body in bad_queries {
        assert_problem(app.post_json("/query", body).await, StatusCode::BAD_REQUEST).await;
    }
}

/// The course example (API.md): 40 clients each try to subscribe a student
/// to a course of capacity 30, deciding from a tag read and appending on
/// condition that nothing changed since, retrying on `412`, half of them
/// through a second instance. Exactly 30 succeed.
async fn a_course_never_takes_more_than_its_capacity(app: TestApp) {
    const CAPACITY: usize = 30;
    let other = app.sibling().await;
    let instances = [&app, &other];
    let subscribe = |student: usize| {
        let app = instances[student % 2];
        async move {
            let query = json!([{"types": ["StudentSubscribed"], "tags": ["course:c1"]}]);
            loop {
                let read = app
                    .post_json("/query", json!({"query": query, "limit": 1000}))
                    .await;
                let page: Value = read.json().await.unwrap();
                if page["events"].as_array().unwrap().len() >= CAPACITY {
                    return false;
                }
                let body = json!({
                    "events": [
                        {"stream": "course-c1", "type": "StudentSubscribed", "data": {"student": student},
                         "tags": ["course:c1", format!("student:s{student}")]},
                        {"stream": format!("student-s{student}"), "type": "SubscribedToCourse", "data": {},
                         "tags": [format!("student:s{student}")]},
                    ],
                    "condition": {"fail_if_events_match": query, "after": page["head"]},
                });
                let response = app.post_json("/events", body).await;
                match response.status() {
                    StatusCode::CREATED => return true,
                    StatusCode::PRECONDITION_FAILED => {
                        let problem: Value = response.json().await.unwrap();
                        assert_eq!(problem["condition"], "failed", "{problem}");
                        assert!(
                            problem["first_match"].as_i64().unwrap()
                                > page["head"].as_i64().unwrap()
                        );
                    }
                    status => panic!("{status}: {}", response.text().await.unwrap()),
                }
            }
        }
    };
    let outcomes = futures::future::join_all((0..40).map(subscribe)).await;
    assert_eq!(outcomes.iter().filter(|won| **won).count(), CAPACITY);
    let course = app
        .get_json("/events?tag=course:c1&type=StudentSubscribed&limit=1000")
        .await;
    assert_eq!(course["events"].as_array().unwrap().len(), CAPACITY);
    // Each success wrote both of its events, and nothing else was written.
    let all = app.get_json("/all?limit=1000").await;
    assert_eq!(all["events"].as_array().unwrap().len(), 2 * CAPACITY);
}

/// 20 clients race to claim one username with a condition and no `after`:
/// exactly one wins.
async fn a_username_is_claimed_once(app: TestApp) {
    let claim = |i: usize| {
        let app = &app;
        async move {
            let body = json!({
                "events": [{"stream": format!("user-{i}"), "type": "UsernameClaimed", "data": {},
                            "tags": ["username:ada"]}],
                "condition": {"fail_if_events_match": [{"tags": ["username:ada"]}]},
            });
            app.post_json("/events", body).await.status()
        }
    };
    let statuses = futures::future::join_all((0..20).map(claim)).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
            .count(),
        19
    );
}

/// A multi-stream append is all or nothing; a retry with the same ids is
/// `200` and writes nothing, before versions and conditions are judged;
/// ids used elsewhere are `409`.
async fn multi_stream_appends_are_atomic_and_idempotent(app: TestApp) {
    app.post_json("/streams/b-1", json!({"type": "A", "data": 0}))
        .await;
    let body = json!({
        "events": [
            {"stream": "a-1", "type": "A", "data": 1, "id": "00000000-0000-7000-8000-000000000001"},
            {"stream": "b-1", "type": "A", "data": 2, "id": "00000000-0000-7000-8000-000000000002"},
            {"stream": "a-1", "type": "A", "data": 3, "id": "00000000-0000-7000-8000-000000000003"},
        ],
        "expected_versions": {"a-1": -1, "b-1": 5},
    });
    let refused = assert_problem(
        app.post_json("/events", body.clone()).await,
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert_eq!(
        (
            refused["stream"].as_str(),
            refused["actual_version"].as_i64()
        ),
        (Some("b-1"), Some(0))
    );
    assert_eq!(
        app.get("/streams/a-1").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get_json("/all").await["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let mut body = body;
    body["expected_versions"]["b-1"] = json!(0);
    let written = app.post_json("/events", body.clone()).await;
    assert_eq!(written.status(), StatusCode::CREATED);
    let written: Value = written.json().await.unwrap();
    let at: Vec<(Value, Value, Value)> = written["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["stream"].clone(),
                e["position"].clone(),
                e["global_position"].clone(),
            )
        })
        .collect();
    assert_eq!(
        at,
        [
            (json!("a-1"), json!(0), json!(2)),
            (json!("b-1"), json!(1), json!(3)),
            (json!("a-1"), json!(1), json!(4))
        ]
    );
    assert_eq!(written["head"], 4);
    // The same request again: already stored, so 200 although the versions
    // no longer hold.
    let retried = app.post_json("/events", body.clone()).await;
    assert_eq!(retried.status(), StatusCode::OK);
    assert_eq!(retried.json::<Value>().await.unwrap(), written);
    body["events"][0]["stream"] = json!("c-1");
    assert_problem(app.post_json("/events", body).await, StatusCode::CONFLICT).await;
    assert_eq!(
        app.get_json("/all").await["events"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

/// Malformed multi-stream appends are `400` with a clear detail, and
/// nothing is written.
async fn bad_multi_stream_appends_are_400(app: TestApp) {
    app.post_json("/streams/seed-1", json!({"type": "A", "data": 0}))
        .await;
    let event = |extra: Value| {
        let mut event = json!({"stream": "m-1", "type": "A", "data": {}});
        event
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        event
    };
    let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let id = "00000000-0000-7000-8000-00000000000a";
    let bad = [
        (
            json!({"events": [event(json!({"tags": many}))]}),
            "at most 32",
        ),
        (
            json!({"events": [event(json!({"tags": ["a", "a"]}))]}),
            "twice",
        ),
        (
            json!({"events": [event(json!({"tags": ["a/b"]}))]}),
            "a tag",
        ),
        (
            json!({"events": [event(json!({}))], "condition": {"fail_if_events_match": [{}]}}),
            "at least one type or tag",
        ),
        (
            json!({"events": [event(json!({}))], "condition": {"fail_if_events_match": []}}),
            "1 to 32 items",
        ),
        (
            json!({"events": [event(json!({"color": "red"}))]}),
            "unknown field",
        ),
        (
            json!({"events": [event(json!({}))], "extra": 1}),
            "unknown field",
        ),
        (
            json!({"events": [event(json!({}))], "condition": {"fail_if_events_match": [{"tags": ["a"]}], "after": 99}}),
            "beyond the head",
        ),
        (
            json!({"events": [event(json!({}))], "condition": {"fail_if_events_match": [{"tags": ["a"]}], "after": -1}}),
            "after",
        ),
        (json!({"events": []}), "no events"),
        (
            json!({"events": [event(json!({"id": id})), event(json!({"id": id}))]}),
            "twice",
        ),
        (json!({"events": [{"type": "A", "data": {}}]}), "`stream`"),
        (
            json!({"events": [event(json!({"stream": "$m"}))]}),
            "a stream name",
        ),
        (
            json!({"events": [event(json!({}))], "expected_versions": {"m-1": -2}}),
            "expected_versions",
        ),
        (
            json!({"events": [event(json!({}))], "expected_versions": {"m-1": "maybe"}}),
            "expected_versions",
        ),
        (json!([event(json!({}))]), "object"),
        (
            json!({"events": [event(json!({}))], "expected_versions": {"m-1": 3},
                   "condition": {"fail_if_events_match": [{"tags": ["a"]}], "after": 99}}),
            "beyond the head",
        ),
    ];
    for (body, says) in bad {
        let problem = assert_problem(
            app.post_json("/events", body.clone()).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{body}: {problem}"
        );
    }
    // Past the batch limit of streams, 413.
    let streams: serde_json::Map<String, Value> =
        (0..1001).map(|i| (format!("s-{i}"), json!(-1))).collect();
    let body = json!({"events": [event(json!({}))], "expected_versions": streams});
    assert_problem(
        app.post_json("/events", body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    // A stream append names its stream in the path only.
    let named = json!({"stream": "m-1", "type": "A", "data": {}});
    assert_problem(
        app.post_json("/streams/m-1", named).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(
        app.get_json("/all").await["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// A tag feed opened in the middle of a burst of conditional appends
/// delivers every matching event once, in global order: those before it
/// from the store, the rest live. `POST /query` feeds alike.
async fn tag_feeds_deliver_every_match_once_in_order(app: TestApp) {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    const WRITERS: usize = 4;
    const EACH: usize = 40;
    let write = |writer: usize| {
        let app = &app;
        async move {
            for i in 0..EACH {
                let tag = format!("decision:{writer}-{i}");
                let body = json!({
                    "events": [
                        {"stream": format!("burst-{writer}"), "type": "Decided", "data": i,
                         "tags": ["burst", tag]},
                        {"stream": format!("noise-{writer}"), "type": "Decided", "data": i},
                    ],
                    "condition": {"fail_if_events_match": [{"tags": [tag]}]},
                });
                assert_eq!(
                    app.post_json("/events", body).await.status(),
                    StatusCode::CREATED
                );
            }
        }
    };
    let open = |request: reqwest::RequestBuilder| async move {
        let response = request
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes_stream().eventsource()
    };
    let follow = async {
        // Let the burst begin, then open both feeds mid-burst.
        while app.get_json("/events?tag=burst&limit=1").await["events"] == json!([]) {
            tokio::task::yield_now().await;
        }
        let by_tag = open(
            app.client
                .get(format!("{}/events?tag=burst&position=1", app.url)),
        )
        .await;
        let by_query =
            open(app.client.post(format!("{}/query", app.url)).json(
                &json!({"query": [{"types": ["Decided"], "tags": ["burst"]}], "position": 1}),
            ))
            .await;
        let mut seen = Vec::new();
        for feed in [by_tag, by_query] {
            let mut feed = std::pin::pin!(feed);
            let mut positions = Vec::new();
            while positions.len() < WRITERS * EACH {
                let message = tokio::time::timeout(std::time::Duration::from_secs(20), feed.next())
                    .await
                    .expect("the feed goes on")
                    .unwrap()
                    .unwrap();
                if message.event == "caught-up" {
                    continue;
                }
                let event: Value = serde_json::from_str(&message.data).unwrap();
                assert!(
                    event["stream"].as_str().unwrap().starts_with("burst-"),
                    "{event}"
                );
                positions.push(event["global_position"].as_i64().unwrap());
            }
            seen.push(positions);
        }
        seen
    };
    let (seen, _) = futures::join!(follow, futures::future::join_all((0..WRITERS).map(write)));
    for positions in seen {
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "in order, once each"
        );
        assert_eq!(positions.len(), WRITERS * EACH);
    }
}

backend_tests!(
    tag_feeds_deliver_every_match_once_in_order,
    a_course_never_takes_more_than_its_capacity,
    a_username_is_claimed_once,
    multi_stream_appends_are_atomic_and_idempotent,
    bad_multi_stream_appends_are_400,
    tags_read_back_everywhere,
    reads_by_tags_and_types,
    bad_tags_and_queries_are_400,
);
