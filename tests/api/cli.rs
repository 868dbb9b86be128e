//! The `cairn` client commands, run as the real binary against a real
//! server on both stores: their output (NDJSON when piped, tables with
//! `--table`) and their exit codes.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::{TestApp, backend_tests};

/// What a command printed, and how it exited.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Standard output's lines, each parsed as JSON.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("an NDJSON line"))
            .collect()
    }

    /// One field of every output line.
    fn field(&self, key: &str) -> Vec<Value> {
        self.json_lines().iter().map(|e| e[key].clone()).collect()
    }
}

/// Runs `cairn ARGS` against `app` (within 20 s), with `stdin` as its input.
async fn cairn(app: &TestApp, args: &[&str], stdin: &str) -> Ran {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_URL", &app.url)
        .env_remove("CAIRN_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("cairn ended")
        .unwrap();
    Ran {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Appends one event from options and a batch from NDJSON, with `--expect`;
/// a stale expectation exits 4 with the server's words, and nothing is
/// written.
async fn append_one_and_a_batch_with_expectations(app: TestApp) {
    let args = [
        "append",
        "order-1",
        "--type",
        "Opened",
        "--data",
        r#"{"total":0}"#,
        "--expect",
        "-1",
    ];
    let first = cairn(&app, &args, "").await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let answer = &first.json_lines()[0];
    assert_eq!(
        (answer["stream"].as_str(), answer["version"].as_i64()),
        (Some("order-1"), Some(0))
    );

    let batch =
        "{\"type\":\"Added\",\"data\":{\"item\":\"tea\"}}\n\n{\"type\":\"Added\",\"data\":1}\n";
    let second = cairn(
        &app,
        &["append", "order-1", "--expect", "0", "--table"],
        batch,
    )
    .await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(
        second.stdout.trim(),
        "order-1 is at version 2: appended at 1, 2"
    );

    let stale = cairn(
        &app,
        &[
            "append", "order-1", "--type", "X", "--data", "1", "--expect", "0",
        ],
        "",
    )
    .await;
    assert_eq!(stale.code, 4);
    assert!(
        stale.stderr.contains("order-1 is at version 2"),
        "{}",
        stale.stderr
    );
    let exists = cairn(
        &app,
        &[
            "append", "order-9", "--type", "X", "--data", "1", "--expect", "exists",
        ],
        "",
    )
    .await;
    assert_eq!(exists.code, 4, "{}", exists.stderr);

    let bad = [
        (
            vec!["append", "order-1", "--type", "X", "--data", "{not json"],
            "",
        ),
        (vec!["append", "order-1"], ""),
        (
            vec!["append", "order-1"],
            "{\"type\":\"A\",\"data\":1}\nnot json\n",
        ),
        (
            vec![
                "append", "order-1", "--type", "X", "--data", "1", "--expect", "soon",
            ],
            "",
        ),
    ];
    for (args, input) in bad {
        let ran = cairn(&app, &args, input).await;
        assert_eq!(ran.code, 2, "{args:?}: {}", ran.stderr);
    }
    // A batch the server refuses (an invalid type) is all or nothing.
    let refused = cairn(
        &app,
        &["append", "order-1"],
        "{\"type\":\"A\",\"data\":1}\n{\"type\":\"$no\",\"data\":1}\n",
    )
    .await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    let read = cairn(&app, &["read", "order-1"], "").await;
    assert_eq!(read.json_lines().len(), 3);
}

/// Reads page through a stream, a category and the log, with positions,
/// limits, type filters, backward and until-version; a stream that never
/// had events exits 3.
async fn read_streams_categories_and_the_log(app: TestApp) {
    let mut batch = String::new();
    for i in 0..1205 {
        let kind = if i % 2 == 0 { "Even" } else { "Odd" };
        batch.push_str(&format!("{{\"type\":\"{kind}\",\"data\":{i}}}\n"));
    }
    // Two batches: a batch holds at most 1000 events by default.
    let (first, rest) = batch.split_at(batch.match_indices('\n').nth(999).unwrap().0 + 1);
    for part in [first, rest] {
        let ran = cairn(&app, &["append", "big-1"], part).await;
        assert_eq!(ran.code, 0, "{}", ran.stderr);
    }
    cairn(
        &app,
        &["append", "other-1", "--type", "Even", "--data", "-1"],
        "",
    )
    .await;

    let all = cairn(&app, &["read", "big-1"], "").await;
    let events = all.json_lines();
    assert_eq!(events.len(), 1205, "every page read");
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e["data"] == json!(i))
    );
    let some = cairn(
        &app,
        &["read", "big-1", "--position", "10", "--limit", "3"],
        "",
    )
    .await;
    let data: Vec<Value> = some.field("data");
    assert_eq!(data, [json!(10), json!(11), json!(12)]);
    let back = cairn(&app, &["read", "big-1", "--backward", "--limit", "2"], "").await;
    let data: Vec<Value> = back.field("data");
    assert_eq!(data, [json!(1204), json!(1203)]);
    let before = cairn(&app, &["read", "big-1", "--until-version", "-1"], "").await;
    assert_eq!((before.code, before.stdout.as_str()), (0, ""));
    let odd = cairn(&app, &["read", "--category", "big", "--type", "Odd"], "").await;
    assert_eq!(odd.json_lines().len(), 602);
    let log = cairn(
        &app,
        &["read", "--all", "--type", "Even", "--position", "1200"],
        "",
    )
    .await;
    let streams: Vec<Value> = log.field("stream");
    assert_eq!(
        streams,
        [
            json!("big-1"),
            json!("big-1"),
            json!("big-1"),
            json!("other-1")
        ]
    );

    let table = cairn(&app, &["read", "big-1", "--limit", "1", "--table"], "").await;
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("POSITION"), "{}", table.stdout);
    assert!(
        lines[1].contains("Even") && lines[1].contains("big-1"),
        "{}",
        table.stdout
    );

    let missing = cairn(&app, &["read", "nothing-1"], "").await;
    assert_eq!(missing.code, 3);
    assert!(missing.stderr.contains("nothing-1"), "{}", missing.stderr);
    for usage in [
        vec!["read"],
        vec!["read", "big-1", "--all"],
        vec!["read", "--all", "--backward"],
    ] {
        assert_eq!(cairn(&app, &usage, "").await.code, 2, "{usage:?}");
    }
    // `| head` closes the pipe: no error.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["read", "big-1"])
        .env("CAIRN_URL", &app.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).await.unwrap();
    drop(out);
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status:?}");
}

/// Streams, the last event, checkpoints, snapshots and a trace, as JSON and
/// as tables.
async fn inspect_the_store(app: TestApp) {
    let opened = cairn(
        &app,
        &["append", "acc-1", "--type", "Opened", "--data", "{}"],
        "",
    )
    .await;
    let opened_id = opened.json_lines()[0]["events"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let effect = json!({"type": "Charged", "data": 5, "causation_id": opened_id});
    cairn(&app, &["append", "acc-2"], &format!("{effect}\n")).await;
    cairn(
        &app,
        &["append", "bcc-1", "--type", "Opened", "--data", "{}"],
        "",
    )
    .await;

    let streams = cairn(&app, &["streams", "--prefix", "acc"], "").await;
    let names: Vec<Value> = streams
        .json_lines()
        .iter()
        .map(|s| s["stream"].clone())
        .collect();
    assert_eq!(names, [json!("acc-1"), json!("acc-2")]);
    let table = cairn(&app, &["streams", "--table"], "").await;
    assert_eq!(table.stdout.lines().count(), 4, "{}", table.stdout);

    let last = cairn(&app, &["last", "acc-2"], "").await;
    assert_eq!(last.json_lines()[0]["type"], "Charged");
    assert_eq!(
        cairn(&app, &["last", "acc-2", "--type", "Nope"], "")
            .await
            .code,
        3
    );

    let set = cairn(&app, &["checkpoint", "set", "projector", "2"], "").await;
    assert_eq!(set.json_lines()[0]["position"], 2, "{}", set.stderr);
    let get = cairn(&app, &["checkpoint", "get", "projector", "--table"], "").await;
    assert!(
        get.stdout.starts_with("projector is at position 2"),
        "{}",
        get.stdout
    );
    assert_eq!(
        cairn(&app, &["checkpoint", "get", "nobody"], "").await.code,
        3
    );
    assert_eq!(
        cairn(&app, &["checkpoint", "set", "projector", "99"], "")
            .await
            .code,
        1
    );

    let put = [
        "snapshot",
        "put",
        "acc-1",
        "--version",
        "0",
        "--state",
        r#"{"balance":0}"#,
        "--type",
        "Acc",
    ];
    assert_eq!(cairn(&app, &put, "").await.code, 0);
    let snapshot = cairn(&app, &["snapshot", "get", "acc-1"], "").await;
    assert_eq!(snapshot.json_lines()[0]["state"], json!({"balance": 0}));
    assert_eq!(
        cairn(
            &app,
            &["snapshot", "get", "acc-1", "--until-version", "-1"],
            ""
        )
        .await
        .code,
        3
    );
    let bad_state = ["snapshot", "put", "acc-1", "--version", "0", "--state", "{"];
    assert_eq!(cairn(&app, &bad_state, "").await.code, 2);

    let trace = cairn(&app, &["trace", &opened_id], "").await;
    let trace = &trace.json_lines()[0];
    assert_eq!(trace["effects"][0]["type"], "Charged");
    let tree = cairn(&app, &["trace", &opened_id, "--table"], "").await;
    let lines: Vec<&str> = tree.stdout.lines().collect();
    assert!(
        lines[0].starts_with("Opened acc-1@0") && lines[0].ends_with("◀ traced"),
        "{}",
        tree.stdout
    );
    assert!(
        lines[1].starts_with("└─ Charged acc-2@0"),
        "{}",
        tree.stdout
    );
}

/// `tail` prints events as they are appended, from the next one on or from
/// a position.
async fn tail_follows_live(app: TestApp) {
    cairn(
        &app,
        &["append", "live-1", "--type", "Before", "--data", "0"],
        "",
    )
    .await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["tail", "--category", "live", "--position", "1"])
        .env("CAIRN_URL", &app.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
        serde_json::from_str(&line.expect("a line in time").unwrap().unwrap()).unwrap()
    };
    assert_eq!(next().await["type"], "Before");
    for i in 1..=3 {
        let data = i.to_string();
        cairn(
            &app,
            &["append", "live-2", "--type", "After", "--data", &data],
            "",
        )
        .await;
        let event = next().await;
        assert_eq!(
            (event["stream"].clone(), event["data"].clone()),
            (json!("live-2"), json!(i))
        );
    }
    child.kill().await.unwrap();
}

/// Events print as the server sent them (key order, large numbers), data
/// and traces as deep as the server allows read back, type filters apply to
/// categories and the log only, and a server with small pages is read
/// with its own page size.
async fn exact_deep_and_paged_output(app: TestApp) {
    let exact = r#"{"z":1,"a":123456789012345678901234567890,"f":1.50}"#;
    cairn(&app, &["append", "x-1", "--type", "A", "--data", exact], "").await;
    let read = cairn(&app, &["read", "x-1"], "").await;
    assert!(
        read.stdout.contains(&format!(r#""data":{exact}"#)),
        "{}",
        read.stdout
    );

    let deep = format!("{}1{}", "[".repeat(127), "]".repeat(127));
    let appended = cairn(
        &app,
        &["append", "deep-1", "--type", "A", "--data", &deep],
        "",
    )
    .await;
    assert_eq!(appended.code, 0, "{}", appended.stderr);
    for output in ["--json", "--table"] {
        let read = cairn(&app, &["read", "deep-1", output], "").await;
        assert_eq!(read.code, 0, "{output}: {}", read.stderr);
    }
    // A chain of 100 causes, traced from its root.
    let mut cause: Option<String> = None;
    let mut root = String::new();
    for i in 0..100 {
        let mut event = json!({"type": "Step", "data": i});
        if let Some(cause) = &cause {
            event["causation_id"] = json!(cause);
        }
        let ran = cairn(&app, &["append", "chain-1"], &format!("{event}\n")).await;
        let id = ran.json_lines()[0]["events"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        if i == 0 {
            root = id.clone();
        }
        cause = Some(id);
    }
    for output in ["--json", "--table"] {
        let trace = cairn(&app, &["trace", &root, output], "").await;
        assert_eq!(trace.code, 0, "{output}: {}", trace.stderr);
    }
    let tree = cairn(&app, &["trace", &root, "--table"], "").await;
    assert_eq!(tree.stdout.lines().count(), 100);

    for usage in [
        vec!["read", "x-1", "--type", "A"],
        vec!["tail", "x-1", "--type", "A"],
    ] {
        let ran = cairn(&app, &usage, "").await;
        assert_eq!(ran.code, 2, "{usage:?}: {}", ran.stderr);
    }

    let small = app.sibling_with(&["--max-page-size", "50"]).await;
    let batch: String = (0..120)
        .map(|i| format!("{{\"type\":\"P\",\"data\":{i}}}\n"))
        .collect();
    cairn(&small, &["append", "paged-1"], &batch).await;
    assert_eq!(
        cairn(&small, &["read", "paged-1"], "")
            .await
            .json_lines()
            .len(),
        120
    );
    assert_eq!(
        cairn(&small, &["read", "paged-1", "--limit", "70"], "")
            .await
            .json_lines()
            .len(),
        70
    );
    let read = cairn(
        &small,
        &["read", "paged-1", "--page-size", "40", "--limit", "45"],
        "",
    )
    .await;
    assert_eq!(read.json_lines().len(), 45);
    let too_big = cairn(&small, &["read", "paged-1", "--page-size", "500"], "").await;
    assert_eq!(too_big.code, 1);
    assert!(too_big.stderr.contains("limit"), "{}", too_big.stderr);
}

/// `cairn export` to a file, and `cairn import` of it into a server over an
/// empty (SQLite) store: the copy exports the same file. A file cut short
/// exits 1 with the server's words and completes when imported whole; a
/// store that is not empty exits 1; standard input is read for `-`.
async fn export_to_a_file_and_import_it_elsewhere(app: TestApp) {
    crate::transfer::seed(&app).await;
    let exported = cairn(&app, &["export"], "").await;
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    let kinds: Vec<Value> = exported.field("kind");
    assert_eq!(kinds.last(), Some(&json!("head")));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.ndjson");
    std::fs::write(&file, &exported.stdout).unwrap();
    let cut = dir.path().join("cut.ndjson");
    let first_lines: String = exported.stdout.split_inclusive('\n').take(100).collect();
    std::fs::write(&cut, first_lines).unwrap();
    let (file, cut) = (file.to_str().unwrap(), cut.to_str().unwrap());

    let copy = TestApp::sqlite().await;
    let incomplete = cairn(&copy, &["import", cut], "").await;
    assert_eq!(incomplete.code, 1);
    assert!(
        incomplete.stderr.contains("ends before its head line"),
        "{}",
        incomplete.stderr
    );
    let whole = cairn(&copy, &["import", file, "--json"], "").await;
    assert_eq!(whole.code, 0, "{}", whole.stderr);
    assert_eq!(whole.json_lines()[0]["already_stored"], 100);
    assert_eq!(cairn(&copy, &["export"], "").await.stdout, exported.stdout);

    let piped = TestApp::sqlite().await;
    let from_stdin = cairn(&piped, &["import", "-", "--table"], &exported.stdout).await;
    assert_eq!(from_stdin.code, 0, "{}", from_stdin.stderr);
    assert!(
        from_stdin
            .stdout
            .starts_with("imported 2107 events (0 of them already stored)"),
        "{}",
        from_stdin.stdout
    );
    let other = TestApp::sqlite().await;
    cairn(
        &other,
        &["append", "mine-1", "--type", "A", "--data", "1"],
        "",
    )
    .await;
    let refused = cairn(&other, &["import", file], "").await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("409"), "{}", refused.stderr);

    let bounded = cairn(&app, &["export", "--position", "3", "--until", "4"], "").await;
    let kinds: Vec<Value> = bounded.field("kind");
    assert_eq!(kinds.iter().filter(|k| **k == json!("event")).count(), 2);
    let missing = cairn(&app, &["import", "/nonexistent/backup.ndjson"], "").await;
    assert_eq!(missing.code, 2, "{}", missing.stderr);
}

backend_tests!(
    exact_deep_and_paged_output,
    append_one_and_a_batch_with_expectations,
    read_streams_categories_and_the_log,
    inspect_the_store,
    tail_follows_live,
    export_to_a_file_and_import_it_elsewhere,
);

/// With auth on, a missing or wrong key exits 5 with the server's words; the
/// key from `--key` or `CAIRN_KEY` is sent as a bearer credential. An
/// unreachable server exits 1; bad usage 2. Completions are printed.
#[tokio::test]
async fn credentials_usage_and_completions() {
    let key = "cairn_cli-test-admin-key-0123456789abcdefghijkl";
    let app = TestApp::sqlite().await;
    let app = app.sibling_with(&["--admin-key", key]).await;
    let refused = cairn(&app, &["read", "--all"], "").await;
    assert_eq!(refused.code, 5);
    assert!(refused.stderr.contains("credential"), "{}", refused.stderr);
    let wrong = cairn(&app, &["read", "--all", "--key", "cairn_wrong"], "").await;
    assert_eq!(wrong.code, 5);
    assert!(!wrong.stderr.contains("cairn_wrong"), "{}", wrong.stderr);
    let allowed = cairn(
        &app,
        &["append", "k-1", "--type", "A", "--data", "1", "--key", key],
        "",
    )
    .await;
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);

    let gone = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["read", "--all", "--url", "http://127.0.0.1:9"])
        .output()
        .await
        .unwrap();
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("cannot reach"));

    assert_eq!(cairn(&app, &["append"], "").await.code, 2);
    for shell in ["bash", "zsh", "fish"] {
        let script = cairn(&app, &["completions", shell], "").await;
        assert_eq!(script.code, 0);
        assert!(
            script.stdout.contains("tail") && script.stdout.contains("checkpoint"),
            "{shell}"
        );
    }
    let help = cairn(&app, &["--help"], "").await;
    for command in [
        "append",
        "read",
        "tail",
        "trace",
        "streams",
        "last",
        "checkpoint",
        "snapshot",
        "keys",
    ] {
        assert!(
            help.stdout.contains(command),
            "{command} missing from --help"
        );
    }
}

/// `tail` resumes after its server restarts, from the last event it
/// printed (`Last-Event-ID`): nothing lost, nothing twice.
#[tokio::test]
async fn tail_resumes_after_the_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let server =
        crate::binary::Server::start_with(&["--data-dir", data, "--listen", &listen]).await;
    let append = |n: i32| {
        let url = url.clone();
        async move {
            let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
                .args([
                    "append",
                    "r-1",
                    "--type",
                    "N",
                    "--data",
                    &n.to_string(),
                    "--url",
                    &url,
                ])
                .stdout(Stdio::null())
                .status()
                .await
                .unwrap();
            assert!(status.success());
        }
    };
    append(0).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["tail", "r-1", "--position", "0", "--url", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(15), lines.next_line()).await;
        serde_json::from_str(&line.expect("a line in time").unwrap().unwrap()).unwrap()
    };
    assert_eq!(next().await["data"], 0);
    append(1).await;
    assert_eq!(next().await["data"], 1);
    // A second tail from the next new event: it has printed nothing when
    // the server goes, so it resumes where its `caught-up` said.
    let mut fresh = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["tail", "r-1", "--url", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut fresh_lines = BufReader::new(fresh.stdout.take().unwrap()).lines();
    // Both feeds open before the server goes: the second has printed nothing.
    let feeds_open = || async {
        let metrics = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics.contains("\ncairn_feeds_open 2\n")
    };
    let started = std::time::Instant::now();
    while !feeds_open().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the second tail never opened its feed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(server);
    let _server =
        crate::binary::Server::start_with(&["--data-dir", data, "--listen", &listen]).await;
    append(2).await;
    append(3).await;
    assert_eq!(next().await["data"], 2);
    assert_eq!(next().await["data"], 3);
    let mut fresh_seen = Vec::new();
    while fresh_seen.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(15), fresh_lines.next_line()).await;
        let event: Value =
            serde_json::from_str(&line.expect("a line in time").unwrap().unwrap()).unwrap();
        fresh_seen.push(event["data"].clone());
    }
    assert_eq!(fresh_seen, [json!(2), json!(3)]);
    child.kill().await.unwrap();
    fresh.kill().await.unwrap();
}
