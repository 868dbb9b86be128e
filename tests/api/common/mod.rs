//! Test helpers: a server per test over a fresh store, and request shortcuts.

pub mod postgres;

use std::any::Any;
use std::sync::Arc;

use cairn::config::Config;
use cairn::store::SharedStore;
use clap::Parser;
use reqwest::{Response, StatusCode};
use serde_json::Value;

/// A running server over a fresh store of its own.
pub struct TestApp {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// A client for it.
    pub client: reqwest::Client,
    /// The URL of its store, for siblings with other settings.
    pub database_url: String,
    /// Starts its graceful shutdown (taken by the first call).
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// Its store, for the tests that look below the API.
    pub store: SharedStore,
    /// Keeps the database alive (and drops it after the test).
    database: Arc<dyn Any + Send + Sync>,
}

/// Instantiates async test functions `fn(TestApp)` once per backend.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = crate::common::TestApp::postgres().await {
                        super::$name(app).await;
                    }
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::common::TestApp::sqlite().await).await;
                }
            )*
        }
    };
}
pub(crate) use backend_tests;

impl TestApp {
    /// A server over a fresh Postgres database, or `None` when Postgres is absent.
    pub async fn postgres() -> Option<TestApp> {
        let database = postgres::fresh_database().await?;
        let config = Config::parse_from(["cairn", "--database-url", database.url()]);
        Some(Self::serve(config, Arc::new(database)).await)
    }

    /// A server over a fresh SQLite file in a temporary directory.
    pub async fn sqlite() -> TestApp {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("cairn.db").display());
        let config = Config::parse_from(["cairn", "--database-url", &url]);
        Self::serve(config, Arc::new(dir)).await
    }

    /// A server over the store a database URL names, owning nothing.
    pub async fn with_url(url: &str) -> TestApp {
        let config = Config::parse_from(["cairn", "--database-url", url]);
        Self::serve(config, Arc::new(())).await
    }

    /// A second server over the same store, as another instance would be.
    pub async fn sibling(&self) -> TestApp {
        self.sibling_with(&[]).await
    }

    /// A second server over the same store with extra flags.
    pub async fn sibling_with(&self, flags: &[&str]) -> TestApp {
        let args = ["cairn", "--database-url", &self.database_url];
        let config = Config::parse_from(args.iter().chain(flags));
        Self::serve(config, self.database.clone()).await
    }

    /// Starts the app on a free port.
    async fn serve(config: Config, database: Arc<dyn Any + Send + Sync>) -> TestApp {
        let store = cairn::open_store(&config.store).await.expect("store opens");
        let app = cairn::app(&config, store.clone())
            .await
            .expect("app builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.serve(listener, async {
            let _ = stopped.await;
        }));
        TestApp {
            url,
            client: reqwest::Client::new(),
            database_url: config
                .store
                .database_url
                .clone()
                .expect("tests name their store"),
            stop: std::sync::Mutex::new(Some(stop)),
            store,
            database,
        }
    }

    /// Shuts the server down as SIGTERM does: no new connections, feeds
    /// ended, requests under way finished within the grace period.
    pub fn shut_down(&self) {
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
    }

    /// `POST /streams/{stream}` with a JSON body and extra headers.
    pub async fn append(&self, stream: &str, body: &Value, headers: &[(&str, &str)]) -> Response {
        let mut request = self
            .client
            .post(format!("{}/streams/{stream}", self.url))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// `POST` a JSON body to a path.
    pub async fn post_json(&self, path: &str, body: Value) -> Response {
        self.send(self.client.post(format!("{}{path}", self.url)).json(&body))
            .await
    }

    /// `PUT` a JSON body to a path.
    pub async fn put_json(&self, path: &str, body: Value) -> Response {
        self.send(self.client.put(format!("{}{path}", self.url)).json(&body))
            .await
    }

    /// `DELETE` a path.
    pub async fn delete(&self, path: &str) -> Response {
        self.send(self.client.delete(format!("{}{path}", self.url)))
            .await
    }

    /// Sends a request the test built.
    async fn send(&self, request: reqwest::RequestBuilder) -> Response {
        request.send().await.expect("request sent")
    }

    /// `GET` a path (with its query), expecting a JSON body.
    pub async fn get(&self, path_and_query: &str) -> Response {
        self.send(self.client.get(format!("{}{path_and_query}", self.url)))
            .await
    }

    /// `GET` a path that must answer `200`, as JSON.
    pub async fn get_json(&self, path_and_query: &str) -> Value {
        let response = self.get(path_and_query).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path_and_query}");
        response.json().await.expect("JSON body")
    }
}

/// A minimal event.
pub fn event(event_type: &str, data: Value) -> Value {
    serde_json::json!({"type": event_type, "data": data})
}

/// Asserts a problem+json answer with this status; returns its body.
pub async fn assert_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "{content_type}"
    );
    let body: Value = response.json().await.expect("problem body");
    for member in ["type", "title", "status", "detail"] {
        assert!(body.get(member).is_some(), "{member} missing from {body}");
    }
    assert_eq!(body["status"], status.as_u16());
    body
}

/// The version in an `ETag` header.
pub fn etag_version(response: &Response) -> i64 {
    let tag = response.headers()["etag"].to_str().unwrap();
    tag.trim_matches('"').parse().unwrap()
}

/// The start of an append whose body never finishes: a request under way
/// for as long as its connection stays open.
pub const HALF_SENT_APPEND: &[u8] = b"POST /streams/stuck-1 HTTP/1.1\r\nHost: localhost\r\n\
    Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
