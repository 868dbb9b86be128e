//! The real `cairn` binary: the embedded store as a newcomer meets it (no
//! configuration, killed and restarted), and several processes on one Postgres.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use eventsource_stream::Eventsource;
use futures::StreamExt;

use crate::common::{HALF_SENT_APPEND, event, postgres};

/// The `cairn` binary serving on a free port.
pub(crate) struct Server {
    child: Child,
    /// Its base URL.
    pub(crate) url: String,
}

impl Server {
    /// Starts the binary on the embedded store in `data_dir`.
    async fn start(data_dir: &std::path::Path) -> Server {
        let data_dir = data_dir.to_str().expect("a UTF-8 path");
        Self::start_with(&["--data-dir", data_dir]).await
    }

    /// Starts the binary with these flags (and no `DATABASE_URL` from the
    /// environment) and waits until it answers `/health`. It listens on a
    /// free loopback port unless the flags say `--listen`.
    pub(crate) async fn start_with(flags: &[&str]) -> Server {
        let listen = match flags.iter().position(|f| *f == "--listen") {
            Some(at) => flags[at + 1].to_owned(),
            None => {
                let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                format!("127.0.0.1:{}", free.local_addr().unwrap().port())
            }
        };
        let port = listen.rsplit(':').next().unwrap().to_owned();
        let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
        if !flags.contains(&"--listen") {
            command.args(["--listen", &listen]);
        }
        let child = command
            .args(flags)
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cairn starts");
        // Owned by `Server` at once, so a failed start still kills it.
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(format!("{}/health", server.url)).await
                && r.status() == StatusCode::OK
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cairn did not become healthy");
    }
}

impl Server {
    /// Sends SIGTERM and waits for the process to exit; whether it exited cleanly.
    fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        self.child.wait().is_ok_and(|status| status.success())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `201` is on disk: a `kill -9` right after the answers loses none of them.
#[tokio::test]
async fn acknowledged_appends_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let client = reqwest::Client::new();
    let appends = (0..40).map(|i| {
        let (client, url) = (client.clone(), server.url.clone());
        async move {
            let r = client
                .post(format!("{url}/streams/durable-{}", i % 4))
                .json(&event("E", json!(i)))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<Value>().await.unwrap()["events"][0]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    });
    let mut acknowledged = join_all(appends).await;
    drop(server); // SIGKILL: no graceful shutdown, no checkpoint

    assert!(
        dir.path().join("cairn.db").exists(),
        "the store lives in the data directory"
    );
    let server = Server::start(dir.path()).await;
    let all: Value = reqwest::get(format!("{}/all?limit=1000", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut stored: Vec<String> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    acknowledged.sort();
    stored.sort();
    assert_eq!(stored, acknowledged);
}

/// `sqlite::memory:` is a working, ephemeral store.
#[tokio::test]
async fn in_memory_store_works() {
    let app = crate::common::TestApp::with_url("sqlite::memory:").await;
    let batch: Vec<Value> = (0..3).map(|i| event("E", json!(i))).collect();
    assert_eq!(
        app.append("mem-1", &json!(batch), &[]).await.status(),
        StatusCode::CREATED
    );
    let r = app
        .append("mem-1", &event("E", json!(3)), &[("if-match", "2")])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let page = app.get_json("/categories/mem").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 4);
}

/// Two processes on one Postgres: an event appended through one reaches a
/// feed on the other; SIGTERM ends the feed cleanly and the process exits
/// with success; a reconnect with `Last-Event-ID` continues exactly there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_feeds_and_shut_down_cleanly() {
    let Some(database) = postgres::fresh_database().await else {
        return;
    };
    let url = ["--database-url", database.url()];
    let writer = Server::start_with(&url).await;
    let mut reader = Server::start_with(&url).await;
    let client = reqwest::Client::new();
    let feed = client
        .get(format!("{}/categories/two", reader.url))
        .header("accept", "text/event-stream");
    let mut feed = feed
        .send()
        .await
        .unwrap()
        .bytes_stream()
        .eventsource()
        .boxed();
    let marker = next(&mut feed).await.unwrap().unwrap();
    assert_eq!(marker.event, "caught-up");

    for i in 0..3 {
        let r = client
            .post(format!("{}/streams/two-1", writer.url))
            .json(&event("E", json!(i)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let mut last_id = String::new();
    for i in 0..3 {
        let message = next(&mut feed).await.unwrap().unwrap();
        let event: Value = serde_json::from_str(&message.data).unwrap();
        assert_eq!(event["data"], json!(i));
        last_id = message.id;
    }

    assert!(reader.terminate(), "SIGTERM: a clean exit with a feed open");
    assert!(next(&mut feed).await.is_none(), "the feed ended");
    let r = client
        .post(format!("{}/streams/two-1", writer.url))
        .json(&event("E", json!(3)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let resumed = client
        .get(format!("{}/categories/two", writer.url))
        .header("accept", "text/event-stream")
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    let mut resumed = resumed.bytes_stream().eventsource().boxed();
    let message = next(&mut resumed).await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&message.data).unwrap()["data"],
        json!(3)
    );
    assert_eq!(
        next(&mut resumed).await.unwrap().unwrap().event,
        "caught-up"
    );
}

/// The next item of a stream, failing the test if none comes in time.
async fn next<S: futures::Stream + Unpin>(feed: &mut S) -> Option<S::Item> {
    tokio::time::timeout(Duration::from_secs(20), feed.next())
        .await
        .expect("the feed moves")
}

/// An idle feed gets a keep-alive comment at the configured interval.
#[tokio::test]
async fn idle_feeds_get_keep_alive_comments() {
    let server = Server::start_with(&[
        "--database-url",
        "sqlite::memory:",
        "--keep-alive-secs",
        "1",
    ])
    .await;
    let response = reqwest::Client::new()
        .get(format!("{}/all", server.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains(": keep-alive") {
            seen.push_str(&String::from_utf8_lossy(
                &body.next().await.unwrap().unwrap(),
            ));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no keep-alive in {seen:?}"));
    assert!(
        seen.starts_with("retry:"),
        "the feed opens with retry: {seen:?}"
    );
}

/// `cairn openapi | head`: a reader that stops early ends the command
/// quietly, not with a panic.
#[test]
fn openapi_into_a_closed_pipe_exits_cleanly() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("openapi")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts");
    // Closed before the document (smaller than a pipe's buffer) is written.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Logs written anywhere but a terminal carry no colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path());
    let (mut child, lines) = spawn_with_log(command);
    let mut seen = Vec::new();
    for line in lines {
        let line = line.unwrap();
        let serving = line.contains("cairn is serving");
        seen.push(line);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|l| l.contains("cairn is serving")),
        "{seen:?}"
    );
    assert!(seen.iter().all(|l| !l.contains('\u{1b}')), "{seen:?}");
}

/// SIGTERM ends the process within the grace period even while a client
/// holds a half-sent request and another an open feed.
#[tokio::test]
async fn shutdown_is_bounded_despite_stuck_clients() {
    use tokio::io::AsyncWriteExt;
    let data_dir = tempfile::tempdir().unwrap();
    let data_dir = data_dir.path().to_str().unwrap();
    let mut server =
        Server::start_with(&["--data-dir", data_dir, "--shutdown-grace-secs", "1"]).await;
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut stuck = tokio::net::TcpStream::connect(&address).await.unwrap();
    stuck.write_all(HALF_SENT_APPEND).await.unwrap();
    let feed = reqwest::Client::new()
        .get(format!("{}/all", server.url))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let clean = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(clean, "cairn exited cleanly");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    drop(stuck);
}

/// Under a low open-file limit the connection cap shrinks to fit (and says
/// so), and a flood of idle connections neither stops the server nor keeps
/// it from answering once they are gone.
#[tokio::test]
async fn a_low_file_limit_shrinks_the_connection_cap() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let command = format!(
        "ulimit -n 128 && exec {} --listen 127.0.0.1:{port} --data-dir {} --header-timeout-secs 1",
        env!("CARGO_BIN_EXE_cairn"),
        data_dir.path().display()
    );
    let mut shell = Command::new("sh");
    shell.args(["-c", &command]);
    let (mut child, mut lines) = spawn_with_log(shell);
    let mut warned = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        warned |= line.contains("open-file limit");
        if line.contains("cairn is serving") {
            break;
        }
    }
    let url = format!("http://127.0.0.1:{port}");
    let mut flood = Vec::new();
    for _ in 0..200 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            flood.push(stream);
        }
    }
    drop(flood);
    let mut healthy = false;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("{url}/health")).await
            && r.status() == StatusCode::OK
        {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "no warning about the open-file limit");
    assert!(running, "cairn exited under the flood");
    assert!(healthy, "/health did not answer after the flood");
}

/// Starts a command that runs cairn on the embedded store, with its log
/// (stdout, default level) to read line by line.
fn spawn_with_log(
    mut command: Command,
) -> (
    Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    let mut child = command
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cairn starts");
    let log = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    (child, log)
}
