//! Reads in global order: `/categories/{category}` and `/all`.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Caller, Read};
use super::error::{ApiError, ApiResult};
use super::extract::{self, Path, Query, Wants};
use super::feed::{self, Start};
use super::wire::{self, Event};
use super::{AppState, page_limit};
use crate::feed::Subject;
use crate::names;
use crate::store::{Filter, GlobalPage, GlobalQuery, Scope};

/// The global-order routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(read_category))
        .routes(routes!(read_all))
}

/// The query of a read in global order.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct GlobalParams {
    /// The first global position read (inclusive, default 1). Feeds also take
    /// `end`: right after the last event.
    #[param(value_type = Option<String>, example = "1")]
    position: Option<Start>,
    /// Feeds only: start right after this consumer's checkpoint, if it has one.
    checkpoint: Option<String>,
    /// Most events returned (default 100; at most the server's
    /// `--max-page-size`, 1000 unless configured).
    #[param(minimum = 1, example = 100)]
    limit: Option<i64>,
    /// Only events of this type; repeat for several (`type=A&type=B`).
    #[serde(default, rename = "type")]
    #[param(rename = "type")]
    types: Vec<String>,
    /// Only events with this correlation id.
    correlation_id: Option<String>,
    /// This consumer's member number (0 ≤ member < size); give with `consumer_group_size`.
    #[param(minimum = 0)]
    consumer_group_member: Option<i64>,
    /// How many consumers share the category.
    #[param(minimum = 1)]
    consumer_group_size: Option<i64>,
}

impl GlobalParams {
    /// Answers with a feed when the client asks for one, else with a page.
    async fn answer(
        self,
        caller: &Caller<Read>,
        scope: Scope,
        state: &AppState,
        headers: &HeaderMap,
    ) -> ApiResult<Response> {
        if extract::negotiate(headers, true)? == Wants::Feed {
            feed::refuse_for_feeds(&[("limit", self.limit.is_some())])?;
            let (position, checkpoint) = (self.position, self.checkpoint.clone());
            let subject = Subject::Global(scope, self.filter()?);
            return feed::open(caller, state, headers, subject, position, checkpoint, 1).await;
        }
        let query = GlobalQuery {
            position: feed::read_position(self.position, self.checkpoint.as_deref())?.unwrap_or(1),
            limit: page_limit(self.limit, &state.limits)?,
            max_bytes: state.limits.max_page_bytes,
            filter: self.filter()?,
            scope,
        };
        let GlobalPage {
            events,
            next_position,
            end,
        } = state.store.read_global(&query).await?;
        let category = match query.scope {
            Scope::Category(category) => Some(category),
            _ => None,
        };
        Ok(Json(GlobalPageBody {
            category,
            events: wire::events(events),
            next_position,
            end,
        })
        .into_response())
    }

    /// Checks the filter parameters.
    fn filter(&self) -> ApiResult<Filter> {
        let bad = |detail: String| ApiError::BadRequest(detail);
        for event_type in &self.types {
            names::check_name("an event type", event_type).map_err(bad)?;
        }
        if let Some(correlation_id) = &self.correlation_id {
            names::check_correlation_id(correlation_id).map_err(bad)?;
        }
        let consumer_group = match (self.consumer_group_member, self.consumer_group_size) {
            (None, None) => None,
            (Some(member), Some(size)) if (0..size).contains(&member) => Some((member, size)),
            (Some(_), Some(_)) => {
                return Err(bad(
                    "consumer_group_member must be ≥ 0 and below consumer_group_size".into(),
                ));
            }
            _ => {
                return Err(bad(
                    "consumer_group_member and consumer_group_size go together".into(),
                ));
            }
        };
        Ok(Filter {
            types: self.types.clone(),
            correlation_id: self.correlation_id.clone(),
            consumer_group,
        })
    }
}

/// A page of a category or of the global log.
#[derive(Serialize, ToSchema)]
struct GlobalPageBody {
    /// The category (category reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<String>,
    /// The events, in global order.
    events: Vec<Event>,
    /// The global position to read next.
    next_position: i64,
    /// Nothing lies beyond `next_position`. A filtered read may return a short
    /// page, even an empty one, with `end: false`: keep paging.
    end: bool,
}

/// Reads every stream of a category in global order.
///
/// Consumer groups split a category between `consumer_group_size` workers by
/// Message DB's hash of each stream's cardinal id.
#[utoipa::path(
    get,
    path = "/categories/{category}",
    tag = "global",
    params(
        ("category" = String, Path, description = "The category: a stream name up to its first `-`", example = "account"),
        ("Last-Event-ID" = Option<String>, Header, description = "Feeds: the `id:` (global position) of the last event received; the feed resumes right after it", example = "1187"),
        GlobalParams,
    ),
    responses(
        (status = 200, description = "A page of events (JSON), or with `Accept: text/event-stream` a live feed: \
         history from `position`, one `event: caught-up` message, then events as they commit; each event's \
         `id:` is its global position",
         content((GlobalPageBody = "application/json"), (String = "text/event-stream"))),
    )
)]
async fn read_category(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Path(category): Path<String>,
    Query(params): Query<GlobalParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    names::check_category(&category).map_err(ApiError::BadRequest)?;
    caller.category(&category)?;
    params
        .answer(&caller, Scope::Category(category), &state, &headers)
        .await
}

/// Reads every event in global order.
#[utoipa::path(
    get,
    path = "/all",
    tag = "global",
    params(("Last-Event-ID" = Option<String>, Header, description = "Feeds: the `id:` (global position) of the last event received; the feed resumes right after it", example = "1187"), GlobalParams),
    responses(
        (status = 200, description = "A page of events (JSON), or with `Accept: text/event-stream` a live feed: \
         history from `position`, one `event: caught-up` message, then events as they commit; each event's \
         `id:` is its global position",
         content((GlobalPageBody = "application/json"), (String = "text/event-stream"))),
    )
)]
async fn read_all(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Query(params): Query<GlobalParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.everywhere("/all")?;
    params.answer(&caller, Scope::All, &state, &headers).await
}
