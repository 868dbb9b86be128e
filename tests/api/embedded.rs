//! The embedded store as a newcomer meets it: the real binary with no
//! configuration, killed and restarted.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::event;

/// The `cairn` binary serving on a free port with only a data directory.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// Starts the binary and waits until it answers `/health`.
    async fn start(data_dir: &std::path::Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
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
