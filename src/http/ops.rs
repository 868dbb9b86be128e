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
use crate::metrics::{Metrics, SubscriptionGauges};

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
    // The subscriptions' gauges are read now; without the store, the rest
    // still answers.
    match state.store.subscriptions().await {
        Ok(subscriptions) => {
            let gauges: Vec<SubscriptionGauges> = subscriptions
                .into_iter()
                .map(|s| SubscriptionGauges {
                    name: s.name,
                    lag: s.lag,
                    in_flight: s.in_flight,
                    parked: s.parked,
                })
                .collect();
            metrics.observe_subscriptions(&gauges);
        }
        Err(error) => tracing::warn!(%error, "cannot read the subscriptions for /metrics"),
    }
    (
        [(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
        metrics.render(),
    )
}

/// A count as a gauge's value.
fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
