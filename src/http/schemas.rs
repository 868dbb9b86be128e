//! `/schemas/{type}`: one JSON Schema per event type, checked on every
//! append from the moment it is stored (administration).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use super::auth::{Admin, Caller};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{AcceptsJson, JsonBytes, Path, nests_deeper_than};
use super::wire::serialize_time;
use crate::names;
use crate::store::{EventSchema, SchemaDocument};

/// The schema routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_schema, get_schema, delete_schema))
        .routes(routes!(list_schemas))
}

/// A registered schema.
#[derive(Serialize, ToSchema)]
pub struct SchemaView {
    /// The event type it applies to.
    #[serde(rename = "type")]
    event_type: String,
    /// The JSON Schema (draft 2020-12), as written.
    #[schema(value_type = serde_json::Value)]
    schema: Box<RawValue>,
    /// Counts every change of this type's schema, deletions included.
    version: i64,
    /// When it was stored (UTC, microseconds).
    #[serde(serialize_with = "serialize_time")]
    #[schema(value_type = String, format = DateTime)]
    time: DateTime<Utc>,
}

impl From<EventSchema> for SchemaView {
    fn from(s: EventSchema) -> Self {
        SchemaView {
            event_type: s.event_type,
            schema: s.schema,
            version: s.version,
            time: s.time,
        }
    }
}

/// Every registered schema.
#[derive(Serialize, ToSchema)]
pub struct SchemaList {
    /// By type, in byte order.
    schemas: Vec<SchemaView>,
}

/// Checks an event type from the path.
fn check_type(event_type: &str) -> ApiResult<()> {
    names::check_name("an event type", event_type).map_err(ApiError::BadRequest)
}

/// Registers or replaces the schema of an event type. From then on an
/// append of that type whose `data` does not validate is `400`; stored
/// events are not checked again.
#[utoipa::path(
    put,
    path = "/schemas/{type}",
    tag = "schemas",
    params(("type" = String, Path, description = "The event type")),
    request_body(content = serde_json::Value, description = "A JSON Schema (draft 2020-12)", content_type = "application/json"),
    responses(
        (status = 201, description = "Registered", body = SchemaView),
        (status = 200, description = "Replaced", body = SchemaView),
        (status = 400, description = "Not valid JSON Schema", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn put_schema(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(event_type): Path<String>,
    _: AcceptsJson,
    JsonBytes(body, _share): JsonBytes,
) -> ApiResult<(StatusCode, Json<SchemaView>)> {
    check_type(&event_type)?;
    let cap = state.limits.max_json_depth;
    let text: Box<RawValue> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    if nests_deeper_than(text.get(), cap) {
        return Err(ApiError::BadRequest(format!(
            "a schema may nest at most {cap} levels deep"
        )));
    }
    let schema = SchemaDocument::parse(text).map_err(ApiError::BadRequest)?;
    let (stored, created) = state.store.put_schema(&event_type, &schema).await?;
    let status = match created {
        true => StatusCode::CREATED,
        false => StatusCode::OK,
    };
    Ok((status, Json(stored.into())))
}

/// The schema of an event type.
#[utoipa::path(
    get,
    path = "/schemas/{type}",
    tag = "schemas",
    params(("type" = String, Path, description = "The event type")),
    responses(
        (status = 200, description = "The schema", body = SchemaView),
        (status = 404, description = "The type has no schema", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_schema(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(event_type): Path<String>,
    _: AcceptsJson,
) -> ApiResult<Json<SchemaView>> {
    check_type(&event_type)?;
    let schema = state.store.schema(&event_type).await?;
    schema
        .map(|schema| Json(schema.into()))
        .ok_or_else(|| ApiError::NotFound(format!("type {event_type} has no schema")))
}

/// Deletes the schema of an event type: its appends are no longer checked.
#[utoipa::path(
    delete,
    path = "/schemas/{type}",
    tag = "schemas",
    params(("type" = String, Path, description = "The event type")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "The type has no schema", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_schema(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(event_type): Path<String>,
) -> ApiResult<StatusCode> {
    check_type(&event_type)?;
    if !state.store.delete_schema(&event_type).await? {
        return Err(ApiError::NotFound(format!(
            "type {event_type} has no schema"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Every registered schema.
#[utoipa::path(
    get,
    path = "/schemas",
    tag = "schemas",
    responses(
        (status = 200, description = "The schemas, by type", body = SchemaList),
    )
)]
async fn list_schemas(
    _: Caller<Admin>,
    State(state): State<AppState>,
    _: AcceptsJson,
) -> ApiResult<Json<SchemaList>> {
    let schemas = state.store.schemas().await?;
    let schemas = schemas.into_iter().map(Into::into).collect();
    Ok(Json(SchemaList { schemas }))
}
