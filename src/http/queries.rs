//! `GET /events?tag=…&type=…` and `POST /query`: the events matching a
//! query of tags and types, in global order, with the log's head (API.md,
//! Tags and consistency boundaries).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Caller, Read};
use super::error::{ApiError, ApiResult};
use super::extract::{self, JsonBody, Query, Wants};
use super::feed::{self, Start, refuse_for_feeds};
use super::wire::{DirectionParam, Event};
use super::{AppState, page_limit};
use crate::feed::Subject;
use crate::names;
use crate::store::{Direction, EventQuery, QueryItem};

/// Most items in one query.
const MAX_ITEMS: usize = 32;

/// Most types, or tags, in one item.
const MAX_PER_ITEM: usize = 32;

/// Most index lookups one query makes: one per type of an item (one for an
/// item of tags only); SQLite joins at most 500 in one statement.
const MAX_LOOKUPS: usize = 64;

/// The query routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(events_by_tags))
        .routes(routes!(query_events))
}

/// The query of `GET /events`: a one-item query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TagParams {
    /// A tag every event must carry; repeat for several (`tag=a&tag=b`).
    #[serde(default)]
    tag: Vec<String>,
    /// Only events of this type; repeat for several.
    #[serde(default, rename = "type")]
    #[param(rename = "type")]
    types: Vec<String>,
    /// The first global position read (inclusive; default: the start, or
    /// the head when reading backward). Feeds also take `end`: right after
    /// the last event.
    #[param(value_type = Option<String>, example = "1")]
    position: Option<Start>,
    /// Feeds only: start right after this consumer's checkpoint, if it has one.
    checkpoint: Option<String>,
    /// Most events returned (default 100; at most the server's
    /// `--max-page-size`, 1000 unless configured).
    #[param(minimum = 1)]
    limit: Option<i64>,
    /// `forward` (default) or `backward`.
    #[param(inline)]
    direction: Option<DirectionParam>,
}

/// One item of a query: events of one of `types` that carry every one of
/// `tags`; at least one of the two.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct QueryItemBody {
    /// The types matched (absent or empty: any type).
    #[serde(default)]
    #[schema(example = json!(["StudentSubscribed"]))]
    types: Vec<String>,
    /// The tags an event must all carry (absent or empty: any tags).
    #[serde(default)]
    #[schema(example = json!(["course:c1"]))]
    tags: Vec<String>,
}

impl From<&QueryItem> for QueryItemBody {
    fn from(item: &QueryItem) -> Self {
        QueryItemBody {
            types: item.types.clone(),
            tags: item.tags.clone(),
        }
    }
}

/// The body of `POST /query`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    /// The items: an event matches when it matches any of them.
    query: Vec<QueryItemBody>,
    /// The first global position read (inclusive; default: the start, or
    /// the head when reading backward).
    #[schema(minimum = 0)]
    position: Option<i64>,
    /// Feeds only: start right after this consumer's checkpoint, if it has one.
    checkpoint: Option<String>,
    /// Most events returned (default 100).
    #[schema(minimum = 1)]
    limit: Option<i64>,
    /// `forward` (default) or `backward`.
    direction: Option<DirectionParam>,
}

/// A page of the events matching a query.
#[derive(Serialize, ToSchema)]
struct QueryPageBody {
    /// The events, in the read's order (only those of streams in the
    /// caller's reach).
    events: Vec<Event>,
    /// The global position to read next.
    next_position: i64,
    /// Nothing matching lies beyond `next_position`.
    end: bool,
    /// The log's head when the page was read: the `after` of an append
    /// condition that must see nothing newer.
    head: i64,
}

/// Reads the events that carry the given tags (and are of the given types).
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    params(TagParams),
    responses((status = 200, description = "A page of matching events (JSON), or with \
        `Accept: text/event-stream` a live feed of them: history from `position`, one \
        `event: caught-up` message, then events as they commit; each event's `id:` is its global position",
        content((QueryPageBody = "application/json"), (String = "text/event-stream"))))
)]
async fn events_by_tags(
    caller: Caller<Read>,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<TagParams>,
) -> ApiResult<Response> {
    let item = QueryItemBody {
        types: params.types,
        tags: params.tag,
    };
    let read = Reading {
        position: params.position,
        checkpoint: params.checkpoint,
        limit: params.limit,
        direction: params.direction,
    };
    read_or_follow(&caller, &state, &headers, vec![item], read).await
}

/// Reads the events matching any item of a query.
#[utoipa::path(
    post,
    path = "/query",
    tag = "events",
    request_body(content = QueryBody, content_type = "application/json"),
    responses((status = 200, description = "A page of matching events (JSON), or with \
        `Accept: text/event-stream` a live feed of them, as `GET /events` gives",
        content((QueryPageBody = "application/json"), (String = "text/event-stream"))))
)]
async fn query_events(
    caller: Caller<Read>,
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<QueryBody>,
) -> ApiResult<Response> {
    if body.position.is_some_and(|p| p < 0) {
        return Err(ApiError::BadRequest("position must be ≥ 0".into()));
    }
    let read = Reading {
        position: body.position.map(Start::At),
        checkpoint: body.checkpoint,
        limit: body.limit,
        direction: body.direction,
    };
    read_or_follow(&caller, &state, &headers, body.query, read).await
}

/// Where a query read starts, how much it takes and which way it goes.
struct Reading {
    position: Option<Start>,
    checkpoint: Option<String>,
    limit: Option<i64>,
    direction: Option<DirectionParam>,
}

/// Answers a query with a page, or with a live feed when the client asks
/// for one.
async fn read_or_follow(
    caller: &Caller<Read>,
    state: &AppState,
    headers: &HeaderMap,
    items: Vec<QueryItemBody>,
    read: Reading,
) -> ApiResult<Response> {
    if extract::negotiate(headers, true)? == Wants::Feed {
        refuse_for_feeds(&[
            ("limit", read.limit.is_some()),
            ("direction", read.direction.is_some()),
        ])?;
        let subject = Subject::Query(query_items(items)?);
        let (position, checkpoint) = (read.position, read.checkpoint);
        return feed::open(caller, state, headers, subject, position, checkpoint, 1).await;
    }
    let position = feed::read_position(read.position, read.checkpoint.as_deref())?;
    let query = event_query(state, items, position, read.limit, read.direction)?;
    Ok(answer(caller, state, query).await?.into_response())
}

/// A query read, checked.
fn event_query(
    state: &AppState,
    items: Vec<QueryItemBody>,
    position: Option<i64>,
    limit: Option<i64>,
    direction: Option<DirectionParam>,
) -> ApiResult<EventQuery> {
    Ok(EventQuery {
        items: query_items(items)?,
        // Never negative: `Start` parses none, and `POST /query` refuses them.
        position,
        limit: page_limit(limit, &state.limits)?,
        direction: direction.map_or(Direction::Forward, Into::into),
        max_bytes: state.limits.max_page_bytes,
    })
}

/// Checks the items of a query: 1 to 32, each naming at least one type or
/// tag (at most 32 of each), every name valid.
pub(super) fn query_items(items: Vec<QueryItemBody>) -> ApiResult<Vec<QueryItem>> {
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(ApiError::BadRequest(format!(
            "a query holds 1 to {MAX_ITEMS} items, not {}",
            items.len()
        )));
    }
    let lookups: usize = items
        .iter()
        .map(|item| item.types.len().max(usize::from(!item.tags.is_empty())))
        .sum();
    if lookups > MAX_LOOKUPS {
        return Err(ApiError::BadRequest(format!(
            "a query makes at most {MAX_LOOKUPS} index lookups (one per type of an item, one \
             for an item of tags only), not {lookups}"
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let at = |detail: String| ApiError::BadRequest(format!("query item {index}: {detail}"));
            if item.types.is_empty() && item.tags.is_empty() {
                return Err(at("an item names at least one type or tag".into()));
            }
            if item.types.len() > MAX_PER_ITEM || item.tags.len() > MAX_PER_ITEM {
                return Err(at(format!(
                    "an item names at most {MAX_PER_ITEM} types and {MAX_PER_ITEM} tags"
                )));
            }
            for event_type in &item.types {
                names::check_name("an event type", event_type).map_err(at)?;
            }
            for tag in &item.tags {
                names::check_name("a tag", tag).map_err(at)?;
            }
            Ok(QueryItem {
                types: item.types,
                tags: item.tags,
            })
        })
        .collect()
}

/// Reads a query's page, keeping only the events in the caller's reach.
async fn answer(
    caller: &Caller<Read>,
    state: &AppState,
    query: EventQuery,
) -> ApiResult<Json<QueryPageBody>> {
    let page = state.store.read_query(&query).await?;
    let events = page
        .events
        .into_iter()
        .filter(|e| caller.reaches(&e.stream))
        .map(Into::into)
        .collect();
    Ok(Json(QueryPageBody {
        events,
        next_position: page.next_position,
        end: page.end,
        head: page.head,
    }))
}
