//! Requests on one subscription served together, in turns. A claim costs the
//! store about the same for one consumer as for eight (claims on one
//! subscription take turns on its row), and so does an acknowledgement (a
//! statement or a short transaction), so the requests that arrive while a
//! turn runs wait for the next and are served together: the append writer's
//! group commit (`store/writer.rs`), per subscription. Eight consumers then
//! cost one turn instead of eight in a row.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::store::{
    Claim, Delivery, Settled, Settlement, SharedStore, StoreError, SubscriptionError,
};

/// A turn stops gathering requests once they name this many events (a
/// single larger request still goes alone), which bounds one turn's work.
const EVENTS_PER_TURN: usize = 1000;

/// A kind of request served in turns.
pub(super) trait Job: Send + Sized + 'static {
    /// What the request gets.
    type Answer: Send + 'static;
    /// How many events it names.
    fn events(&self) -> usize;
    /// Serves a turn's requests on subscription `name`: one answer each, in
    /// order.
    fn serve(
        store: &SharedStore,
        name: &str,
        jobs: Vec<Self>,
    ) -> impl Future<Output = Vec<Self::Answer>> + Send;
}

/// A request waiting for its subscription's next turn.
struct Waiting<J: Job> {
    job: J,
    reply: oneshot::Sender<J::Answer>,
}

/// The requests waiting for a turn, per subscription; a subscription has an
/// entry exactly while a task serves its turns.
pub(super) struct Turns<J: Job> {
    store: SharedStore,
    waiting: Mutex<HashMap<String, Vec<Waiting<J>>>>,
}

impl<J: Job> Turns<J> {
    /// Turns on the subscriptions of `store`.
    pub(super) fn new(store: SharedStore) -> Arc<Self> {
        Arc::new(Turns {
            store,
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// Serves a request in the subscription's next turn, starting the task
    /// that serves its turns if none runs; `None` if that task failed.
    pub(super) async fn serve(self: &Arc<Self>, name: &str, job: J) -> Option<J::Answer> {
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting { job, reply };
        let start = {
            let mut queues = self.queues();
            match queues.get_mut(name) {
                Some(queue) => {
                    queue.push(waiting);
                    false
                }
                None => {
                    queues.insert(name.to_owned(), vec![waiting]);
                    true
                }
            }
        };
        if start {
            let serving = Serving {
                turns: self.clone(),
                name: name.to_owned(),
                done: false,
            };
            tokio::spawn(serving.run());
        }
        answer.await.ok()
    }

    /// The queues, whatever a panicking holder left (each is a plain list).
    fn queues(&self) -> MutexGuard<'_, HashMap<String, Vec<Waiting<J>>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The requests for the subscription's next turn (those whose caller
    /// left are dropped), or none, its entry then removed: whoever queues
    /// next starts a new task.
    fn next_turn(&self, name: &str) -> Vec<Waiting<J>> {
        let mut queues = self.queues();
        let Some(queue) = queues.get_mut(name) else {
            return Vec::new();
        };
        queue.retain(|waiting| !waiting.reply.is_closed());
        let mut events = 0;
        let taken = queue
            .iter()
            .enumerate()
            .take_while(|(i, waiting)| {
                events += waiting.job.events();
                *i == 0 || events <= EVENTS_PER_TURN
            })
            .count();
        let turn: Vec<Waiting<J>> = queue.drain(..taken).collect();
        if turn.is_empty() {
            queues.remove(name);
        }
        turn
    }
}

/// The task serving one subscription's turns until no request waits.
struct Serving<J: Job> {
    turns: Arc<Turns<J>>,
    name: String,
    /// Set once the task removed its entry itself; otherwise (a panic in the
    /// store) dropping it removes the entry, so that requests that come
    /// later start a new task instead of waiting for this one forever.
    done: bool,
}

impl<J: Job> Serving<J> {
    async fn run(mut self) {
        loop {
            let turn = self.turns.next_turn(&self.name);
            if turn.is_empty() {
                self.done = true;
                return;
            }
            let (jobs, replies): (Vec<J>, Vec<_>) = turn
                .into_iter()
                .map(|waiting| (waiting.job, waiting.reply))
                .unzip();
            let answers = J::serve(&self.turns.store, &self.name, jobs).await;
            // A caller that left meanwhile leaves its leases, if any, to run
            // out: they are delivered again then.
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
    }
}

impl<J: Job> Drop for Serving<J> {
    fn drop(&mut self) {
        if !self.done {
            self.turns.queues().remove(&self.name);
        }
    }
}

/// The same answer for every request of a turn that failed as a whole.
fn each<T>(
    count: usize,
    answers: Result<Vec<Result<T, SubscriptionError>>, SubscriptionError>,
) -> Vec<Result<T, SubscriptionError>> {
    answers.unwrap_or_else(|error| (0..count).map(|_| Err(error.clone())).collect())
}

impl Job for Claim {
    type Answer = Result<Vec<Delivery>, SubscriptionError>;

    fn events(&self) -> usize {
        self.max
    }

    async fn serve(store: &SharedStore, name: &str, claims: Vec<Claim>) -> Vec<Self::Answer> {
        let answers = store
            .claim(name, &claims)
            .await
            .map(|lists| lists.into_iter().map(Ok).collect());
        each(claims.len(), answers)
    }
}

/// An acknowledgement: the leases it settles.
pub(super) struct Ack(pub(super) Vec<String>);

impl Job for Ack {
    type Answer = Result<Settled, SubscriptionError>;

    fn events(&self) -> usize {
        self.0.len()
    }

    async fn serve(store: &SharedStore, name: &str, acks: Vec<Ack>) -> Vec<Self::Answer> {
        let requests: Vec<Vec<String>> = acks.into_iter().map(|ack| ack.0).collect();
        let answers = store.settle(name, &requests, &Settlement::Ack).await;
        each(requests.len(), answers)
    }
}

/// The error for a request whose turn's task failed before answering.
pub(super) fn unanswered() -> SubscriptionError {
    StoreError::Internal("a turn of requests ended without an answer".into()).into()
}
