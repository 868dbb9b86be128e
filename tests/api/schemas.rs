//! Event schemas (API.md, Event schemas; issue 14): registering, replacing,
//! deleting, and every append path checked against the schema in force.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem, backend_tests, event};

backend_tests!(
    schemas_are_registered_replaced_listed_and_deleted,
    appends_are_checked_against_the_schema_in_force,
    what_is_not_json_schema_is_refused,
    a_schema_changed_through_one_instance_binds_the_others_at_once,
);

/// An order schema with nested failures to find.
fn order_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["amount", "lines"],
        "properties": {
            "amount": {"type": "integer", "minimum": 0},
            "lines": {"type": "array", "items": {
                "type": "object",
                "required": ["sku"],
                "properties": {"sku": {"type": "string", "pattern": "^[A-Z]+$"}}
            }}
        }
    })
}

async fn schemas_are_registered_replaced_listed_and_deleted(app: TestApp) {
    let created = app.put_json("/schemas/Placed", order_schema()).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        (&created["type"], &created["schema"], &created["version"]),
        (&json!("Placed"), &order_schema(), &json!(1))
    );
    assert!(created["time"].as_str().unwrap().ends_with('Z'));
    let replaced = app.put_json("/schemas/Placed", json!(true)).await;
    assert_eq!(replaced.status(), StatusCode::OK);
    assert_eq!(app.get_json("/schemas/Placed").await["schema"], json!(true));
    app.put_json("/schemas/Cancelled", json!({"type": "object"}))
        .await;

    let list = app.get_json("/schemas").await;
    let types: Vec<&str> = list["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Cancelled", "Placed"]);

    assert_eq!(
        app.delete("/schemas/Placed").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(app.get("/schemas/Placed").await, StatusCode::NOT_FOUND).await;
    assert_problem(app.delete("/schemas/Placed").await, StatusCode::NOT_FOUND).await;
    assert_problem(app.delete("/schemas/Unknown").await, StatusCode::NOT_FOUND).await;
    // Registered again, it counts on from where it was.
    let again = app.put_json("/schemas/Placed", order_schema()).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.json::<Value>().await.unwrap()["version"], json!(4));
    assert_eq!(app.get_json("/schemas").await["schemas"][1]["version"], 4);
}

async fn appends_are_checked_against_the_schema_in_force(app: TestApp) {
    // Stored before the schema: never checked again, and a retry of it
    // still answers 200.
    let early = json!({"id": "0192b1a4-7c1e-7cc0-9a53-2d1f7c0b9e11", "type": "Placed", "data": {"free": "form"}});
    assert_eq!(
        app.append("order-1", &early, &[]).await.status(),
        StatusCode::CREATED
    );
    app.put_json("/schemas/Placed", order_schema()).await;
    assert_eq!(
        app.append("order-1", &early, &[]).await.status(),
        StatusCode::OK
    );

    let good = event("Placed", json!({"amount": 5, "lines": [{"sku": "AB"}]}));
    let bad = event(
        "Placed",
        json!({"amount": -1, "lines": [{"sku": "AB"}, {"sku": 7}, {}]}),
    );
    let refused = app
        .append("order-1", &json!([good.clone(), bad.clone()]), &[])
        .await;
    let problem = assert_problem(refused, StatusCode::BAD_REQUEST).await;
    assert_eq!(problem["event"], 1, "{problem}");
    assert_eq!(problem["event_type"], "Placed");
    let mut pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    pointers.sort_unstable();
    assert_eq!(
        pointers,
        ["/amount", "/lines/1/sku", "/lines/2"],
        "{problem}"
    );
    for error in problem["errors"].as_array().unwrap() {
        assert!(!error["reason"].as_str().unwrap().is_empty(), "{problem}");
    }
    // Nothing of the refused request was written.
    let stream = app.get_json("/streams/order-1").await;
    assert_eq!(stream["events"].as_array().unwrap().len(), 1);
    assert_eq!(stream["version"], 0);

    // The multi-stream path is checked alike; other types are not.
    let multi = json!({"events": [
        {"stream": "order-2", "type": "Noted", "data": "anything"},
        {"stream": "order-3", "type": "Placed", "data": {"amount": "5", "lines": []}},
    ]});
    let problem = assert_problem(
        app.post_json("/events", multi).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(
        (&problem["event"], &problem["errors"][0]["pointer"]),
        (&json!(1), &json!("/amount")),
        "{problem}"
    );
    assert_problem(app.get("/streams/order-2").await, StatusCode::NOT_FOUND).await;

    // Concurrent requests are judged each on its own: a bad one in the same
    // batch fails alone.
    let appends = (0..16).map(|i| {
        let body = match i % 2 {
            0 => json!([event("Placed", json!({"amount": i, "lines": []}))]),
            _ => json!([event("Placed", json!({"amount": i}))]),
        };
        let app = &app;
        async move {
            app.append(&format!("order-c{i}"), &body, &[])
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(appends).await;
    for (i, status) in statuses.into_iter().enumerate() {
        let expected = match i % 2 {
            0 => StatusCode::CREATED,
            _ => StatusCode::BAD_REQUEST,
        };
        assert_eq!(status, expected, "append {i}");
    }

    assert_eq!(
        app.append("order-1", &good, &[]).await.status(),
        StatusCode::CREATED
    );
    app.delete("/schemas/Placed").await;
    assert_eq!(
        app.append("order-1", &bad, &[]).await.status(),
        StatusCode::CREATED
    );
}

async fn what_is_not_json_schema_is_refused(app: TestApp) {
    let deep = (0..200).fold(json!({}), |inner, _| json!({"items": inner}));
    for schema in [
        json!({"type": "objekt"}),
        json!({"properties": {"a": {"minimum": "5"}}}),
        json!({"required": "amount"}),
        json!([]),
        json!(5),
        json!("string"),
        json!({"$ref": "https://example.com/elsewhere.json"}),
        json!({"$ref": "#/$defs/missing"}),
        deep,
    ] {
        let response = app.put_json("/schemas/Placed", schema.clone()).await;
        let problem = assert_problem(response, StatusCode::BAD_REQUEST).await;
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{schema}");
    }
    let not_json = app
        .client
        .put(format!("{}/schemas/Placed", app.url))
        .header("content-type", "application/json")
        .body("{\"type\": ")
        .send()
        .await
        .unwrap();
    assert_problem(not_json, StatusCode::BAD_REQUEST).await;
    let not_declared_json = app
        .client
        .put(format!("{}/schemas/Placed", app.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(not_declared_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    for bad_type in ["$Placed", "with%20space", "a%2Fb"] {
        let response = app
            .put_json(&format!("/schemas/{bad_type}"), json!({}))
            .await;
        assert_problem(response, StatusCode::BAD_REQUEST).await;
    }
    // Nothing was registered by any of it.
    assert_eq!(app.get_json("/schemas").await["schemas"], json!([]));
    assert_eq!(
        app.append("order-1", &event("Placed", json!(1)), &[])
            .await
            .status(),
        StatusCode::CREATED
    );
}

async fn a_schema_changed_through_one_instance_binds_the_others_at_once(app: TestApp) {
    let other = app.sibling().await;
    let integer = json!({"type": "integer"});
    let string = json!({"type": "string"});
    let append = |app: &TestApp, data: Value| {
        let body = event("Counted", data);
        let app = app.url.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{app}/streams/count-1"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    app.put_json("/schemas/Counted", integer).await;
    assert_eq!(append(&other, json!(1)).await, StatusCode::CREATED);
    assert_eq!(append(&other, json!("1")).await, StatusCode::BAD_REQUEST);
    // The other's writer has compiled the first version: the second binds it
    // from the moment it is stored.
    app.put_json("/schemas/Counted", string).await;
    assert_eq!(append(&other, json!(1)).await, StatusCode::BAD_REQUEST);
    assert_eq!(append(&other, json!("1")).await, StatusCode::CREATED);
    app.delete("/schemas/Counted").await;
    assert_eq!(append(&other, json!([])).await, StatusCode::CREATED);
    app.put_json("/schemas/Counted", json!({"type": "integer"}))
        .await;
    assert_eq!(append(&other, json!([])).await, StatusCode::BAD_REQUEST);
}
