//! Cairn: an HTTP/JSON event store.
//!
//! Data flows one way: a request enters [`http`] (validated, headers mapped),
//! calls the [`store::Store`] trait, and a backend module speaks SQL.
//!
//! - [`config`]: flags and environment.
//! - [`names`]: stream, category and cardinal-id rules, the consumer-group hash.
//! - [`http`]: routes, extractors, problem+json errors, the OpenAPI document.
//! - [`store`]: the `Store` trait, group commit, the Postgres backend.
//! - [`metrics`]: Prometheus metrics.

pub mod config;
pub mod http;
pub mod metrics;
pub mod names;
pub mod store;

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::HeaderValue;

use config::Config;
use http::{AppState, Limits};
use store::SharedStore;

/// Opens the store the configuration names.
pub async fn open_store(config: &Config) -> anyhow::Result<SharedStore> {
    let url = config.database_url.as_deref().context(
        "no store configured: set DATABASE_URL (or --database-url) to postgres://user@host/db",
    )?;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = store::postgres::PostgresStore::connect(url, config.pool_size)
            .await
            .context("cannot open the Postgres store")?;
        return Ok(Arc::new(store));
    }
    anyhow::bail!("DATABASE_URL must start with postgres:// or postgresql://")
}

/// The application over a store, configured.
pub fn app(config: &Config, store: SharedStore) -> anyhow::Result<Router> {
    let state = AppState {
        store,
        limits: Limits {
            max_body_bytes: config.max_body_bytes,
            max_batch_events: config.max_batch_events,
            max_page_size: config.max_page_size,
        },
        metrics: Arc::default(),
    };
    let origins = config
        .cors_origins
        .iter()
        .map(|o| HeaderValue::from_str(o).with_context(|| format!("bad CORS origin {o:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(http::app(state, &origins))
}
