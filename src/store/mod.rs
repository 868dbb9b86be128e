//! The store layer: one [`Store`] trait, the types it speaks, and one module per
//! backend. Nothing here knows HTTP; nothing outside the backend modules knows SQL.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use uuid::Uuid;

pub mod postgres;
pub(crate) mod sql;
pub mod sqlite;
pub mod writer;

/// The store behind the HTTP API, shared by every request.
pub type SharedStore = Arc<dyn Store>;

/// An event as the client wrote it, validated, with its id decided.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The client's id, or a fresh UUIDv7.
    pub id: Uuid,
    /// The event type.
    pub event_type: String,
    /// The JSON text of `data`, exactly as sent.
    pub data: Box<RawValue>,
    /// The JSON text of `metadata` (an object), exactly as sent.
    pub metadata: Option<Box<RawValue>>,
    /// The event that caused this one.
    pub causation_id: Option<Uuid>,
    /// The correlation id that ties a conversation together.
    pub correlation_id: Option<String>,
}

/// What the stream's version must be for an append to go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Append whatever the version.
    Any,
    /// The stream must have no events (version -1).
    NoStream,
    /// The stream must have at least one event.
    Exists,
    /// The stream's version must be exactly this.
    Version(i64),
}

impl Expected {
    /// Whether a stream at `version` (-1: no events) meets the expectation.
    pub fn holds(self, version: i64) -> bool {
        match self {
            Expected::Any => true,
            Expected::NoStream => version == -1,
            Expected::Exists => version >= 0,
            Expected::Version(expected) => version == expected,
        }
    }
}

/// One append request: a non-empty batch of events for one stream.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The stream appended to.
    pub stream: String,
    /// The version the stream must have.
    pub expected: Expected,
    /// The events, appended atomically in this order.
    pub events: Vec<NewEvent>,
}

/// Where an appended (or previously appended) event sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EventPosition {
    /// The event's id.
    pub id: Uuid,
    /// Its position in its stream.
    pub position: i64,
    /// Its position in the global log.
    pub global_position: i64,
}

/// A successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// `false` when the request was a retry of writes already stored: nothing was written.
    pub created: bool,
    /// The stream's version after the write (for a retry: the last retried position).
    pub version: i64,
    /// Where each event of the request sits, in request order.
    pub events: Vec<EventPosition>,
}

/// Why an append was refused; nothing of it was written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The expected version did not hold.
    #[error("the stream is at version {actual}")]
    WrongVersion {
        /// What the request expected.
        expected: Expected,
        /// The stream's version (-1: no events).
        actual: i64,
    },
    /// An event id is already used, and the request is not an exact retry.
    #[error("event id {0} is already used by another write")]
    IdConflict(Uuid),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A failure of the store itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded: try again later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or corrupt data.
    #[error("store failure: {0}")]
    Internal(String),
}

impl StoreError {
    /// A failure to reach the database at all (no connection, no transaction),
    /// whatever the database said: the store is unavailable.
    pub fn unavailable(error: sqlx::Error) -> Self {
        StoreError::Unavailable(error.to_string())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let transient = match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => is_transient(db.as_ref()),
            _ => false,
        };
        if transient {
            StoreError::Unavailable(error.to_string())
        } else {
            StoreError::Internal(error.to_string())
        }
    }
}

/// Whether a database error means "try again later": Postgres classes 08
/// (connection), 53 (resources) and 57 (operator intervention) and a lock
/// wait timed out (55P03); SQLite BUSY and LOCKED (primary codes 5 and 6,
/// under any extended code).
fn is_transient(error: &dyn sqlx::error::DatabaseError) -> bool {
    let code = error.code().unwrap_or_default();
    if error
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return ["08", "53", "57", "55P03"]
            .iter()
            .any(|class| code.starts_with(class));
    }
    code.parse::<u32>()
        .is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6))
}

/// An event as stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Event)]
pub struct RecordedEvent {
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
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Box<RawValue>>,
    /// The event that caused this one.
    pub causation_id: Option<Uuid>,
    /// The conversation it belongs to.
    pub correlation_id: Option<String>,
    /// When it was committed (UTC, microseconds).
    #[serde(serialize_with = "serialize_time")]
    #[schema(value_type = String, format = DateTime)]
    pub time: DateTime<Utc>,
}

/// An event row as both backends return it (times as microseconds since the epoch).
#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    global_position: i64,
    id: Uuid,
    stream: String,
    position: i64,
    #[sqlx(rename = "type")]
    event_type: String,
    data: String,
    metadata: Option<String>,
    causation_id: Option<Uuid>,
    correlation_id: Option<String>,
    time_micros: i64,
}

impl TryFrom<EventRow> for RecordedEvent {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        Ok(RecordedEvent {
            id: row.id,
            stream: row.stream,
            event_type: row.event_type,
            position: row.position,
            global_position: row.global_position,
            data: stored_json(row.data)?,
            metadata: row.metadata.map(stored_json).transpose()?,
            causation_id: row.causation_id,
            correlation_id: row.correlation_id,
            time: from_micros(row.time_micros)?,
        })
    }
}

/// A time stored as microseconds since the epoch.
fn from_micros(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Internal(format!("stored time {micros}")))
}

/// Stored JSON text, checked once more on the way out.
fn stored_json(text: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(text).map_err(|e| StoreError::Internal(format!("stored JSON: {e}")))
}

/// A snapshot row as both backends return it.
#[derive(sqlx::FromRow)]
pub(crate) struct SnapshotRow {
    stream: String,
    version: i64,
    #[sqlx(rename = "type")]
    snapshot_type: Option<String>,
    state: String,
    time_micros: i64,
}

impl TryFrom<SnapshotRow> for Snapshot {
    type Error = StoreError;

    fn try_from(row: SnapshotRow) -> Result<Self, StoreError> {
        Ok(Snapshot {
            stream: row.stream,
            version: row.version,
            snapshot_type: row.snapshot_type,
            state: stored_json(row.state)?,
            time: from_micros(row.time_micros)?,
        })
    }
}

/// A stream row as both backends return it.
#[derive(sqlx::FromRow)]
pub(crate) struct StreamRow {
    stream: String,
    version: i64,
    last_time_micros: i64,
}

impl TryFrom<StreamRow> for StreamInfo {
    type Error = StoreError;

    fn try_from(row: StreamRow) -> Result<Self, StoreError> {
        Ok(StreamInfo {
            stream: row.stream,
            version: row.version,
            last_time: from_micros(row.last_time_micros)?,
        })
    }
}

/// Serialises a commit time as RFC 3339 UTC with microseconds.
pub fn serialize_time<S: serde::Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&time.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

/// Which way a stream read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Up from `position`.
    Forward,
    /// Down from `position`.
    Backward,
}

/// A read of one stream.
#[derive(Debug, Clone)]
pub struct StreamQuery {
    /// The stream.
    pub stream: String,
    /// The first position read (inclusive); backward reads default to the last event.
    pub position: Option<i64>,
    /// Most events returned.
    pub limit: i64,
    /// Which way.
    pub direction: Direction,
    /// Only positions up to this one.
    pub until_version: Option<i64>,
    /// Only events committed at or before this instant.
    pub as_of: Option<DateTime<Utc>>,
    /// Start after the newest snapshot within the bounds, and return it.
    pub from_snapshot: bool,
}

/// A page of one stream.
#[derive(Debug, Clone)]
pub struct StreamPage {
    /// The stream's current version (-1: no events).
    pub version: i64,
    /// With `from_snapshot`: the snapshot the events follow, if any.
    pub snapshot: Option<Snapshot>,
    /// The events, in the read's direction.
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts.
    pub next_position: i64,
    /// Nothing lies beyond `next_position` within the read's bounds.
    pub end: bool,
}

/// Which events a global-order read covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every event.
    All,
    /// The events of one category.
    Category(String),
    /// The events of one correlation id.
    Correlation(String),
}

/// Narrows a global-order read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these types (empty: any).
    pub types: Vec<String>,
    /// Only events with this correlation id.
    pub correlation_id: Option<String>,
    /// Only streams of this consumer-group member: `(member, size)`.
    pub consumer_group: Option<(i64, i64)>,
}

impl Filter {
    /// Whether the filter lets every event through.
    pub fn is_empty(&self) -> bool {
        self == &Filter::default()
    }
}

/// A read in global order.
#[derive(Debug, Clone)]
pub struct GlobalQuery {
    /// All events or one category.
    pub scope: Scope,
    /// The first global position read (inclusive).
    pub position: i64,
    /// Most events returned.
    pub limit: i64,
    /// Narrows the read.
    pub filter: Filter,
}

/// A page in global order.
#[derive(Debug, Clone)]
pub struct GlobalPage {
    /// The events, in global order.
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts.
    pub next_position: i64,
    /// Nothing lies beyond `next_position`.
    pub end: bool,
}

/// A stream as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// Most rows a filtered read examines for one page, so a rare filter answers a
/// short page quickly instead of scanning the whole store.
pub fn scan_window(limit: i64) -> i64 {
    (limit * 10).clamp(1000, 10_000)
}

/// A snapshot as a client posts it.
#[derive(Debug, Clone)]
pub struct NewSnapshot {
    /// The stream it summarises.
    pub stream: String,
    /// The stream version it summarises (events 0..=version).
    pub version: i64,
    /// What kind of state it is, if the client says.
    pub snapshot_type: Option<String>,
    /// The state, as JSON text exactly as sent.
    pub state: Box<RawValue>,
}

/// A stored snapshot.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// Why a snapshot was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SnapshotError {
    /// The stream has no events.
    #[error("stream {0} has no events")]
    NoStream(String),
    /// The snapshot's version is beyond the stream's.
    #[error("version {version} is beyond the stream's version {actual}")]
    BeyondVersion {
        /// The snapshot's version.
        version: i64,
        /// The stream's version.
        actual: i64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How far a trace may reach.
#[derive(Debug, Clone, Copy)]
pub struct TraceLimits {
    /// Most levels of causes, and of effects, followed.
    pub max_depth: usize,
    /// Most events in the answer.
    pub max_events: usize,
}

/// Which event caused which, around one message.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The message traced.
    pub message: RecordedEvent,
    /// Its causes, root first (the message excluded).
    pub causes: Vec<RecordedEvent>,
    /// Everything it caused, directly or not: the events each event caused,
    /// in global order, by the id of their cause. Flat, so that no deep tree
    /// is ever built, dropped or walked by recursion.
    pub effects_by_cause: HashMap<Uuid, Vec<RecordedEvent>>,
    /// A depth or size cap was hit, or a causation cycle was cut.
    pub truncated: bool,
}

/// A consumer's durable position.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// A checkpoint row as both backends return it.
#[derive(sqlx::FromRow)]
pub(crate) struct CheckpointRow {
    consumer: String,
    position: i64,
    time_micros: i64,
}

impl TryFrom<CheckpointRow> for Checkpoint {
    type Error = StoreError;

    fn try_from(row: CheckpointRow) -> Result<Self, StoreError> {
        Ok(Checkpoint {
            consumer: row.consumer,
            position: row.position,
            time: from_micros(row.time_micros)?,
        })
    }
}

/// An event store. Every backend offers the same behaviour.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends a batch atomically, checking the expected version and idempotency.
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError>;
    /// Reads one stream.
    async fn read_stream(&self, query: &StreamQuery) -> Result<StreamPage, StoreError>;
    /// Reads a category or the whole log in global order.
    async fn read_global(&self, query: &GlobalQuery) -> Result<GlobalPage, StoreError>;
    /// The stream's version, -1 when it has no events.
    async fn stream_version(&self, stream: &str) -> Result<i64, StoreError>;
    /// The stream's last event, optionally the last of a type.
    async fn last_event(
        &self,
        stream: &str,
        event_type: Option<&str>,
    ) -> Result<Option<RecordedEvent>, StoreError>;
    /// One event by id.
    async fn event(&self, id: Uuid) -> Result<Option<RecordedEvent>, StoreError>;
    /// Streams whose name starts with `prefix`, in byte order, after `after`.
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StreamInfo>, StoreError>;
    /// Whether the store answers.
    async fn health(&self) -> Result<(), StoreError>;
    /// Stores a snapshot of a stream.
    async fn append_snapshot(&self, snapshot: NewSnapshot) -> Result<Snapshot, SnapshotError>;
    /// The newest snapshot of a stream with version ≤ `until_version`.
    async fn snapshot(
        &self,
        stream: &str,
        until_version: Option<i64>,
    ) -> Result<Option<Snapshot>, StoreError>;
    /// The causes and effects of one event; `None` if it is unknown.
    async fn trace(&self, id: Uuid, limits: TraceLimits) -> Result<Option<Trace>, StoreError>;
    /// The highest global position stored (0 when empty).
    async fn head(&self) -> Result<i64, StoreError>;
    /// Signalled after every commit of this process and, where the backend
    /// can tell, of other processes on the same database. A wake-up only:
    /// readers find out what changed by reading.
    fn changes(&self) -> Arc<Notify>;
    /// Stores a consumer's position.
    async fn put_checkpoint(&self, consumer: &str, position: i64)
    -> Result<Checkpoint, StoreError>;
    /// A consumer's stored position.
    async fn checkpoint(&self, consumer: &str) -> Result<Option<Checkpoint>, StoreError>;
    /// Diagnostics: the database's plan for every read statement, by name,
    /// with full scans discouraged; tests check that an index serves each.
    async fn query_plans(&self) -> Result<Vec<(&'static str, Vec<String>)>, StoreError>;
}

impl StreamQuery {
    /// The inclusive range of positions read, and the SQL sort order.
    pub fn bounds(&self) -> (i64, i64, &'static str) {
        let until = self.until_version.unwrap_or(i64::MAX);
        match self.direction {
            Direction::Forward => (self.position.unwrap_or(0), until, "ASC"),
            Direction::Backward => (0, self.position.unwrap_or(i64::MAX).min(until), "DESC"),
        }
    }

    /// Makes a page of events read with `limit + 1` as the limit: the extra
    /// event, if there is one, only says that the read has not reached its end.
    pub fn page(&self, version: i64, mut events: Vec<RecordedEvent>) -> StreamPage {
        let more = events.len() as i64 > self.limit;
        events.truncate(self.limit as usize);
        let next_position = match (events.last(), self.direction) {
            (Some(last), Direction::Forward) => last.position + 1,
            (Some(last), Direction::Backward) => last.position - 1,
            (None, Direction::Forward) => self.position.unwrap_or(0),
            // Nothing at or below the bound: nothing before it either.
            (None, Direction::Backward) => -1,
        };
        StreamPage {
            version,
            snapshot: None,
            events,
            next_position,
            end: !more,
        }
    }
}

impl GlobalQuery {
    /// Makes a page of events read with `limit + 1` as the limit. A filtered
    /// read that stopped at the end of its scan window (`window_end`, exclusive)
    /// carries on from there.
    pub fn page(&self, mut events: Vec<RecordedEvent>, window_end: Option<i64>) -> GlobalPage {
        let more = events.len() as i64 > self.limit;
        events.truncate(self.limit as usize);
        let after_last = events.last().map(|e| e.global_position + 1);
        let (next_position, end) = match (more, window_end) {
            (true, _) => (after_last.unwrap_or(self.position), false),
            (false, Some(window_end)) => (window_end, false),
            (false, None) => (after_last.unwrap_or(self.position), true),
        };
        GlobalPage {
            events,
            next_position,
            end,
        }
    }
}

/// The smallest string above every name that starts with `prefix`, in byte
/// order (which for UTF-8 is code-point order): the prefix with its last
/// character raised by one. Names are at most 255 bytes, so 64 copies of the
/// highest character stand above every name when no such string exists.
pub fn prefix_upper_bound(prefix: &str) -> String {
    let mut bound = prefix.to_owned();
    while let Some(last) = bound.pop() {
        let raised = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(raised) = raised {
            bound.push(raised);
            return bound;
        }
    }
    char::MAX.to_string().repeat(64)
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn prefix_bounds() {
        assert_eq!(prefix_upper_bound("acc"), "acd");
        assert_eq!(prefix_upper_bound("a\u{D7FF}"), "a\u{E000}");
        assert_eq!(prefix_upper_bound("a\u{10FFFF}"), "b");
        assert_eq!(prefix_upper_bound("").len(), 256);
    }
}
