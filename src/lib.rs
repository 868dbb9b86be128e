//! Cairn: an HTTP/JSON event store.
//!
//! Data flows one way: a request enters [`http`] (validated, headers mapped),
//! calls the [`store::Store`] trait, and a backend module speaks SQL.
//!
//! - [`config`]: flags and environment.
//! - [`auth`]: credentials (API keys, JWTs) and what they grant.
//! - [`cli`]: the client commands (`cairn append`, `read`, `tail`…).
//! - [`names`]: stream, category and cardinal-id rules, the consumer-group hash.
//! - [`http`]: routes, extractors, problem+json errors, the OpenAPI document.
//! - [`store`]: the `Store` trait, group commit, the Postgres and SQLite backends.
//! - [`feed`]: live feeds: catch-up, then live, never a gap.
//! - [`metrics`]: Prometheus metrics.

pub mod auth;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod feed;
pub mod http;
pub mod metrics;
pub mod names;
pub mod retention;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::HeaderValue;

use auth::{AuthConfig, Authenticator, KeySecret};
use config::{Config, StoreArgs};
use dispatch::Dispatcher;
use feed::{FeedLimits, FeedShutdown, Feeds};
use http::server::ServerLimits;
use http::{AppState, Limits};
use metrics::Metrics;
use store::SharedStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Opens the store the configuration names: Postgres for a `postgres://` URL,
/// SQLite for a `sqlite:` URL, and with no URL the embedded SQLite store in
/// the data directory (created if missing).
pub async fn open_store(config: &StoreArgs) -> anyhow::Result<SharedStore> {
    let url = match &config.database_url {
        Some(url) => url.clone(),
        None => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!(
                    "cannot create the data directory {}",
                    config.data_dir.display()
                )
            })?;
            format!("sqlite://{}", config.data_dir.join("cairn.db").display())
        }
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = store::postgres::PostgresStore::connect(&url, config.pool_size)
            .await
            .context("cannot open the Postgres store")?;
        tracing::info!(store = "postgres", at = %redact_password(&url), "store opened");
        return Ok(Arc::new(store));
    }
    if url.starts_with("sqlite:") {
        let store = store::sqlite::SqliteStore::open(&url, config.pool_size)
            .await
            .with_context(|| format!("cannot open the SQLite store {url}"))?;
        tracing::info!(store = "sqlite", at = %url, "store opened");
        return Ok(Arc::new(store));
    }
    anyhow::bail!("DATABASE_URL must start with postgres://, postgresql:// or sqlite:")
}

/// A database URL fit for a log line: any password replaced by `***`.
fn redact_password(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| {
        let (credentials, host) = rest.split_once('@')?;
        let (user, _) = credentials.split_once(':')?;
        Some(format!("{scheme}://{user}:***@{host}"))
    }) {
        Some(redacted) => redacted,
        None => url.to_owned(),
    }
}

/// The application over a store, configured: what [`App::serve`] serves.
pub struct App {
    /// The routes and middleware.
    pub router: Router,
    /// Ends the live feeds at shutdown.
    pub feeds: FeedShutdown,
    /// Ends delivery feeds and push delivery at shutdown.
    pub dispatch: watch::Sender<bool>,
    /// Push delivery, which gives up its terms when it ends.
    pub push: tokio::task::JoinHandle<()>,
    /// How the server treats connections.
    pub limits: ServerLimits,
    /// The metrics, for the count of open connections.
    pub metrics: Arc<Metrics>,
}

impl App {
    /// Serves on `listener` until `shutdown` resolves; then ends the feeds
    /// and lets requests under way finish within the grace period.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let (feeds, dispatch) = (self.feeds, self.dispatch);
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: ending feeds, finishing requests");
            feeds.close();
            dispatch.send_replace(true);
        };
        let open = self.metrics.connections_open.clone();
        http::server::serve(listener, self.router, &self.limits, open, shutdown).await;
        if let Err(error) = self.push.await {
            tracing::warn!(%error, "push delivery ended abnormally");
        }
    }
}

/// Builds the application over a store from the configuration.
pub async fn app(config: &Config, store: SharedStore) -> anyhow::Result<App> {
    let metrics = Arc::new(Metrics::new());
    let fallbacks = metrics.feed_fallbacks.clone();
    let feed_limits = FeedLimits {
        max_feeds: config.max_feeds,
        live_buffer: config.live_buffer,
        live_buffer_bytes: config.live_buffer_bytes,
        page_bytes: config.max_page_bytes,
    };
    let authenticator = Authenticator::start(&auth_config(config)?, store.clone()).await?;
    let loopback = config.listen.ip().is_loopback();
    if !loopback && !config.insecure_no_auth && !authenticator.is_on() {
        anyhow::bail!(
            "refusing to serve {} without authentication: configure --admin-key, \
             --jwt-jwks or --jwt-secret, create a key with `cairn keys create`, \
             or say --insecure-no-auth",
            config.listen
        );
    }
    let (feeds, shutdown) = Feeds::start(store.clone(), feed_limits, fallbacks).await?;
    let (dispatch, closing) = watch::channel(false);
    let dispatcher = Dispatcher::new(
        store.clone(),
        metrics.clone(),
        config.max_delivery_feeds,
        closing.clone(),
    );
    tokio::spawn(retention::sweep_every(
        store.clone(),
        feeds.clone(),
        Duration::from_secs(config.retention_sweep_secs.max(1)),
        closing.clone(),
    ));
    let push = tokio::spawn(dispatch::push::run(dispatcher.clone(), closing));
    let state = AppState {
        dispatcher,
        store,
        feeds,
        authenticator,
        limits: Limits {
            max_body_bytes: config.max_body_bytes,
            max_body_bytes_in_flight: config.max_body_bytes_in_flight,
            max_batch_events: config.max_batch_events,
            max_json_depth: config.max_json_depth,
            max_page_size: config.max_page_size,
            max_page_bytes: config.max_page_bytes,
            trace: store::TraceLimits {
                max_depth: config.trace_max_depth,
                max_events: config.trace_max_events,
            },
            keep_alive: Duration::from_secs(config.keep_alive_secs),
            request_timeout: Duration::from_secs(config.request_timeout_secs),
        },
        metrics: metrics.clone(),
        bodies: Arc::new(tokio::sync::Semaphore::new(
            config
                .max_body_bytes_in_flight
                .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        )),
    };
    Ok(App {
        router: http::app(state, cors_origins(&config.cors_origins)?, loopback),
        feeds: shutdown,
        dispatch,
        push,
        limits: ServerLimits {
            header_timeout: Duration::from_secs(config.header_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            max_connections: config.max_connections,
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        },
        metrics,
    })
}

/// The credentials the configuration names, checked.
fn auth_config(config: &Config) -> anyhow::Result<AuthConfig> {
    let admin_key = config
        .admin_key
        .as_deref()
        .map(KeySecret::configured)
        .transpose()
        .map_err(|problem| anyhow::anyhow!("--admin-key: {problem}"))?;
    let keys = match (&config.jwt_jwks, &config.jwt_secret) {
        (Some(jwks), _) => Some(auth::jwt::JwtKeySource::jwks(jwks)?),
        (None, Some(secret)) => {
            // RFC 7518 §3.2: an HMAC key at least as long as the hash.
            anyhow::ensure!(
                secret.len() >= auth::jwt::MIN_SECRET_BYTES,
                "--jwt-secret must hold at least {} bytes",
                auth::jwt::MIN_SECRET_BYTES
            );
            Some(auth::jwt::JwtKeySource::Secret(secret.clone()))
        }
        (None, None) => None,
    };
    let jwt = keys.map(|keys| auth::jwt::JwtConfig {
        keys,
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        refresh: Duration::from_secs(config.jwt_jwks_refresh_secs.max(1)),
    });
    Ok(AuthConfig { admin_key, jwt })
}

/// The CORS origins configured: none (CORS off), `*` alone (any origin), or
/// a list of origins, each trimmed (`"http://a, http://b"` names two).
fn cors_origins(configured: &[String]) -> anyhow::Result<http::CorsOrigins> {
    let origins: Vec<&str> = configured
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    match origins.as_slice() {
        [] => Ok(http::CorsOrigins::None),
        ["*"] => Ok(http::CorsOrigins::Any),
        list if list.contains(&"*") => {
            anyhow::bail!("the CORS origin `*` allows every origin: give it alone")
        }
        list => list
            .iter()
            .map(|o| HeaderValue::from_str(o).with_context(|| format!("bad CORS origin {o:?}")))
            .collect::<anyhow::Result<Vec<_>>>()
            .map(http::CorsOrigins::List),
    }
}
