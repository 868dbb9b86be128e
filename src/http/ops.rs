//! Operations: `/health` and `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use super::auth::{Admin, Caller};
use super::error::ApiResult;
use crate::metrics::Metrics;

/// The operations routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(metrics))
}

/// A healthy answer.
#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// Whether the service and its store answer.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "The store answers", body = Health),
    )
)]
async fn health(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    state.store.health().await?;
    Ok(Json(Health { status: "ok" }))
}

/// Metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Metrics in the OpenMetrics text format, which Prometheus reads", body = String, content_type = "application/openmetrics-text"))
)]
async fn metrics(_: Caller<Admin>, State(state): State<AppState>) -> impl IntoResponse {
    let metrics = &state.metrics;
    metrics.feeds_open.set(gauge(state.feeds.open_count()));
    let pool = state.store.pool_use();
    metrics.store_connections.set(gauge(pool.open));
    metrics.store_connections_idle.set(gauge(pool.idle));
    (
        [(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
        metrics.render(),
    )
}

/// A count as a gauge's value.
fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
