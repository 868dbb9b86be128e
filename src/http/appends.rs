//! `POST /events`: an atomic append across streams, with per-stream
//! expected versions and an optional condition on what must not have
//! arrived (API.md, Tags and consistency boundaries). The condition is
//! judged inside group commit, against the store and the requests before it
//! in the same batch.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::AppState;
use super::auth::{Caller, Write};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{self, AcceptsJson, EventWrite, JsonBytes, JsonObject};
use super::queries::{QueryItemBody, query_items};
use crate::names;
use crate::store::{AppendRequest, Condition, Expected, StreamEvent};

/// The multi-stream append route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(append_events))
}

/// What a stream's version must be: a version, `-1` (no events yet) or
/// `"exists"`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
enum ExpectedVersion {
    /// This version exactly (`-1`: the stream has no events).
    #[schema(example = 3)]
    Version(i64),
    /// `"exists"`: the stream has at least one event.
    Word(String),
}

/// The condition of an append.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ConditionBody {
    /// The append fails if an event matching this query has a global
    /// position above `after`.
    fail_if_events_match: Vec<QueryItemBody>,
    /// The head the decision was made at (a query read's `head`); absent:
    /// fail if any matching event exists at all.
    #[schema(minimum = 0, example = 1187)]
    after: Option<i64>,
}

/// The body of `POST /events`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MultiAppendBody {
    /// The events, each naming its stream, written in this order.
    #[schema(value_type = Vec<EventWrite>)]
    events: Vec<JsonObject<EventWrite>>,
    /// The version each named stream must be at.
    #[serde(default)]
    #[schema(example = json!({"course-c1": 3, "student-s7": -1}))]
    expected_versions: BTreeMap<String, ExpectedVersion>,
    /// What must not have arrived.
    condition: Option<ConditionBody>,
}

/// Where an appended event sits.
#[derive(Serialize, ToSchema)]
struct WrittenEvent {
    /// The event's id.
    id: Uuid,
    /// Its stream.
    stream: String,
    /// Its stream position.
    position: i64,
    /// Its global position.
    global_position: i64,
}

/// The answer to a multi-stream append.
#[derive(Serialize, ToSchema)]
struct MultiAppendResponse {
    /// Each event, in request order.
    events: Vec<WrittenEvent>,
    /// The global position of the last event written.
    head: i64,
}

/// Appends events to several streams in one atomic step, on condition.
#[utoipa::path(
    post,
    path = "/events",
    tag = "events",
    request_body(content = MultiAppendBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Appended", body = MultiAppendResponse),
        (status = 200, description = "A retry of a stored write: nothing written", body = MultiAppendResponse),
        (status = 400, description = "Malformed input, or an event's `data` does not match its type's schema \
         (`event`: its index, `event_type`, `errors`: each failure's JSON `pointer` and `reason`): nothing written",
         body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An event id is used elsewhere", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "A stream of the request was deleted: nothing written", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "An expected version does not hold (`stream`, `expected_version`, \
         `actual_version`), or the condition failed (`condition: \"failed\"`, `first_match`): nothing written",
         body = Problem, content_type = "application/problem+json"),
    )
)]
async fn append_events(
    caller: Caller<Write>,
    State(state): State<AppState>,
    _: AcceptsJson,
    JsonBytes(body, _share): JsonBytes,
) -> ApiResult<(StatusCode, Json<MultiAppendResponse>)> {
    let JsonObject(body): JsonObject<MultiAppendBody> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?;
    let inputs = body.events.into_iter().map(|JsonObject(e)| e).collect();
    let mut events = Vec::new();
    for (index, (stream, event)) in extract::checked_events(inputs, &state.limits)?
        .into_iter()
        .enumerate()
    {
        let stream = stream.ok_or_else(|| {
            ApiError::BadRequest(format!("event {index}: `stream` names the event's stream"))
        })?;
        caller.stream(&stream)?;
        events.push(StreamEvent { stream, event });
    }
    if body.expected_versions.len() > state.limits.max_batch_events {
        return Err(ApiError::TooLarge(format!(
            "expected_versions names at most {} streams",
            state.limits.max_batch_events
        )));
    }
    let mut expected = Vec::with_capacity(body.expected_versions.len());
    for (stream, version) in body.expected_versions {
        names::check_name("a stream name", &stream).map_err(ApiError::BadRequest)?;
        caller.stream(&stream)?;
        let version = match version {
            ExpectedVersion::Version(-1) => Expected::NoStream,
            ExpectedVersion::Version(version) if version >= 0 => Expected::Version(version),
            ExpectedVersion::Word(word) if word == "exists" => Expected::Exists,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "expected_versions[{stream:?}] takes a version ≥ -1 or `exists`"
                )));
            }
        };
        expected.push((stream, version));
    }
    let condition = match body.condition {
        Some(condition) => Some(Condition {
            query: query_items(condition.fail_if_events_match)?,
            after: match condition.after {
                Some(after) if after < 0 => {
                    return Err(ApiError::BadRequest("condition.after must be ≥ 0".into()));
                }
                after => after,
            },
        }),
        None => None,
    };
    let request = AppendRequest {
        events,
        expected,
        condition,
    };
    let appended = state.store.append(request).await?;
    let head = appended
        .events
        .iter()
        .map(|e| e.global_position)
        .max()
        .unwrap_or(0);
    let status = if appended.created {
        state
            .metrics
            .events_appended
            .inc_by(appended.events.len() as u64);
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let events = appended
        .events
        .into_iter()
        .map(|e| WrittenEvent {
            id: e.id,
            stream: e.stream,
            position: e.position,
            global_position: e.global_position,
        })
        .collect();
    Ok((status, Json(MultiAppendResponse { events, head })))
}
