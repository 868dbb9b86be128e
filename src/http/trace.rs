//! Following causation and correlation: `/trace/{message_id}` and
//! `/correlations/{correlation_id}`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::auth::{Caller, Read};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{AcceptsJson, Path, Query};
use super::wire::{self, Event};
use super::{AppState, page_limit};
use crate::names;
use crate::store::{Filter, GlobalPage, GlobalQuery, Scope, Trace};

/// The tracing routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(trace))
        .routes(routes!(correlation))
}

/// Which events caused a message (root first) and every event it caused, as
/// a tree in global order. Depth and size are capped; `truncated` says when a
/// cap was hit or a causation cycle was cut.
#[utoipa::path(
    get,
    path = "/trace/{message_id}",
    tag = "tracing",
    params(("message_id" = Uuid, Path, description = "The event's id")),
    responses(
        (status = 200, description = "The trace", body = TraceBody),
        (status = 404, description = "No such event", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn trace(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Path(message_id): Path<Uuid>,
    _: AcceptsJson,
) -> ApiResult<Response> {
    caller.everywhere("/trace")?;
    let trace = state.store.trace(message_id, state.limits.trace).await?;
    let trace = trace.ok_or_else(|| ApiError::NotFound(format!("no event has id {message_id}")))?;
    let body = render(trace).map_err(|error| {
        tracing::error!(%error, "rendering a trace");
        ApiError::Internal
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The trace as JSON. The effects tree may be a thousand levels deep, so it is
/// written with an explicit stack: serialising nested values by recursion
/// could overflow the stack.
fn render(trace: Trace) -> Result<String, serde_json::Error> {
    let Trace {
        message,
        causes,
        mut effects_by_cause,
        truncated,
    } = trace;
    let mut effects_of = |id: &Uuid| effects_by_cause.remove(id).unwrap_or_default().into_iter();
    let mut levels = vec![effects_of(&message.id)];
    let mut out = format!(
        r#"{{"message":{},"causes":{},"effects":["#,
        serde_json::to_string(&Event::from(message))?,
        serde_json::to_string(&wire::events(causes))?,
    );
    let mut after_sibling = false;
    while let Some(level) = levels.last_mut() {
        match level.next() {
            Some(event) => {
                if after_sibling {
                    out.push(',');
                }
                let id = event.id;
                let event_json = serde_json::to_string(&Event::from(event))?;
                // `{…}` becomes `{…,"effects":[`; its children follow.
                out.push_str(&event_json[..event_json.len() - 1]);
                out.push_str(r#","effects":["#);
                levels.push(effects_of(&id));
                after_sibling = false;
            }
            None => {
                levels.pop();
                out.push(']');
                if !levels.is_empty() {
                    out.push('}');
                    after_sibling = true;
                }
            }
        }
    }
    out.push_str(&format!(r#","truncated":{truncated}}}"#));
    Ok(out)
}

/// An event with the events it caused (the shape of a trace node).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // documents the body that `render` writes
struct TraceNode {
    /// The event.
    #[serde(flatten)]
    event: Event,
    /// The events it caused, in global order.
    #[schema(no_recursion)]
    effects: Vec<TraceNode>,
}

/// Which event caused which, around one message (the body `render` writes).
#[derive(ToSchema)]
#[allow(dead_code)] // documents the body that `render` writes
struct TraceBody {
    /// The message traced.
    message: Event,
    /// Its causes, root first (the message excluded).
    causes: Vec<Event>,
    /// Everything it caused, as a tree: each node is an event with an
    /// `effects` array of its own.
    effects: Vec<TraceNode>,
    /// A depth or size cap was hit, or a causation cycle was cut.
    truncated: bool,
}

/// The query of a correlation read.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CorrelationParams {
    /// The first global position read (inclusive, default 1).
    #[param(minimum = 0)]
    position: Option<i64>,
    /// Most events returned (default 100; at most the server's
    /// `--max-page-size`, 1000 unless configured).
    #[param(minimum = 1, example = 100)]
    limit: Option<i64>,
}

/// A page of one correlation.
#[derive(Serialize, ToSchema)]
struct CorrelationPage {
    /// The correlation id.
    correlation_id: String,
    /// Its events, in global order.
    events: Vec<Event>,
    /// The global position to read next.
    next_position: i64,
    /// Nothing lies beyond `next_position`.
    end: bool,
}

/// Every event with a correlation id, in global order, paged like `/all`.
#[utoipa::path(
    get,
    path = "/correlations/{correlation_id}",
    tag = "tracing",
    params(("correlation_id" = String, Path, description = "The correlation id"), CorrelationParams),
    responses(
        (status = 200, description = "A page of events", body = CorrelationPage),
    )
)]
async fn correlation(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Path(correlation_id): Path<String>,
    _: AcceptsJson,
    Query(params): Query<CorrelationParams>,
) -> ApiResult<Json<CorrelationPage>> {
    caller.everywhere("/correlations")?;
    names::check_correlation_id(&correlation_id).map_err(ApiError::BadRequest)?;
    let position = params.position.unwrap_or(1);
    if position < 0 {
        return Err(ApiError::BadRequest("position must be ≥ 0".into()));
    }
    let query = GlobalQuery {
        scope: Scope::Correlation(correlation_id.clone()),
        position,
        limit: page_limit(params.limit, &state.limits)?,
        max_bytes: state.limits.max_page_bytes,
        filter: Filter::default(),
    };
    let GlobalPage {
        events,
        next_position,
        end,
    } = state.store.read_global(&query).await?;
    Ok(Json(CorrelationPage {
        correlation_id,
        events: wire::events(events),
        next_position,
        end,
    }))
}
