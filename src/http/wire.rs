//! The JSON shapes the API answers with, and their OpenAPI schemas. The store
//! speaks plain data; these types say how it looks on the wire (field names,
//! times as RFC 3339 with microseconds, JSON kept as the exact text written).
//! Converting moves the store's values: nothing is copied.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::store;

/// Serialises a commit time as RFC 3339 UTC with microseconds.
pub fn serialize_time<S: serde::Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&time.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

/// An event as stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Event {
    /// The event's id.
    pub id: Uuid,
    /// The stream it belongs to.
    pub stream: String,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its position in the stream, from 0.
    pub position: i64,
    /// Its position in the global log, from 1.
    pub global_position: i64,
    /// `data`, as written.
    #[schema(value_type = serde_json::Value)]
    pub data: Box<RawValue>,
    /// `metadata`, as written.
    #[schema(value_type = Option<std::collections::HashMap<String, serde_json::Value>>)]
    pub metadata: Option<Box<RawValue>>,
    /// The event that caused this one.
    pub causation_id: Option<Uuid>,
    /// The conversation it belongs to.
    pub correlation_id: Option<String>,
    /// Its tags, in the order written (`[]` when none).
    pub tags: Vec<String>,
    /// When it was committed (UTC, microseconds).
    #[serde(serialize_with = "serialize_time")]
    #[schema(value_type = String, format = DateTime)]
    pub time: DateTime<Utc>,
}

impl From<store::RecordedEvent> for Event {
    fn from(e: store::RecordedEvent) -> Self {
        Event {
            id: e.id,
            stream: e.stream,
            event_type: e.event_type,
            position: e.position,
            global_position: e.global_position,
            data: e.data,
            metadata: e.metadata,
            causation_id: e.causation_id,
            correlation_id: e.correlation_id,
            tags: e.tags,
            time: e.time,
        }
    }
}

/// Events as they go on the wire.
pub fn events(events: Vec<store::RecordedEvent>) -> Vec<Event> {
    events.into_iter().map(Event::from).collect()
}

/// Where an appended (or previously appended) event sits.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPosition {
    /// The event's id.
    pub id: Uuid,
    /// Its position in its stream.
    pub position: i64,
    /// Its position in the global log.
    pub global_position: i64,
}

impl From<store::EventPosition> for EventPosition {
    fn from(e: store::EventPosition) -> Self {
        EventPosition {
            id: e.id,
            position: e.position,
            global_position: e.global_position,
        }
    }
}

/// A stream as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StreamInfo {
    /// Its name.
    pub stream: String,
    /// Its version.
    pub version: i64,
    /// When its last event was committed.
    #[serde(serialize_with = "serialize_time")]
    #[schema(value_type = String, format = DateTime)]
    pub last_time: DateTime<Utc>,
}

impl From<store::StreamInfo> for StreamInfo {
    fn from(s: store::StreamInfo) -> Self {
        StreamInfo {
            stream: s.stream,
            version: s.version,
            last_time: s.last_time,
        }
    }
}

/// A stored snapshot.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Snapshot {
    /// The stream it summarises.
    pub stream: String,
    /// The stream version it summarises.
    pub version: i64,
    /// What kind of state it is.
    #[serde(rename = "type")]
    pub snapshot_type: Option<String>,
    /// The state, as posted.
    #[schema(value_type = serde_json::Value)]
    pub state: Box<RawValue>,
    /// When it was posted (UTC, microseconds).
    #[serde(serialize_with = "serialize_time")]
    #[schema(value_type = String, format = DateTime)]
    pub time: DateTime<Utc>,
}

impl From<store::Snapshot> for Snapshot {
    fn from(s: store::Snapshot) -> Self {
        Snapshot {
            stream: s.stream,
            version: s.version,
            snapshot_type: s.snapshot_type,
            state: s.state,
            time: s.time,
        }
    }
}

/// A consumer's durable position.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Checkpoint {
    /// The consumer, named like a stream.
    pub consumer: String,
    /// Its position (≥ 0).
    pub position: i64,
    /// When it was stored (UTC, microseconds).
    #[serde(serialize_with = "serialize_time")]
    #[schema(value_type = String, format = DateTime)]
    pub time: DateTime<Utc>,
}

impl From<store::Checkpoint> for Checkpoint {
    fn from(c: store::Checkpoint) -> Self {
        Checkpoint {
            consumer: c.consumer,
            position: c.position,
            time: c.time,
        }
    }
}

/// Which way a read goes.
#[derive(serde::Deserialize, utoipa::ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum DirectionParam {
    /// From `position` up.
    Forward,
    /// From `position` (default: the last event) down.
    Backward,
}

impl From<DirectionParam> for store::Direction {
    fn from(direction: DirectionParam) -> Self {
        match direction {
            DirectionParam::Forward => store::Direction::Forward,
            DirectionParam::Backward => store::Direction::Backward,
        }
    }
}
