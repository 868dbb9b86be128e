//! Authentication and authorization (API.md): keys, JWTs, scopes and stream
//! prefixes, on both stores, against servers started with auth on.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem, backend_tests, event};

/// The admin key the servers of these tests are started with.
pub const ADMIN_KEY: &str = "cairn_test-admin-key-0123456789abcdefghijklmnop";

/// A server over the same store as `app`, with the admin key configured.
async fn secured(app: &TestApp) -> TestApp {
    app.sibling_with(&["--admin-key", ADMIN_KEY]).await
}

/// Sends a request with an optional bearer credential and JSON body.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    credential: Option<&str>,
    body: Option<Value>,
) -> Response {
    send(&app.url, method, path, credential, body).await
}

/// Sends a request to the server at `base` (see [`call`]).
async fn send(
    base: &str,
    method: Method,
    path: &str,
    credential: Option<&str>,
    body: Option<Value>,
) -> Response {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request sent")
}

/// Creates a key through `POST /keys` with the admin key; its secret and id.
async fn create_key(app: &TestApp, body: Value) -> (String, String) {
    let response = call(app, Method::POST, "/keys", Some(ADMIN_KEY), Some(body)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    (
        created["key"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    )
}

/// Asserts a `401` problem with a `Bearer` challenge that does not echo the
/// credential; returns its detail.
async fn assert_unauthenticated(response: Response, credential: &str) -> String {
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let problem = assert_problem(response, StatusCode::UNAUTHORIZED).await;
    let detail = problem["detail"].as_str().unwrap().to_owned();
    if !credential.is_empty() {
        assert!(!problem.to_string().contains(credential), "{problem}");
    }
    detail
}

/// Every route but the public ones answers `401` without a credential.
async fn only_public_routes_answer_without_a_credential(app: TestApp) {
    let app = secured(&app).await;
    let id = uuid::Uuid::nil();
    let guarded = [
        (Method::GET, "/streams/acc-1".to_owned(), None),
        (Method::HEAD, "/streams/acc-1".to_owned(), None),
        (
            Method::POST,
            "/streams/acc-1".to_owned(),
            Some(event("A", json!({}))),
        ),
        (Method::GET, "/streams/acc-1/last".to_owned(), None),
        (Method::GET, "/streams".to_owned(), None),
        (Method::GET, "/categories/acc".to_owned(), None),
        (Method::GET, "/all".to_owned(), None),
        (Method::GET, format!("/events/{id}"), None),
        (Method::GET, format!("/trace/{id}"), None),
        (Method::GET, "/correlations/c".to_owned(), None),
        (Method::GET, "/snapshots/acc-1".to_owned(), None),
        (
            Method::POST,
            "/snapshots/acc-1".to_owned(),
            Some(json!({"version": 0, "state": {}})),
        ),
        (Method::GET, "/checkpoints/p".to_owned(), None),
        (
            Method::PUT,
            "/checkpoints/p".to_owned(),
            Some(json!({"position": 0})),
        ),
        (Method::GET, "/metrics".to_owned(), None),
        (Method::GET, "/keys".to_owned(), None),
        (
            Method::POST,
            "/keys".to_owned(),
            Some(json!({"name": "k", "scopes": ["read"]})),
        ),
        (Method::DELETE, format!("/keys/{id}"), None),
        (Method::GET, "/no-such-route".to_owned(), None),
    ];
    for (method, path, body) in guarded {
        let response = call(&app, method.clone(), &path, None, body).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        if method != Method::HEAD {
            assert_unauthenticated(response, "").await;
        }
    }
    for public in [
        "/health",
        "/openapi.json",
        "/docs/",
        "/console",
        "/console/app.js",
    ] {
        assert_eq!(app.get(public).await.status(), StatusCode::OK, "{public}");
    }
    // Nothing was written by the refused requests.
    let all = call(&app, Method::GET, "/all", Some(ADMIN_KEY), None).await;
    let all: Value = all.json().await.unwrap();
    assert_eq!(all["events"], json!([]));
}

/// Malformed headers and unknown, revoked and expired keys are `401`; the
/// three kinds of bad key get the same answer, so none hints that a key
/// exists.
async fn bad_credentials_are_401_and_alike(app: TestApp) {
    let app = secured(&app).await;
    for header in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "cairn_x",
        "Bearer\tcairn_x",
    ] {
        let response = app
            .client
            .get(format!("{}/all", app.url))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_unauthenticated(response, "").await;
    }
    let unknown = "cairn_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (revoked, id) = create_key(&app, json!({"name": "r", "scopes": ["read"]})).await;
    let response = call(
        &app,
        Method::DELETE,
        &format!("/keys/{id}"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // A key that expires a second from now: accepted, then refused.
    let expired = cairn::auth::KeySecret::generate();
    app.store
        .create_key(cairn::store::NewKey {
            id: uuid::Uuid::now_v7(),
            name: "old".into(),
            digest: expired.digest().as_str().to_owned(),
            scopes: vec![cairn::auth::Scope::Read],
            streams: None,
            expires_at: Some(chrono::Utc::now() + chrono::Duration::seconds(1)),
        })
        .await
        .unwrap();
    until_status(
        &app.url,
        expired.expose(),
        StatusCode::OK,
        Duration::from_secs(1),
    )
    .await;
    until_status(
        &app.url,
        expired.expose(),
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(3),
    )
    .await;
    let mut details = Vec::new();
    for key in [unknown, revoked.as_str(), expired.expose()] {
        let response = call(&app, Method::GET, "/all", Some(key), None).await;
        details.push(assert_unauthenticated(response, key).await);
    }
    assert!(details.windows(2).all(|w| w[0] == w[1]), "{details:?}");
    // A JWT where this server accepts none.
    let response = call(&app, Method::GET, "/all", Some("eyJ.eyJ.sig"), None).await;
    assert_unauthenticated(response, "eyJ.eyJ.sig").await;
}

/// Keys are created (the secret shown once), listed without secrets,
/// accepted at once, revoked (refused at once on this instance), and bad
/// requests to create them are `400`.
async fn keys_are_created_listed_and_revoked(app: TestApp) {
    let app = secured(&app).await;
    let response = call(
        &app,
        Method::POST,
        "/keys",
        Some(ADMIN_KEY),
        Some(
            json!({"name": "billing", "scopes": ["read", "write"], "streams": ["account"],
                    "expires_at": "2999-01-01T00:00:00Z"}),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("cairn_") && key.len() > 40, "{key}");
    assert_eq!(created["name"], "billing");
    assert_eq!(created["scopes"], json!(["read", "write"]));
    assert_eq!(created["streams"], json!(["account"]));
    assert_eq!(created["expires_at"], "2999-01-01T00:00:00Z");
    assert!(created["created"].is_string());

    let listed = call(&app, Method::GET, "/keys", Some(ADMIN_KEY), None).await;
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    assert_eq!(listed["keys"][0]["id"], created["id"]);
    assert!(listed["keys"][0].get("key").is_none());
    assert!(!listed.to_string().contains(&key[6..]), "{listed}");
    // Only a digest is stored.
    let stored = app.store.keys().await.unwrap();
    assert_ne!(stored[0].key.digest, key);
    assert!(!stored[0].key.digest.contains(&key[6..]));

    let append = call(
        &app,
        Method::POST,
        "/streams/account-1",
        Some(&key),
        Some(event("A", json!({}))),
    )
    .await;
    assert_eq!(append.status(), StatusCode::CREATED);
    let id = created["id"].as_str().unwrap();
    let revoke = call(
        &app,
        Method::DELETE,
        &format!("/keys/{id}"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    let refused = call(&app, Method::GET, "/streams/account-1", Some(&key), None).await;
    assert_unauthenticated(refused, &key).await;
    let again = call(
        &app,
        Method::DELETE,
        &format!("/keys/{id}"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_problem(again, StatusCode::NOT_FOUND).await;
    let listed = call(&app, Method::GET, "/keys", Some(ADMIN_KEY), None).await;
    assert_eq!(listed.json::<Value>().await.unwrap()["keys"], json!([]));

    for bad in [
        json!({"name": "k", "scopes": []}),
        json!({"name": "k", "scopes": ["root"]}),
        json!({"name": "k", "scopes": ["read"], "streams": []}),
        json!({"name": "k", "scopes": ["read"], "streams": ["a\u{7}"]}),
        json!({"name": "k", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"}),
        json!({"name": "k", "scopes": ["read"], "secret": "mine"}),
        json!({"name": "k", "scopes": ["admin"], "streams": ["account"]}),
        json!({"name": "", "scopes": ["read"]}),
        json!({"scopes": ["read"]}),
        json!(["k", ["read"]]),
    ] {
        let response = call(
            &app,
            Method::POST,
            "/keys",
            Some(ADMIN_KEY),
            Some(bad.clone()),
        )
        .await;
        assert_problem(response, StatusCode::BAD_REQUEST).await;
    }
    let malformed_id = call(
        &app,
        Method::DELETE,
        "/keys/not-a-uuid",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_problem(malformed_id, StatusCode::BAD_REQUEST).await;
}

/// `read`, `write` and `admin` each open what API.md says, and a `403`
/// names the missing scope.
async fn scopes_open_what_they_name(app: TestApp) {
    let app = secured(&app).await;
    let (reader, _) = create_key(&app, json!({"name": "r", "scopes": ["read"]})).await;
    let (writer, _) = create_key(&app, json!({"name": "w", "scopes": ["write"]})).await;
    let (admin, _) = create_key(&app, json!({"name": "a", "scopes": ["admin"]})).await;

    let append = |key: String| {
        let app = &app;
        async move {
            call(
                app,
                Method::POST,
                "/streams/s-1",
                Some(&key),
                Some(event("A", json!({}))),
            )
            .await
        }
    };
    let refused = assert_problem(append(reader.clone()).await, StatusCode::FORBIDDEN).await;
    assert!(
        refused["detail"].as_str().unwrap().contains("`write`"),
        "{refused}"
    );
    assert_eq!(append(writer.clone()).await.status(), StatusCode::CREATED);
    assert_eq!(append(admin.clone()).await.status(), StatusCode::CREATED);

    let read = call(&app, Method::GET, "/streams/s-1", Some(&writer), None).await;
    let refused = assert_problem(read, StatusCode::FORBIDDEN).await;
    assert!(
        refused["detail"].as_str().unwrap().contains("`read`"),
        "{refused}"
    );
    for key in [&reader, &admin] {
        let read = call(&app, Method::GET, "/streams/s-1", Some(key), None).await;
        assert_eq!(read.status(), StatusCode::OK);
    }
    let checkpoint = call(
        &app,
        Method::PUT,
        "/checkpoints/p",
        Some(&reader),
        Some(json!({"position": 1})),
    )
    .await;
    assert_problem(checkpoint, StatusCode::FORBIDDEN).await;
    let snapshot = call(
        &app,
        Method::POST,
        "/snapshots/s-1",
        Some(&reader),
        Some(json!({"version": 0, "state": {}})),
    )
    .await;
    assert_problem(snapshot, StatusCode::FORBIDDEN).await;

    for path in ["/keys", "/metrics", "/schemas"] {
        for key in [&reader, &writer] {
            let response = call(&app, Method::GET, path, Some(key), None).await;
            let refused = assert_problem(response, StatusCode::FORBIDDEN).await;
            assert!(
                refused["detail"].as_str().unwrap().contains("`admin`"),
                "{refused}"
            );
        }
        let response = call(&app, Method::GET, path, Some(&admin), None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // Governance is administration: even a writer may not erase.
    let governance = [
        (Method::DELETE, "/streams/s-1", None),
        (
            Method::POST,
            "/streams/s-1/truncate",
            Some(json!({"before": 1})),
        ),
        (
            Method::PUT,
            "/streams/s-1/retention",
            Some(json!({"max_count": 1})),
        ),
        (
            Method::PUT,
            "/categories/s/retention",
            Some(json!({"max_count": 1})),
        ),
        (Method::PUT, "/schemas/A", Some(json!({"type": "object"}))),
    ];
    for (method, path, body) in governance {
        let response = call(&app, method, path, Some(&writer), body).await;
        let refused = assert_problem(response, StatusCode::FORBIDDEN).await;
        assert!(
            refused["detail"].as_str().unwrap().contains("`admin`"),
            "{path}: {refused}"
        );
    }
    let read = call(&app, Method::GET, "/streams/s-1", Some(&admin), None).await;
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["version"], 1, "nothing was erased");
    // A key's secret never reaches the metrics.
    let metrics = call(&app, Method::GET, "/metrics", Some(&admin), None).await;
    let metrics = metrics.text().await.unwrap();
    for key in [&reader, &writer, &admin] {
        assert!(!metrics.contains(&key[6..]));
    }
}

/// With stream prefixes, exactly what API.md lists is in reach, and what is
/// not is refused before the store is touched (or, for one event, hidden).
async fn prefixes_bound_every_read_and_write(app: TestApp) {
    let app = secured(&app).await;
    let append = |stream: &'static str| {
        let app = &app;
        async move {
            let body = json!({"type": "A", "data": {}, "correlation_id": "c"});
            let response = call(
                app,
                Method::POST,
                &format!("/streams/{stream}"),
                Some(ADMIN_KEY),
                Some(body),
            )
            .await;
            assert_eq!(response.status(), StatusCode::CREATED);
            let body: Value = response.json().await.unwrap();
            body["events"][0]["id"].as_str().unwrap().to_owned()
        }
    };
    let in_reach = append("account-1").await;
    append("account-2").await;
    append("order-1").await;
    let out_of_reach = append("orders-1").await;
    append("zeta-1").await;
    let (key, _) = create_key(
        &app,
        json!({"name": "p", "scopes": ["read", "write"], "streams": ["account", "order-"]}),
    )
    .await;
    let get = |path: String| {
        let (app, key) = (&app, key.clone());
        async move { call(app, Method::GET, &path, Some(&key), None).await }
    };

    assert_eq!(
        get("/streams/account-1".into()).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get("/streams/order-1".into()).await.status(),
        StatusCode::OK
    );
    let refused =
        assert_problem(get("/streams/orders-1".into()).await, StatusCode::FORBIDDEN).await;
    assert!(
        refused["detail"].as_str().unwrap().contains("orders-1"),
        "{refused}"
    );
    assert_problem(
        get("/streams/zeta-1/last".into()).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_problem(get("/snapshots/zeta-1".into()).await, StatusCode::FORBIDDEN).await;
    assert_eq!(
        get("/categories/account".into()).await.status(),
        StatusCode::OK
    );
    // `order-` covers order-1 but not the category `order` (orderx-1…).
    assert_problem(get("/categories/order".into()).await, StatusCode::FORBIDDEN).await;
    for store_wide in [
        "/all".to_owned(),
        format!("/trace/{in_reach}"),
        "/correlations/c".into(),
    ] {
        assert_problem(get(store_wide).await, StatusCode::FORBIDDEN).await;
    }
    assert_eq!(
        get(format!("/events/{in_reach}")).await.status(),
        StatusCode::OK
    );
    assert_problem(
        get(format!("/events/{out_of_reach}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // Listings show what is in reach, paged across the prefixes' ranges.
    let mut listed = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let after = next.map(|n| format!("&after={n}")).unwrap_or_default();
        let page: Value = get(format!("/streams?limit=1{after}"))
            .await
            .json()
            .await
            .unwrap();
        for stream in page["streams"].as_array().unwrap() {
            listed.push(stream["stream"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => next = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, ["account-1", "account-2", "order-1"]);
    let page: Value = get("/streams?prefix=or".into()).await.json().await.unwrap();
    assert_eq!(page["streams"].as_array().unwrap().len(), 1);

    let write = |path: &'static str, body: Value| {
        let (app, key) = (&app, key.clone());
        async move { call(app, Method::POST, path, Some(&key), Some(body)).await }
    };
    assert_eq!(
        write("/streams/account-9", event("A", json!({})))
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_problem(
        write("/streams/zeta-2", event("A", json!({}))).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_problem(
        write("/snapshots/zeta-1", json!({"version": 0, "state": {}})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let checkpoint = |consumer: &'static str| {
        let (app, key) = (&app, key.clone());
        async move {
            call(
                app,
                Method::PUT,
                &format!("/checkpoints/{consumer}"),
                Some(&key),
                Some(json!({"position": 1})),
            )
            .await
        }
    };
    assert_eq!(
        checkpoint("account-projection").await.status(),
        StatusCode::OK
    );
    assert_problem(checkpoint("billing").await, StatusCode::FORBIDDEN).await;
    // The refused append wrote nothing.
    let response = call(&app, Method::GET, "/streams/zeta-2", Some(ADMIN_KEY), None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// Feeds take the credential as `?access_token=` on `GET` (for
/// `EventSource`), under the same rules; the parameter is taken out of the
/// request, and other methods ignore it.
async fn feeds_take_an_access_token(app: TestApp) {
    let app = secured(&app).await;
    call(
        &app,
        Method::POST,
        "/streams/account-1",
        Some(ADMIN_KEY),
        Some(event("A", json!({}))),
    )
    .await;
    let (key, _) = create_key(
        &app,
        json!({"name": "f", "scopes": ["read"], "streams": ["account"]}),
    )
    .await;
    let feed = |path: String| {
        let app = &app;
        async move {
            app.client
                .get(format!("{}{path}", app.url))
                .header("accept", "text/event-stream")
                .send()
                .await
                .unwrap()
        }
    };
    let response = feed(format!("/streams/account-1?access_token={key}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(response);
    let response = feed(format!("/categories/account?position=1&access_token={key}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    assert_problem(
        feed(format!("/all?access_token={key}")).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    // A feed from a consumer's checkpoint: the consumer must be in reach.
    assert_problem(
        feed(format!(
            "/categories/account?checkpoint=billing&access_token={key}"
        ))
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_unauthenticated(
        feed("/all?access_token=cairn_nope".into()).await,
        "cairn_nope",
    )
    .await;
    // Only feeds take it: a plain read must send the header (URLs end up
    // in logs), and is told so.
    let read = app
        .get(&format!("/streams/account-1?access_token={key}&limit=1"))
        .await;
    let detail = assert_unauthenticated(read, &key).await;
    assert!(detail.contains("feeds only"), "{detail}");
    // Only on GET.
    let post = app
        .client
        .post(format!("{}/streams/account-1?access_token={key}", app.url))
        .json(&event("A", json!({})))
        .send()
        .await
        .unwrap();
    assert_unauthenticated(post, &key).await;
}

/// On a loopback server with nothing configured, auth is off until the
/// first key is stored: from then on, every request needs a credential.
async fn the_first_stored_key_turns_auth_on(app: TestApp) {
    assert_eq!(app.get("/all").await.status(), StatusCode::OK);
    let body = json!({"name": "first", "scopes": ["admin"]});
    let response = call(&app, Method::POST, "/keys", None, Some(body)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let key: Value = response.json().await.unwrap();
    let key = key["key"].as_str().unwrap();
    assert_unauthenticated(app.get("/all").await, "").await;
    let read = call(&app, Method::GET, "/all", Some(key), None).await;
    assert_eq!(read.status(), StatusCode::OK);
    // Revoking it leaves auth on: a store that held a key stays guarded.
    let id = app.store.keys().await.unwrap()[0].key.id;
    let revoke = call(
        &app,
        Method::DELETE,
        &format!("/keys/{id}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    assert_unauthenticated(app.get("/all").await, "").await;
}

/// A feed ends once its credential is revoked, and one opened with a key
/// that expires ends when it does.
async fn feeds_end_when_their_credential_lapses(app: TestApp) {
    use futures::StreamExt;
    let app = secured(&app).await;
    call(
        &app,
        Method::POST,
        "/streams/account-1",
        Some(ADMIN_KEY),
        Some(event("A", json!({}))),
    )
    .await;
    let (revoked, id) = create_key(&app, json!({"name": "f", "scopes": ["read"]})).await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let (expiring, _) = create_key(
        &app,
        json!({"name": "e", "scopes": ["read"], "expires_at": soon}),
    )
    .await;
    let open = |key: String| {
        let app = &app;
        async move {
            let response = app
                .client
                .get(format!("{}/categories/account?access_token={key}", app.url))
                .header("accept", "text/event-stream")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let mut body = response.bytes_stream();
            // The feed is live: its history and `caught-up` arrive.
            let mut seen = String::new();
            while !seen.contains("caught-up") {
                seen.push_str(&String::from_utf8_lossy(
                    &body.next().await.unwrap().unwrap(),
                ));
            }
            body
        }
    };
    let (mut first, mut second) = (open(revoked).await, open(expiring).await);
    let started = Instant::now();
    let revoke = call(
        &app,
        Method::DELETE,
        &format!("/keys/{id}"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while first.next().await.is_some() {}
    });
    assert!(ended.await.is_ok(), "the revoked key's feed stayed open");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while second.next().await.is_some() {}
    });
    assert!(ended.await.is_ok(), "the expired key's feed stayed open");
}

/// Tag and query reads list only the events of streams in reach; a
/// multi-stream append needs every one of its streams in reach, while its
/// condition is judged over the whole store.
async fn tag_reads_and_multi_stream_appends_follow_prefixes(app: TestApp) {
    let app = secured(&app).await;
    for stream in ["course-c1", "student-s1"] {
        let body = json!({"type": "Tagged", "data": {}, "tags": ["term:t1"]});
        let response = call(
            &app,
            Method::POST,
            &format!("/streams/{stream}"),
            Some(ADMIN_KEY),
            Some(body),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let (key, _) = create_key(
        &app,
        json!({"name": "c", "scopes": ["read", "write"], "streams": ["course-"]}),
    )
    .await;
    let read = call(&app, Method::GET, "/events?tag=term:t1", Some(&key), None).await;
    let page: Value = read.json().await.unwrap();
    let streams: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream"].as_str().unwrap())
        .collect();
    assert_eq!(streams, ["course-c1"]);
    let query = json!({"query": [{"tags": ["term:t1"]}]});
    let page: Value = call(&app, Method::POST, "/query", Some(&key), Some(query))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);

    let append = |streams: &[&str]| {
        let events: Vec<Value> = streams
            .iter()
            .map(|s| json!({"stream": s, "type": "A", "data": {}, "tags": ["term:t1"]}))
            .collect();
        json!({"events": events, "condition": {"fail_if_events_match": [{"tags": ["term:t1"]}], "after": 2}})
    };
    let out_of_reach = call(
        &app,
        Method::POST,
        "/events",
        Some(&key),
        Some(append(&["course-c2", "student-s2"])),
    )
    .await;
    assert_problem(out_of_reach, StatusCode::FORBIDDEN).await;
    let within = call(
        &app,
        Method::POST,
        "/events",
        Some(&key),
        Some(append(&["course-c2"])),
    )
    .await;
    assert_eq!(within.status(), StatusCode::CREATED);
    // The condition sees events out of the key's reach too.
    let late = call(
        &app,
        Method::POST,
        "/streams/student-s3",
        Some(ADMIN_KEY),
        Some(json!({"type": "A", "data": {}, "tags": ["term:t1"]})),
    )
    .await;
    assert_eq!(late.status(), StatusCode::CREATED);
    let mut body = append(&["course-c3"]);
    body["condition"]["after"] = json!(3);
    let refused = call(&app, Method::POST, "/events", Some(&key), Some(body)).await;
    let problem = assert_problem(refused, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(problem["first_match"], 4);
}

backend_tests!(
    tag_reads_and_multi_stream_appends_follow_prefixes,
    feeds_end_when_their_credential_lapses,
    the_first_stored_key_turns_auth_on,
    only_public_routes_answer_without_a_credential,
    bad_credentials_are_401_and_alike,
    keys_are_created_listed_and_revoked,
    scopes_open_what_they_name,
    prefixes_bound_every_read_and_write,
    feeds_take_an_access_token,
    jwts_signed_with_a_shared_secret,
);

/// Claims for a test token: `exp` an hour ahead unless given.
fn claims(extra: Value) -> Value {
    let mut claims = json!({"exp": chrono::Utc::now().timestamp() + 3600, "sub": "svc"});
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    claims
}

/// A JWT signed with an HMAC secret.
fn hmac_token(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// JWTs signed with the configured HMAC secret are accepted when their
/// signature, `exp`, `iss` and `aud` hold; scopes come from `cairn:` words
/// and prefixes from `cairn_streams`.
async fn jwts_signed_with_a_shared_secret(app: TestApp) {
    const SECRET: &str = "a shared secret of the identity provider";
    let app = app
        .sibling_with(&[
            "--jwt-secret",
            SECRET,
            "--jwt-issuer",
            "https://idp.test",
            "--jwt-audience",
            "cairn",
        ])
        .await;
    let good = json!({"iss": "https://idp.test", "aud": "cairn", "scope": "openid cairn:read cairn:write"});
    let token = hmac_token(SECRET, &claims(good.clone()));
    let append = call(
        &app,
        Method::POST,
        "/streams/a-1",
        Some(&token),
        Some(event("A", json!({}))),
    )
    .await;
    assert_eq!(append.status(), StatusCode::CREATED);
    let read = call(&app, Method::GET, "/all", Some(&token), None).await;
    assert_eq!(read.status(), StatusCode::OK);
    let admin = call(&app, Method::GET, "/keys", Some(&token), None).await;
    assert_problem(admin, StatusCode::FORBIDDEN).await;
    // An admin token limited to some streams may not administer.
    let narrow_admin = hmac_token(
        SECRET,
        &claims(
            json!({"iss": "https://idp.test", "aud": "cairn", "scope": "cairn:admin",
            "cairn_streams": ["a-"]}),
        ),
    );
    let keys = call(&app, Method::GET, "/keys", Some(&narrow_admin), None).await;
    assert_problem(keys, StatusCode::FORBIDDEN).await;
    let own = call(&app, Method::GET, "/streams/a-1", Some(&narrow_admin), None).await;
    assert_eq!(own.status(), StatusCode::OK);

    let scoped = hmac_token(
        SECRET,
        &claims(json!({"iss": "https://idp.test", "aud": "cairn",
        "scope": ["cairn:read"], "cairn_streams": ["b-"]})),
    );
    assert_problem(
        call(&app, Method::GET, "/streams/a-1", Some(&scoped), None).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        call(&app, Method::GET, "/categories/b", Some(&scoped), None)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims(good.clone()).to_string());
    let unsigned = format!("{header}.{body}.");
    let mut missing_exp = claims(good.clone());
    missing_exp.as_object_mut().unwrap().remove("exp");
    let refused = [
        (
            "wrong signature",
            hmac_token("another secret", &claims(good.clone())),
        ),
        ("alg none", unsigned),
        (
            "expired",
            hmac_token(
                SECRET,
                &claims(json!({"iss": "https://idp.test", "aud": "cairn", "exp": 1_000_000})),
            ),
        ),
        ("no exp", hmac_token(SECRET, &missing_exp)),
        (
            "wrong audience",
            hmac_token(
                SECRET,
                &claims(json!({"iss": "https://idp.test", "aud": "other"})),
            ),
        ),
        (
            "no audience",
            hmac_token(SECRET, &claims(json!({"iss": "https://idp.test"}))),
        ),
        (
            "wrong issuer",
            hmac_token(
                SECRET,
                &claims(json!({"iss": "https://evil.test", "aud": "cairn"})),
            ),
        ),
        (
            "unknown scope",
            hmac_token(
                SECRET,
                &claims(json!({"iss": "https://idp.test", "aud": "cairn", "scope": "cairn:root"})),
            ),
        ),
        ("garbage", "a.b.c".to_owned()),
    ];
    let mut details = Vec::new();
    for (what, token) in refused {
        let response = call(&app, Method::GET, "/streams/a-1", Some(&token), None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        details.push(assert_unauthenticated(response, &token).await);
    }
    // Each says which check failed.
    assert!(details[2].contains("expired"), "{details:?}");
    assert!(details[3].contains("exp"), "{details:?}");
    assert!(details[4].contains("audience"), "{details:?}");
    assert!(details[7].contains("cairn:root"), "{details:?}");
}

/// An identity provider's JWKS on a local port, whose answer a test sets.
struct Jwks {
    url: String,
    answer: Arc<Mutex<(StatusCode, String)>>,
}

impl Jwks {
    /// Serves `keys` as a JWKS.
    async fn serve(keys: Value) -> Jwks {
        let answer = Arc::new(Mutex::new((
            StatusCode::OK,
            json!({"keys": keys}).to_string(),
        )));
        let shared = answer.clone();
        let router = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (status, body) = shared.lock().unwrap().clone();
                async move { (status, body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Jwks { url, answer }
    }

    /// Answers with these keys from now on.
    fn publish(&self, keys: Value) {
        *self.answer.lock().unwrap() = (StatusCode::OK, json!({"keys": keys}).to_string());
    }

    /// Answers `500` from now on.
    fn fail(&self) {
        *self.answer.lock().unwrap() = (StatusCode::INTERNAL_SERVER_ERROR, "down".into());
    }
}

/// An ES256 signing key of an identity provider: its private half to sign
/// tokens, its public half as a JWK.
struct SigningKey {
    kid: String,
    private: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn generate(kid: &str) -> SigningKey {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        SigningKey {
            kid: kid.to_owned(),
            private: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.private).unwrap()
    }
}

/// Waits (polling, at most `patience`) until a request with `token` gets
/// `status`; how long that took.
async fn until_status(base: &str, token: &str, status: StatusCode, patience: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let response = send(base, Method::GET, "/streams", Some(token), None).await;
        if response.status() == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < patience,
            "still {} after {patience:?}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A JWKS at a URL: tokens of its keys are accepted, a rotation is picked
/// up on the next refresh, and a failed refresh keeps the last good set. An
/// HMAC token cannot pass by naming a JWKS key's `kid`.
#[tokio::test]
async fn jwts_checked_against_a_jwks_url_follow_its_rotation() {
    let (first, second) = (SigningKey::generate("one"), SigningKey::generate("two"));
    let jwks = Jwks::serve(json!([first.jwk])).await;
    let app = TestApp::sqlite().await;
    let app = app
        .sibling_with(&["--jwt-jwks", &jwks.url, "--jwt-jwks-refresh-secs", "1"])
        .await;
    let scope = claims(json!({"scope": "cairn:read"}));
    let (token_one, token_two) = (first.sign(&scope), second.sign(&scope));
    until_status(&app.url, &token_one, StatusCode::OK, Duration::ZERO).await;
    until_status(
        &app.url,
        &token_two,
        StatusCode::UNAUTHORIZED,
        Duration::ZERO,
    )
    .await;
    let mut forged = Header::new(Algorithm::HS256);
    forged.kid = Some("one".into());
    let forged =
        jsonwebtoken::encode(&forged, &scope, &EncodingKey::from_secret(b"guess")).unwrap();
    until_status(&app.url, &forged, StatusCode::UNAUTHORIZED, Duration::ZERO).await;

    jwks.publish(json!([second.jwk]));
    until_status(&app.url, &token_two, StatusCode::OK, Duration::from_secs(5)).await;
    until_status(
        &app.url,
        &token_one,
        StatusCode::UNAUTHORIZED,
        Duration::ZERO,
    )
    .await;
    jwks.fail();
    // Two refresh intervals later the failed fetches have kept the set.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    until_status(&app.url, &token_two, StatusCode::OK, Duration::ZERO).await;
}

/// A JWKS file works as a URL does.
#[tokio::test]
async fn jwts_checked_against_a_jwks_file() {
    let key = SigningKey::generate("file");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({"keys": [key.jwk]}).to_string()).unwrap();
    let app = TestApp::sqlite().await;
    let app = app
        .sibling_with(&["--jwt-jwks", path.to_str().unwrap()])
        .await;
    let token = key.sign(&claims(json!({"scope": "cairn:admin"})));
    until_status(&app.url, &token, StatusCode::OK, Duration::ZERO).await;
    let other = SigningKey::generate("file").sign(&claims(json!({"scope": "cairn:admin"})));
    until_status(&app.url, &other, StatusCode::UNAUTHORIZED, Duration::ZERO).await;
}

/// A key created on one instance is accepted by another process on the
/// same Postgres, and once revoked is refused by it within a second.
#[tokio::test]
async fn revocation_reaches_another_process_within_a_second() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    let app = secured(&app).await;
    let other = crate::binary::Server::start_with(&[
        "--database-url",
        &app.database_url,
        "--admin-key",
        ADMIN_KEY,
    ])
    .await;
    let (key, id) = create_key(&app, json!({"name": "x", "scopes": ["read"]})).await;
    until_status(&other.url, &key, StatusCode::OK, Duration::from_secs(1)).await;
    let revoke = call(
        &app,
        Method::DELETE,
        &format!("/keys/{id}"),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    let took = until_status(
        &other.url,
        &key,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(1),
    )
    .await;
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// Runs the `cairn` binary to its end (within 20 s) with `DATABASE_URL`
/// and `RUST_LOG` unset; its exit status, standard output and error.
async fn run_cairn(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("cairn ended")
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A free port on the loopback interface.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Off loopback the server will not start without credentials unless told
/// `--insecure-no-auth`; a malformed admin key stops it anywhere; a key
/// made with `cairn keys create` is a credential, and `cairn keys list`
/// and `revoke` manage it while the server runs.
#[tokio::test]
async fn credentials_decide_whether_and_how_the_server_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (started, _, error) = run_cairn(&["--listen", "0.0.0.0:0", "--data-dir", data]).await;
    assert!(!started);
    assert!(error.contains("--insecure-no-auth"), "{error}");
    let weak = [
        "--jwt-secret",
        "too short",
        "--data-dir",
        data,
        "--listen",
        "127.0.0.1:0",
    ];
    let (started, _, error) = run_cairn(&weak).await;
    assert!(!started && error.contains("--jwt-secret"), "{error}");
    let short = [
        "--admin-key",
        "cairn_short",
        "--data-dir",
        data,
        "--listen",
        "127.0.0.1:0",
    ];
    let (started, _, error) = run_cairn(&short).await;
    assert!(!started);
    assert!(
        error.contains("--admin-key") && !error.contains("cairn_short"),
        "{error}"
    );

    let port = free_port().to_string();
    let insecure = crate::binary::Server::start_with(&[
        "--data-dir",
        data,
        "--listen",
        &format!("0.0.0.0:{port}"),
        "--insecure-no-auth",
    ])
    .await;
    assert_eq!(
        send(&insecure.url, Method::GET, "/all", None, None)
            .await
            .status(),
        StatusCode::OK
    );
    drop(insecure);

    let create = [
        "keys",
        "create",
        "--data-dir",
        data,
        "--name",
        "ops",
        "--scope",
        "admin",
    ];
    let (created, out, error) = run_cairn(&create).await;
    assert!(created, "{error}");
    let key = out.lines().last().unwrap().to_owned();
    assert!(key.starts_with("cairn_"), "{out}");
    let (listed, out, _) = run_cairn(&["keys", "list", "--data-dir", data]).await;
    assert!(
        listed && out.contains("\"ops\"") && !out.contains(&key[6..]),
        "{out}"
    );
    let id = out.split_whitespace().next().unwrap().to_owned();

    let port = free_port().to_string();
    let server = crate::binary::Server::start_with(&[
        "--data-dir",
        data,
        "--listen",
        &format!("0.0.0.0:{port}"),
    ])
    .await;
    let without = send(&server.url, Method::GET, "/keys", None, None).await;
    assert_unauthenticated(without, "").await;
    let with = send(&server.url, Method::GET, "/keys", Some(&key), None).await;
    assert_eq!(with.status(), StatusCode::OK);
    // Off loopback with auth on, any Host is answered.
    let response = reqwest::Client::new()
        .get(format!("{}/keys", server.url))
        .bearer_auth(&key)
        .header("host", "cairn.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let (revoked, _, error) = run_cairn(&["keys", "revoke", &id, "--data-dir", data]).await;
    assert!(revoked, "{error}");
    until_status(
        &server.url,
        &key,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(1),
    )
    .await;
    let (again, _, error) = run_cairn(&["keys", "revoke", &id, "--data-dir", data]).await;
    assert!(!again && error.contains(&id), "{error}");
    let bad_scope = [
        "keys",
        "create",
        "--data-dir",
        data,
        "--name",
        "x",
        "--scope",
        "root",
    ];
    assert!(!run_cairn(&bad_scope).await.0);
}

/// No credential reaches the log, even at debug level: not a bearer
/// header, not an `access_token` in a feed's URI, not the admin key.
#[tokio::test]
async fn credentials_never_reach_the_log() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-key",
            ADMIN_KEY,
        ])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut healthy = false;
    for _ in 0..200 {
        if reqwest::get(format!("{url}/health")).await.is_ok() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy);
    let append = send(
        &url,
        Method::POST,
        "/streams/a-1",
        Some(ADMIN_KEY),
        Some(event("A", json!({}))),
    )
    .await;
    assert_eq!(append.status(), StatusCode::CREATED);
    let feed = reqwest::Client::new()
        .get(format!("{url}/streams/a-1?access_token={ADMIN_KEY}"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    drop(feed);
    send(
        &url,
        Method::GET,
        "/all",
        Some("cairn_wrong-key-for-the-log"),
        None,
    )
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let mut log = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("/streams/a-1"), "the log is silent: {log}");
    for secret in [&ADMIN_KEY[6..], "wrong-key-for-the-log", "access_token"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

/// CORS lets browsers send `Authorization`, and a preflight (which carries
/// no credential) is answered even with auth on.
#[tokio::test]
async fn cors_preflights_allow_the_authorization_header() {
    let app = TestApp::sqlite().await;
    let app = app
        .sibling_with(&[
            "--admin-key",
            ADMIN_KEY,
            "--cors-origin",
            "http://console.test",
        ])
        .await;
    let preflight = app
        .client
        .request(Method::OPTIONS, format!("{}/keys/x", app.url))
        .header("origin", "http://console.test")
        .header("access-control-request-method", "DELETE")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    let header = |name: &str| preflight.headers()[name].to_str().unwrap().to_lowercase();
    assert!(header("access-control-allow-headers").contains("authorization"));
    assert!(header("access-control-allow-methods").contains("delete"));
}

/// The OpenAPI document declares the bearer scheme, and every operation
/// its security requirement (none for `/health`, else the bearer
/// credential) and the shared problems it can answer: `401` and `403` when
/// guarded, `408`, `421` and `500` always, `413` and `415` with a body, each
/// a problem+json (no body for `HEAD`).
#[tokio::test]
async fn the_openapi_document_declares_security_on_every_route() {
    let app = TestApp::sqlite().await;
    let document = app.get_json("/openapi.json").await;
    let scheme = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (scheme["type"].as_str(), scheme["scheme"].as_str()),
        (Some("http"), Some("bearer"))
    );
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let public = path == "/health";
            let expected = if public {
                json!([{}])
            } else {
                json!([{"bearer": []}])
            };
            assert_eq!(operation["security"], expected, "{method} {path}");
            let mut shared = vec!["408", "421", "500"];
            if !public {
                shared.extend(["401", "403"]);
            }
            if operation.get("requestBody").is_some() {
                shared.extend(["413", "415"]);
            }
            for status in shared {
                let response = &operation["responses"][status];
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {status}"
                );
                let schema = &response["content"]["application/problem+json"]["schema"]["$ref"];
                if method == "head" {
                    assert!(
                        response.get("content").is_none(),
                        "{method} {path} {status}"
                    );
                } else {
                    assert_eq!(
                        schema, "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    assert!(operations >= 19, "{operations} operations");
}
