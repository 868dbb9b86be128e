//! The single writer: group commit for every backend.
//!
//! Appends are funnelled through one task per process. It takes every request
//! waiting in its queue (up to a cap of events) and commits them in one
//! transaction, so many concurrent appends share one lock acquisition and one
//! disk flush instead of queueing for the store-wide lock one at a time (a lock
//! convoy). The writer owns the commit sequence (begin under the write lock,
//! load the state, [`plan`], insert, commit); a backend supplies only the
//! statements, through [`WriteStatements`]. Each request is still judged on
//! its own: one request's `412` or `409` never fails its neighbours, because a
//! refused request simply contributes no rows to the transaction.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};

use super::error::{AppendError, StoreError};
use super::model::AppendRequest;
use super::plan::{BatchKeys, BatchState, Outcome, Plan, plan};
use super::queries::first_match;
use super::schemas::{Validators, schema_text};
use super::sql::Sql;

/// A backend's statements for group commit.
#[async_trait]
pub trait WriteStatements: Send + Sync + 'static {
    /// An open write transaction.
    type Tx: Send;
    /// Begins a transaction that holds the store-wide write lock until it
    /// ends, so that the state loaded next cannot go stale before commit.
    async fn begin(&mut self) -> Result<Self::Tx, StoreError>;
    /// Loads what the batch is judged against.
    async fn load(&self, tx: &mut Self::Tx, keys: &BatchKeys) -> Result<BatchState, StoreError>;
    /// Runs a query of one integer (a condition's first match) in the
    /// transaction.
    async fn fetch_int(&self, tx: &mut Self::Tx, sql: Sql) -> Result<Option<i64>, StoreError>;
    /// Runs a query of one text column in the transaction.
    async fn fetch_text(&self, tx: &mut Self::Tx, sql: Sql) -> Result<Vec<String>, StoreError>;
    /// Writes the plan's rows and stream versions (there is at least one row).
    async fn insert(&self, tx: &mut Self::Tx, plan: &Plan<'_>) -> Result<(), StoreError>;
    /// Commits.
    async fn commit(&mut self, tx: Self::Tx) -> Result<(), StoreError>;
}

/// How long one batch may take before its clients are answered 503. Past the
/// database's own lock timeout, this catches a connection whose peer went
/// silent, which the kernel would otherwise wait on for many minutes while
/// every append queues behind it. The transaction is dropped with its
/// connection, so the database rolls back whatever it had begun.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// One transaction for a whole batch, within [`BATCH_TIMEOUT`]; one outcome
/// per request, in order.
async fn commit_batch(
    backend: &mut impl WriteStatements,
    validators: &mut Validators,
    batch: &[AppendRequest],
) -> Result<Vec<Outcome>, StoreError> {
    tokio::time::timeout(BATCH_TIMEOUT, commit_batch_now(backend, validators, batch))
        .await
        .map_err(|_| StoreError::Unavailable("a batch of appends timed out".into()))?
}

/// The commit sequence: begin under the write lock, load, plan, insert, commit.
async fn commit_batch_now(
    backend: &mut impl WriteStatements,
    validators: &mut Validators,
    batch: &[AppendRequest],
) -> Result<Vec<Outcome>, StoreError> {
    let mut tx = backend.begin().await?;
    let keys = BatchKeys::of(batch);
    let mut state = backend.load(&mut tx, &keys).await?;
    // Schemas change under the write lock too, so these are the ones in
    // force; each is compiled once per version.
    for (event_type, version) in &state.schema_versions {
        let text = backend.fetch_text(&mut tx, schema_text(event_type, *version));
        let load = async { Ok(text.await?.pop()) };
        let validator = validators.get(event_type, *version, load).await?;
        state.validators.insert(event_type.clone(), validator);
    }
    // Each condition sees the store as the write lock holds it; the
    // requests before it in the batch, `plan` adds.
    for (index, query, after) in &keys.conditions {
        if *after <= state.last_global_position {
            let sql = first_match(query, *after);
            if let Some(first) = backend.fetch_int(&mut tx, sql).await? {
                state.first_matches.insert(*index, first);
            }
        }
    }
    let plan = plan(batch, state);
    if !plan.rows.is_empty() {
        backend.insert(&mut tx, &plan).await?;
    }
    backend.commit(tx).await?;
    Ok(plan.outcomes)
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
    /// Starts the writer over a backend as a task of the current runtime;
    /// `changes` is signalled after every commit that wrote events.
    pub fn spawn(backend: impl WriteStatements, changes: Arc<watch::Sender<u64>>) -> Writer {
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(backend, jobs, changes));
        Writer { queue }
    }

    /// Starts the writer over the backend `open` makes, on a thread and a
    /// runtime of its own; `changes` is signalled after every commit that
    /// wrote events.
    ///
    /// Why a thread of its own: a batch costs several round trips to the
    /// database, one after another, while every other client waits. On the
    /// shared runtime each reply waits its turn behind the HTTP tasks on the
    /// worker's queue (about a millisecond under load, measured), so the
    /// writer would spend more time queued than talking to the database. Its
    /// own runtime answers its own socket at once. `open` runs there, so the
    /// connections it makes are driven by that runtime too.
    pub async fn spawn_on_own_thread<B, F, Fut>(
        open: F,
        changes: Arc<watch::Sender<u64>>,
    ) -> anyhow::Result<Writer>
    where
        B: WriteStatements,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<B>>,
    {
        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        let (ready, opened) = oneshot::channel();
        std::thread::Builder::new()
            .name("cairn-writer".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(error.into()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match open().await {
                        Ok(backend) => {
                            let _ = ready.send(Ok(()));
                            run(backend, jobs, changes).await;
                        }
                        Err(error) => {
                            let _ = ready.send(Err(error));
                        }
                    }
                });
            })?;
        opened.await??;
        Ok(Writer { queue })
    }

    /// Whether the writer task still takes appends: it stops only if it
    /// panicked, and then every append fails, so health checks must say so.
    pub fn is_running(&self) -> bool {
        !self.queue.is_closed()
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
async fn run(
    mut backend: impl WriteStatements,
    mut jobs: mpsc::Receiver<Job>,
    changes: Arc<watch::Sender<u64>>,
) {
    let mut validators = Validators::default();
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
        let started = std::time::Instant::now();
        let outcomes = match commit_batch(&mut backend, &mut validators, &requests).await {
            Ok(outcomes) => outcomes,
            // A failure that is not the database being away may be one
            // request's fault: commit each alone, so only that one fails.
            Err(error @ (StoreError::Internal(_) | StoreError::Conflict(_)))
                if requests.len() > 1 =>
            {
                tracing::warn!(%error, requests = requests.len(), "batch failed; committing one by one");
                let mut outcomes = Vec::with_capacity(requests.len());
                for request in &requests {
                    // Once the database is away, the rest fail alike, at once.
                    if let Some(Err(AppendError::Store(away @ StoreError::Unavailable(_)))) =
                        outcomes.last()
                    {
                        outcomes.push(Err(AppendError::Store(away.clone())));
                        continue;
                    }
                    outcomes.push(
                        match commit_batch(
                            &mut backend,
                            &mut validators,
                            std::slice::from_ref(request),
                        )
                        .await
                        {
                            Ok(mut alone) => alone.remove(0),
                            Err(error) => Err(error.into()),
                        },
                    );
                }
                outcomes
            }
            Err(error) => requests.iter().map(|_| Err(error.clone().into())).collect(),
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::debug!(
            requests = requests.len(),
            events = size,
            micros,
            "batch committed"
        );
        // A failed batch may still have committed (its answer lost on the
        // way back): wake readers then too, to look for themselves.
        if outcomes
            .iter()
            .any(|o| o.as_ref().map_or(true, |appended| appended.created))
        {
            signal(&changes);
        }
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            if let Err(AppendError::Store(error)) = &outcome {
                tracing::error!(%error, "append failed");
            }
            let _ = reply.send(outcome);
        }
    }
}

/// Wakes everyone waiting on a store's changes (see [`super::Appends::changes`]).
pub(crate) fn signal(changes: &watch::Sender<u64>) {
    changes.send_modify(|count| *count = count.wrapping_add(1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::Expected;

    /// A backend whose every batch panics, as a bug in one would.
    struct Panicking;

    #[async_trait]
    impl WriteStatements for Panicking {
        type Tx = ();
        async fn begin(&mut self) -> Result<(), StoreError> {
            panic!("a bug in the writer");
        }
        async fn load(&self, _: &mut (), _: &BatchKeys) -> Result<BatchState, StoreError> {
            unreachable!("begin panics first")
        }
        async fn fetch_int(&self, _: &mut (), _: Sql) -> Result<Option<i64>, StoreError> {
            unreachable!("begin panics first")
        }
        async fn fetch_text(&self, _: &mut (), _: Sql) -> Result<Vec<String>, StoreError> {
            unreachable!("begin panics first")
        }
        async fn insert(&self, _: &mut (), _: &Plan<'_>) -> Result<(), StoreError> {
            unreachable!("begin panics first")
        }
        async fn commit(&mut self, _: ()) -> Result<(), StoreError> {
            unreachable!("begin panics first")
        }
    }

    #[tokio::test]
    async fn a_writer_that_panicked_fails_appends_and_says_it_stopped() {
        let writer = Writer::spawn(Panicking, Arc::new(watch::Sender::new(0)));
        assert!(writer.is_running());
        let request = AppendRequest::to_stream("a-1", Expected::Any, Vec::new());
        let outcome = writer.append(request).await;
        assert!(matches!(
            outcome,
            Err(AppendError::Store(StoreError::Unavailable(_)))
        ));
        assert!(!writer.is_running());
    }
}
