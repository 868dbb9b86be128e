//! Export and import (API.md, Export and import): a store copied to an empty
//! store of the other kind reads back byte for byte and continues after the
//! exported head; an import cut anywhere resumes; hostile bodies are `400`
//! naming their line, another store's export `409`; admin scope only.

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::auth::ADMIN_KEY;
use crate::common::{TestApp, assert_problem, backend_tests};

backend_tests!(
    an_export_restores_byte_for_byte_on_the_other_store,
    an_import_cut_anywhere_resumes,
    invalid_lines_stop_the_import_where_they_are,
    only_the_beginning_of_the_same_export_is_continued,
    export_and_import_need_admin,
);

/// The first event seeded, which the second one names as its cause.
const FIRST_ID: &str = "0192b1a4-0000-7000-8000-000000000001";

/// Events seeded in bulk, past the 1000 rows of an export's page and the
/// 1000 lines of an import's chunk.
const BULK: usize = 2100;

/// Seeds a store with every kind of record an export lists: events of
/// several streams and categories (tags, metadata, causes, correlations,
/// unicode, numbers as written), more than a page of them, snapshots (two of
/// one version), checkpoints, and through [`govern`] the rest. Returns the
/// paths whose answers a copy must reproduce byte for byte.
pub async fn seed(app: &TestApp) -> Vec<String> {
    let first = format!(
        r#"[{{"id":"{FIRST_ID}","type":"Opened","data":{{"owner":"Zoë 🦀 \u00e9","limit":12345678901234567890,"rate":1.50,"deep":[1,{{"a":null}}]}},"metadata":{{"z":1, "a":"b"}},"correlation_id":"req-1","tags":["account:1","owner:zoë"]}},
            {{"type":"Deposited","data":{{"amount":1.50}},"causation_id":"{FIRST_ID}","correlation_id":"req-1","tags":["account:1"]}},
            {{"type":"Deposited","data":-0.0}},
            {{"type":"Deposited","data":"\u0000 \ud83e\udd80"}}]"#
    );
    post_raw(app, "/streams/acc-1", &first).await;
    post_raw(
        app,
        "/streams/acc-2",
        r#"[{"type":"Opened","data":{},"tags":["account:2"]},{"type":"Closed","data":null}]"#,
    )
    .await;
    post_raw(app, "/streams/other-1", r#"{"type":"Noted","data":[]}"#).await;
    for batch in (0..BULK).collect::<Vec<_>>().chunks(700) {
        let events: Vec<Value> = batch
            .iter()
            .map(|n| json!({"type": "Filled", "data": {"n": n}, "tags": [format!("n:{}", n % 7)]}))
            .collect();
        post_raw(app, "/streams/bulk-1", &Value::from(events).to_string()).await;
    }
    post_raw(
        app,
        "/streams/acc-1",
        r#"{"type":"Withdrawn","data":{"amount":1e3}}"#,
    )
    .await;
    for (stream, body) in [
        (
            "acc-1",
            json!({"version": 3, "state": {"balance": 1}, "type": "Account"}),
        ),
        ("acc-1", json!({"version": 3, "state": {"balance": 2}})),
        ("acc-2", json!({"version": 0, "state": [1, "ü"]})),
    ] {
        let posted = app.post_json(&format!("/snapshots/{stream}"), body).await;
        assert_eq!(posted.status(), StatusCode::CREATED);
    }
    for (consumer, position) in [("projector", 3), ("zz-ü", 2000)] {
        let body = json!({ "position": position });
        let put = app
            .put_json(&format!("/checkpoints/{consumer}"), body)
            .await;
        assert_eq!(put.status(), StatusCode::OK);
    }
    // A stream deleted below.
    post_raw(
        app,
        "/streams/gone-1",
        r#"[{"type":"A","data":1},{"type":"A","data":2},{"type":"A","data":3},{"type":"A","data":4},{"type":"A","data":5}]"#,
    )
    .await;
    // The last events of the log, erased below: the head outlives them.
    post_raw(
        app,
        "/streams/emptied-1",
        r#"[{"type":"A","data":1},{"type":"A","data":2}]"#,
    )
    .await;
    govern(app).await;
    let mut paths: Vec<String> = [
        "/streams/acc-1",
        "/streams/acc-2",
        "/streams/other-1",
        "/streams/emptied-1",
        "/streams/bulk-1?position=1000&limit=1000",
        "/streams?prefix=",
        "/all?limit=1000",
        "/all?position=1000&limit=1000",
        "/all?position=2000&limit=1000",
        "/categories/acc",
        "/categories/bulk?type=Filled&limit=1000",
        "/events?tag=account:1",
        "/events?tag=account:2",
        "/events?tag=owner:zo%C3%AB",
        "/events?tag=n:3&limit=1000",
        "/snapshots/acc-1",
        "/snapshots/acc-1?until_version=3",
        "/snapshots/acc-2",
        "/checkpoints/projector",
        "/checkpoints/zz-%C3%BC",
        "/correlations/req-1",
    ]
    .map(str::to_owned)
    .to_vec();
    let all = app.get_json("/all?limit=10").await;
    for event in all["events"].as_array().unwrap() {
        let id = event["id"].as_str().unwrap();
        paths.push(format!("/events/{id}"));
        paths.push(format!("/trace/{id}"));
    }
    paths
}

/// Governs the seeded store: a schema, retention policies, a deleted
/// stream's tombstone, a stream's oldest event erased (truncation), and a
/// stream's every event erased where they were the log's last, so the head
/// is kept in `log_head`.
async fn govern(app: &TestApp) {
    let schema = json!({"type": "object", "required": ["amount"]});
    let put = app.put_json("/schemas/Deposited", schema).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    for (path, policy) in [
        ("/categories/acc/retention", json!({"max_age_s": 2592000})),
        ("/streams/acc-2/retention", json!({"max_count": 100})),
    ] {
        assert_eq!(
            app.put_json(path, policy).await.status(),
            StatusCode::CREATED
        );
    }
    assert_eq!(app.delete("/streams/gone-1").await.status(), StatusCode::OK);
    for (stream, before) in [("acc-2", 1), ("emptied-1", 2)] {
        let path = format!("/streams/{stream}/truncate");
        let truncated = app.post_json(&path, json!({ "before": before })).await;
        assert_eq!(truncated.status(), StatusCode::OK, "{path}");
    }
}

/// `POST`s a JSON body as written (numbers such as `1.50` kept), expecting
/// it to be created.
async fn post_raw(app: &TestApp, path: &str, body: &str) {
    let response = app
        .client
        .post(format!("{}{path}", app.url))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "{path}");
}

/// The store's export, checked to be whole.
pub async fn export(app: &TestApp) -> String {
    let response = app.get("/export").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with(r#"{"kind":"head""#),
        "{text}"
    );
    text
}

/// `POST /import` of a body.
async fn import(app: &TestApp, body: impl Into<reqwest::Body>) -> Response {
    app.client
        .post(format!("{}/import", app.url))
        .header("Content-Type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// `POST /import` of a body that must be restored; what was.
async fn imported(app: &TestApp, body: &str) -> Value {
    let response = import(app, body.to_owned()).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// A fresh, empty store of the other kind than `app`'s, if there is one
/// (Postgres may be absent).
async fn of_the_other_kind(app: &TestApp) -> Option<TestApp> {
    match app.database_url.starts_with("postgres") {
        true => Some(TestApp::sqlite().await),
        false => TestApp::postgres().await,
    }
}

/// A fresh, empty store of the same kind as `app`'s.
async fn of_the_same_kind(app: &TestApp) -> TestApp {
    match app.database_url.starts_with("postgres") {
        true => TestApp::postgres().await.expect("Postgres, as app's"),
        false => TestApp::sqlite().await,
    }
}

/// The text of a `GET`, with its status.
async fn answer(app: &TestApp, path: &str) -> (StatusCode, String) {
    let response = app.get(path).await;
    (response.status(), response.text().await.unwrap())
}

/// The head an export ends with.
fn head_of(export: &str) -> i64 {
    let last: Value = serde_json::from_str(export.lines().last().unwrap()).unwrap();
    last["global_position"].as_i64().unwrap()
}

/// Appends one event; its global position.
async fn append_one(app: &TestApp, stream: &str) -> i64 {
    let response = app
        .append(stream, &json!({"type": "Next", "data": 1}), &[])
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["events"][0]["global_position"].as_i64().unwrap()
}

/// Exported, imported into an empty store of the other kind, and exported
/// again: the same file, the same answers on every read path, and appends
/// on both continue after the exported head.
async fn an_export_restores_byte_for_byte_on_the_other_store(app: TestApp) {
    let paths = seed(&app).await;
    let Some(copy) = of_the_other_kind(&app).await else {
        return;
    };
    let exported = export(&app).await;
    let lines: Vec<Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |kind: &str| lines.iter().filter(|l| l["kind"] == kind).count() as u64;
    assert_eq!(count("event"), BULK as u64 + 7, "acc-2's first erased");
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    let mut in_order = kinds.clone();
    in_order.dedup();
    assert_eq!(
        in_order,
        [
            "event",
            "snapshot",
            "checkpoint",
            "schema",
            "retention",
            "tombstone",
            "stream",
            "head"
        ]
    );
    assert!(
        exported.contains(r#""data":{"owner":"Zoë 🦀 \u00e9","limit":12345678901234567890,"rate":1.50,"deep":[1,{"a":null}]}"#),
        "data exactly as written"
    );
    let head = head_of(&exported);
    let last_event = lines.iter().rfind(|l| l["kind"] == "event").unwrap();
    assert_eq!(
        head,
        last_event["global_position"].as_i64().unwrap() + 7,
        "the head outlives gone-1's and emptied-1's erased events"
    );

    let summary = imported(&copy, &exported).await;
    assert_eq!(
        summary,
        json!({"events": count("event"), "already_stored": 0, "snapshots": 3, "checkpoints": 2,
               "schemas": 1, "retention": 2, "tombstones": 1, "streams": 5, "head": head})
    );
    assert_eq!(
        export(&copy).await,
        exported,
        "the copy exports the same file"
    );
    for path in &paths {
        assert_eq!(
            answer(&copy, path).await,
            answer(&app, path).await,
            "{path}"
        );
    }
    assert_eq!(append_one(&copy, "acc-1").await, head + 1);
    assert_eq!(append_one(&app, "acc-1").await, head + 1);
    let (status, _) = answer(&copy, "/streams/acc-1/last").await;
    assert_eq!(status, StatusCode::OK);

    // Bounded, the events only are cut to the range.
    let bounded = app
        .get("/export?position=3&until=5")
        .await
        .text()
        .await
        .unwrap();
    let positions: Vec<i64> = bounded
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["kind"] == "event")
        .map(|l| l["global_position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [3, 4], "5 was erased");
    assert!(bounded.contains(r#""kind":"checkpoint""#));
    for query in ["position=-1", "until=x", "limit=5"] {
        assert_problem(
            app.get(&format!("/export?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let refused = app
        .client
        .get(format!("{}/export", app.url))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_problem(refused, StatusCode::NOT_ACCEPTABLE).await;
}

/// An import cut after whole lines, or within one, in the events or after
/// them, then run again with the whole export, ends as an import that was
/// never cut; so does one run twice in full.
async fn an_import_cut_anywhere_resumes(app: TestApp) {
    seed(&app).await;
    let exported = export(&app).await;
    let lines: Vec<&str> = exported.split_inclusive('\n').collect();
    let whole = |n: usize| lines[..n].concat();
    let events = lines
        .iter()
        .filter(|l| l.contains(r#""kind":"event""#))
        .count();
    let mid_line = format!("{}{}", whole(1500), &lines[1500][..40]);
    let cuts = [
        (whole(1500), "ends before its head line", 1500),
        (mid_line, "line 1501 is cut short", 1500),
        (whole(lines.len() - 4), "ends before its head line", events),
        (whole(lines.len() - 1), "ends before its head line", events),
    ];
    for (prefix, said, stored) in cuts {
        let copy = of_the_same_kind(&app).await;
        let cut = assert_problem(import(&copy, prefix).await, StatusCode::BAD_REQUEST).await;
        assert!(cut["detail"].as_str().unwrap().contains(said), "{cut}");
        let summary = imported(&copy, &exported).await;
        assert_eq!(summary["already_stored"], stored, "{said}");
        assert_eq!(
            export(&copy).await,
            exported,
            "{said} after {stored} events"
        );
    }

    // The whole export again changes nothing; without its last newline it
    // is whole too.
    let copy = of_the_same_kind(&app).await;
    imported(&copy, exported.trim_end()).await;
    let again = imported(&copy, &exported).await;
    assert_eq!(again["already_stored"], events);
    assert_eq!(export(&copy).await, exported);
    assert_eq!(append_one(&copy, "x-1").await, head_of(&exported) + 1);
}

/// An event line at global position `global_position`, position
/// `position` of `stream`, with an id of its own.
fn event_line(global_position: i64, stream: &str, position: i64) -> String {
    format!(
        r#"{{"kind":"event","id":"0192b1a4-0000-7000-8000-{global_position:012}","stream":"{stream}","type":"A","position":{position},"global_position":{global_position},"data":1,"metadata":null,"causation_id":null,"correlation_id":null,"tags":[],"time":"2026-01-01T00:00:00.000001Z"}}"#
    )
}

/// Bodies that are not exports, or not valid ones, are `400` naming the
/// line that is not (or `413`, `415`), never a `5xx`; the lines before it
/// are imported, none after it.
async fn invalid_lines_stop_the_import_where_they_are(app: TestApp) {
    let first = event_line(1, "g-1", 0);
    let second = event_line(2, "g-1", 1);
    let reused_id = event_line(3, "g-1", 2).replace("000000000003", "000000000001");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json\n".to_vec(), "line 1: not a record"),
        (b"[1, 2]\n".to_vec(), "line 1: not a record"),
        (b"\"just a string\"\n".to_vec(), "line 1: not a record"),
        (vec![0xff, 0xfe, b'\n'], "line 1: not a record"),
        (b"{\"kind\":\"party\"}\n".to_vec(), "line 1: unknown kind"),
        (Vec::new(), "ends before its head line"),
        (
            format!(
                "{first}\n{second}\n{{\"kind\":\"event\",\n{}\n",
                event_line(4, "g-1", 2)
            )
            .into(),
            "line 3: not a record",
        ),
        (
            format!("{first}\n{first}\n").into(),
            "line 2: global positions must increase",
        ),
        (
            format!("{first}\n{second}\n{}\n", event_line(9, "g-1", 5)).into(),
            "line 3: position 5 does not continue stream g-1 (at version 1)",
        ),
        (
            format!("{first}\n{}\n", event_line(3, "g-1", 3)).into(),
            "line 2: position 3 cannot be reached by global position 3",
        ),
        (
            format!("{first}\n{second}\n{reused_id}\n").into(),
            "line 3: event id",
        ),
        (
            format!("{first}\n{}\n", event_line(3, "a b", 0)).into(),
            "line 2: a stream name may not contain",
        ),
        (
            format!(
                "{first}\n{}\n",
                first.replace(r#""tags":[]"#, r#""tags":[],"extra":1"#)
            )
            .into(),
            "line 2: not a valid record of its kind: unknown field `extra`",
        ),
    ];
    for (body, said) in cases {
        let problem =
            assert_problem(import(&app, body.clone()).await, StatusCode::BAD_REQUEST).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(said),
            "{}: {detail}",
            String::from_utf8_lossy(&body)
        );
    }
    // The two events before the first invalid line stayed; nothing after
    // them came in.
    let all = app.get_json("/all").await;
    let positions: Vec<i64> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["global_position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2]);

    let wrong_type = app
        .client
        .post(format!("{}/import", app.url))
        .header("Content-Type", "application/json")
        .body(first.clone())
        .send()
        .await
        .unwrap();
    assert_problem(wrong_type, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    // A line is at most the largest body and 64 KiB.
    let small = app.sibling_with(&["--max-body-bytes", "1024"]).await;
    let long = event_line(3, "g-1", 2).replace(
        r#""data":1"#,
        &format!(r#""data":"{}""#, "x".repeat(70_000)),
    );
    let too_long = import(&small, format!("{first}\n{second}\n{long}\n")).await;
    let problem = assert_problem(too_long, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("line 3"),
        "{problem}"
    );

    // Kinds in their order, the head last (on a store of their own: the
    // records after the events end what an import may add to a store).
    let fresh = of_the_same_kind(&app).await;
    let snapshot = r#"{"kind":"snapshot","stream":"g-1","version":0,"type":null,"state":1,"time":"2026-01-01T00:00:00Z"}"#;
    for (body, said) in [
        (
            format!("{{\"kind\":\"head\",\"global_position\":0}}\n{first}\n"),
            "line 2: the head line (0) ends an export",
        ),
        (
            format!("{snapshot}\n{first}\n"),
            "line 2: a line of kind event after lines of kind snapshot",
        ),
    ] {
        let problem = assert_problem(import(&fresh, body).await, StatusCode::BAD_REQUEST).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(said), "{detail}");
    }
}

/// Another store's export into a store that is not empty is `409` with
/// nothing written, and so is an export the store holds more than the
/// beginning of: its records after the events, or an event of its own.
async fn only_the_beginning_of_the_same_export_is_continued(app: TestApp) {
    seed(&app).await;
    let exported = export(&app).await;

    let other = of_the_same_kind(&app).await;
    append_one(&other, "mine-1").await;
    let before = export(&other).await;
    let refused =
        assert_problem(import(&other, exported.clone()).await, StatusCode::CONFLICT).await;
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("neither empty nor the beginning"),
        "{detail}"
    );
    assert_eq!(export(&other).await, before, "nothing written");

    // A complete copy, then a later export of the source: the copy holds
    // records an export lists after its events.
    let copy = of_the_same_kind(&app).await;
    imported(&copy, &exported).await;
    append_one(&app, "acc-2").await;
    let later = export(&app).await;
    let before = export(&copy).await;
    let refused = assert_problem(import(&copy, later).await, StatusCode::CONFLICT).await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("more than the beginning"),
        "{refused}"
    );
    assert_eq!(export(&copy).await, before, "nothing written");

    // A copy cut short, then written to: its event is not the export's.
    let cut = of_the_same_kind(&app).await;
    let prefix: String = exported.split_inclusive('\n').take(10).collect();
    assert_problem(import(&cut, prefix).await, StatusCode::BAD_REQUEST).await;
    append_one(&cut, "mine-1").await;
    let before = export(&cut).await;
    assert_problem(import(&cut, exported).await, StatusCode::CONFLICT).await;
    assert_eq!(export(&cut).await, before, "nothing written");
}

/// With auth on, export and import need an admin credential: none is
/// `401`, a read-write key `403`. (An admin credential limited to some
/// streams, which only a JWT can be, is refused by the same check as every
/// administration route's.)
async fn export_and_import_need_admin(app: TestApp) {
    let secured = app.sibling_with(&["--admin-key", ADMIN_KEY]).await;
    let key = |body: Value| {
        let secured = &secured;
        async move {
            let created = secured
                .client
                .post(format!("{}/keys", secured.url))
                .bearer_auth(ADMIN_KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), StatusCode::CREATED);
            let created: Value = created.json().await.unwrap();
            created["key"].as_str().unwrap().to_owned()
        }
    };
    let writer = key(json!({"name": "w", "scopes": ["read", "write"]})).await;
    let head = r#"{"kind":"head","global_position":0}"#;
    for (credential, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(writer.as_str()), StatusCode::FORBIDDEN),
        (Some(ADMIN_KEY), StatusCode::OK),
    ] {
        let with = |request: reqwest::RequestBuilder| match credential {
            Some(credential) => request.bearer_auth(credential),
            None => request,
        };
        let exported = with(secured.client.get(format!("{}/export", secured.url)))
            .send()
            .await
            .unwrap();
        let import = with(secured.client.post(format!("{}/import", secured.url)))
            .header("Content-Type", "application/x-ndjson")
            .body(head)
            .send()
            .await
            .unwrap();
        for response in [exported, import] {
            match status {
                StatusCode::OK => assert_eq!(response.status(), status),
                _ => {
                    assert_problem(response, status).await;
                }
            }
        }
    }
}

/// An import is not cut by the request deadline while its body keeps
/// coming, however long it takes; a body that pauses longer than the
/// deadline is `408`, and what came before the pause stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_outlasts_the_request_deadline_while_its_body_keeps_coming() {
    let app = TestApp::sqlite().await;
    let app = app.sibling_with(&["--request-timeout-secs", "1"]).await;
    // The lines, each sent after its pause.
    let slowly = |lines: Vec<(u64, String)>| {
        let pieces = futures::stream::iter(lines).then(|(pause, line)| async move {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            Ok::<_, std::io::Error>(line)
        });
        reqwest::Body::wrap_stream(pieces)
    };
    let lines: Vec<String> = (1..=5)
        .map(|n| format!("{}\n", event_line(n, "slow-1", n - 1)))
        .collect();
    let mut whole = lines.clone();
    whole.push("{\"kind\":\"stream\",\"stream\":\"slow-1\",\"version\":4,\"last_time\":\"2026-01-01T00:00:00.000001Z\"}\n{\"kind\":\"head\",\"global_position\":5}\n".into());
    let started = std::time::Instant::now();
    let done = import(&app, slowly(whole.into_iter().map(|l| (400, l)).collect())).await;
    assert_eq!(done.status(), StatusCode::OK);
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let fresh = TestApp::sqlite().await;
    let fresh = fresh.sibling_with(&["--request-timeout-secs", "1"]).await;
    let paused = lines.into_iter().enumerate();
    let paused = paused
        .map(|(i, l)| (if i == 2 { 1500 } else { 0 }, l))
        .collect();
    let stalled = import(&fresh, slowly(paused)).await;
    let problem = assert_problem(stalled, StatusCode::REQUEST_TIMEOUT).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("paused"), "{detail}");
    let all = fresh.get_json("/all").await;
    let events = all["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "the lines before the pause stay");
}

/// Issue 14's second correctness test: an import whose server is killed
/// (`kill -9`) halfway, rerun on the same store after a restart, ends
/// identical to an uninterrupted one: what the killed server committed is
/// kept, what it had begun is rolled back, and the rerun continues.
async fn an_import_killed_halfway_and_rerun_is_whole(flags: &[&str]) {
    use crate::binary::Server;
    let source = TestApp::sqlite().await;
    seed(&source).await;
    let exported = export(&source).await;
    let lines: Vec<&str> = exported.lines().collect();

    let server = Server::start_with(flags).await;
    let client = reqwest::Client::new();
    let (send, body) = futures::channel::mpsc::unbounded::<Result<String, std::io::Error>>();
    let request = client
        .post(format!("{}/import", server.url))
        .header("Content-Type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let importing = tokio::spawn(request);
    for line in &lines[..lines.len() * 3 / 5] {
        send.unbounded_send(Ok(format!("{line}\n"))).unwrap();
    }
    // Killed once a chunk has committed, while the body is still coming.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let all = client
            .get(format!("{}/all?limit=1", server.url))
            .send()
            .await
            .unwrap();
        let all: Value = all.json().await.unwrap();
        if !all["events"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no chunk committed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(server);
    assert!(importing.await.unwrap().is_err(), "the import was cut");

    let server = Server::start_with(flags).await;
    let rerun = client
        .post(format!("{}/import", server.url))
        .header("Content-Type", "application/x-ndjson")
        .body(exported.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(rerun.status(), StatusCode::OK);
    let summary: Value = rerun.json().await.unwrap();
    assert!(summary["already_stored"].as_u64().unwrap() > 0, "{summary}");
    let again = client
        .get(format!("{}/export", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.text().await.unwrap(), exported);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_halfway_into_sqlite_is_rerun_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    an_import_killed_halfway_and_rerun_is_whole(&["--data-dir", data_dir]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_halfway_into_postgres_is_rerun_whole() {
    let Some(database) = crate::common::postgres::fresh_database().await else {
        return;
    };
    an_import_killed_halfway_and_rerun_is_whole(&["--database-url", database.url()]).await;
}
