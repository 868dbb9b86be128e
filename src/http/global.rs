//! Reads in global order: `/categories/{category}` and `/all`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ApiResult, Problem};
use super::extract::{AcceptsJson, Path, Query};
use super::{AppState, page_limit};
use crate::names;
use crate::store::{Filter, GlobalPage, GlobalQuery, RecordedEvent, Scope};

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
    /// The first global position read (inclusive, default 1).
    #[param(minimum = 0)]
    position: Option<i64>,
    /// Most events returned (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
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
    /// Checks the parameters and makes the store query.
    fn into_query(self, scope: Scope, state: &AppState) -> ApiResult<GlobalQuery> {
        let bad = |detail: String| ApiError::BadRequest(detail);
        let position = self.position.unwrap_or(1);
        if position < 0 {
            return Err(bad("position must be ≥ 0".into()));
        }
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
        Ok(GlobalQuery {
            scope,
            position,
            limit: page_limit(self.limit, &state.limits)?,
            filter: Filter {
                types: self.types,
                correlation_id: self.correlation_id,
                consumer_group,
            },
        })
    }
}

/// A page of a category.
#[derive(Serialize, ToSchema)]
struct CategoryPage {
    /// The category.
    category: String,
    /// The events, in global order.
    events: Vec<RecordedEvent>,
    /// The global position to read next.
    next_position: i64,
    /// Nothing lies beyond `next_position`. A filtered read may return a short
    /// page, even an empty one, with `end: false`: keep paging.
    end: bool,
}

/// A page of the global log.
#[derive(Serialize, ToSchema)]
struct AllPage {
    /// The events, in global order.
    events: Vec<RecordedEvent>,
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
    params(("category" = String, Path, description = "The category: a stream name up to its first `-`"), GlobalParams),
    responses(
        (status = 200, description = "A page of events", body = CategoryPage),
        (status = 400, description = "Malformed name or query", body = Problem, content_type = "application/problem+json"),
        (status = 406, description = "Accept admits no JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn read_category(
    State(state): State<AppState>,
    Path(category): Path<String>,
    _: AcceptsJson,
    Query(params): Query<GlobalParams>,
) -> ApiResult<Json<CategoryPage>> {
    names::check_category(&category).map_err(ApiError::BadRequest)?;
    let query = params.into_query(Scope::Category(category.clone()), &state)?;
    let GlobalPage {
        events,
        next_position,
        end,
    } = state.store.read_global(&query).await?;
    Ok(Json(CategoryPage {
        category,
        events,
        next_position,
        end,
    }))
}

/// Reads every event in global order.
#[utoipa::path(
    get,
    path = "/all",
    tag = "global",
    params(GlobalParams),
    responses(
        (status = 200, description = "A page of events", body = AllPage),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 406, description = "Accept admits no JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn read_all(
    State(state): State<AppState>,
    _: AcceptsJson,
    Query(params): Query<GlobalParams>,
) -> ApiResult<Json<AllPage>> {
    let query = params.into_query(Scope::All, &state)?;
    let GlobalPage {
        events,
        next_position,
        end,
    } = state.store.read_global(&query).await?;
    Ok(Json(AllPage {
        events,
        next_position,
        end,
    }))
}
