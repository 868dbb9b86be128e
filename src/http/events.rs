//! `/events/{id}`: one event by id.

use axum::Json;
use axum::extract::State;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::AppState;
use super::auth::{Caller, Read};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{AcceptsJson, Path};
use super::wire::Event;

/// The event routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(event_by_id))
}

/// Reads one event by its id.
#[utoipa::path(
    get,
    path = "/events/{id}",
    tag = "events",
    params(("id" = Uuid, Path, description = "The event's id")),
    responses(
        (status = 200, description = "The event", body = Event),
        (status = 404, description = "No such event", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn event_by_id(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    _: AcceptsJson,
) -> ApiResult<Json<Event>> {
    let event = state.store.event(id).await?;
    // An event out of reach is answered as if it did not exist: a `403`
    // would tell that it does.
    event
        .filter(|event| caller.reaches(&event.stream))
        .map(|event| Json(event.into()))
        .ok_or_else(|| ApiError::NotFound(format!("no event has id {id}")))
}
