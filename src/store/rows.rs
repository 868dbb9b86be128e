//! Rows as both backends return them, and their conversion to the store's
//! types. Times come back as microseconds since the epoch and JSON as the
//! exact text stored.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::error::StoreError;
use super::model::{
    AccessScope, Checkpoint, NewKey, RecordedEvent, Snapshot, StoredKey, StreamInfo,
};
use super::retention::{RetentionPolicy, RetentionTarget, Tombstone};
use super::schemas::EventSchema;

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
    tags: Option<String>,
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
            tags: match row.tags {
                Some(tags) => serde_json::from_str(&tags)
                    .map_err(|e| StoreError::Internal(format!("stored tags: {e}")))?,
                None => Vec::new(),
            },
            correlation_id: row.correlation_id,
            time: from_micros(row.time_micros)?,
        })
    }
}

/// A time stored as microseconds since the epoch.
pub(crate) fn from_micros(micros: i64) -> Result<DateTime<Utc>, StoreError> {
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

/// A snapshot row with the sequence number that orders snapshots as they
/// were posted, which an export pages by.
#[derive(sqlx::FromRow)]
pub(crate) struct PostedSnapshotRow {
    pub seq: i64,
    #[sqlx(flatten)]
    pub snapshot: SnapshotRow,
}

/// Where an event sits, with its id: what an import compares to tell a
/// store that holds the beginning of its export from any other.
#[derive(sqlx::FromRow, Debug, PartialEq, Eq)]
pub(crate) struct EventKeyRow {
    pub global_position: i64,
    pub id: Uuid,
    pub stream: String,
    pub position: i64,
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

/// An API key row as both backends return it.
#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    id: Uuid,
    name: String,
    digest: String,
    scopes: String,
    streams: Option<String>,
    expires_at: Option<i64>,
    created: i64,
    revoked: Option<i64>,
}

impl TryFrom<KeyRow> for StoredKey {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> Result<Self, StoreError> {
        let scopes = row
            .scopes
            .split_whitespace()
            .map(|word| {
                AccessScope::parse(word)
                    .ok_or_else(|| StoreError::Internal(format!("stored scope {word:?}")))
            })
            .collect::<Result<_, _>>()?;
        let streams = row
            .streams
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| StoreError::Internal(format!("stored key prefixes: {e}")))?;
        Ok(StoredKey {
            key: NewKey {
                id: row.id,
                name: row.name,
                digest: row.digest,
                scopes,
                streams,
                expires_at: row.expires_at.map(from_micros).transpose()?,
            },
            created: from_micros(row.created)?,
            revoked: row.revoked.map(from_micros).transpose()?,
        })
    }
}

/// A subscription row, as claims and settlements need it.
#[derive(sqlx::FromRow)]
pub(crate) struct SubscriptionRow {
    pub name: String,
    pub definition: String,
    pub lease_key: String,
    pub cursor: i64,
    pub created: i64,
}

/// A subscription row as a turn of claims locks it, with what the turn
/// reads beside it in the same round trip.
#[derive(sqlx::FromRow)]
pub(crate) struct TurnRow {
    #[sqlx(flatten)]
    pub subscription: SubscriptionRow,
    /// The head of the log.
    pub head: Option<i64>,
    /// The global position of its earliest event neither leased nor parked.
    pub first_waiting: Option<i64>,
    /// The global position of its earliest leased event.
    pub first_leased: Option<i64>,
    /// When its earliest lease runs out.
    pub next_expiry: Option<i64>,
}

impl TurnRow {
    /// The global position of its earliest unsettled event, parked ones aside.
    pub fn first_unsettled(&self) -> Option<i64> {
        earliest(self.first_waiting, self.first_leased)
    }
}

/// The earlier of two positions, either of which may be missing.
pub(crate) fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// An event of a subscription, neither leased nor parked, that may be
/// delivered now, with the event.
#[derive(sqlx::FromRow)]
pub(crate) struct ReadyRow {
    #[sqlx(flatten)]
    pub event: EventRow,
    pub attempt: i64,
}

/// A claim's leases, as settlements read them: the events still held, as
/// the JSON array `subscription_leases.events` keeps.
#[derive(sqlx::FromRow)]
pub(crate) struct LeaseRow {
    pub token: String,
    pub consumer: String,
    pub expires: i64,
    pub events: String,
}

/// Counts over a subscription's unsettled events.
#[derive(sqlx::FromRow)]
pub(crate) struct TallyRow {
    pub first_waiting: Option<i64>,
    pub first_leased: Option<i64>,
    pub in_flight: Option<i64>,
    pub parked: Option<i64>,
}

/// A consumer of a subscription.
#[derive(sqlx::FromRow)]
pub(crate) struct ConsumerRow {
    pub consumer: String,
    pub last_claim: i64,
    pub in_flight: i64,
}

/// A parked event of a subscription, without the event.
#[derive(sqlx::FromRow)]
pub(crate) struct ParkedRow {
    pub global_position: i64,
    pub attempt: i64,
    pub reason: Option<String>,
    pub parked_at: i64,
}

/// An event schema row as both backends return it (deleted ones are never
/// read as such).
#[derive(sqlx::FromRow)]
pub(crate) struct SchemaRow {
    #[sqlx(rename = "type")]
    event_type: String,
    schema: String,
    version: i64,
    time_micros: i64,
}

impl TryFrom<SchemaRow> for EventSchema {
    type Error = StoreError;

    fn try_from(row: SchemaRow) -> Result<Self, StoreError> {
        Ok(EventSchema {
            event_type: row.event_type,
            schema: stored_json(row.schema)?,
            version: row.version,
            time: from_micros(row.time_micros)?,
        })
    }
}

/// An event about to be erased: where it is, and its tags (whose rows go
/// with it).
#[derive(sqlx::FromRow)]
pub(crate) struct ErasableRow {
    /// Its global position.
    pub global_position: i64,
    /// Its stream.
    pub stream: String,
    /// `events.tags`: a JSON array, or NULL.
    pub tags: Option<String>,
}

impl ErasableRow {
    /// Its tags.
    pub fn tags(&self) -> Result<Vec<String>, StoreError> {
        match &self.tags {
            Some(tags) => serde_json::from_str(tags)
                .map_err(|e| StoreError::Internal(format!("stored tags: {e}"))),
            None => Ok(Vec::new()),
        }
    }
}

/// A retention policy row as both backends return it.
#[derive(sqlx::FromRow)]
pub(crate) struct PolicyRow {
    scope: String,
    name: String,
    max_age_s: Option<i64>,
    max_count: Option<i64>,
}

impl TryFrom<PolicyRow> for (RetentionTarget, RetentionPolicy) {
    type Error = StoreError;

    fn try_from(row: PolicyRow) -> Result<Self, StoreError> {
        let target = RetentionTarget::parse(&row.scope, row.name)
            .ok_or_else(|| StoreError::Internal(format!("stored scope {:?}", row.scope)))?;
        let policy = RetentionPolicy::new(row.max_age_s, row.max_count)
            .map_err(|e| StoreError::Internal(format!("stored retention policy: {e}")))?;
        Ok((target, policy))
    }
}

/// A tombstone row as both backends return it.
#[derive(sqlx::FromRow)]
pub(crate) struct TombstoneRow {
    stream: String,
    version: i64,
    time_micros: i64,
}

impl TryFrom<TombstoneRow> for Tombstone {
    type Error = StoreError;

    fn try_from(row: TombstoneRow) -> Result<Self, StoreError> {
        Ok(Tombstone {
            stream: row.stream,
            version: row.version,
            time: from_micros(row.time_micros)?,
        })
    }
}
