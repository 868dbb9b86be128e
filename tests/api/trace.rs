//! Causation tracing and correlations (API.md, Tracing; issue 5).

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{TestApp, assert_problem, backend_tests};

backend_tests!(
    trace_walks_causes_and_effects,
    deep_chains_are_followed_to_the_cap,
    wide_fan_outs_are_followed_to_the_cap,
    cycles_and_unknown_causes_end_cleanly,
    correlations_are_paged_in_global_order,
);

/// An event with an id, a cause and a correlation id.
fn caused(id: Uuid, cause: Option<Uuid>, correlation: Option<&str>) -> Value {
    json!({"id": id, "type": "T", "data": null, "causation_id": cause, "correlation_id": correlation})
}

/// The ids of the events in a JSON text, in order of appearance.
fn events_in_order(text: &str) -> Vec<Uuid> {
    text.split(r#"{"id":""#)
        .skip(1)
        .map(|rest| rest[..36].parse().unwrap())
        .collect()
}

fn ids(events: &Value) -> Vec<Uuid> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// A chain of `n` events, each caused by the one before; the ids in order.
async fn chain(app: &TestApp, stream: &str, n: usize) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|&i| caused(ids[i], i.checked_sub(1).map(|p| ids[p]), None))
            .collect();
        assert_eq!(
            app.append(stream, &json!(batch), &[]).await.status(),
            StatusCode::CREATED
        );
    }
    ids
}

async fn trace_walks_causes_and_effects(app: TestApp) {
    // r -> a -> (b, c); c -> d; x unrelated.
    let [r, a, b, c, d, x] = [(); 6].map(|_| Uuid::now_v7());
    app.append("t-1", &caused(r, None, Some("k")), &[]).await;
    app.append("t-2", &caused(a, Some(r), Some("k")), &[]).await;
    app.append(
        "t-3",
        &json!([caused(b, Some(a), Some("k")), caused(c, Some(a), Some("k"))]),
        &[],
    )
    .await;
    app.append("t-1", &caused(d, Some(c), Some("k")), &[]).await;
    app.append("t-1", &caused(x, None, None), &[]).await;

    let t = app.get_json(&format!("/trace/{c}")).await;
    assert_eq!(t["message"]["id"], c.to_string());
    assert_eq!(ids(&t["causes"]), [r, a]);
    assert_eq!(ids(&t["effects"]), [d]);
    assert_eq!(t["effects"][0]["effects"], json!([]));
    assert_eq!(t["effects"][0]["stream"], "t-1", "nodes are whole events");
    assert_eq!(t["truncated"], false);

    let t = app.get_json(&format!("/trace/{r}")).await;
    assert_eq!(t["causes"], json!([]));
    assert_eq!(ids(&t["effects"]), [a]);
    assert_eq!(ids(&t["effects"][0]["effects"]), [b, c]);
    assert_eq!(ids(&t["effects"][0]["effects"][1]["effects"]), [d]);

    assert_problem(
        app.get(&format!("/trace/{}", Uuid::now_v7())).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(app.get("/trace/not-a-uuid").await, StatusCode::BAD_REQUEST).await;
}

async fn deep_chains_are_followed_to_the_cap(app: TestApp) {
    let ids = chain(&app, "deep-1", 1001).await;
    // 999 causes above the second-to-last event: within the cap of 1,000.
    let t = app.get_json(&format!("/trace/{}", ids[999])).await;
    assert_eq!(t["causes"].as_array().unwrap().len(), 999);
    assert_eq!(t["causes"][0]["id"], ids[0].to_string(), "root first");
    assert_eq!(t["truncated"], false);
    // 1,000 causes above the last: the cap, exactly; the chain is whole.
    let t = app.get_json(&format!("/trace/{}", ids[1000])).await;
    assert_eq!(t["causes"].as_array().unwrap().len(), 1000);
    assert_eq!(t["truncated"], false);
    // 1,000 levels of effects below the root: the cap, exactly. (Nested 2,000
    // deep, deeper than serde_json parses by default: read the ids in the
    // order they appear, which is the message, then the tree in preorder.)
    let text = app
        .get(&format!("/trace/{}", ids[0]))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.ends_with(r#","truncated":false}"#),
        "{}",
        &text[text.len() - 40..]
    );
    assert_eq!(events_in_order(&text), ids);

    let longer = chain(&app, "deep-2", 1002).await;
    // 1,001 levels below the root: the nearest 1,000 are kept.
    let text = app
        .get(&format!("/trace/{}", longer[0]))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.ends_with(r#","truncated":true}"#),
        "{}",
        &text[text.len() - 40..]
    );
    assert_eq!(events_in_order(&text), longer[..1001]);
    let t = app.get_json(&format!("/trace/{}", longer[1001])).await;
    assert_eq!(t["causes"].as_array().unwrap().len(), 1000);
    assert_eq!(
        t["causes"][999]["id"],
        longer[1000].to_string(),
        "the nearest causes are kept"
    );
    assert_eq!(t["truncated"], true);
}

async fn wide_fan_outs_are_followed_to_the_cap(app: TestApp) {
    let root = Uuid::now_v7();
    app.append("fan-1", &caused(root, None, None), &[]).await;
    for _ in 0..10 {
        let batch: Vec<Value> = (0..1000)
            .map(|_| caused(Uuid::now_v7(), Some(root), None))
            .collect();
        assert_eq!(
            app.append("fan-2", &json!(batch), &[]).await.status(),
            StatusCode::CREATED
        );
    }
    let t = app.get_json(&format!("/trace/{root}")).await;
    let effects = t["effects"].as_array().unwrap();
    assert_eq!(
        (effects.len(), t["truncated"].as_bool()),
        (10_000, Some(false))
    );
    let globals: Vec<i64> = effects
        .iter()
        .map(|e| e["global_position"].as_i64().unwrap())
        .collect();
    assert!(
        globals.windows(2).all(|w| w[0] < w[1]),
        "children in global order"
    );

    app.append("fan-2", &caused(Uuid::now_v7(), Some(root), None), &[])
        .await;
    let t = app.get_json(&format!("/trace/{root}")).await;
    assert_eq!(t["effects"].as_array().unwrap().len(), 10_000);
    assert_eq!(t["truncated"], true);
}

async fn cycles_and_unknown_causes_end_cleanly(app: TestApp) {
    // Causation ids are the client's word: a names b as its cause, b names a.
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    app.append("cyc-1", &caused(a, Some(b), None), &[]).await;
    app.append("cyc-1", &caused(b, Some(a), None), &[]).await;
    let t = app.get_json(&format!("/trace/{a}")).await;
    assert_eq!(ids(&t["causes"]), [b]);
    assert_eq!(ids(&t["effects"]), [b]);
    assert_eq!(t["effects"][0]["effects"], json!([]));
    assert_eq!(t["truncated"], true);

    let self_caused = Uuid::now_v7();
    app.append("cyc-2", &caused(self_caused, Some(self_caused), None), &[])
        .await;
    let t = app.get_json(&format!("/trace/{self_caused}")).await;
    assert_eq!(
        (
            t["causes"].clone(),
            t["effects"].clone(),
            t["truncated"].as_bool()
        ),
        (json!([]), json!([]), Some(true))
    );

    let orphan = Uuid::now_v7();
    app.append("orphan-1", &caused(orphan, Some(Uuid::now_v7()), None), &[])
        .await;
    let t = app.get_json(&format!("/trace/{orphan}")).await;
    assert_eq!(
        (t["causes"].clone(), t["truncated"].as_bool()),
        (json!([]), Some(false))
    );
}

async fn correlations_are_paged_in_global_order(app: TestApp) {
    let mut expected = Vec::new();
    for i in 0..7 {
        let id = Uuid::now_v7();
        app.append(
            &format!("corr-{}", i % 3),
            &caused(id, None, Some("order-77")),
            &[],
        )
        .await;
        app.append("corr-9", &caused(Uuid::now_v7(), None, Some("other")), &[])
            .await;
        expected.push(id);
    }
    let mut seen = Vec::new();
    let mut position = 1;
    loop {
        let page = app
            .get_json(&format!(
                "/correlations/order-77?position={position}&limit=3"
            ))
            .await;
        assert_eq!(page["correlation_id"], "order-77");
        seen.extend(ids(&page["events"]));
        position = page["next_position"].as_i64().unwrap();
        if page["end"] == true {
            break;
        }
    }
    assert_eq!(seen, expected);
    assert_problem(
        app.get("/correlations/x?limit=0").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}
