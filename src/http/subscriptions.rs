//! `/subscriptions`: managed subscriptions (API.md, Managed subscriptions).
//! Creating, reading, deleting, listing parked events and replaying them
//! are administration; claiming, settling and following deliveries need
//! `read` on the subscription's source.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Admin, Caller, Read};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{self, AcceptsJson, JsonBody, Path, Query, Wants};
use super::queries::{QueryItemBody, query_items};
use super::wire::{self, serialize_time};
use super::{AppState, feed};
use crate::names;
use crate::store::{
    Claim, Creation, Delivery, DeliveryOrder, ParkedEvent, PushTarget, Settlement, Source, StartAt,
    SubscriptionDefinition, SubscriptionError, SubscriptionState,
};

/// Most leases settled, deliveries claimed, or positions replayed, at once.
const MAX_BATCH: usize = 1000;

/// Bounds of a lease's lifetime, in milliseconds.
const ACK_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

/// Bounds of a push receiver's timeout, in milliseconds.
const PUSH_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=300_000;

/// The longest a claim waits for events, in milliseconds.
const MAX_WAIT_MS: u64 = 30_000;

/// Most bytes of a `reason`.
const MAX_REASON_BYTES: usize = 1000;

/// The subscription routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_subscriptions))
        .routes(routes!(
            put_subscription,
            get_subscription,
            delete_subscription
        ))
        .routes(routes!(claim))
        .routes(routes!(ack))
        .routes(routes!(nack))
        .routes(routes!(parked))
        .routes(routes!(replay))
        .routes(routes!(deliveries))
}

/// What a subscription follows: exactly one of the four.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SourceBody {
    /// The whole log (`true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    all: Option<bool>,
    /// One category.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "account")]
    category: Option<String>,
    /// One stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
    /// The events matching any item of a query (as `POST /query`).
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<Vec<QueryItemBody>>,
}

/// Where a subscription starts: `"beginning"`, `"end"`, or a global
/// position (inclusive).
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
enum StartBody {
    /// `beginning` or `end`.
    Named(String),
    /// A global position.
    Position(i64),
}

/// How events may be delivered side by side.
#[derive(Deserialize, Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum OrderingBody {
    /// At most one event of a stream in flight, in stream order.
    Stream,
    /// As parallel as consumers allow.
    None,
}

/// Where the server pushes deliveries.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PushBody {
    /// The receiver: an `http` or `https` URL.
    #[schema(example = "https://billing.internal/hooks/cairn")]
    url: String,
    /// A Standard Webhooks secret (`whsec_` and 24 to 64 bytes in base64)
    /// that signs each delivery; never shown again.
    secret: Option<String>,
    /// Most deliveries awaiting the receiver at once (1–1000, default 16).
    #[schema(minimum = 1, maximum = 1000)]
    max_in_flight: Option<u32>,
    /// How long the receiver may take to answer (100–300000 ms, default 10000).
    #[schema(minimum = 100, maximum = 300000)]
    timeout_ms: Option<u64>,
}

/// A subscription as written.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SubscriptionBody {
    /// What it follows.
    source: SourceBody,
    /// Only events of these types (absent or empty: any).
    #[serde(default)]
    types: Vec<String>,
    /// Where it starts (default `"beginning"`).
    start: Option<StartBody>,
    /// `stream` (default) or `none`.
    ordering: Option<OrderingBody>,
    /// How long a lease lasts before its event is delivered again
    /// (100–3600000 ms, default 30000).
    #[schema(minimum = 100, maximum = 3600000)]
    ack_timeout_ms: Option<u64>,
    /// Deliveries of an event before it is parked (1–1000, default 5).
    #[schema(minimum = 1, maximum = 1000)]
    max_deliveries: Option<u32>,
    /// Push deliveries to a webhook instead of waiting for claims.
    push: Option<PushBody>,
}

/// Where a subscription pushes, as shown (the secret never is).
#[derive(Serialize, ToSchema)]
struct PushView {
    /// The receiver.
    url: String,
    /// Whether deliveries are signed (a secret is set).
    signed: bool,
    /// Most deliveries awaiting the receiver at once.
    max_in_flight: u32,
    /// How long the receiver may take to answer.
    timeout_ms: u64,
}

/// A consumer of a subscription.
#[derive(Serialize, ToSchema)]
struct ConsumerView {
    /// Its name.
    consumer: String,
    /// Leases it holds.
    in_flight: i64,
    /// When it last claimed.
    #[serde(serialize_with = "serialize_time")]
    #[schema(value_type = String, format = DateTime)]
    last_claim: chrono::DateTime<chrono::Utc>,
}

/// A subscription: its definition and its state.
#[derive(Serialize, ToSchema)]
struct SubscriptionView {
    /// Its name.
    name: String,
    /// What it follows.
    source: SourceBody,
    /// Only events of these types (empty: any).
    types: Vec<String>,
    /// Where it started.
    start: StartBody,
    /// How events may be delivered side by side.
    ordering: OrderingBody,
    /// How long a lease lasts.
    ack_timeout_ms: u64,
    /// Deliveries of an event before it is parked.
    max_deliveries: u32,
    /// Where it pushes, if it does.
    push: Option<PushView>,
    /// Every source event at or before it is acknowledged or parked.
    position: i64,
    /// The log's head.
    head: i64,
    /// Source events after `position`.
    lag: i64,
    /// Leases held.
    in_flight: i64,
    /// Events parked.
    parked: i64,
    /// The consumers that claimed lately (at most 100, latest first).
    consumers: Vec<ConsumerView>,
    /// When it was created.
    #[serde(serialize_with = "serialize_time")]
    #[schema(value_type = String, format = DateTime)]
    created: chrono::DateTime<chrono::Utc>,
}

/// Every subscription.
#[derive(Serialize, ToSchema)]
struct SubscriptionList {
    /// By name.
    subscriptions: Vec<SubscriptionView>,
}

impl From<SubscriptionState> for SubscriptionView {
    fn from(state: SubscriptionState) -> Self {
        let SubscriptionDefinition {
            source,
            types,
            start,
            ordering,
            ack_timeout_ms,
            max_deliveries,
            push,
        } = state.definition;
        let mut view = SourceBody {
            all: None,
            category: None,
            stream: None,
            query: None,
        };
        match source {
            Source::All => view.all = Some(true),
            Source::Category(category) => view.category = Some(category),
            Source::Stream(stream) => view.stream = Some(stream),
            Source::Query(items) => view.query = Some(items.iter().map(Into::into).collect()),
        }
        SubscriptionView {
            name: state.name,
            source: view,
            types,
            start: match start {
                StartAt::Beginning => StartBody::Named("beginning".into()),
                StartAt::End => StartBody::Named("end".into()),
                StartAt::Position(position) => StartBody::Position(position),
            },
            ordering: match ordering {
                DeliveryOrder::Stream => OrderingBody::Stream,
                DeliveryOrder::None => OrderingBody::None,
            },
            ack_timeout_ms,
            max_deliveries,
            push: push.map(|push| PushView {
                url: push.url,
                signed: push.secret.is_some(),
                max_in_flight: push.max_in_flight,
                timeout_ms: push.timeout_ms,
            }),
            position: state.position,
            head: state.head,
            lag: state.lag,
            in_flight: state.in_flight,
            parked: state.parked,
            consumers: state
                .consumers
                .into_iter()
                .map(|c| ConsumerView {
                    consumer: c.consumer,
                    in_flight: c.in_flight,
                    last_claim: c.last_claim,
                })
                .collect(),
            created: state.created,
        }
    }
}

/// A `400` naming the field at fault.
fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::BadRequest(detail.into())
}

/// Checks a number against its bounds; `default` when absent.
fn within<T: PartialOrd + Copy + std::fmt::Display>(
    field: &str,
    value: Option<T>,
    default: T,
    bounds: std::ops::RangeInclusive<T>,
) -> ApiResult<T> {
    let value = value.unwrap_or(default);
    match bounds.contains(&value) {
        true => Ok(value),
        false => Err(bad(format!(
            "{field} must be {} to {}, not {value}",
            bounds.start(),
            bounds.end()
        ))),
    }
}

impl SubscriptionBody {
    /// The definition, checked.
    fn definition(self) -> ApiResult<SubscriptionDefinition> {
        let source = match self.source {
            SourceBody {
                all: Some(true),
                category: None,
                stream: None,
                query: None,
            } => Source::All,
            SourceBody {
                all: None,
                category: Some(category),
                stream: None,
                query: None,
            } => {
                names::check_category(&category).map_err(bad)?;
                Source::Category(category)
            }
            SourceBody {
                all: None,
                category: None,
                stream: Some(stream),
                query: None,
            } => {
                names::check_name("a stream name", &stream).map_err(bad)?;
                Source::Stream(stream)
            }
            SourceBody {
                all: None,
                category: None,
                stream: None,
                query: Some(items),
            } => Source::Query(query_items(items)?),
            _ => {
                return Err(bad(
                    "source is exactly one of {\"all\": true}, {\"category\": …}, \
                     {\"stream\": …} or {\"query\": […]}",
                ));
            }
        };
        if self.types.len() > 32 {
            return Err(bad("types names at most 32 types"));
        }
        for event_type in &self.types {
            names::check_name("an event type", event_type).map_err(bad)?;
        }
        let start = match self.start {
            None => StartAt::Beginning,
            Some(StartBody::Named(name)) if name == "beginning" => StartAt::Beginning,
            Some(StartBody::Named(name)) if name == "end" => StartAt::End,
            Some(StartBody::Position(position)) if position >= 0 => StartAt::Position(position),
            Some(_) => {
                return Err(bad(
                    "start is \"beginning\", \"end\" or a global position ≥ 0",
                ));
            }
        };
        let ordering = match self.ordering.unwrap_or(OrderingBody::Stream) {
            OrderingBody::Stream => DeliveryOrder::Stream,
            OrderingBody::None => DeliveryOrder::None,
        };
        Ok(SubscriptionDefinition {
            source,
            types: self.types,
            start,
            ordering,
            ack_timeout_ms: within(
                "ack_timeout_ms",
                self.ack_timeout_ms,
                30_000,
                ACK_TIMEOUT_MS,
            )?,
            max_deliveries: within("max_deliveries", self.max_deliveries, 5, 1..=1000)?,
            push: self.push.map(PushBody::target).transpose()?,
        })
    }
}

impl PushBody {
    /// The push target, checked.
    fn target(self) -> ApiResult<PushTarget> {
        if self.url.len() > 2048 {
            return Err(bad("push.url is at most 2048 bytes"));
        }
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| bad(format!("push.url is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(bad("push.url must be an http or https URL with a host"));
        }
        if let Some(secret) = &self.secret {
            // Never quoted: a secret stays out of error bodies.
            let key = secret.strip_prefix("whsec_").unwrap_or(secret);
            match STANDARD.decode(key) {
                Ok(bytes) if (24..=64).contains(&bytes.len()) => {}
                _ => {
                    return Err(bad(
                        "push.secret must be `whsec_` followed by 24 to 64 bytes in base64",
                    ));
                }
            }
        }
        Ok(PushTarget {
            url: self.url,
            secret: self.secret,
            max_in_flight: within("push.max_in_flight", self.max_in_flight, 16, 1..=1000)?,
            timeout_ms: within("push.timeout_ms", self.timeout_ms, 10_000, PUSH_TIMEOUT_MS)?,
        })
    }
}

/// Checks a subscription name from the path.
fn check_subscription(name: &str) -> ApiResult<()> {
    names::check_name("a subscription name", name).map_err(bad)
}

impl From<SubscriptionError> for ApiError {
    fn from(error: SubscriptionError) -> Self {
        match error {
            SubscriptionError::NotFound(_) => ApiError::NotFound(error.to_string()),
            SubscriptionError::ForeignLease { .. } => ApiError::BadRequest(error.to_string()),
            SubscriptionError::Store(error) => error.into(),
        }
    }
}

/// Checks that the caller may claim and settle a subscription's events. A
/// grant over every stream reaches any source, so only a narrower one costs
/// a read of the definition; a missing subscription is then the store's
/// `404`.
async fn claimable(caller: &Caller<Read>, state: &AppState, name: &str) -> ApiResult<()> {
    match caller.reaches_everything() {
        true => check_subscription(name),
        false => readable(caller, state, name).await.map(drop),
    }
}

/// A subscription's definition, after checking that the caller may read
/// its source.
async fn readable(
    caller: &Caller<Read>,
    state: &AppState,
    name: &str,
) -> ApiResult<SubscriptionDefinition> {
    check_subscription(name)?;
    let definition = state
        .store
        .subscription_definition(name)
        .await?
        .ok_or_else(|| SubscriptionError::NotFound(name.to_owned()))?;
    match &definition.source {
        Source::All | Source::Query(_) => {
            caller.everywhere("a subscription to the whole log or a query")?
        }
        Source::Category(category) => caller.category(category)?,
        Source::Stream(stream) => caller.stream(stream)?,
    }
    Ok(definition)
}

/// Creates a subscription.
#[utoipa::path(
    put,
    path = "/subscriptions/{name}",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription, named like a stream")),
    request_body(content = SubscriptionBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = SubscriptionView),
        (status = 200, description = "The same definition exists", body = SubscriptionView),
        (status = 409, description = "A different definition exists under the name", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn put_subscription(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    _: AcceptsJson,
    JsonBody(body): JsonBody<SubscriptionBody>,
) -> ApiResult<Response> {
    check_subscription(&name)?;
    let definition = body.definition()?;
    let status = match state.store.create_subscription(&name, &definition).await? {
        Creation::Created => StatusCode::CREATED,
        Creation::Existing => StatusCode::OK,
        Creation::Different => {
            return Err(ApiError::Conflict(format!(
                "subscription {name} exists with a different definition"
            )));
        }
    };
    let created = state
        .store
        .subscription(&name)
        .await?
        .ok_or_else(|| SubscriptionError::NotFound(name.clone()))?;
    Ok((status, Json(SubscriptionView::from(created))).into_response())
}

/// Every subscription, with its state.
#[utoipa::path(
    get,
    path = "/subscriptions",
    tag = "subscriptions",
    responses((status = 200, description = "The subscriptions, by name", body = SubscriptionList))
)]
async fn list_subscriptions(
    _: Caller<Admin>,
    State(state): State<AppState>,
    _: AcceptsJson,
) -> ApiResult<Json<SubscriptionList>> {
    let subscriptions = state.store.subscriptions().await?;
    Ok(Json(SubscriptionList {
        subscriptions: subscriptions.into_iter().map(Into::into).collect(),
    }))
}

/// A subscription: its definition and its state.
#[utoipa::path(
    get,
    path = "/subscriptions/{name}",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription")),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionView),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_subscription(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    _: AcceptsJson,
) -> ApiResult<Json<SubscriptionView>> {
    check_subscription(&name)?;
    let found = state
        .store
        .subscription(&name)
        .await?
        .ok_or_else(|| SubscriptionError::NotFound(name.clone()))?;
    Ok(Json(found.into()))
}

/// Deletes a subscription with its leases and parked events.
#[utoipa::path(
    delete,
    path = "/subscriptions/{name}",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_subscription(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    check_subscription(&name)?;
    match state.dispatcher.delete(&name).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(SubscriptionError::NotFound(name).into()),
    }
}

/// A request for deliveries.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    /// Who claims, named like a stream.
    #[schema(example = "worker-1")]
    consumer: String,
    /// Most deliveries (1–1000, default 10).
    #[schema(minimum = 1, maximum = 1000)]
    max: Option<usize>,
    /// How long to wait for at least one (0–30000 ms, default 0; at most
    /// the request deadline).
    #[schema(minimum = 0, maximum = 30000)]
    wait_ms: Option<u64>,
}

/// An event handed to a consumer under a lease.
#[derive(Serialize, ToSchema)]
struct DeliveryView {
    /// Names the lease when acknowledging: opaque.
    lease: String,
    /// Which delivery of the event this is, from 1.
    attempt: i64,
    /// The event.
    event: wire::Event,
}

impl From<Delivery> for DeliveryView {
    fn from(delivery: Delivery) -> Self {
        DeliveryView {
            lease: delivery.lease,
            attempt: delivery.attempt,
            event: delivery.event.into(),
        }
    }
}

/// What a claim got.
#[derive(Serialize, ToSchema)]
struct Claimed {
    /// The deliveries, oldest first (none when none came in time).
    deliveries: Vec<DeliveryView>,
}

/// Leases events to a consumer, waiting up to `wait_ms` for at least one.
#[utoipa::path(
    post,
    path = "/subscriptions/{name}/claim",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription")),
    request_body(content = ClaimBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The deliveries", body = Claimed),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn claim(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    _: AcceptsJson,
    JsonBody(body): JsonBody<ClaimBody>,
) -> ApiResult<Json<Claimed>> {
    names::check_name("a consumer name", &body.consumer).map_err(bad)?;
    let max = within("max", body.max, 10, 1..=MAX_BATCH)?;
    let wait_ms = within("wait_ms", body.wait_ms, 0, 0..=MAX_WAIT_MS)?;
    claimable(&caller, &state, &name).await?;
    // The answer must leave before the request's deadline.
    let wait = Duration::from_millis(wait_ms).min(
        state
            .limits
            .request_timeout
            .saturating_sub(Duration::from_secs(1)),
    );
    let claim = Claim {
        consumer: body.consumer,
        max,
        lease_for: None,
    };
    let deliveries = state.dispatcher.claim(&name, &claim, wait).await?;
    Ok(Json(Claimed {
        deliveries: deliveries.into_iter().map(Into::into).collect(),
    }))
}

/// Leases to acknowledge.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AckBody {
    /// The leases (at most 1000).
    leases: Vec<String>,
}

/// What to do with the events of nacked leases.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum NackAction {
    /// Deliver them again (parked once they had `max_deliveries` deliveries).
    Retry,
    /// Set them aside until replayed.
    Park,
}

/// Leases given back.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NackBody {
    /// The leases (at most 1000).
    leases: Vec<String>,
    /// `retry` or `park`.
    action: NackAction,
    /// Why, kept with a parked event (at most 1000 bytes).
    reason: Option<String>,
}

/// What settling leases did.
#[derive(Serialize, ToSchema)]
struct SettledView {
    /// Leases settled.
    done: u64,
    /// Leases no longer held: expired and delivered again, or settled before.
    stale: Vec<String>,
}

/// Checks the leases of a settlement.
fn check_leases(leases: &[String]) -> ApiResult<()> {
    match leases.len() <= MAX_BATCH {
        true => Ok(()),
        false => Err(bad(format!(
            "at most {MAX_BATCH} leases at once, not {}",
            leases.len()
        ))),
    }
}

/// Settles leases, after checking that the caller may read the source.
async fn settle(
    caller: &Caller<Read>,
    state: &AppState,
    name: &str,
    leases: &[String],
    settlement: Settlement,
) -> ApiResult<Json<SettledView>> {
    check_leases(leases)?;
    claimable(caller, state, name).await?;
    let settled = state.dispatcher.settle(name, leases, &settlement).await?;
    Ok(Json(SettledView {
        done: settled.done,
        stale: settled.stale,
    }))
}

/// Acknowledges events: they are never delivered again.
#[utoipa::path(
    post,
    path = "/subscriptions/{name}/ack",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription")),
    request_body(content = AckBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Settled", body = SettledView),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn ack(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    _: AcceptsJson,
    JsonBody(body): JsonBody<AckBody>,
) -> ApiResult<Json<SettledView>> {
    settle(&caller, &state, &name, &body.leases, Settlement::Ack).await
}

/// Gives events back: to be delivered again, or parked.
#[utoipa::path(
    post,
    path = "/subscriptions/{name}/nack",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription")),
    request_body(content = NackBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Settled", body = SettledView),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn nack(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    _: AcceptsJson,
    JsonBody(body): JsonBody<NackBody>,
) -> ApiResult<Json<SettledView>> {
    let reason = match body.reason {
        Some(reason) if reason.len() > MAX_REASON_BYTES => {
            return Err(bad(format!("reason is at most {MAX_REASON_BYTES} bytes")));
        }
        Some(reason) => reason,
        None => "given back by a consumer".to_owned(),
    };
    let settlement = match body.action {
        NackAction::Retry => Settlement::Retry {
            delay: Duration::ZERO,
            reason,
        },
        NackAction::Park => Settlement::Park { reason },
    };
    settle(&caller, &state, &name, &body.leases, settlement).await
}

/// Where a page of parked events starts.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ParkedParams {
    /// The first global position listed (default 0).
    #[param(minimum = 0)]
    position: Option<i64>,
    /// Most events listed (default 100, at most `--max-page-size`).
    #[param(minimum = 1)]
    limit: Option<i64>,
}

/// An event set aside.
#[derive(Serialize, ToSchema)]
struct ParkedView {
    /// The event.
    event: wire::Event,
    /// Why it was parked.
    reason: String,
    /// How many times it was delivered.
    attempts: i64,
    /// When it was parked.
    #[serde(serialize_with = "serialize_time")]
    #[schema(value_type = String, format = DateTime)]
    parked_at: chrono::DateTime<chrono::Utc>,
}

impl From<ParkedEvent> for ParkedView {
    fn from(parked: ParkedEvent) -> Self {
        ParkedView {
            event: parked.event.into(),
            reason: parked.reason,
            attempts: parked.attempts,
            parked_at: parked.parked_at,
        }
    }
}

/// A page of parked events.
#[derive(Serialize, ToSchema)]
struct ParkedPageView {
    /// In global order.
    parked: Vec<ParkedView>,
    /// Where the next page starts.
    next_position: i64,
    /// Nothing parked lies beyond `next_position`.
    end: bool,
}

/// A subscription's parked events, in global order.
#[utoipa::path(
    get,
    path = "/subscriptions/{name}/parked",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription"), ParkedParams),
    responses(
        (status = 200, description = "A page of parked events", body = ParkedPageView),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn parked(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<ParkedParams>,
    _: AcceptsJson,
) -> ApiResult<Json<ParkedPageView>> {
    check_subscription(&name)?;
    let position = params.position.unwrap_or(0);
    if position < 0 {
        return Err(bad("position must be ≥ 0"));
    }
    let limit = within("limit", params.limit, 100, 1..=state.limits.max_page_size)?;
    let page = state.store.parked(&name, position, limit).await?;
    Ok(Json(ParkedPageView {
        parked: page.parked.into_iter().map(Into::into).collect(),
        next_position: page.next_position,
        end: page.end,
    }))
}

/// Parked events to deliver again.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    /// Their global positions (at most 1000); absent: every parked event.
    positions: Option<Vec<i64>>,
}

/// How many events went back into delivery.
#[derive(Serialize, ToSchema)]
struct Replayed {
    /// Parked events put back (positions not parked are passed over).
    replayed: u64,
}

/// Puts parked events back into delivery, with a fresh count of attempts.
#[utoipa::path(
    post,
    path = "/subscriptions/{name}/replay",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription")),
    request_body(content = ReplayBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Replayed", body = Replayed),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn replay(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    _: AcceptsJson,
    JsonBody(body): JsonBody<ReplayBody>,
) -> ApiResult<Json<Replayed>> {
    check_subscription(&name)?;
    if let Some(positions) = &body.positions {
        if positions.len() > MAX_BATCH {
            return Err(bad(format!("at most {MAX_BATCH} positions at once")));
        }
        if positions.iter().any(|p| *p < 1) {
            return Err(bad("a global position is ≥ 1"));
        }
    }
    let replayed = state
        .dispatcher
        .replay(&name, body.positions.as_deref())
        .await?;
    Ok(Json(Replayed { replayed }))
}

/// Who follows deliveries, and how many leases they hold at most.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeliveriesParams {
    /// The consumer, named like a stream.
    consumer: String,
    /// Most leases the consumer holds unsettled (1–1000, default 10): the
    /// feed waits for acknowledgements past it.
    #[param(minimum = 1, maximum = 1000)]
    max_in_flight: Option<usize>,
}

/// Deliveries as server-sent events: each message's `id:` is its lease and
/// its data `{"lease", "attempt", "event"}`; settle them with `ack`/`nack`.
#[utoipa::path(
    get,
    path = "/subscriptions/{name}/deliveries",
    tag = "subscriptions",
    params(("name" = String, Path, description = "The subscription"), DeliveriesParams),
    responses(
        (status = 200, description = "A feed of deliveries", content_type = "text/event-stream", body = String),
        (status = 406, description = "`Accept` admits no `text/event-stream`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn deliveries(
    caller: Caller<Read>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<DeliveriesParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if extract::negotiate(&headers, true)? != Wants::Feed {
        return Err(ApiError::NotAcceptable("text/event-stream"));
    }
    names::check_name("a consumer name", &params.consumer).map_err(bad)?;
    let max_in_flight = within("max_in_flight", params.max_in_flight, 10, 1..=MAX_BATCH)?;
    readable(&caller, &state, &name).await?;
    let follow = state
        .dispatcher
        .follow(name, params.consumer, max_in_flight)
        .map_err(|full| ApiError::TooManyFeeds(full.to_string()))?;
    let events = follow.map(|delivery| {
        let lease = delivery.lease.clone();
        let json =
            serde_json::to_string(&DeliveryView::from(delivery)).expect("a delivery serialises");
        Ok::<_, Infallible>(SseEvent::default().id(lease).data(json))
    });
    Ok(feed::sse_response(
        events.take_until(caller.lapsed()),
        state.limits.keep_alive,
    ))
}
