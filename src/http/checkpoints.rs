//! `/checkpoints/{consumer}`: a consumer's durable position.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use super::auth::{Caller, Read, Write};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{AcceptsJson, JsonBody, Path};
use super::wire::Checkpoint;
use crate::names;

/// The checkpoint routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(put_checkpoint, get_checkpoint))
}

/// A checkpoint as written.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointWrite {
    /// The consumer's position (≥ 0): a feed with `checkpoint=` starts right after it.
    #[schema(minimum = 0)]
    position: i64,
}

/// Checks a consumer name from the path.
fn check_consumer(consumer: &str) -> ApiResult<()> {
    names::check_name("a consumer name", consumer).map_err(ApiError::BadRequest)
}

/// Stores a consumer's position.
#[utoipa::path(
    put,
    path = "/checkpoints/{consumer}",
    tag = "checkpoints",
    params(("consumer" = String, Path, description = "The consumer, named like a stream")),
    request_body(content = CheckpointWrite, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored", body = Checkpoint),
        (status = 409, description = "The position is beyond the head of the log", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn put_checkpoint(
    caller: Caller<Write>,
    State(state): State<AppState>,
    Path(consumer): Path<String>,
    _: AcceptsJson,
    JsonBody(body): JsonBody<CheckpointWrite>,
) -> ApiResult<Json<Checkpoint>> {
    check_consumer(&consumer)?;
    caller.consumer(&consumer)?;
    if body.position < 0 {
        return Err(ApiError::BadRequest("position must be ≥ 0".into()));
    }
    // A checkpoint ahead of the log would silently skip every event up to
    // it. The head never decreases, so one checked now stays valid.
    let head = state.store.head().await?;
    if body.position > head {
        return Err(ApiError::Conflict(format!(
            "position {} is beyond the head of the log ({head})",
            body.position
        )));
    }
    let stored = state.store.put_checkpoint(&consumer, body.position).await?;
    Ok(Json(stored.into()))
}

/// A consumer's stored position.
#[utoipa::path(
    get,
    path = "/checkpoints/{consumer}",
    tag = "checkpoints",
    params(("consumer" = String, Path, description = "The consumer")),
    responses(
        (status = 200, description = "The checkpoint", body = Checkpoint),
        (status = 404, description = "Never set", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_checkpoint(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Path(consumer): Path<String>,
    _: AcceptsJson,
) -> ApiResult<Json<Checkpoint>> {
    check_consumer(&consumer)?;
    caller.consumer(&consumer)?;
    let checkpoint = state.store.checkpoint(&consumer).await?;
    checkpoint
        .map(|checkpoint| Json(checkpoint.into()))
        .ok_or_else(|| ApiError::NotFound(format!("consumer {consumer} has no checkpoint")))
}
