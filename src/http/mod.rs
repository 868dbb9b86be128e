//! The HTTP layer: routing, extraction, errors and the OpenAPI document.
//! One module per resource, each with a `router()`; they are merged here.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::Authenticator;
use crate::feed::Feeds;
use crate::metrics::{Metrics, RequestLabels};
use crate::store::{SharedStore, TraceLimits};

mod appends;
pub mod auth;
mod checkpoints;
mod connection_clock;
mod console;
pub mod error;
mod events;
pub mod extract;
mod feed;
mod global;
mod keys;
mod openapi;
mod ops;
mod queries;
mod retention;
mod schemas;
pub mod server;
mod snapshots;
mod streams;
mod subscriptions;
mod trace;
mod transfer;
pub mod wire;

use error::{ApiError, ApiResult, StoreFailure};

/// The limits API.md makes configurable.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most bytes of request bodies held at once (see [`AppState::bodies`]).
    pub max_body_bytes_in_flight: usize,
    /// Most events in one append.
    pub max_batch_events: usize,
    /// How deeply an event's `data` or `metadata` may nest.
    pub max_json_depth: usize,
    /// Largest `limit` of a read.
    pub max_page_size: i64,
    /// A page stops once its events hold this many bytes.
    pub max_page_bytes: usize,
    /// How far a trace may reach.
    pub trace: TraceLimits,
    /// How often an idle feed gets a keep-alive comment.
    pub keep_alive: std::time::Duration,
    /// How long a whole request may take (a feed: until its answer starts).
    pub request_timeout: std::time::Duration,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The event store.
    pub store: SharedStore,
    /// Request limits.
    pub limits: Limits,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Live feeds.
    pub feeds: Arc<Feeds>,
    /// Managed subscriptions' waiting claims, delivery feeds and settlements.
    pub dispatcher: Arc<crate::dispatch::Dispatcher>,
    /// Checks credentials; told when this instance creates or revokes a key.
    pub authenticator: Arc<Authenticator>,
    /// Bytes of request bodies the server may hold at once: a body takes
    /// its length in permits before it is read, and gives them back when its
    /// request is done.
    pub bodies: Arc<tokio::sync::Semaphore>,
}

/// The metadata of the OpenAPI document; paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cairn",
        description = "An HTTP/JSON event store: append events to streams with optimistic \
                       concurrency, read them by stream, category or globally."
    ),
    servers((url = "/", description = "The server that serves this document")),
    components(schemas(error::Problem)),
    tags(
        (name = "streams", description = "Append to and read one stream"),
        (name = "global", description = "Categories and the global log"),
        (name = "events", description = "Single events, reads by tags and types, and appends across streams on condition"),
        (name = "snapshots", description = "Snapshots of aggregates"),
        (name = "checkpoints", description = "Durable consumer positions"),
        (name = "tracing", description = "Causation and correlation"),
        (name = "operations", description = "Health and metrics"),
        (name = "keys", description = "API keys (admin)"),
        (name = "retention", description = "Retention policies, truncation and deletion of streams (admin)"),
        (name = "schemas", description = "Event schemas: JSON Schema per event type, checked on every append (admin)"),
        (name = "subscriptions", description = "Managed subscriptions: leases to competing consumers, acknowledgements, parking, webhooks"),
        (name = "transfer", description = "The whole store as NDJSON, out and back in (admin)"),
    )
)]
struct ApiDoc;

/// Every documented route, with its OpenAPI description.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(streams::router())
        .merge(global::router())
        .merge(events::router())
        .merge(queries::router())
        .merge(appends::router())
        .merge(snapshots::router())
        .merge(checkpoints::router())
        .merge(trace::router())
        .merge(keys::router())
        .merge(subscriptions::router())
        .merge(schemas::router())
        .merge(retention::router())
        .merge(transfer::router())
        .merge(ops::router())
}

/// The routes and their OpenAPI document, completed with what every route
/// shares (see [`openapi::complete`]).
fn documented() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut api) = api_router().split_for_parts();
    openapi::complete(&mut api);
    (routes, api)
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().1
}

/// Which browser origins CORS lets in.
#[derive(Debug, Clone)]
pub enum CorsOrigins {
    /// CORS off.
    None,
    /// Every origin (`*`).
    Any,
    /// These origins.
    List(Vec<HeaderValue>),
}

/// The whole application: routes, docs, the console, fallbacks and
/// middleware.
/// `loopback`: the server listens on a loopback address (see
/// [`auth::authenticate`]).
pub fn app(state: AppState, cors_origins: CorsOrigins, loopback: bool) -> Router {
    let (routes, api) = documented();
    let mut router = routes
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
        .merge(console::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.limits.request_timeout,
            within_deadline,
        ))
        .layer(middleware::from_fn_with_state(
            auth::AuthLayerState {
                authenticator: state.authenticator.clone(),
                loopback,
            },
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), track))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal.into_response()
        }))
        // The span names the path, never the query, which may hold a
        // credential (`access_token`).
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
        }));
    let allow_origin = match cors_origins {
        CorsOrigins::None => None,
        CorsOrigins::Any => Some(AllowOrigin::any()),
        CorsOrigins::List(origins) => Some(AllowOrigin::list(origins)),
    };
    if let Some(allow_origin) = allow_origin {
        router = router.layer(
            CorsLayer::new()
                .allow_origin(allow_origin)
                .allow_methods([
                    Method::GET,
                    Method::HEAD,
                    Method::POST,
                    Method::PUT,
                    Method::DELETE,
                ])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::IF_MATCH,
                    header::IF_NONE_MATCH,
                    header::ACCEPT,
                    header::HeaderName::from_static("last-event-id"),
                ])
                .expose_headers([header::ETAG, header::LOCATION, header::RETRY_AFTER]),
        );
    }
    router.with_state(state)
}

/// Answers `408` (and closes the connection) when a request, body included,
/// takes longer than its deadline. A feed's answer starts at once, so its
/// stream is not cut; so does an export's. An append cut off this way may
/// still commit: a client retries it with the same event ids, which makes
/// the retry safe.
///
/// An import is left alone: it answers only once it has read its body,
/// which is as long as the store it restores, and restores it a chunk at a
/// time as it comes (never holding more), so the whole request has no
/// deadline; its body must only keep coming (see [`transfer`]).
async fn within_deadline(
    State(deadline): State<std::time::Duration>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>();
    if route.is_some_and(|route| route.as_str() == transfer::IMPORT_PATH) {
        return next.run(request).await;
    }
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = ApiError::RequestTimeout(deadline.as_secs()).into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// Records each request's latency by route and status, and store failures.
async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = crate::metrics::method_label(request.method());
    let response = next.run(request).await;
    if response.extensions().get::<StoreFailure>().is_some() {
        metrics.store_errors.inc();
    }
    let labels = RequestLabels {
        route,
        method,
        status: response.status().as_str().to_owned(),
    };
    metrics
        .requests
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The entity tag of a stream version: `"7"`.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("a number is a valid header")
}

/// Checks a read's `limit` (default 100) against the configured maximum.
fn page_limit(limit: Option<i64>, limits: &Limits) -> ApiResult<i64> {
    let max = limits.max_page_size;
    match limit.unwrap_or(100.min(max)) {
        limit @ 1.. if limit <= max => Ok(limit),
        other => Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}, not {other}"
        ))),
    }
}
