//! `/streams`: append with optimistic concurrency, read one stream, its last
//! event, its version, and list streams by prefix.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Caller, Read, Write};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{self, AcceptsJson, EventWrite, JsonBytes, Path, Query, Wants};
use super::feed::{self, Start};
use super::retention::refuse_deleted;
use super::wire::{self, DirectionParam, Event, EventPosition, Snapshot, StreamInfo};
use super::{AppState, etag, page_limit};
use crate::feed::Subject;
use crate::names;
use crate::store::{AppendRequest, Direction, StreamQuery};

/// The stream routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(append, read_stream, stream_head))
        .routes(routes!(last_event))
        .routes(routes!(list_streams))
}

/// Checks a stream name from the path.
fn check_stream(stream: &str) -> ApiResult<()> {
    names::check_name("a stream name", stream).map_err(ApiError::BadRequest)
}

/// One event or a non-empty array of events, appended atomically in order.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // describes the body in the OpenAPI document; `parse_events` reads it
enum AppendBody {
    /// A single event.
    One(EventWrite),
    /// A batch.
    Many(Vec<EventWrite>),
}

/// The answer to an append.
#[derive(Serialize, ToSchema)]
struct AppendResponse {
    /// The stream written.
    stream: String,
    /// Its version after the write.
    version: i64,
    /// Where each event of the request sits.
    events: Vec<EventPosition>,
}

/// Appends events to a stream.
///
/// The expected version comes from `If-Match` (`"5"`, `"-1"` or `*`) or
/// `If-None-Match: *`. A retry of a write that already succeeded (every event
/// carries an id, and those ids sit in this stream in this order) answers
/// `200` and writes nothing.
#[utoipa::path(
    post,
    path = "/streams/{stream}",
    tag = "streams",
    params(
        ("stream" = String, Path, description = "The stream, e.g. `account-123`"),
        ("If-Match" = Option<String>, Header, description = "Expected version: `\"5\"`, `\"-1\"` (no stream) or `*` (stream exists)", example = "\"5\""),
        ("If-None-Match" = Option<String>, Header, description = "`*`: the stream must have no events", example = "*"),
    ),
    request_body(content = AppendBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Appended", body = AppendResponse,
         headers(("ETag" = String, description = "The new version"), ("Location" = String, description = "Where the first new event reads"))),
        (status = 200, description = "A retry of a stored write: nothing written", body = AppendResponse,
         headers(("ETag" = String, description = "The version of the last retried event"))),
        (status = 400, description = "Malformed input, or an event's `data` does not match its type's schema \
         (`event`: its index, `event_type`, `errors`: each failure's JSON `pointer` and `reason`): nothing written",
         body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An event id is used elsewhere", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream was deleted: its name stays taken", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The expected version does not hold", body = Problem, content_type = "application/problem+json",
         headers(("ETag" = String, description = "The current version"))),
    )
)]
async fn append(
    caller: Caller<Write>,
    State(state): State<AppState>,
    Path(stream): Path<String>,
    _: AcceptsJson,
    headers: HeaderMap,
    JsonBytes(body, _share): JsonBytes,
) -> ApiResult<Response> {
    check_stream(&stream)?;
    caller.stream(&stream)?;
    let expected = extract::expected_version(&headers)?;
    let events = extract::parse_events(&body, &state.limits)?;
    let request = AppendRequest::to_stream(&stream, expected, events);
    let appended = state.store.append(request).await?;
    let version = appended.version_of(&stream);
    let first = appended.events.first().map_or(0, |e| e.position);
    let body = Json(AppendResponse {
        stream: stream.clone(),
        version,
        events: appended.events.into_iter().map(Into::into).collect(),
    });
    let tag = [(header::ETAG, etag(version))];
    if !appended.created {
        return Ok((StatusCode::OK, tag, body).into_response());
    }
    state
        .metrics
        .events_appended
        .inc_by(body.events.len() as u64);
    let path = utf8_percent_encode(&stream, PATH_SEGMENT);
    let location = format!("/streams/{path}?position={first}");
    Ok((
        StatusCode::CREATED,
        tag,
        [(header::LOCATION, location)],
        body,
    )
        .into_response())
}

/// What a stream name may hold that a URL path segment may not: all but
/// letters, digits and `-._~:+@`.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':')
    .remove(b'+')
    .remove(b'@');

/// The query of a stream read.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StreamReadParams {
    /// The first stream position read (inclusive); backward reads default to
    /// the last event. Feeds also take `end`: right after the last event.
    #[param(value_type = Option<String>, example = "0")]
    position: Option<Start>,
    /// Feeds only: start right after this consumer's checkpoint, if it has one.
    checkpoint: Option<String>,
    /// Most events returned (default 100; at most the server's
    /// `--max-page-size`, 1000 unless configured).
    #[param(minimum = 1, example = 100)]
    limit: Option<i64>,
    /// `forward` (default) or `backward`.
    #[param(inline)]
    direction: Option<DirectionParam>,
    /// Only events with position ≤ N: the stream as it was at version N
    /// (`-1`: before its first event).
    #[param(minimum = -1)]
    until_version: Option<i64>,
    /// Only events committed at or before this instant (RFC 3339).
    as_of: Option<DateTime<Utc>>,
    /// Add the newest snapshot within the bounds and return only the events
    /// after it: one round trip to load an aggregate (forward reads only).
    from_snapshot: Option<bool>,
}

/// A page of one stream.
#[derive(Serialize, ToSchema)]
struct StreamPageBody {
    /// The stream.
    stream: String,
    /// Its current version, whatever the read's bounds.
    version: i64,
    /// The events, in the read's direction.
    events: Vec<Event>,
    /// The position to read next.
    next_position: i64,
    /// Nothing lies beyond `next_position` within the read's bounds.
    end: bool,
    /// With `from_snapshot=true`: the snapshot the events follow, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Snapshot>)]
    snapshot: Option<Option<Snapshot>>,
}

/// Reads a stream, a page at a time.
#[utoipa::path(
    get,
    path = "/streams/{stream}",
    tag = "streams",
    params(
        ("stream" = String, Path, description = "The stream"),
        ("If-None-Match" = Option<String>, Header, description = "The version the client holds: `304` when it is current", example = "\"5\""),
        ("Last-Event-ID" = Option<String>, Header, description = "Feeds: the `id:` of the last event received; the feed resumes right after it", example = "41"),
        StreamReadParams,
    ),
    responses(
        (status = 200, description = "A page of events (JSON), or with `Accept: text/event-stream` a live feed: \
         history from `position`, one `event: caught-up` message, then events as they commit; each event's \
         `id:` is its stream position",
         content(
             (StreamPageBody = "application/json"),
             (String = "text/event-stream"),
         ),
         headers(("ETag" = String, description = "The stream's current version (JSON reads)"))),
        (status = 304, description = "The stream is still at the version in If-None-Match"),
        (status = 404, description = "The stream has no events", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream was deleted", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn read_stream(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Path(stream): Path<String>,
    Query(params): Query<StreamReadParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_stream(&stream)?;
    caller.stream(&stream)?;
    if extract::negotiate(&headers, true)? == Wants::Feed {
        feed::refuse_for_feeds(&[
            ("limit", params.limit.is_some()),
            ("direction", params.direction.is_some()),
            ("until_version", params.until_version.is_some()),
            ("as_of", params.as_of.is_some()),
            ("from_snapshot", params.from_snapshot.is_some()),
        ])?;
        refuse_deleted(&state, &stream).await?;
        let subject = Subject::Stream(stream);
        return feed::open(
            &caller,
            &state,
            &headers,
            subject,
            params.position,
            params.checkpoint,
            0,
        )
        .await;
    }
    let query = StreamQuery {
        stream: stream.clone(),
        position: feed::read_position(params.position, params.checkpoint.as_deref())?,
        limit: page_limit(params.limit, &state.limits)?,
        max_bytes: state.limits.max_page_bytes,
        direction: params.direction.map_or(Direction::Forward, Into::into),
        until_version: extract::until_version(params.until_version)?,
        as_of: params.as_of,
        from_snapshot: params.from_snapshot.unwrap_or(false),
    };
    if query.from_snapshot && query.direction == Direction::Backward {
        return Err(ApiError::BadRequest(
            "from_snapshot loads forward: it does not go with direction=backward".into(),
        ));
    }
    let page = state.store.read_stream(&query).await?;
    if page.version < 0 {
        refuse_deleted(&state, &stream).await?;
        return Err(ApiError::NotFound(format!("stream {stream} has no events")));
    }
    let tag = [(header::ETAG, etag(page.version))];
    if extract::none_match_hits(&headers, page.version) {
        return Ok((StatusCode::NOT_MODIFIED, tag).into_response());
    }
    let body = StreamPageBody {
        stream,
        version: page.version,
        events: wire::events(page.events),
        next_position: page.next_position,
        end: page.end,
        snapshot: query
            .from_snapshot
            .then(|| page.snapshot.map(Snapshot::from)),
    };
    Ok((tag, Json(body)).into_response())
}

/// The stream's version, without its events.
#[utoipa::path(
    head,
    path = "/streams/{stream}",
    tag = "streams",
    params(("stream" = String, Path, description = "The stream")),
    responses(
        (status = 200, description = "The stream has events", headers(("ETag" = String, description = "Its version"))),
        (status = 404, description = "The stream has no events"),
        (status = 410, description = "The stream was deleted"),
    )
)]
async fn stream_head(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Path(stream): Path<String>,
) -> ApiResult<Response> {
    check_stream(&stream)?;
    caller.stream(&stream)?;
    match state.store.stream_version(&stream).await? {
        -1 => {
            refuse_deleted(&state, &stream).await?;
            Err(ApiError::NotFound(format!("stream {stream} has no events")))
        }
        version => Ok([(header::ETAG, etag(version))].into_response()),
    }
}

/// The query of a last-event read.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LastParams {
    /// Only the last event of this type; repeat for several (`type=A&type=B`).
    #[serde(default, rename = "type")]
    #[param(rename = "type")]
    types: Vec<String>,
}

/// The last event of a stream, optionally the last of a type.
#[utoipa::path(
    get,
    path = "/streams/{stream}/last",
    tag = "streams",
    params(("stream" = String, Path, description = "The stream"), LastParams),
    responses(
        (status = 200, description = "The event", body = Event),
        (status = 404, description = "No such event", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The stream was deleted", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn last_event(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Path(stream): Path<String>,
    _: AcceptsJson,
    Query(params): Query<LastParams>,
) -> ApiResult<Json<Event>> {
    check_stream(&stream)?;
    caller.stream(&stream)?;
    for event_type in &params.types {
        names::check_name("an event type", event_type).map_err(ApiError::BadRequest)?;
    }
    match state.store.last_event(&stream, &params.types).await? {
        Some(event) => Ok(Json(event.into())),
        None => {
            refuse_deleted(&state, &stream).await?;
            Err(ApiError::NotFound(format!(
                "stream {stream} has no such event"
            )))
        }
    }
}

/// The query of a stream listing.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only streams whose name starts with this.
    prefix: Option<String>,
    /// Only streams after this name (the `next` of the previous page).
    after: Option<String>,
    /// Most streams returned (default 100; at most the server's
    /// `--max-page-size`, 1000 unless configured).
    #[param(minimum = 1, example = 100)]
    limit: Option<i64>,
}

/// A page of the stream listing.
#[derive(Serialize, ToSchema)]
struct StreamList {
    /// Streams in byte order of their names.
    streams: Vec<StreamInfo>,
    /// The `after` of the next page; null at the end.
    next: Option<String>,
}

/// Lists streams by name prefix, in byte order.
#[utoipa::path(
    get,
    path = "/streams",
    tag = "streams",
    params(ListParams),
    responses(
        (status = 200, description = "A page of streams", body = StreamList),
    )
)]
async fn list_streams(
    caller: Caller<Read>,
    State(state): State<AppState>,
    _: AcceptsJson,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<StreamList>> {
    let limit = page_limit(params.limit, &state.limits)?;
    let prefix = params.prefix.unwrap_or_default();
    names::check_name_part("prefix", &prefix).map_err(ApiError::BadRequest)?;
    if let Some(after) = &params.after {
        names::check_name_part("after", after).map_err(ApiError::BadRequest)?;
    }
    // With stream prefixes, the names in reach lie in ranges of their own,
    // in order: each is listed in turn until the page is full.
    let mut streams = Vec::new();
    for reachable in caller.listable(&prefix) {
        let wanted = limit + 1 - streams.len() as i64;
        if wanted == 0 {
            break;
        }
        let after = params.after.as_deref();
        streams.extend(state.store.list_streams(&reachable, after, wanted).await?);
    }
    let more = streams.len() as i64 > limit;
    streams.truncate(limit as usize);
    let next = more
        .then(|| streams.last().map(|s| s.stream.clone()))
        .flatten();
    let streams = streams.into_iter().map(Into::into).collect();
    Ok(Json(StreamList { streams, next }))
}
