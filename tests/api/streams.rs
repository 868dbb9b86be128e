//! Appending to and reading one stream (API.md, Writing and Reading).

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{TestApp, assert_problem, backend_tests, etag_version, event};

backend_tests!(
    append_then_read_back,
    data_reads_back_as_the_exact_json_written,
    expected_versions,
    wrong_version_is_412_and_writes_nothing,
    retries_are_idempotent_and_reused_ids_conflict,
    paging_both_ways,
    temporal_bounds,
    head_conditional_get_and_last,
    event_by_id,
    list_streams_by_prefix,
);

async fn append_then_read_back(app: TestApp) {
    let r = app
        .append("account-1", &json!({"type": "Opened", "data": {"owner": "ada"}, "metadata": {"ip": "1.2.3.4"}, "correlation_id": "c-1"}), &[])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(etag_version(&r), 0);
    assert_eq!(r.headers()["location"], "/streams/account-1?position=0");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["stream"], "account-1");
    assert_eq!(body["version"], 0);
    assert_eq!(body["events"][0]["position"], 0);
    assert_eq!(body["events"][0]["global_position"], 1);

    let batch: Vec<Value> = (0..3)
        .map(|i| event("Deposited", json!({"i": i})))
        .collect();
    let r = app.append("account-1", &json!(batch), &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let positions: Vec<_> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["position"].as_i64().unwrap(),
                e["global_position"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(positions, [(1, 2), (2, 3), (3, 4)]);

    let page = app.get_json("/streams/account-1").await;
    assert_eq!(page["version"], 3);
    assert_eq!(page["end"], true);
    assert_eq!(page["next_position"], 4);
    let first = &page["events"][0];
    assert_eq!(first["type"], "Opened");
    assert_eq!(first["data"], json!({"owner": "ada"}));
    assert_eq!(first["metadata"], json!({"ip": "1.2.3.4"}));
    assert_eq!(first["correlation_id"], "c-1");
    assert_eq!(first["causation_id"], Value::Null);
    assert_eq!(page["events"][3]["metadata"], Value::Null);
    let time = first["time"].as_str().unwrap();
    assert!(
        time.ends_with('Z') && time.len() == "2026-11-22T10:15:30.123456Z".len(),
        "{time}"
    );
    Uuid::parse_str(first["id"].as_str().unwrap()).unwrap();
    // A name with characters a path segment may not hold is percent-encoded
    // in `Location`, and the link leads back to the stream.
    let odd = app
        .append(
            "caf%C3%A9:1%25+%40",
            &json!({"type": "Opened", "data": {}}),
            &[],
        )
        .await;
    assert_eq!(odd.status(), StatusCode::CREATED);
    let location = odd.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, "/streams/caf%C3%A9:1%25+@?position=0");
    assert_eq!(app.get_json(&location).await["stream"], "café:1%+@");
}

async fn data_reads_back_as_the_exact_json_written(app: TestApp) {
    // Key order, \u0000, number spelling and big numbers survive untouched.
    let data =
        r#"{"z":1,"a":"nul\u0000here","n":1.50,"big":123456789012345678901234567890,"e":1e400}"#;
    let metadata = r#"{"b":[true,null],"a":{}}"#;
    let body = format!(r#"{{"type":"Raw","data":{data},"metadata":{metadata}}}"#);
    let r = app
        .client
        .post(format!("{}/streams/raw-1", app.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["events"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        "/streams/raw-1".to_owned(),
        format!("/events/{id}"),
        "/all".to_owned(),
    ] {
        let text = app.get(&path).await.text().await.unwrap();
        assert!(
            text.contains(&format!(r#""data":{data}"#)),
            "{path}: {text}"
        );
        assert!(
            text.contains(&format!(r#""metadata":{metadata}"#)),
            "{path}: {text}"
        );
    }
}

async fn expected_versions(app: TestApp) {
    let e = event("E", json!({}));
    assert_eq!(
        app.append("s-1", &e, &[("if-match", "*")]).await.status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        app.append("s-1", &e, &[("if-none-match", "*")])
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.append("s-1", &e, &[("if-none-match", "*")])
            .await
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        app.append("s-1", &e, &[("if-match", "\"-1\"")])
            .await
            .status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        app.append("s-1", &e, &[("if-match", "\"0\"")])
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.append("s-1", &e, &[("if-match", "1")]).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.append("s-1", &e, &[("if-match", "W/\"2\"")])
            .await
            .status(),
        StatusCode::CREATED
    );
    let r = app.append("s-1", &e, &[("if-match", "*")]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(etag_version(&r), 4);
    assert_eq!(
        app.append("s-2", &e, &[("if-match", "\"-1\"")])
            .await
            .status(),
        StatusCode::CREATED
    );
}

async fn wrong_version_is_412_and_writes_nothing(app: TestApp) {
    app.append(
        "s-1",
        &json!([event("A", json!(1)), event("B", json!(2))]),
        &[],
    )
    .await;
    let r = app
        .append(
            "s-1",
            &json!([event("Late", json!(3))]),
            &[("if-match", "\"0\"")],
        )
        .await;
    assert_eq!(etag_version(&r), 1);
    let problem = assert_problem(r, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(problem["stream"], "s-1");
    assert_eq!(problem["expected_version"], 0);
    assert_eq!(problem["actual_version"], 1);
    let problem = assert_problem(
        app.append("s-9", &event("A", json!(1)), &[("if-match", "*")])
            .await,
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert_eq!(problem["expected_version"], "exists");
    assert_eq!(problem["actual_version"], -1);
    let problem = assert_problem(
        app.append("s-1", &event("A", json!(1)), &[("if-none-match", "*")])
            .await,
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert_eq!(problem["expected_version"], -1);
    assert_eq!(app.get_json("/streams/s-1").await["version"], 1);
    assert_eq!(
        app.get("/streams/s-9").await.status(),
        StatusCode::NOT_FOUND
    );
}

async fn retries_are_idempotent_and_reused_ids_conflict(app: TestApp) {
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let batch = json!([{"id": a, "type": "A", "data": 1}, {"id": b, "type": "B", "data": 2}]);
    let first = app.append("r-1", &batch, &[("if-none-match", "*")]).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    app.append("r-1", &event("Later", json!(3)), &[]).await;

    // The same request again, whatever its expected version: 200, nothing written.
    let again = app.append("r-1", &batch, &[("if-none-match", "*")]).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(etag_version(&again), 1);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["events"], first["events"]);
    assert_eq!(again["version"], 1);
    // A tail of the batch is a retry too.
    let tail = app
        .append("r-1", &json!([{"id": b, "type": "B", "data": 2}]), &[])
        .await;
    assert_eq!(tail.status(), StatusCode::OK);

    for (stream, body) in [
        ("r-2", json!({"id": a, "type": "A", "data": 1})), // another stream
        (
            "r-1",
            json!([{"id": b, "type": "B", "data": 2}, {"id": a, "type": "A", "data": 1}]),
        ), // another order
        (
            "r-1",
            json!([{"id": a, "type": "A", "data": 1}, {"id": c, "type": "C", "data": 3}]),
        ), // old and new
    ] {
        assert_problem(app.append(stream, &body, &[]).await, StatusCode::CONFLICT).await;
    }
    assert_eq!(app.get_json("/streams/r-1").await["version"], 2);
    assert_eq!(
        app.get("/streams/r-2").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/events/{c}")).await.status(),
        StatusCode::NOT_FOUND
    );
}

async fn paging_both_ways(app: TestApp) {
    let batch: Vec<Value> = (0..25).map(|i| event("E", json!(i))).collect();
    app.append("p-1", &json!(batch), &[]).await;
    let mut seen = Vec::new();
    let mut position = 0;
    loop {
        let page = app
            .get_json(&format!("/streams/p-1?position={position}&limit=10"))
            .await;
        seen.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["data"].as_i64().unwrap()),
        );
        position = page["next_position"].as_i64().unwrap();
        if page["end"] == true {
            break;
        }
        assert_eq!(page["events"].as_array().unwrap().len(), 10);
    }
    assert_eq!(seen, (0..25).collect::<Vec<_>>());
    assert_eq!(position, 25);
    let past = app.get_json("/streams/p-1?position=40").await;
    assert_eq!(
        (
            past["events"].as_array().unwrap().len(),
            past["next_position"].as_i64(),
            past["end"].as_bool()
        ),
        (0, Some(40), Some(true))
    );

    let back = app
        .get_json("/streams/p-1?direction=backward&limit=3")
        .await;
    let positions: Vec<_> = back["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [24, 23, 22]);
    assert_eq!(
        (back["next_position"].as_i64(), back["end"].as_bool()),
        (Some(21), Some(false))
    );
    let back = app
        .get_json("/streams/p-1?direction=backward&position=2&limit=10")
        .await;
    assert_eq!(back["events"].as_array().unwrap().len(), 3);
    assert_eq!(
        (back["next_position"].as_i64(), back["end"].as_bool()),
        (Some(-1), Some(true))
    );
}

async fn temporal_bounds(app: TestApp) {
    let batch: Vec<Value> = (0..10).map(|i| event("E", json!(i))).collect();
    app.append("t-1", &json!(batch), &[]).await;
    let page = app.get_json("/streams/t-1?until_version=4&limit=3").await;
    assert_eq!(page["version"], 9);
    assert_eq!(page["end"], false);
    // -1: the stream before its first event, an empty page at its end.
    let before = app.get_json("/streams/t-1?until_version=-1").await;
    assert_eq!(before["events"], json!([]));
    assert_eq!(
        (before["version"].as_i64(), before["end"].as_bool()),
        (Some(9), Some(true))
    );
    let page = app
        .get_json("/streams/t-1?until_version=4&position=3")
        .await;
    let positions: Vec<_> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [3, 4]);
    assert_eq!(page["end"], true);

    let instant = app.get_json("/streams/t-1/last").await["time"]
        .as_str()
        .unwrap()
        .to_owned();
    app.append("t-1", &event("After", json!(10)), &[]).await;
    let page = app.get_json(&format!("/streams/t-1?as_of={instant}")).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 10);
    assert_eq!(page["end"], true);
    let none = app
        .get_json("/streams/t-1?direction=backward&as_of=2000-01-01T00:00:00Z")
        .await;
    let bounds = (none["next_position"].as_i64(), none["end"].as_bool());
    assert_eq!(
        bounds,
        (Some(-1), Some(true)),
        "nothing before an empty backward page"
    );
    let early = app
        .get_json("/streams/t-1?as_of=2000-01-01T00:00:00%2B01:00")
        .await;
    assert_eq!(early["events"], json!([]));
    assert_eq!(early["version"], 10);
}

async fn head_conditional_get_and_last(app: TestApp) {
    let head = app
        .client
        .head(format!("{}/streams/h-1", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    app.append(
        "h-1",
        &json!([
            event("A", json!(0)),
            event("B", json!(1)),
            event("A", json!(2)),
            event("C", json!(3))
        ]),
        &[],
    )
    .await;
    let head = app
        .client
        .head(format!("{}/streams/h-1", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!((head.status(), etag_version(&head)), (StatusCode::OK, 3));
    let cached = app
        .client
        .get(format!("{}/streams/h-1", app.url))
        .header("if-none-match", "\"3\"")
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    let stale = app
        .client
        .get(format!("{}/streams/h-1", app.url))
        .header("if-none-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);

    assert_eq!(app.get_json("/streams/h-1/last").await["data"], 3);
    assert_eq!(app.get_json("/streams/h-1/last?type=A").await["data"], 2);
    // `type` may repeat: the last event of either type.
    assert_eq!(
        app.get_json("/streams/h-1/last?type=A&type=Z").await["data"],
        2
    );
    assert_eq!(
        app.get_json("/streams/h-1/last?type=B&type=C").await["data"],
        3
    );
    assert_eq!(
        app.get_json("/streams/h-1/last?type=B&type=Z").await["data"],
        1
    );
    assert_problem(
        app.get("/streams/h-1/last?type=Z").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(app.get("/streams/h-2/last").await, StatusCode::NOT_FOUND).await;
    assert_problem(app.get("/streams/h-2").await, StatusCode::NOT_FOUND).await;
}

async fn event_by_id(app: TestApp) {
    let r: Value = app
        .append(
            "e-1",
            &json!([event("A", json!(0)), event("B", json!(1))]),
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    let id = r["events"][1]["id"].as_str().unwrap();
    let e = app.get_json(&format!("/events/{id}")).await;
    assert_eq!(
        (
            e["type"].as_str(),
            e["position"].as_i64(),
            e["stream"].as_str()
        ),
        (Some("B"), Some(1), Some("e-1"))
    );
    assert_problem(
        app.get(&format!("/events/{}", Uuid::new_v4())).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(app.get("/events/not-a-uuid").await, StatusCode::BAD_REQUEST).await;
}

async fn list_streams_by_prefix(app: TestApp) {
    for (stream, n) in [
        ("acc-0", 1),
        ("acc-1", 2),
        ("acc-2", 3),
        ("acd-0", 1),
        ("ac", 1),
        ("b-1", 1),
    ] {
        let batch: Vec<Value> = (0..n).map(|i| event("E", json!(i))).collect();
        app.append(stream, &json!(batch), &[]).await;
    }
    let page = app.get_json("/streams?prefix=acc&limit=2").await;
    let names: Vec<_> = page["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acc-0", "acc-1"]);
    assert_eq!(page["next"], "acc-1");
    let rest = app.get_json("/streams?prefix=acc&after=acc-1").await;
    assert_eq!(rest["streams"].as_array().unwrap().len(), 1);
    assert_eq!(
        (
            rest["streams"][0]["stream"].as_str(),
            rest["streams"][0]["version"].as_i64()
        ),
        (Some("acc-2"), Some(2))
    );
    assert_eq!(rest["next"], Value::Null);
    let all = app.get_json("/streams").await;
    let names: Vec<_> = all["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ac", "acc-0", "acc-1", "acc-2", "acd-0", "b-1"]);
}
