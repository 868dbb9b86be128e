//! Group commit's pure half: judging every request of a batch against the
//! store's state and the requests before it, and laying out the rows to
//! write. No I/O, so every rule is unit-tested here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::AppendError;
use super::model::{AppendRequest, Appended, EventPosition, NewEvent};
use crate::names;

/// The outcome of one request of a batch.
pub type Outcome = Result<Appended, AppendError>;

/// An event id already stored, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredId {
    /// The stream holding it.
    pub stream: String,
    /// Its stream position.
    pub position: i64,
    /// Its global position.
    pub global_position: i64,
}

/// What a batch must know of the store, read under the write lock.
#[derive(Debug, Default)]
pub struct BatchState {
    /// The current version of each stream the batch touches (absent: -1).
    pub versions: HashMap<String, i64>,
    /// The ids of the batch that are already stored.
    pub existing: HashMap<Uuid, StoredId>,
    /// The highest global position stored (0 when empty).
    pub last_global_position: i64,
    /// The commit time of the batch: never before the last stored event's,
    /// so times never go backwards along the log, even if the clock does.
    pub commit_time: DateTime<Utc>,
}

/// The streams and event ids a batch touches: what [`BatchState`] is loaded for.
#[derive(Debug)]
pub struct BatchKeys {
    /// Each stream once.
    pub streams: Vec<String>,
    /// Every id a client chose (see [`NewEvent::client_id`]).
    pub ids: Vec<Uuid>,
}

impl BatchKeys {
    /// The keys of a batch.
    pub fn of(batch: &[AppendRequest]) -> Self {
        let mut streams: Vec<String> = batch.iter().map(|r| r.stream.clone()).collect();
        streams.sort_unstable();
        streams.dedup();
        let ids = batch
            .iter()
            .flat_map(|r| r.events.iter().filter(|e| e.client_id).map(|e| e.id))
            .collect();
        BatchKeys { streams, ids }
    }
}

/// One event row to insert.
#[derive(Debug)]
pub struct Row<'a> {
    /// Its global position.
    pub global_position: i64,
    /// Its stream.
    pub stream: &'a str,
    /// Its stream position.
    pub position: i64,
    /// The stream's category.
    pub category: &'a str,
    /// The stream's consumer-group hash.
    pub cardinal_hash: i64,
    /// The event itself.
    pub event: &'a NewEvent,
}

/// A stream's version after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamVersion<'a> {
    /// The stream.
    pub stream: &'a str,
    /// Its version after the batch.
    pub version: i64,
    /// Whether the store held no event of it before the batch: its row is
    /// inserted rather than updated (under the write lock, no one else can
    /// have inserted it meanwhile).
    pub new: bool,
}

/// What a transaction writes for a batch, and what each request is answered.
#[derive(Debug)]
pub struct Plan<'a> {
    /// The rows to insert, in global order.
    pub rows: Vec<Row<'a>>,
    /// The new version of every stream written, in name order.
    pub versions: Vec<StreamVersion<'a>>,
    /// One answer per request.
    pub outcomes: Vec<Outcome>,
    /// When the rows are committed.
    pub commit_time: DateTime<Utc>,
}

/// Judges each request of a batch in arrival order against the state of the
/// store plus the requests before it, and lays out the rows to insert.
/// Global positions continue from `state.last_global_position` without gaps:
/// that is safe only because the caller holds the store-wide write lock.
pub fn plan(batch: &[AppendRequest], mut state: BatchState) -> Plan<'_> {
    let mut rows = Vec::new();
    let mut written: HashMap<&str, StreamVersion<'_>> = HashMap::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        let outcome = judge(request, &state);
        if let Ok(Appended {
            created: true,
            version,
            events,
        }) = &outcome
        {
            let category = names::category(&request.stream);
            let cardinal_hash = names::cardinal_hash(&request.stream);
            for (event, at) in request.events.iter().zip(events) {
                rows.push(Row {
                    global_position: at.global_position,
                    stream: &request.stream,
                    position: at.position,
                    category,
                    cardinal_hash,
                    event,
                });
                let stored = StoredId {
                    stream: request.stream.clone(),
                    position: at.position,
                    global_position: at.global_position,
                };
                state.existing.insert(at.id, stored);
            }
            state.last_global_position += events.len() as i64;
            let new = !state.versions.contains_key(&request.stream);
            written
                .entry(&request.stream)
                .or_insert(StreamVersion {
                    stream: &request.stream,
                    version: *version,
                    new,
                })
                .version = *version;
            state.versions.insert(request.stream.clone(), *version);
        }
        outcomes.push(outcome);
    }
    let mut versions: Vec<_> = written.into_values().collect();
    versions.sort_unstable_by_key(|v| v.stream);
    Plan {
        rows,
        versions,
        outcomes,
        commit_time: state.commit_time,
    }
}

/// The answer to one request, given the state before it.
fn judge(request: &AppendRequest, state: &BatchState) -> Outcome {
    let version = state.versions.get(&request.stream).copied().unwrap_or(-1);
    let stored: Vec<Option<&StoredId>> = request
        .events
        .iter()
        .map(|e| state.existing.get(&e.id))
        .collect();
    if stored.iter().all(Option::is_none) {
        if !request.expected.holds(version) {
            return Err(AppendError::WrongVersion {
                expected: request.expected,
                actual: version,
            });
        }
        let events = request
            .events
            .iter()
            .zip(1..)
            .map(|(e, offset)| EventPosition {
                id: e.id,
                position: version + offset,
                global_position: state.last_global_position + offset,
            });
        let events: Vec<_> = events.collect();
        return Ok(Appended {
            created: true,
            version: version + events.len() as i64,
            events,
        });
    }
    // Some ids are stored: only an exact retry (all of them, in this stream,
    // in this order, at consecutive positions) is acceptable.
    let first = stored[0].filter(|s| s.stream == request.stream);
    let retry = first.is_some_and(|first| {
        stored.iter().zip(0..).all(|(s, offset)| {
            s.is_some_and(|s| s.stream == request.stream && s.position == first.position + offset)
        })
    });
    if !retry {
        let taken = request
            .events
            .iter()
            .zip(&stored)
            .find(|(_, s)| s.is_some());
        return Err(AppendError::IdConflict(
            taken.map_or(Uuid::nil(), |(e, _)| e.id),
        ));
    }
    let events: Vec<_> = request
        .events
        .iter()
        .zip(stored.iter().flatten())
        .map(|(e, s)| EventPosition {
            id: e.id,
            position: s.position,
            global_position: s.global_position,
        })
        .collect();
    Ok(Appended {
        created: false,
        version: events.last().map_or(-1, |e| e.position),
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::Expected;
    use serde_json::value::RawValue;

    /// A plan's stream versions as `(stream, version, new)`.
    fn versions<'a>(plan: &Plan<'a>) -> Vec<(&'a str, i64, bool)> {
        plan.versions
            .iter()
            .map(|v| (v.stream, v.version, v.new))
            .collect()
    }

    fn request(stream: &str, expected: Expected, ids: &[u128]) -> AppendRequest {
        let events = ids
            .iter()
            .map(|&id| NewEvent {
                id: Uuid::from_u128(id),
                client_id: true,
                event_type: "T".into(),
                data: RawValue::from_string("{}".into()).unwrap(),
                metadata: None,
                causation_id: None,
                correlation_id: None,
                tags: Vec::new(),
            })
            .collect();
        AppendRequest {
            stream: stream.into(),
            expected,
            events,
        }
    }

    #[test]
    fn racing_requests_in_one_batch_are_judged_in_order() {
        let batch = [
            request("a-1", Expected::Version(-1), &[1]),
            request("a-1", Expected::Version(-1), &[2]),
            request("b-1", Expected::Any, &[3, 4]),
            request("a-1", Expected::Version(0), &[5]),
        ];
        let plan = plan(&batch, BatchState::default());
        assert!(plan.outcomes[0].as_ref().is_ok_and(|a| a.created));
        assert!(matches!(
            plan.outcomes[1],
            Err(AppendError::WrongVersion { actual: 0, .. })
        ));
        let positions: Vec<_> = plan
            .rows
            .iter()
            .map(|r| (r.stream, r.position, r.global_position))
            .collect();
        assert_eq!(
            positions,
            [("a-1", 0, 1), ("b-1", 0, 2), ("b-1", 1, 3), ("a-1", 1, 4)]
        );
        assert_eq!(versions(&plan), [("a-1", 1, true), ("b-1", 1, true)]);
    }

    #[test]
    fn retries_within_a_batch_are_recognised() {
        let batch = [
            request("a-1", Expected::NoStream, &[1, 2]),
            request("a-1", Expected::NoStream, &[1, 2]),
            request("a-2", Expected::Any, &[2]),
            request("a-1", Expected::Any, &[2, 1]),
        ];
        let plan = plan(&batch, BatchState::default());
        let retry = plan.outcomes[1].as_ref().unwrap();
        assert!(!retry.created);
        assert_eq!(retry.version, 1);
        assert!(matches!(plan.outcomes[2], Err(AppendError::IdConflict(_))));
        assert!(matches!(plan.outcomes[3], Err(AppendError::IdConflict(_))));
        assert_eq!(plan.rows.len(), 2);
    }

    #[test]
    fn only_ids_a_client_chose_are_looked_up() {
        let mut fresh = request("a-1", Expected::Any, &[1, 2]);
        fresh.events[1].client_id = false;
        let batch = [fresh, request("a-1", Expected::Any, &[3])];
        let keys = BatchKeys::of(&batch);
        assert_eq!(keys.ids, [Uuid::from_u128(1), Uuid::from_u128(3)]);
        assert_eq!(keys.streams, ["a-1"]);
    }

    #[test]
    fn streams_the_store_holds_are_updated_and_others_inserted() {
        let batch = [
            request("a-1", Expected::Any, &[1]),
            request("b-1", Expected::Any, &[2]),
            request("b-1", Expected::Any, &[3]),
        ];
        let mut state = BatchState::default();
        state.versions.insert("a-1".into(), 4);
        let plan = plan(&batch, state);
        assert_eq!(versions(&plan), [("a-1", 5, false), ("b-1", 1, true)]);
    }
}
