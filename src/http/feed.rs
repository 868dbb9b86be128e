//! The HTTP side of live feeds: where a feed starts, and server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};

use axum::response::{IntoResponse, Response};
use futures::Stream;
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Deserializer};

use super::auth::{Caller, Read};
use super::error::{ApiError, ApiResult};
use super::{AppState, wire};
use crate::feed::{FeedItem, Subject};
use crate::names;

/// How long a client waits before reconnecting, sent as the feed's `retry:`.
const RETRY: Duration = Duration::from_secs(2);

/// A `position` parameter: a number, or `end` (feeds only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// This position.
    At(i64),
    /// Right after the current last event.
    End,
}

impl<'de> Deserialize<'de> for Start {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "end" {
            return Ok(Start::End);
        }
        match text.parse() {
            Ok(position) if position >= 0 => Ok(Start::At(position)),
            _ => Err(serde::de::Error::custom(format!(
                "position must be a number ≥ 0 or `end`, not {text:?}"
            ))),
        }
    }
}

/// The position of a JSON read: `end` and `checkpoint` belong to feeds.
pub fn read_position(position: Option<Start>, checkpoint: Option<&str>) -> ApiResult<Option<i64>> {
    if checkpoint.is_some() {
        return Err(ApiError::BadRequest(
            "checkpoint applies to feeds only".into(),
        ));
    }
    match position {
        Some(Start::End) => Err(ApiError::BadRequest(
            "position=end applies to feeds only".into(),
        )),
        Some(Start::At(position)) => Ok(Some(position)),
        None => Ok(None),
    }
}

/// Refuses the read-only parameters a feed was given (`limit`, `direction`…).
pub fn refuse_for_feeds(given: &[(&str, bool)]) -> ApiResult<()> {
    match given.iter().find(|(_, present)| *present) {
        Some((name, _)) => Err(ApiError::BadRequest(format!(
            "{name} does not apply to feeds"
        ))),
        None => Ok(()),
    }
}

/// Opens a feed as server-sent events. It starts right after `Last-Event-ID`
/// if given, else right after the consumer's checkpoint if one is stored,
/// else at `position` (`default_start` when absent). It ends when the
/// caller's credential lapses (revoked or expired).
pub async fn open(
    caller: &Caller<Read>,
    state: &AppState,
    headers: &HeaderMap,
    subject: Subject,
    position: Option<Start>,
    checkpoint: Option<String>,
    default_start: i64,
) -> ApiResult<Response> {
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
        {
            Some(id) if id >= 0 => Some(id),
            _ => {
                return Err(ApiError::BadRequest(
                    "Last-Event-ID must be a position ≥ 0".into(),
                ));
            }
        },
    };
    let stored = match &checkpoint {
        Some(consumer) => {
            names::check_name("a consumer name", consumer).map_err(ApiError::BadRequest)?;
            caller.consumer(consumer)?;
            state.store.checkpoint(consumer).await?
        }
        None => None,
    };
    let after = |position: i64| {
        position
            .checked_add(1)
            .ok_or_else(|| ApiError::BadRequest(format!("nothing can follow position {position}")))
    };
    let start = match (last_event_id, stored, position) {
        (Some(id), _, _) => after(id)?,
        (None, Some(checkpoint), _) => after(checkpoint.position)?,
        (None, None, Some(Start::At(position))) => position,
        (None, None, Some(Start::End)) => state.feeds.end_position(&subject).await?,
        (None, None, None) => default_start,
    };
    let items = state
        .feeds
        .open(subject.clone(), start)
        .map_err(|full| ApiError::TooManyFeeds(full.to_string()))?;
    let retry = stream::once(async { Ok::<_, Infallible>(Event::default().retry(RETRY)) });
    // A query feed crosses streams: it shows only those in the caller's reach.
    let reaches = caller.reach();
    let events = items
        .filter(move |item| {
            std::future::ready(match item {
                FeedItem::Event(shared) => reaches(&shared.event().stream),
                FeedItem::CaughtUp(_) => true,
            })
        })
        .map(move |item| Ok(sse_event(&subject, item)));
    Ok(sse_response(
        retry.chain(events).take_until(caller.lapsed()),
        state.limits.keep_alive,
    ))
}

/// A stream of SSE messages as a response, with a keep-alive comment every
/// `keep_alive` on an idle stream.
pub fn sse_response(
    messages: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
    keep_alive: Duration,
) -> Response {
    let sse =
        Sse::new(messages).keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"));
    let mut response = sse.into_response();
    // Proxies such as nginx must pass events on as they come.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

/// One feed item as an SSE message: an event carries its position as `id:`;
/// `caught-up` carries none, so it never moves the client's `Last-Event-ID`.
fn sse_event(subject: &Subject, item: FeedItem) -> Event {
    match item {
        FeedItem::Event(shared) => {
            let json = shared.rendered(|event| {
                let event = wire::Event::from(event.clone());
                serde_json::to_string(&event).expect("an event serialises")
            });
            Event::default()
                .id(subject.position_of(shared.event()).to_string())
                .data(json)
        }
        FeedItem::CaughtUp(position) => Event::default()
            .event("caught-up")
            .data(format!(r#"{{"position":{position}}}"#)),
    }
}
