//! The store's vocabulary: what a caller asks for and what it gets back.
//! Plain data: no SQL, no HTTP, no serialisation; the HTTP layer maps these
//! to its wire types and each backend to its rows.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::retention::{RetentionPolicy, RetentionTarget, Tombstone};
use super::schemas::EventSchema;

pub use crate::auth::Scope as AccessScope;

/// An event as the client wrote it, validated, with its id decided.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The client's id, or a fresh UUIDv7.
    pub id: Uuid,
    /// Whether the client chose the id. Only such an id can already be
    /// stored (by an earlier attempt of the same append), so only those are
    /// looked up before a batch is written; a fresh one cannot be.
    pub client_id: bool,
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
    /// Its tags, in the order written (each once).
    pub tags: Vec<String>,
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

/// An event to append, with the stream it goes to.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// The stream.
    pub stream: String,
    /// The event.
    pub event: NewEvent,
}

/// A condition on an append (API.md, Tags and consistency boundaries): it
/// fails if an event matching `query` has a global position above `after`
/// (no `after`: if any matching event exists).
#[derive(Debug, Clone)]
pub struct Condition {
    /// The events that must not have arrived.
    pub query: Vec<QueryItem>,
    /// The global position the decision was made at.
    pub after: Option<i64>,
}

/// One append request: a non-empty batch of events, to one stream or to
/// several, written atomically in this order or not at all.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The events, each with its stream.
    pub events: Vec<StreamEvent>,
    /// The versions streams must have (a stream not named: any).
    pub expected: Vec<(String, Expected)>,
    /// What must not have arrived, if anything.
    pub condition: Option<Condition>,
}

impl AppendRequest {
    /// An append of `events` to one stream, expecting `expected`.
    pub fn to_stream(stream: &str, expected: Expected, events: Vec<NewEvent>) -> AppendRequest {
        AppendRequest {
            events: events
                .into_iter()
                .map(|event| StreamEvent {
                    stream: stream.to_owned(),
                    event,
                })
                .collect(),
            expected: vec![(stream.to_owned(), expected)],
            condition: None,
        }
    }

    /// Each stream the request names (by an event or an expectation), once.
    pub fn streams(&self) -> Vec<&str> {
        let mut streams: Vec<&str> = self
            .expected
            .iter()
            .map(|(stream, _)| stream.as_str())
            .chain(self.events.iter().map(|e| e.stream.as_str()))
            .collect();
        streams.sort_unstable();
        streams.dedup();
        streams
    }

    /// What the request expects of a stream.
    pub fn expected_of(&self, stream: &str) -> Expected {
        self.expected
            .iter()
            .find(|(named, _)| named == stream)
            .map_or(Expected::Any, |(_, expected)| *expected)
    }
}

/// Where an appended (or previously appended) event sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPosition {
    /// The event's id.
    pub id: Uuid,
    /// Its stream.
    pub stream: String,
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
    /// Where each event of the request sits, in request order.
    pub events: Vec<EventPosition>,
    /// The version of each stream written after the write, by name (for a
    /// retry: the last retried position).
    pub versions: Vec<(String, i64)>,
}

impl Appended {
    /// A stream's version after the write (-1: not written).
    pub fn version_of(&self, stream: &str) -> i64 {
        self.versions
            .iter()
            .find(|(written, _)| written == stream)
            .map_or(-1, |(_, version)| *version)
    }
}

/// An event as stored.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    /// The event's id.
    pub id: Uuid,
    /// The stream it belongs to.
    pub stream: String,
    /// Its type.
    pub event_type: String,
    /// Its position in the stream, from 0.
    pub position: i64,
    /// Its position in the global log, from 1.
    pub global_position: i64,
    /// `data`, as written.
    pub data: Box<RawValue>,
    /// `metadata`, as written.
    pub metadata: Option<Box<RawValue>>,
    /// The event that caused this one.
    pub causation_id: Option<Uuid>,
    /// The conversation it belongs to.
    pub correlation_id: Option<String>,
    /// Its tags, in the order written.
    pub tags: Vec<String>,
    /// When it was committed (UTC, microseconds).
    pub time: DateTime<Utc>,
}

impl RecordedEvent {
    /// About how many bytes the event takes in memory: its JSON and names.
    pub fn approximate_size(&self) -> usize {
        const FIXED: usize = 256;
        FIXED
            + self.data.get().len()
            + self.metadata.as_ref().map_or(0, |m| m.get().len())
            + self.stream.len()
            + self.event_type.len()
            + self.correlation_id.as_ref().map_or(0, String::len)
            + self.tags.iter().map(|t| t.len() + 16).sum::<usize>()
    }
}

/// Which way a stream read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Up from `position`.
    Forward,
    /// Down from `position`.
    Backward,
}

/// Rows read up to a byte budget.
#[derive(Debug)]
pub struct Budgeted<T> {
    /// What was read.
    pub items: Vec<T>,
    /// Whether the budget stopped the read before the query's last row.
    pub cut: bool,
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
    /// The page stops once its events hold this many bytes (at least one event).
    pub max_bytes: usize,
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
    /// The page stops once its events hold this many bytes (at least one event).
    pub max_bytes: usize,
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

/// One item of a query: the events of one of `types` (any type when empty)
/// that carry every one of `tags` (any tags when empty); never both empty.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueryItem {
    /// The types it matches.
    pub types: Vec<String>,
    /// The tags an event must all carry.
    pub tags: Vec<String>,
}

impl QueryItem {
    /// Whether an event of this type with these tags matches the item.
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && self.tags.iter().all(|tag| tags.contains(tag))
    }
}

/// A read of the events matching any item of a query.
#[derive(Debug, Clone)]
pub struct EventQuery {
    /// The items; an event matches the query when it matches one.
    pub items: Vec<QueryItem>,
    /// The first global position read (inclusive); default: the start, or
    /// the head for a backward read.
    pub position: Option<i64>,
    /// Most events returned.
    pub limit: i64,
    /// Which way the read goes.
    pub direction: Direction,
    /// The page stops once its events hold this many bytes (at least one event).
    pub max_bytes: usize,
}

/// A page of a query read.
#[derive(Debug, Clone)]
pub struct QueryPage {
    /// The events, in the read's order.
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts.
    pub next_position: i64,
    /// Nothing matching lies beyond `next_position`.
    pub end: bool,
    /// The log's head when the page was read: an append conditioned on
    /// `after` = head fails if a matching event arrived since.
    pub head: i64,
}

impl EventQuery {
    /// Makes a page of events read with `limit + 1` as the limit, from
    /// `position` with the log at `head`.
    pub fn page(&self, events: Budgeted<RecordedEvent>, position: i64, head: i64) -> QueryPage {
        let Budgeted {
            items: mut events,
            cut,
        } = events;
        let more = cut || events.len() as i64 > self.limit;
        events.truncate(self.limit as usize);
        let next_position = match (self.direction, events.last()) {
            (Direction::Forward, Some(last)) => last.global_position + 1,
            (Direction::Backward, Some(last)) => last.global_position - 1,
            (Direction::Forward, None) => position.max(head + 1),
            (Direction::Backward, None) => position.min(0),
        };
        QueryPage {
            events,
            next_position,
            end: !more,
            head,
        }
    }
}

/// A stream as listed.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// Its name.
    pub stream: String,
    /// Its version.
    pub version: i64,
    /// When its last event was committed.
    pub last_time: DateTime<Utc>,
}

/// An API key to store: only the digest of its secret.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Its id, chosen by the caller.
    pub id: Uuid,
    /// A name for people.
    pub name: String,
    /// The SHA-256 digest of its secret, in hex.
    pub digest: String,
    /// What it may do.
    pub scopes: Vec<AccessScope>,
    /// The stream prefixes it reaches (`None`: every stream).
    pub streams: Option<Vec<String>>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// An API key as stored.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// The key as it was created.
    pub key: NewKey,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked: Option<DateTime<Utc>>,
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
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The stream it summarises.
    pub stream: String,
    /// The stream version it summarises.
    pub version: i64,
    /// What kind of state it is.
    pub snapshot_type: Option<String>,
    /// The state, as posted.
    pub state: Box<RawValue>,
    /// When it was posted (UTC, microseconds).
    pub time: DateTime<Utc>,
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
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The consumer, named like a stream.
    pub consumer: String,
    /// Its position (≥ 0).
    pub position: i64,
    /// When it was stored (UTC, microseconds).
    pub time: DateTime<Utc>,
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
    pub fn page(&self, version: i64, events: Budgeted<RecordedEvent>) -> StreamPage {
        let Budgeted {
            items: mut events,
            cut,
        } = events;
        let more = cut || events.len() as i64 > self.limit;
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
    pub fn page(&self, events: Budgeted<RecordedEvent>, window_end: Option<i64>) -> GlobalPage {
        let Budgeted {
            items: mut events,
            cut,
        } = events;
        let more = cut || events.len() as i64 > self.limit;
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

/// What a subscription follows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The whole log.
    All,
    /// One category.
    Category(String),
    /// One stream.
    Stream(String),
    /// The events matching any item of a query.
    Query(Vec<QueryItem>),
}

/// How a subscription may deliver events side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOrder {
    /// At most one event of a stream in flight, a stream's events in order.
    Stream,
    /// As parallel as consumers allow.
    None,
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// The first event of the log.
    Beginning,
    /// Right after the last event when the subscription was created.
    End,
    /// This global position (inclusive).
    Position(i64),
}

/// Where and how the server pushes a subscription's deliveries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PushTarget {
    /// The receiver's `http(s)` URL.
    pub url: String,
    /// The Standard Webhooks secret (`whsec_…`) that signs each delivery.
    pub secret: Option<String>,
    /// Most deliveries awaiting the receiver's answer at once.
    pub max_in_flight: u32,
    /// How long the receiver may take to answer a delivery.
    pub timeout_ms: u64,
}

/// A subscription as created: it never changes afterwards.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionDefinition {
    /// What it follows.
    pub source: Source,
    /// Only events of these types (any when empty).
    pub types: Vec<String>,
    /// Where it starts.
    pub start: StartAt,
    /// How events may be delivered side by side.
    pub ordering: DeliveryOrder,
    /// How long a lease lasts before its event is delivered again.
    pub ack_timeout_ms: u64,
    /// Deliveries of an event before it is parked.
    pub max_deliveries: u32,
    /// Where the server pushes deliveries, if it does.
    pub push: Option<PushTarget>,
}

/// A consumer of a subscription, as its state lists it.
#[derive(Debug, Clone)]
pub struct ConsumerState {
    /// Its name.
    pub consumer: String,
    /// Leases it holds now.
    pub in_flight: i64,
    /// When it last claimed.
    pub last_claim: DateTime<Utc>,
}

/// A subscription and how far it has got.
#[derive(Debug, Clone)]
pub struct SubscriptionState {
    /// Its name.
    pub name: String,
    /// Its definition.
    pub definition: SubscriptionDefinition,
    /// Every source event at or before it is acknowledged or parked.
    pub position: i64,
    /// The log's head.
    pub head: i64,
    /// Source events after `position`.
    pub lag: i64,
    /// Leases held now.
    pub in_flight: i64,
    /// Events parked.
    pub parked: i64,
    /// The consumers that claimed lately, latest first.
    pub consumers: Vec<ConsumerState>,
    /// When it was created.
    pub created: DateTime<Utc>,
}

/// What creating a subscription found.
#[derive(Debug, Clone)]
pub enum Creation {
    /// It is new.
    Created,
    /// The same definition existed.
    Existing,
    /// A different definition exists under the name.
    Different,
}

/// A request for deliveries.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Who claims.
    pub consumer: String,
    /// Most deliveries.
    pub max: usize,
    /// How long the leases last (the subscription's `ack_timeout_ms` when
    /// none).
    pub lease_for: Option<std::time::Duration>,
}

/// An event handed to a consumer, under a lease.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Names the lease in acknowledgements: opaque to consumers.
    pub lease: String,
    /// Which delivery of the event this is, from 1.
    pub attempt: i64,
    /// The event.
    pub event: RecordedEvent,
}

/// What becomes of the events whose leases are settled.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// Done with: never delivered again.
    Ack,
    /// Delivered again after `delay`, or parked with `reason` once it has
    /// been delivered `max_deliveries` times.
    Retry {
        /// How long the event waits before its next delivery.
        delay: std::time::Duration,
        /// Why it failed, kept if it is parked.
        reason: String,
    },
    /// Set aside until replayed.
    Park {
        /// Why.
        reason: String,
    },
}

/// What settling leases did.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    /// Leases settled.
    pub done: u64,
    /// Leases no longer held (expired and delivered again, or settled before).
    pub stale: Vec<String>,
}

/// An event set aside.
#[derive(Debug, Clone)]
pub struct ParkedEvent {
    /// The event.
    pub event: RecordedEvent,
    /// Why it was parked.
    pub reason: String,
    /// How many times it was delivered.
    pub attempts: i64,
    /// When it was parked.
    pub parked_at: DateTime<Utc>,
}

/// A page of parked events, in global order.
#[derive(Debug, Clone)]
pub struct ParkedPage {
    /// The events.
    pub parked: Vec<ParkedEvent>,
    /// Where the next page starts.
    pub next_position: i64,
    /// Nothing parked lies beyond `next_position`.
    pub end: bool,
}

/// The kinds of record an export lists, in the order it lists them (API.md,
/// Export and import): the order is part of the format, and the import
/// relies on it to resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TransferKind {
    /// Events, in global order.
    Event,
    /// Snapshots, in the order they were posted.
    Snapshot,
    /// Checkpoints, by consumer.
    Checkpoint,
    /// Event schemas, by type.
    Schema,
    /// Retention policies, by scope and name.
    Retention,
    /// Tombstones, by stream.
    Tombstone,
    /// Every stream's version and last commit, by stream.
    Stream,
    /// The head of the log, last.
    Head,
}

impl TransferKind {
    /// Every kind, in the order of an export.
    pub const ALL: [TransferKind; 8] = [
        TransferKind::Event,
        TransferKind::Snapshot,
        TransferKind::Checkpoint,
        TransferKind::Schema,
        TransferKind::Retention,
        TransferKind::Tombstone,
        TransferKind::Stream,
        TransferKind::Head,
    ];

    /// Its name in an export's lines (`"kind": "event"`).
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Event => "event",
            TransferKind::Snapshot => "snapshot",
            TransferKind::Checkpoint => "checkpoint",
            TransferKind::Schema => "schema",
            TransferKind::Retention => "retention",
            TransferKind::Tombstone => "tombstone",
            TransferKind::Stream => "stream",
            TransferKind::Head => "head",
        }
    }

    /// The kind a line's name gives, if any.
    pub fn parse(name: &str) -> Option<TransferKind> {
        TransferKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// One record of an export: a row of the store, as read.
#[derive(Debug, Clone)]
pub enum TransferItem {
    /// An event.
    Event(RecordedEvent),
    /// A snapshot.
    Snapshot(Snapshot),
    /// A consumer's checkpoint.
    Checkpoint(Checkpoint),
    /// An event type's schema.
    Schema(EventSchema),
    /// A retention policy, and what it applies to.
    Retention(RetentionTarget, RetentionPolicy),
    /// A deleted stream.
    Tombstone(Tombstone),
    /// A stream's version and last commit.
    Stream(StreamInfo),
    /// The head of the log: the highest global position ever committed.
    Head(i64),
}

impl TransferItem {
    /// Its kind.
    pub fn kind(&self) -> TransferKind {
        match self {
            TransferItem::Event(_) => TransferKind::Event,
            TransferItem::Snapshot(_) => TransferKind::Snapshot,
            TransferItem::Checkpoint(_) => TransferKind::Checkpoint,
            TransferItem::Schema(_) => TransferKind::Schema,
            TransferItem::Retention(..) => TransferKind::Retention,
            TransferItem::Tombstone(_) => TransferKind::Tombstone,
            TransferItem::Stream(_) => TransferKind::Stream,
            TransferItem::Head(_) => TransferKind::Head,
        }
    }

    /// About how many bytes it takes in memory, so that a page of an export
    /// stops at a byte budget as reads do.
    pub fn approximate_size(&self) -> usize {
        const FIXED: usize = 256;
        match self {
            TransferItem::Event(event) => event.approximate_size(),
            TransferItem::Snapshot(snapshot) => FIXED + snapshot.state.get().len(),
            TransferItem::Schema(schema) => FIXED + schema.schema.get().len(),
            _ => FIXED,
        }
    }
}

/// What an export lists (API.md, Export and import).
#[derive(Debug, Clone, Copy)]
pub struct ExportRange {
    /// The first global position of the events listed.
    pub position: i64,
    /// The last global position of the events listed, if bounded.
    pub until: Option<i64>,
    /// A page of the export stops once its records hold this many bytes.
    pub max_bytes: usize,
}

/// What an import restored: its lines by kind, and the head it ended at.
#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    /// Event lines (those already stored included).
    pub events: u64,
    /// Event lines found already stored: an import run again after an
    /// interruption.
    pub already_stored: u64,
    /// Snapshot lines.
    pub snapshots: u64,
    /// Checkpoint lines.
    pub checkpoints: u64,
    /// Schema lines.
    pub schemas: u64,
    /// Retention lines.
    pub retention: u64,
    /// Tombstone lines.
    pub tombstones: u64,
    /// Stream lines.
    pub streams: u64,
    /// The head of the log after the import.
    pub head: i64,
}
