//! `/snapshots/{stream}`: post and read snapshots of an aggregate.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use super::auth::{Caller, Read, Write};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{self, AcceptsJson, JsonBody, Path, Query};
use super::wire::Snapshot;
use crate::names;
use crate::store::{NewSnapshot, SnapshotError};

/// The snapshot routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_snapshot, get_snapshot))
}

/// A snapshot as posted.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotWrite {
    /// The stream version the state summarises (events 0..=version).
    #[schema(minimum = 0)]
    version: i64,
    /// The state: any JSON value, returned exactly as written.
    #[schema(value_type = serde_json::Value)]
    state: Box<RawValue>,
    /// What kind of state it is (named like a stream).
    #[serde(rename = "type")]
    snapshot_type: Option<String>,
}

/// Stores a snapshot of a stream; every snapshot is kept.
#[utoipa::path(
    post,
    path = "/snapshots/{stream}",
    tag = "snapshots",
    params(("stream" = String, Path, description = "The stream")),
    request_body(content = SnapshotWrite, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored", body = Snapshot),
        (status = 404, description = "The stream has no events", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The version is beyond the stream's", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn post_snapshot(
    caller: Caller<Write>,
    State(state): State<AppState>,
    Path(stream): Path<String>,
    _: AcceptsJson,
    JsonBody(body): JsonBody<SnapshotWrite>,
) -> ApiResult<(StatusCode, Json<Snapshot>)> {
    names::check_name("a stream name", &stream).map_err(ApiError::BadRequest)?;
    caller.stream(&stream)?;
    let snapshot = NewSnapshot {
        stream,
        version: body.version,
        snapshot_type: body.snapshot_type,
        state: body.state,
    };
    check_snapshot(&snapshot, state.limits.max_json_depth).map_err(ApiError::BadRequest)?;
    let stored = state
        .store
        .append_snapshot(snapshot)
        .await
        .map_err(|error| match error {
            SnapshotError::NoStream(_) => ApiError::NotFound(error.to_string()),
            SnapshotError::BeyondVersion { .. } => ApiError::Conflict(error.to_string()),
            SnapshotError::Store(error) => error.into(),
        })?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

/// Checks a snapshot's fields but its stream's name, as a post takes them
/// and an import restores them: a version ≥ 0, a type named like a stream,
/// a state no deeper than `max_depth`.
pub fn check_snapshot(snapshot: &NewSnapshot, max_depth: usize) -> Result<(), String> {
    if snapshot.version < 0 {
        return Err("version must be ≥ 0".into());
    }
    if let Some(snapshot_type) = &snapshot.snapshot_type {
        names::check_name("a snapshot type", snapshot_type)?;
    }
    if super::extract::nests_deeper_than(snapshot.state.get(), max_depth) {
        return Err(format!("state may nest at most {max_depth} levels deep"));
    }
    Ok(())
}

/// The query of a snapshot read.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SnapshotParams {
    /// Only snapshots with version ≤ N (default: the highest; `-1`: before
    /// the stream's first event, so none).
    #[param(minimum = -1)]
    until_version: Option<i64>,
}

/// The newest snapshot of a stream (of equal versions, the one posted last).
#[utoipa::path(
    get,
    path = "/snapshots/{stream}",
    tag = "snapshots",
    params(("stream" = String, Path, description = "The stream"), SnapshotParams),
    responses(
        (status = 200, description = "The snapshot", body = Snapshot),
        (status = 404, description = "No snapshot within the bound", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_snapshot(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Path(stream): Path<String>,
    _: AcceptsJson,
    Query(params): Query<SnapshotParams>,
) -> ApiResult<Json<Snapshot>> {
    names::check_name("a stream name", &stream).map_err(ApiError::BadRequest)?;
    caller.stream(&stream)?;
    let until_version = extract::until_version(params.until_version)?;
    let snapshot = state.store.snapshot(&stream, until_version).await?;
    snapshot
        .map(|snapshot| Json(snapshot.into()))
        .ok_or_else(|| ApiError::NotFound(format!("stream {stream} has no such snapshot")))
}
