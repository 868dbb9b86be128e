//! Extractors and header parsers that turn every malformed input into a
//! problem: query strings, paths, JSON bodies, `If-Match`, `Accept`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

use super::error::ApiError;
use super::{AppState, Limits};
use crate::names;
use crate::store::{Expected, NewEvent};

/// A path parameter; a rejection is a `400` problem.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Query parameters, strictly: unknown, repeated (unless the field is a list),
/// empty and malformed parameters are a `400` problem.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        if percent_encoding::percent_decode_str(query)
            .decode_utf8()
            .is_err()
        {
            return Err(ApiError::BadRequest(
                "query parameters must be UTF-8".into(),
            ));
        }
        // An empty value would read as "not given"; say it is wrong instead.
        if let Some((name, _)) =
            form_urlencoded::parse(query.as_bytes()).find(|(_, v)| v.is_empty())
        {
            return Err(ApiError::BadRequest(format!(
                "query parameter {name} has no value"
            )));
        }
        serde_html_form::from_str(query)
            .map(Query)
            .map_err(|e| ApiError::BadRequest(format!("query parameters: {e}")))
    }
}

/// A request body that must be JSON (`application/json` or `…+json`); other
/// content types are a `415`, bodies over the limit a `413`. It holds its
/// share of the bytes of bodies in flight (see [`AppState::bodies`]) for as
/// long as it lives.
pub struct JsonBytes(pub Bytes, pub OwnedSemaphorePermit);

impl FromRequest<AppState> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let essence = essence.to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be application/json".into(),
            ));
        }
        // A body declared too large is refused before a byte of it is read.
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let limit = state.limits.max_body_bytes;
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(ApiError::TooLarge(format!(
                "a request body holds at most {limit} bytes"
            )));
        }
        // Before reading: wait until the bodies in flight leave room for
        // this one (a body of unknown length counts as the largest allowed).
        let share = declared.map_or(limit, |length| length as usize);
        let permit = hold_body_bytes(state, share).await?;
        Ok(JsonBytes(
            Bytes::from_request(request, state).await?,
            permit,
        ))
    }
}

/// Waits until the bodies in flight leave room for `bytes` more (at most
/// the whole allowance), and holds them (see [`AppState::bodies`]) until the
/// permit is dropped.
pub async fn hold_body_bytes(
    state: &AppState,
    bytes: usize,
) -> Result<OwnedSemaphorePermit, ApiError> {
    let share = bytes.clamp(1, state.limits.max_body_bytes_in_flight);
    state
        .bodies
        .clone()
        .acquire_many_owned(u32::try_from(share).unwrap_or(u32::MAX))
        .await
        .map_err(|_| ApiError::Unavailable)
}

/// A JSON request body parsed into `T` (as [`JsonBytes`] checks it); a body
/// that does not parse is a `400`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let JsonBytes(body, _share) = JsonBytes::from_request(request, state).await?;
        serde_json::from_slice(&body)
            .map(|JsonObject(value)| JsonBody(value))
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

/// A `T` read only from a JSON object. serde's derived structs also take a
/// JSON array, field by field in order (`[5]` as `{"position": 5}`); API.md
/// wants every field in its JSON type, so an array where an object belongs
/// is a `400`.
pub struct JsonObject<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .map(JsonObject)
    }
}

/// Whether JSON containers in `json` nest deeper than `cap` (`[[1]]` is 2
/// deep). serde_json skips over a raw value without a depth limit, and a
/// value it stored that way could not be read back by most clients' parsers.
pub fn nests_deeper_than(json: &str, cap: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > cap {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// One event as a client writes it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventWrite {
    /// `POST /events` only: the stream the event goes to.
    #[schema(example = "course-c1")]
    stream: Option<String>,
    /// A UUID; the server makes a UUIDv7 when it is left out. Reusing ids makes retries safe.
    id: Option<Uuid>,
    /// The event type, named like a stream.
    #[serde(rename = "type")]
    event_type: String,
    /// Any JSON value, stored and returned exactly as written.
    #[schema(value_type = serde_json::Value)]
    data: Box<RawValue>,
    /// A JSON object or null.
    #[schema(value_type = Option<std::collections::HashMap<String, serde_json::Value>>)]
    metadata: Option<Box<RawValue>>,
    /// The id of the event that caused this one.
    causation_id: Option<Uuid>,
    /// Ties the events of one conversation together (1–255 bytes).
    correlation_id: Option<String>,
    /// Tags such as `course:c1`, for reads and append conditions across
    /// streams: at most 32, each named like a stream, none twice.
    #[schema(example = json!(["course:c1", "student:s7"]))]
    tags: Option<Vec<String>>,
}

/// Parses a stream append's body: one event or a non-empty array of at
/// most `max_events` events, each valid, with no id twice and no `stream`
/// (the path names it). Ids left out get a fresh UUIDv7.
pub fn parse_events(body: &[u8], limits: &Limits) -> Result<Vec<NewEvent>, ApiError> {
    let bad = |e: serde_json::Error| ApiError::BadRequest(format!("invalid event JSON: {e}"));
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let inputs: Vec<JsonObject<EventWrite>> = if first == Some(&b'[') {
        serde_json::from_slice(body).map_err(bad)?
    } else {
        vec![serde_json::from_slice(body).map_err(bad)?]
    };
    let inputs = inputs.into_iter().map(|JsonObject(input)| input).collect();
    checked_events(inputs, limits)?
        .into_iter()
        .enumerate()
        .map(|(index, (stream, event))| match stream {
            None => Ok(event),
            Some(_) => Err(ApiError::BadRequest(format!(
                "event {index}: `stream` belongs to POST /events; here the path names the stream"
            ))),
        })
        .collect()
}

/// Checks a batch of events as written: 1 to `max_batch_events`, each
/// valid, no id twice. Each comes with the stream it names, if any.
pub fn checked_events(
    inputs: Vec<EventWrite>,
    limits: &Limits,
) -> Result<Vec<(Option<String>, NewEvent)>, ApiError> {
    let max_events = limits.max_batch_events;
    if inputs.is_empty() {
        return Err(ApiError::BadRequest("the batch holds no events".into()));
    }
    if inputs.len() > max_events {
        return Err(ApiError::TooLarge(format!(
            "a batch holds at most {max_events} events"
        )));
    }
    let mut events: Vec<(Option<String>, NewEvent)> = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let at = |detail: String| ApiError::BadRequest(format!("event {index}: {detail}"));
        if let Some(stream) = &input.stream {
            names::check_name("a stream name", stream).map_err(at)?;
        }
        let tags = input.tags.unwrap_or_default();
        let fields = EventFields {
            event_type: &input.event_type,
            data: &input.data,
            metadata: input.metadata.as_deref(),
            correlation_id: input.correlation_id.as_deref(),
            tags: &tags,
        };
        fields.check(limits.max_json_depth).map_err(at)?;
        let id = input.id.unwrap_or_else(Uuid::now_v7);
        if events.iter().any(|(_, e)| e.id == id) {
            return Err(at(format!("id {id} appears twice in the request")));
        }
        let event = NewEvent {
            id,
            client_id: input.id.is_some(),
            event_type: input.event_type,
            data: input.data,
            metadata: input.metadata,
            causation_id: input.causation_id,
            correlation_id: input.correlation_id,
            tags,
        };
        events.push((input.stream, event));
    }
    Ok(events)
}

/// The fields of an event that its writer chose, as an append takes them
/// and an import restores them: both hold them to the same rules.
pub struct EventFields<'a> {
    /// Its type.
    pub event_type: &'a str,
    /// Its data.
    pub data: &'a RawValue,
    /// Its metadata.
    pub metadata: Option<&'a RawValue>,
    /// Its correlation id.
    pub correlation_id: Option<&'a str>,
    /// Its tags.
    pub tags: &'a [String],
}

impl EventFields<'_> {
    /// Checks them (API.md, Writing): the type named like a stream, data
    /// and metadata no deeper than `max_depth`, metadata an object, a valid
    /// correlation id and tags.
    pub fn check(&self, max_depth: usize) -> Result<(), String> {
        names::check_name("an event type", self.event_type)?;
        let too_deep = nests_deeper_than(self.data.get(), max_depth)
            || self
                .metadata
                .is_some_and(|m| nests_deeper_than(m.get(), max_depth));
        if too_deep {
            return Err(format!(
                "data and metadata may nest at most {max_depth} levels deep"
            ));
        }
        if self.metadata.is_some_and(|m| !m.get().starts_with('{')) {
            return Err("metadata must be an object or null".into());
        }
        if let Some(correlation_id) = self.correlation_id {
            names::check_correlation_id(correlation_id)?;
        }
        names::check_tags(self.tags)
    }
}

/// An `until_version` bound, checked: `-1` is the stream before its first
/// event (API.md, Reading); anything lower is a mistake.
pub fn until_version(bound: Option<i64>) -> Result<Option<i64>, ApiError> {
    match bound {
        Some(version) if version < -1 => {
            Err(ApiError::BadRequest("until_version must be ≥ -1".into()))
        }
        bound => Ok(bound),
    }
}

/// Reads the expected version of an append from `If-Match` / `If-None-Match`.
pub fn expected_version(headers: &HeaderMap) -> Result<Expected, ApiError> {
    let single = |name: header::HeaderName| -> Result<Option<&str>, ApiError> {
        let mut values = headers.get_all(&name).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ApiError::BadRequest(format!("{name} given twice")));
        }
        let text = value
            .to_str()
            .map_err(|_| ApiError::BadRequest(format!("{name} is not ASCII")))?;
        Ok(Some(text.trim()))
    };
    match (single(header::IF_MATCH)?, single(header::IF_NONE_MATCH)?) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "give If-Match or If-None-Match, not both".into(),
        )),
        (None, None) => Ok(Expected::Any),
        (None, Some("*")) => Ok(Expected::NoStream),
        (None, Some(other)) => Err(ApiError::BadRequest(format!(
            "If-None-Match on an append must be `*`, not {other:?}"
        ))),
        (Some("*"), None) => Ok(Expected::Exists),
        (Some(tag), None) => match parse_version_tag(tag) {
            Some(-1) => Ok(Expected::NoStream),
            Some(version) if version >= 0 => Ok(Expected::Version(version)),
            _ => Err(ApiError::BadRequest(format!(
                "If-Match must be a stream version such as \"5\", not {tag:?}"
            ))),
        },
    }
}

/// Reads a version from an entity tag: `"5"`, `5` or `W/"5"`.
pub fn parse_version_tag(tag: &str) -> Option<i64> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let tag = match tag.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => tag,
    };
    if tag.starts_with('+') {
        return None;
    }
    tag.parse().ok()
}

/// Whether an `If-None-Match` header on a read names the current version.
pub fn none_match_hits(headers: &HeaderMap, version: i64) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || parse_version_tag(tag) == Some(version))
}

/// What a read should answer with, from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    /// A JSON document.
    Json,
    /// A server-sent-events feed.
    Feed,
}

/// Whether an `Accept` header admits a media type, and with what quality.
fn quality(accept: &str, media: &str) -> Option<f32> {
    let (kind, _) = media.split_once('/')?;
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let pattern = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let specificity = if pattern == media {
            3
        } else if pattern == format!("{kind}/*") {
            2
        } else if pattern == "*/*" {
            1
        } else {
            continue;
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map(|(_, q)| q).filter(|q| *q > 0.0)
}

/// Decides between JSON and a feed from `Accept`: `406` when neither is
/// admitted (a feed only where `feeds` is true). A feed wins only when the
/// client prefers it, so `Accept: */*` gets JSON.
pub fn negotiate(headers: &HeaderMap, feeds: bool) -> Result<Wants, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Ok(Wants::Json);
    };
    let accept = accept.to_str().unwrap_or_default();
    let json = quality(accept, "application/json");
    let feed = quality(accept, "text/event-stream").filter(|_| feeds);
    match (json, feed) {
        (None, None) if feeds => Err(ApiError::NotAcceptable(
            "application/json or text/event-stream",
        )),
        (None, None) => Err(ApiError::NotAcceptable("application/json")),
        (Some(j), Some(f)) if f > j => Ok(Wants::Feed),
        (None, Some(_)) => Ok(Wants::Feed),
        _ => Ok(Wants::Json),
    }
}

/// Whether an `Accept` header (none: anything) admits `media`, a media
/// type of its own (`application/x-ndjson`) that [`negotiate`] does not
/// choose between.
pub fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get(header::ACCEPT)
        .is_none_or(|accept| quality(accept.to_str().unwrap_or_default(), media).is_some())
}

/// Requires that the client accepts JSON (`406` otherwise).
pub struct AcceptsJson;

impl<S: Send + Sync> FromRequestParts<S> for AcceptsJson {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        negotiate(&parts.headers, false).map(|_| AcceptsJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_containers_and_skips_strings() {
        assert!(!nests_deeper_than("1", 0));
        assert!(!nests_deeper_than("[[1]]", 2));
        assert!(nests_deeper_than("[[1]]", 1));
        assert!(nests_deeper_than(r#"{"a":[{}]}"#, 2));
        assert!(!nests_deeper_than(r#"["[[[\"[[", {}]"#, 2));
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert!(nests_deeper_than(&deep, 128));
    }

    #[test]
    fn version_tags() {
        assert_eq!(parse_version_tag("\"5\""), Some(5));
        assert_eq!(parse_version_tag("5"), Some(5));
        assert_eq!(parse_version_tag("W/\"5\""), Some(5));
        assert_eq!(parse_version_tag("\"-1\""), Some(-1));
        assert_eq!(parse_version_tag("\"banana\""), None);
        assert_eq!(parse_version_tag("\"5"), None);
        assert_eq!(parse_version_tag("+5"), None);
    }

    #[test]
    fn accept_negotiation() {
        let with = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, accept.parse().unwrap());
            headers
        };
        assert_eq!(negotiate(&HeaderMap::new(), true).unwrap(), Wants::Json);
        assert_eq!(negotiate(&with("*/*"), true).unwrap(), Wants::Json);
        assert_eq!(
            negotiate(&with("text/event-stream"), true).unwrap(),
            Wants::Feed
        );
        assert!(negotiate(&with("text/event-stream"), false).is_err());
        assert!(negotiate(&with("text/html"), true).is_err());
        assert!(negotiate(&with("application/json;q=0"), false).is_err());
        assert_eq!(
            negotiate(&with("application/*"), false).unwrap(),
            Wants::Json
        );
    }
}
