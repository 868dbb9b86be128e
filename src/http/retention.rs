//! Retention and deletion (administration): policies of streams and
//! categories, truncation, and deleting a stream behind a tombstone.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use super::auth::{Admin, Caller};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{AcceptsJson, JsonBody, Path};
use crate::names;
use crate::store::{EraseError, Erased, RetentionPolicy, RetentionTarget};

/// The retention and deletion routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            put_stream_retention,
            get_stream_retention,
            delete_stream_retention
        ))
        .routes(routes!(
            put_category_retention,
            get_category_retention,
            delete_category_retention
        ))
        .routes(routes!(truncate))
        .routes(routes!(delete_stream))
}

/// A retention policy: either bound or both.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// Events older than this many seconds are erased (≥ 1).
    #[schema(minimum = 1, example = 2592000)]
    #[serde(default)]
    max_age_s: Option<i64>,
    /// Only this many of each stream's newest events are kept (≥ 1).
    #[schema(minimum = 1, example = 1000)]
    #[serde(default)]
    max_count: Option<i64>,
}

impl From<RetentionPolicy> for PolicyBody {
    fn from(policy: RetentionPolicy) -> Self {
        PolicyBody {
            max_age_s: policy.max_age_s(),
            max_count: policy.max_count(),
        }
    }
}

/// What a truncation keeps.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TruncateBody {
    /// Events at positions below this are erased (0 to version + 1).
    #[schema(minimum = 0)]
    before: i64,
}

/// What an erasure of a stream did.
#[derive(Serialize, ToSchema)]
pub struct ErasedBody {
    /// The stream.
    stream: String,
    /// Its version: erasure never changes it.
    version: i64,
    /// How many events were erased.
    erased: u64,
}

/// A stream's name from the path, checked.
fn stream_target(stream: String) -> ApiResult<RetentionTarget> {
    names::check_name("a stream name", &stream).map_err(ApiError::BadRequest)?;
    Ok(RetentionTarget::Stream(stream))
}

/// A category's name from the path, checked.
fn category_target(category: String) -> ApiResult<RetentionTarget> {
    names::check_category(&category).map_err(ApiError::BadRequest)?;
    Ok(RetentionTarget::Category(category))
}

/// Stores a policy (a deleted stream's name takes none).
async fn put_policy(
    state: &AppState,
    target: RetentionTarget,
    body: PolicyBody,
) -> ApiResult<(StatusCode, Json<PolicyBody>)> {
    let policy =
        RetentionPolicy::new(body.max_age_s, body.max_count).map_err(ApiError::BadRequest)?;
    if let RetentionTarget::Stream(stream) = &target {
        refuse_deleted(state, stream).await?;
    }
    let created = state.store.put_retention(&target, policy).await?;
    let status = match created {
        true => StatusCode::CREATED,
        false => StatusCode::OK,
    };
    Ok((status, Json(policy.into())))
}

/// A target's policy.
async fn get_policy(state: &AppState, target: RetentionTarget) -> ApiResult<Json<PolicyBody>> {
    let policy = state.store.retention(&target).await?;
    policy
        .map(|policy| Json(policy.into()))
        .ok_or_else(|| ApiError::NotFound(format!("{} has no retention policy", target.name())))
}

/// Deletes a target's policy.
async fn delete_policy(state: &AppState, target: RetentionTarget) -> ApiResult<StatusCode> {
    match state.store.delete_retention(&target).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::NotFound(format!(
            "{} has no retention policy",
            target.name()
        ))),
    }
}

/// `410` for a deleted stream's name.
pub async fn refuse_deleted(state: &AppState, stream: &str) -> ApiResult<()> {
    match state.store.tombstone(stream).await? {
        Some(tombstone) => Err(ApiError::Gone(format!(
            "stream {stream} was deleted at version {}",
            tombstone.version
        ))),
        None => Ok(()),
    }
}

/// Sets a stream's retention policy, which wins over its category's.
#[utoipa::path(
    put,
    path = "/streams/{stream}/retention",
    tag = "retention",
    params(("stream" = String, Path, description = "The stream")),
    request_body(content = PolicyBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Set", body = PolicyBody),
        (status = 200, description = "Replaced", body = PolicyBody),
        (status = 410, description = "The stream was deleted", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn put_stream_retention(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(stream): Path<String>,
    _: AcceptsJson,
    JsonBody(body): JsonBody<PolicyBody>,
) -> ApiResult<(StatusCode, Json<PolicyBody>)> {
    put_policy(&state, stream_target(stream)?, body).await
}

/// A stream's own retention policy.
#[utoipa::path(
    get,
    path = "/streams/{stream}/retention",
    tag = "retention",
    params(("stream" = String, Path, description = "The stream")),
    responses(
        (status = 200, description = "The policy", body = PolicyBody),
        (status = 404, description = "The stream has no policy of its own", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_stream_retention(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(stream): Path<String>,
    _: AcceptsJson,
) -> ApiResult<Json<PolicyBody>> {
    get_policy(&state, stream_target(stream)?).await
}

/// Deletes a stream's own retention policy (its category's applies again).
#[utoipa::path(
    delete,
    path = "/streams/{stream}/retention",
    tag = "retention",
    params(("stream" = String, Path, description = "The stream")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "The stream has no policy of its own", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_stream_retention(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(stream): Path<String>,
) -> ApiResult<StatusCode> {
    delete_policy(&state, stream_target(stream)?).await
}

/// Sets the retention policy of a category's streams that have none of their own.
#[utoipa::path(
    put,
    path = "/categories/{category}/retention",
    tag = "retention",
    params(("category" = String, Path, description = "The category")),
    request_body(content = PolicyBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Set", body = PolicyBody),
        (status = 200, description = "Replaced", body = PolicyBody),
    )
)]
async fn put_category_retention(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(category): Path<String>,
    _: AcceptsJson,
    JsonBody(body): JsonBody<PolicyBody>,
) -> ApiResult<(StatusCode, Json<PolicyBody>)> {
    put_policy(&state, category_target(category)?, body).await
}

/// A category's retention policy.
#[utoipa::path(
    get,
    path = "/categories/{category}/retention",
    tag = "retention",
    params(("category" = String, Path, description = "The category")),
    responses(
        (status = 200, description = "The policy", body = PolicyBody),
        (status = 404, description = "The category has no policy", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_category_retention(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(category): Path<String>,
    _: AcceptsJson,
) -> ApiResult<Json<PolicyBody>> {
    get_policy(&state, category_target(category)?).await
}

/// Deletes a category's retention policy.
#[utoipa::path(
    delete,
    path = "/categories/{category}/retention",
    tag = "retention",
    params(("category" = String, Path, description = "The category")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "The category has no policy", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_category_retention(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(category): Path<String>,
) -> ApiResult<StatusCode> {
    delete_policy(&state, category_target(category)?).await
}

/// Answers an erasure.
fn erased(stream: String, result: Result<Erased, EraseError>) -> ApiResult<Json<ErasedBody>> {
    match result {
        Ok(Erased { version, erased }) => Ok(Json(ErasedBody {
            stream,
            version,
            erased,
        })),
        Err(error @ EraseError::NotFound(_)) => Err(ApiError::NotFound(error.to_string())),
        Err(error @ EraseError::Deleted(_)) => Err(ApiError::Gone(error.to_string())),
        Err(error @ EraseError::BeyondVersion { .. }) => Err(ApiError::Conflict(error.to_string())),
        Err(EraseError::Store(error)) => Err(error.into()),
    }
}

/// Erases a stream's events below a position; its version does not change,
/// and reads then start there.
#[utoipa::path(
    post,
    path = "/streams/{stream}/truncate",
    tag = "retention",
    params(("stream" = String, Path, description = "The stream")),
    request_body(content = TruncateBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Erased", body = ErasedBody),
        (status = 404, description = "The stream has no events and never had", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`before` is beyond the stream's version + 1", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream was deleted", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn truncate(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(stream): Path<String>,
    _: AcceptsJson,
    JsonBody(body): JsonBody<TruncateBody>,
) -> ApiResult<Json<ErasedBody>> {
    names::check_name("a stream name", &stream).map_err(ApiError::BadRequest)?;
    if body.before < 0 {
        return Err(ApiError::BadRequest("before must be ≥ 0".into()));
    }
    let result = state.store.truncate(&stream, body.before).await;
    state.feeds.erased();
    erased(stream, result)
}

/// Erases a stream's events and snapshots and leaves a tombstone: from then
/// on its reads, feeds and appends answer `410`, and its open feeds end.
#[utoipa::path(
    delete,
    path = "/streams/{stream}",
    tag = "retention",
    params(("stream" = String, Path, description = "The stream")),
    responses(
        (status = 200, description = "Deleted", body = ErasedBody),
        (status = 404, description = "No such stream", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Deleted already", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_stream(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(stream): Path<String>,
    _: AcceptsJson,
) -> ApiResult<Json<ErasedBody>> {
    names::check_name("a stream name", &stream).map_err(ApiError::BadRequest)?;
    let result = state.store.delete_stream(&stream).await;
    state.feeds.erased();
    erased(stream, result)
}
