//! The single writer: group commit for every backend.
//!
//! Appends are funnelled through one task per process. It takes every request
//! waiting in its queue (up to a cap of events) and commits them in one
//! transaction, so many concurrent appends share one lock acquisition and one
//! disk flush instead of queueing for the store-wide lock one at a time (a lock
//! convoy). Each request is still judged on its own by [`plan`]: one request's
//! `412` or `409` never fails its neighbours, because a refused request simply
//! contributes no rows to the transaction.

use std::collections::HashMap;

use async_trait::async_trait;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use super::{AppendError, AppendRequest, Appended, EventPosition, NewEvent, StoreError};
use crate::names;

/// The outcome of one request of a batch.
pub type Outcome = Result<Appended, AppendError>;

/// A backend's half of group commit: one transaction for a whole batch.
#[async_trait]
pub trait CommitBatch: Send + Sync + 'static {
    /// In one transaction: take the store-wide write lock, load [`BatchState`]
    /// for [`BatchKeys`], [`plan`] the batch, insert its rows, commit. Returns
    /// one outcome per request, in order.
    async fn commit(&self, batch: &[AppendRequest]) -> Result<Vec<Outcome>, StoreError>;
}

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
}

/// The streams and event ids a batch touches: what [`BatchState`] is loaded for.
#[derive(Debug)]
pub struct BatchKeys {
    /// Each stream once.
    pub streams: Vec<String>,
    /// Every event id.
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
            .flat_map(|r| r.events.iter().map(|e| e.id))
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

/// What a transaction writes for a batch, and what each request is answered.
#[derive(Debug)]
pub struct Plan<'a> {
    /// The rows to insert, in global order.
    pub rows: Vec<Row<'a>>,
    /// The new version of every stream written.
    pub versions: Vec<(&'a str, i64)>,
    /// One answer per request.
    pub outcomes: Vec<Outcome>,
}

/// Judges each request of a batch in arrival order against the state of the
/// store plus the requests before it, and lays out the rows to insert.
/// Global positions continue from `state.last_global_position` without gaps:
/// that is safe only because the caller holds the store-wide write lock.
pub fn plan(batch: &[AppendRequest], mut state: BatchState) -> Plan<'_> {
    let mut rows = Vec::new();
    let mut written: HashMap<&str, i64> = HashMap::new();
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
            state.versions.insert(request.stream.clone(), *version);
            written.insert(&request.stream, *version);
        }
        outcomes.push(outcome);
    }
    let mut versions: Vec<_> = written.into_iter().collect();
    versions.sort_unstable();
    Plan {
        rows,
        versions,
        outcomes,
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

/// A request waiting for the writer, with where to send its answer.
struct Job {
    request: AppendRequest,
    reply: oneshot::Sender<Outcome>,
}

/// The handle through which requests reach the writer task.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
}

/// Most requests waiting for the writer before appends wait to queue.
const QUEUE_DEPTH: usize = 4096;

/// A batch stops growing once it holds this many events (a single larger
/// request still goes alone), which bounds the size of one transaction.
const MAX_BATCH_EVENTS: usize = 4096;

impl Writer {
    /// Starts the writer task over a backend; `changes` is signalled after
    /// every commit that wrote events.
    pub fn spawn(backend: impl CommitBatch, changes: Arc<Notify>) -> Writer {
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(backend, jobs, changes));
        Writer { queue }
    }

    /// Appends through the writer and waits for the answer.
    pub async fn append(&self, request: AppendRequest) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable("the writer has stopped".into());
        self.queue
            .send(Job { request, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The writer loop: gather what is waiting, commit it, answer each request.
async fn run(backend: impl CommitBatch, mut jobs: mpsc::Receiver<Job>, changes: Arc<Notify>) {
    while let Some(first) = jobs.recv().await {
        let mut size = first.request.events.len();
        let mut batch = vec![first];
        while size < MAX_BATCH_EVENTS {
            let Ok(job) = jobs.try_recv() else { break };
            size += job.request.events.len();
            batch.push(job);
        }
        let (requests, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|j| (j.request, j.reply)).unzip();
        let outcomes = match backend.commit(&requests).await {
            Ok(outcomes) => outcomes,
            // A failure that is not the database being away may be one
            // request's fault: commit each alone, so only that one fails.
            Err(StoreError::Internal(error)) if requests.len() > 1 => {
                tracing::warn!(%error, requests = requests.len(), "batch failed; committing one by one");
                let mut outcomes = Vec::with_capacity(requests.len());
                for request in &requests {
                    outcomes.push(match backend.commit(std::slice::from_ref(request)).await {
                        Ok(mut alone) => alone.remove(0),
                        Err(error) => Err(error.into()),
                    });
                }
                outcomes
            }
            Err(error) => requests.iter().map(|_| Err(error.clone().into())).collect(),
        };
        if outcomes.iter().any(|o| o.as_ref().is_ok_and(|a| a.created)) {
            changes.notify_one();
        }
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            if let Err(AppendError::Store(error)) = &outcome {
                tracing::error!(%error, "append failed");
            }
            let _ = reply.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Expected;
    use serde_json::value::RawValue;

    fn request(stream: &str, expected: Expected, ids: &[u128]) -> AppendRequest {
        let events = ids
            .iter()
            .map(|&id| NewEvent {
                id: Uuid::from_u128(id),
                event_type: "T".into(),
                data: RawValue::from_string("{}".into()).unwrap(),
                metadata: None,
                causation_id: None,
                correlation_id: None,
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
        assert_eq!(plan.versions, [("a-1", 1), ("b-1", 1)]);
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
}
