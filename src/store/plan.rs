//! Group commit's pure half: judging every request of a batch against the
//! store's state and the requests before it, and laying out the rows to
//! write. No I/O, so every rule is unit-tested here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::AppendError;
use super::model::{AppendRequest, Appended, EventPosition, NewEvent, QueryItem};
use super::schemas::failures;
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
    /// The streams of the batch that were deleted (their names answer 410).
    pub deleted: HashSet<String>,
    /// The ids of the batch that are already stored.
    pub existing: HashMap<Uuid, StoredId>,
    /// The highest global position stored (0 when empty).
    pub last_global_position: i64,
    /// The commit time of the batch: never before the last stored event's,
    /// so times never go backwards along the log, even if the clock does.
    pub commit_time: DateTime<Utc>,
    /// For each conditional request (by its index in the batch), the
    /// earliest stored event matching its condition above its `after`.
    pub first_matches: HashMap<usize, i64>,
    /// The current schema version of each type of the batch that has one.
    pub schema_versions: HashMap<String, i64>,
    /// The validators of those schemas, by type.
    pub validators: HashMap<String, Arc<jsonschema::Validator>>,
}

/// What [`BatchState`] is loaded for: the streams and event ids a batch
/// touches, and its conditions.
#[derive(Debug)]
pub struct BatchKeys {
    /// Each stream once.
    pub streams: Vec<String>,
    /// Every id a client chose (see [`NewEvent::client_id`]).
    pub ids: Vec<Uuid>,
    /// Each event type once.
    pub types: Vec<String>,
    /// Each conditional request's index in the batch, query and `after`
    /// (0 when absent: any matching event at all).
    pub conditions: Vec<(usize, Vec<QueryItem>, i64)>,
}

impl BatchKeys {
    /// The keys of a batch.
    pub fn of(batch: &[AppendRequest]) -> Self {
        let mut streams: Vec<String> = batch
            .iter()
            .flat_map(|r| r.streams().into_iter().map(str::to_owned))
            .collect();
        streams.sort_unstable();
        streams.dedup();
        let ids = batch
            .iter()
            .flat_map(|r| {
                r.events
                    .iter()
                    .filter(|e| e.event.client_id)
                    .map(|e| e.event.id)
            })
            .collect();
        let mut types: Vec<String> = batch
            .iter()
            .flat_map(|r| r.events.iter().map(|e| e.event.event_type.clone()))
            .collect();
        types.sort_unstable();
        types.dedup();
        let conditions = batch
            .iter()
            .enumerate()
            .filter_map(|(index, r)| {
                let condition = r.condition.as_ref()?;
                Some((index, condition.query.clone(), condition.after.unwrap_or(0)))
            })
            .collect();
        BatchKeys {
            streams,
            ids,
            types,
            conditions,
        }
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
    let mut rows: Vec<Row<'_>> = Vec::new();
    let mut written: HashMap<&str, StreamVersion<'_>> = HashMap::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for (index, request) in batch.iter().enumerate() {
        let outcome = judge(index, request, &state, &rows);
        if let Ok(Appended {
            created: true,
            events,
            versions,
        }) = &outcome
        {
            for (planned, at) in request.events.iter().zip(events) {
                rows.push(Row {
                    global_position: at.global_position,
                    stream: &planned.stream,
                    position: at.position,
                    category: names::category(&planned.stream),
                    cardinal_hash: names::cardinal_hash(&planned.stream),
                    event: &planned.event,
                });
                let stored = StoredId {
                    stream: planned.stream.clone(),
                    position: at.position,
                    global_position: at.global_position,
                };
                state.existing.insert(at.id, stored);
            }
            state.last_global_position += events.len() as i64;
            let streams = request.streams();
            for (stream, version) in versions {
                let Ok(at) = streams.binary_search(&stream.as_str()) else {
                    continue;
                };
                let stream = streams[at];
                let new = !state.versions.contains_key(stream);
                written
                    .entry(stream)
                    .or_insert(StreamVersion {
                        stream,
                        version: *version,
                        new,
                    })
                    .version = *version;
                state.versions.insert(stream.to_owned(), *version);
            }
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

/// Whether an event matches a query: it matches one of its items.
fn matches(query: &[QueryItem], event: &NewEvent) -> bool {
    query
        .iter()
        .any(|item| item.matches(&event.event_type, &event.tags))
}

/// The answer to request `index`, given the state before it and the rows
/// the requests before it in the batch will write.
fn judge(index: usize, request: &AppendRequest, state: &BatchState, rows: &[Row<'_>]) -> Outcome {
    if let Some(stream) = request
        .streams()
        .into_iter()
        .find(|s| state.deleted.contains(*s))
    {
        return Err(AppendError::StreamDeleted(stream.to_owned()));
    }
    let stored: Vec<Option<&StoredId>> = request
        .events
        .iter()
        .map(|e| state.existing.get(&e.event.id))
        .collect();
    if stored.iter().any(Option::is_some) {
        return retried(request, &stored);
    }
    for (index, planned) in request.events.iter().enumerate() {
        let event = &planned.event;
        let Some(validator) = state.validators.get(&event.event_type) else {
            continue;
        };
        let failures = failures(validator, &event.data);
        if !failures.is_empty() {
            return Err(AppendError::SchemaViolation {
                event: index,
                event_type: event.event_type.clone(),
                failures,
            });
        }
    }
    if let Some(after) = request.condition.as_ref().and_then(|c| c.after)
        && after > state.last_global_position
    {
        return Err(AppendError::AfterBeyondHead {
            after,
            head: state.last_global_position,
        });
    }
    let version = |stream: &str| state.versions.get(stream).copied().unwrap_or(-1);
    for stream in request.streams() {
        let expected = request.expected_of(stream);
        if !expected.holds(version(stream)) {
            return Err(AppendError::WrongVersion {
                stream: stream.to_owned(),
                expected,
                actual: version(stream),
            });
        }
    }
    if let Some(condition) = &request.condition {
        let after = condition.after.unwrap_or(0);
        let in_batch = rows
            .iter()
            .filter(|row| row.global_position > after && matches(&condition.query, row.event))
            .map(|row| row.global_position);
        let stored = state.first_matches.get(&index).copied();
        if let Some(first_match) = stored.into_iter().chain(in_batch).min() {
            return Err(AppendError::ConditionFailed { first_match });
        }
    }
    let mut versions: Vec<(String, i64)> = Vec::new();
    let mut events = Vec::with_capacity(request.events.len());
    for (planned, offset) in request.events.iter().zip(1..) {
        let position = match versions.iter_mut().find(|(s, _)| *s == planned.stream) {
            Some((_, last)) => {
                *last += 1;
                *last
            }
            None => {
                let next = version(&planned.stream) + 1;
                versions.push((planned.stream.clone(), next));
                next
            }
        };
        events.push(EventPosition {
            id: planned.event.id,
            stream: planned.stream.clone(),
            position,
            global_position: state.last_global_position + offset,
        });
    }
    Ok(Appended {
        created: true,
        events,
        versions,
    })
}

/// The answer to a request some of whose ids are stored: only an exact
/// retry (every id stored, each in its own stream, each stream's at
/// consecutive positions in request order) is acceptable, and writes
/// nothing.
fn retried(request: &AppendRequest, stored: &[Option<&StoredId>]) -> Outcome {
    let mut versions: Vec<(String, i64)> = Vec::new();
    let mut events = Vec::with_capacity(stored.len());
    for (planned, at) in request.events.iter().zip(stored) {
        let consecutive =
            at.filter(|s| s.stream == planned.stream).is_some_and(|s| {
                match versions
                    .iter_mut()
                    .find(|(stream, _)| *stream == planned.stream)
                {
                    Some((_, last)) if s.position == *last + 1 => {
                        *last = s.position;
                        true
                    }
                    Some(_) => false,
                    None => {
                        versions.push((planned.stream.clone(), s.position));
                        true
                    }
                }
            });
        match at {
            Some(at) if consecutive => events.push(EventPosition {
                id: planned.event.id,
                stream: planned.stream.clone(),
                position: at.position,
                global_position: at.global_position,
            }),
            _ => {
                let taken = request
                    .events
                    .iter()
                    .zip(stored)
                    .find(|(_, at)| at.is_some())
                    .map_or(Uuid::nil(), |(e, _)| e.event.id);
                return Err(AppendError::IdConflict(taken));
            }
        }
    }
    Ok(Appended {
        created: false,
        events,
        versions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{Condition, Expected, StreamEvent};
    use serde_json::value::RawValue;

    /// A plan's stream versions as `(stream, version, new)`.
    fn versions<'a>(plan: &Plan<'a>) -> Vec<(&'a str, i64, bool)> {
        plan.versions
            .iter()
            .map(|v| (v.stream, v.version, v.new))
            .collect()
    }

    fn event(id: u128, tags: &[&str]) -> NewEvent {
        NewEvent {
            id: Uuid::from_u128(id),
            client_id: true,
            event_type: "T".into(),
            data: RawValue::from_string("{}".into()).unwrap(),
            metadata: None,
            causation_id: None,
            correlation_id: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn request(stream: &str, expected: Expected, ids: &[u128]) -> AppendRequest {
        let events = ids.iter().map(|&id| event(id, &[])).collect();
        AppendRequest::to_stream(stream, expected, events)
    }

    /// A request to append one event tagged `tag` to `stream`, on condition
    /// that no event tagged `tag` arrived after `after`.
    fn claim(stream: &str, id: u128, tag: &str, after: Option<i64>) -> AppendRequest {
        let mut request = AppendRequest::to_stream(stream, Expected::Any, vec![event(id, &[tag])]);
        request.condition = Some(Condition {
            query: vec![QueryItem {
                types: vec![],
                tags: vec![tag.into()],
            }],
            after,
        });
        request
    }

    #[test]
    fn conditions_see_the_store_and_the_requests_before_them() {
        let batch = [
            claim("user-1", 1, "username:ada", None),
            claim("user-2", 2, "username:ada", None),
            claim("user-3", 3, "username:bob", None),
            claim("user-4", 4, "username:bob", Some(0)),
            claim("user-5", 5, "username:eve", None),
        ];
        let mut state = BatchState {
            last_global_position: 10,
            ..BatchState::default()
        };
        state.first_matches.insert(4, 7);
        let plan = plan(&batch, state);
        assert!(plan.outcomes[0].is_ok());
        assert!(matches!(
            plan.outcomes[1],
            Err(AppendError::ConditionFailed { first_match: 11 })
        ));
        assert!(plan.outcomes[2].is_ok());
        assert!(matches!(
            plan.outcomes[3],
            Err(AppendError::ConditionFailed { first_match: 12 })
        ));
        assert!(matches!(
            plan.outcomes[4],
            Err(AppendError::ConditionFailed { first_match: 7 })
        ));
        let after_the_head = [claim("user-6", 6, "username:zed", Some(11))];
        let plan_beyond = super::plan(&after_the_head, BatchState::default());
        assert!(matches!(
            plan_beyond.outcomes[0],
            Err(AppendError::AfterBeyondHead { .. })
        ));
    }

    #[test]
    fn a_multi_stream_request_is_all_or_nothing() {
        let mut request = request("a-1", Expected::Any, &[1, 2]);
        request.events.insert(
            1,
            StreamEvent {
                stream: "b-1".into(),
                event: event(3, &[]),
            },
        );
        request.expected.push(("b-1".into(), Expected::Version(0)));
        let mut state = BatchState::default();
        state.versions.insert("a-1".into(), 4);
        let refused = plan(std::slice::from_ref(&request), state);
        assert!(matches!(
            &refused.outcomes[0],
            Err(AppendError::WrongVersion { stream, actual: -1, .. }) if stream == "b-1"
        ));
        assert!(refused.rows.is_empty());
        request.expected.pop();
        let mut state = BatchState::default();
        state.versions.insert("a-1".into(), 4);
        let written = plan(std::slice::from_ref(&request), state);
        let positions: Vec<_> = written
            .rows
            .iter()
            .map(|r| (r.stream, r.position, r.global_position))
            .collect();
        assert_eq!(positions, [("a-1", 5, 1), ("b-1", 0, 2), ("a-1", 6, 3)]);
        assert_eq!(versions(&written), [("a-1", 6, false), ("b-1", 0, true)]);
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
        assert_eq!(retry.version_of("a-1"), 1);
        assert!(matches!(plan.outcomes[2], Err(AppendError::IdConflict(_))));
        assert!(matches!(plan.outcomes[3], Err(AppendError::IdConflict(_))));
        assert_eq!(plan.rows.len(), 2);
    }

    #[test]
    fn only_ids_a_client_chose_are_looked_up() {
        let mut fresh = request("a-1", Expected::Any, &[1, 2]);
        fresh.events[1].event.client_id = false;
        let batch = [fresh, request("a-1", Expected::Any, &[3])];
        let keys = BatchKeys::of(&batch);
        assert_eq!(keys.ids, [Uuid::from_u128(1), Uuid::from_u128(3)]);
        assert_eq!(keys.streams, ["a-1"]);
    }

    #[test]
    fn a_deleted_stream_takes_no_events_and_fails_only_its_requests() {
        let mut across = request("b-1", Expected::Any, &[2]);
        across.events.push(StreamEvent {
            stream: "a-1".into(),
            event: event(3, &[]),
        });
        let batch = [
            request("a-1", Expected::Any, &[1]),
            across,
            request("b-1", Expected::Any, &[4]),
        ];
        let mut state = BatchState::default();
        state.deleted.insert("a-1".into());
        let plan = plan(&batch, state);
        for refused in &plan.outcomes[..2] {
            assert!(
                matches!(refused, Err(AppendError::StreamDeleted(s)) if s == "a-1"),
                "{refused:?}"
            );
        }
        assert!(plan.outcomes[2].is_ok());
        assert_eq!(versions(&plan), [("b-1", 0, true)]);
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
