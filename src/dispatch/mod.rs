//! Managed subscriptions at run time: claims that wait for events
//! (`wait_ms`), the SSE delivery feed, push delivery to webhooks
//! ([`push`]), claims and acks gathered into shared turns of the store
//! (`turns`), and the subscriptions' metrics. The store keeps every lease and
//! acknowledgement; what lives here is only waiting, gathering and counting.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::feed::TooManyFeeds;
use crate::metrics::Metrics;
use crate::store::{Claim, Delivery, Settled, Settlement, SharedStore, SubscriptionError};

pub mod push;
mod turns;

use turns::{Ack, Turns, unanswered};

/// How often a waiting claim looks again without a wake-up: leases that
/// run out, retries whose backoff ends and settlements on other instances
/// wake nobody.
const RECHECK: Duration = Duration::from_millis(250);

/// Hands out subscriptions' events and takes their settlements.
pub struct Dispatcher {
    store: SharedStore,
    /// Claims gathered into their subscriptions' turns.
    claims: Arc<Turns<Claim>>,
    /// Acknowledgements gathered into their subscriptions' turns.
    acks: Arc<Turns<Ack>>,
    /// Counts this instance's settlements and replays: a stream's next
    /// event may have become deliverable.
    settled: watch::Sender<u64>,
    metrics: Arc<Metrics>,
    /// Delivery feeds that may be open at once (each polls the store).
    follows: Arc<Semaphore>,
    max_follows: usize,
    /// Turns true at shutdown: delivery feeds end.
    closing: watch::Receiver<bool>,
}

impl Dispatcher {
    /// A dispatcher over a store, counting into `metrics`, with at most
    /// `max_follows` delivery feeds open, which end when `closing` turns true.
    pub fn new(
        store: SharedStore,
        metrics: Arc<Metrics>,
        max_follows: usize,
        closing: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Dispatcher {
            claims: Turns::new(store.clone()),
            acks: Turns::new(store.clone()),
            store,
            settled: watch::Sender::new(0),
            metrics,
            follows: Arc::new(Semaphore::new(max_follows)),
            max_follows,
            closing,
        })
    }

    /// The store it dispatches from.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Claims events, waiting up to `wait` for at least one.
    pub async fn claim(
        &self,
        name: &str,
        claim: &Claim,
        wait: Duration,
    ) -> Result<Vec<Delivery>, SubscriptionError> {
        let deadline = Instant::now() + wait;
        let mut wake = Wake::new(self);
        loop {
            let deliveries = self.claim_now(name, claim).await?;
            if !deliveries.is_empty() || Instant::now() >= deadline {
                return Ok(deliveries);
            }
            wake.wait(deadline).await;
        }
    }

    /// Claims what is available now, counting the deliveries.
    async fn claim_now(
        &self,
        name: &str,
        claim: &Claim,
    ) -> Result<Vec<Delivery>, SubscriptionError> {
        let deliveries = self
            .claims
            .serve(name, claim.clone())
            .await
            .unwrap_or_else(|| Err(unanswered()))?;
        if !deliveries.is_empty() {
            self.metrics.delivered(name, deliveries.len() as u64);
        }
        Ok(deliveries)
    }

    /// Settles leases; a retried or parked event counts as a failure.
    pub async fn settle(
        &self,
        name: &str,
        leases: &[String],
        settlement: &Settlement,
    ) -> Result<Settled, SubscriptionError> {
        let settled = match settlement {
            Settlement::Ack => self.acks.serve(name, Ack(leases.to_vec())).await,
            _ => self
                .store
                .settle(name, &[leases.to_vec()], settlement)
                .await?
                .pop(),
        }
        .unwrap_or_else(|| Err(unanswered()))?;
        if settled.done > 0 {
            self.settled.send_modify(|count| *count += 1);
            if !matches!(settlement, Settlement::Ack) {
                self.metrics.failed(name, settled.done);
            }
        }
        Ok(settled)
    }

    /// Puts parked events back into delivery; how many.
    pub async fn replay(
        &self,
        name: &str,
        positions: Option<&[i64]>,
    ) -> Result<u64, SubscriptionError> {
        let replayed = self.store.replay(name, positions).await?;
        self.settled.send_modify(|count| *count += 1);
        Ok(replayed)
    }

    /// Deletes a subscription and its metric series; false when there was none.
    pub async fn delete(&self, name: &str) -> Result<bool, SubscriptionError> {
        let deleted = self.store.delete_subscription(name).await?;
        self.metrics.forget_subscription(name);
        Ok(deleted)
    }

    /// Deliveries for `consumer` as they become available, keeping at most
    /// `max_in_flight` leases of the consumer's unsettled. It ends when the
    /// subscription is deleted, the store fails or the server shuts down.
    pub fn follow(
        self: &Arc<Self>,
        name: String,
        consumer: String,
        max_in_flight: usize,
    ) -> Result<impl Stream<Item = Delivery> + Send + 'static, TooManyFeeds> {
        let permit = self
            .follows
            .clone()
            .try_acquire_owned()
            .map_err(|_| TooManyFeeds(self.max_follows))?;
        let mut closing = self.closing.clone();
        let closed = async move {
            let _ = closing.wait_for(|closed| *closed).await;
        };
        let wake = Wake::new(self);
        let state = (self.clone(), VecDeque::<Delivery>::new(), wake, permit);
        let deliveries =
            futures::stream::unfold(state, move |(dispatcher, mut ready, mut wake, permit)| {
                let (name, consumer) = (name.clone(), consumer.clone());
                async move {
                    loop {
                        if let Some(delivery) = ready.pop_front() {
                            return Some((delivery, (dispatcher, ready, wake, permit)));
                        }
                        let held = match dispatcher.store.in_flight(&name, &consumer).await {
                            Ok(held) => usize::try_from(held).unwrap_or(0),
                            Err(error) => {
                                tracing::warn!(%error, "a delivery feed cannot read the store");
                                return None;
                            }
                        };
                        if held < max_in_flight {
                            let claim = Claim {
                                consumer: consumer.clone(),
                                max: max_in_flight - held,
                                lease_for: None,
                            };
                            match dispatcher.claim_now(&name, &claim).await {
                                Ok(deliveries) if !deliveries.is_empty() => {
                                    ready.extend(deliveries);
                                    continue;
                                }
                                Ok(_) => {}
                                Err(error) => {
                                    tracing::debug!(%error, "a delivery feed ends");
                                    return None;
                                }
                            }
                        }
                        wake.wait(Instant::now() + RECHECK).await;
                    }
                }
            });
        Ok(deliveries.take_until(closed))
    }
}

/// What wakes a waiting claim: a commit (here, or on another instance
/// where the store tells), a settlement here, or the recheck interval.
struct Wake {
    commits: watch::Receiver<u64>,
    settlements: watch::Receiver<u64>,
}

impl Wake {
    /// Starts watching the store's commits and the dispatcher's
    /// settlements: one that lands before the first wait still wakes it.
    fn new(dispatcher: &Dispatcher) -> Self {
        Wake {
            commits: dispatcher.store.changes(),
            settlements: dispatcher.settled.subscribe(),
        }
    }

    /// Waits for a wake-up, at most until `deadline` and at most [`RECHECK`].
    async fn wait(&mut self, deadline: Instant) {
        let until = deadline.min(Instant::now() + RECHECK);
        tokio::select! {
            _ = self.commits.changed() => {}
            _ = self.settlements.changed() => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}
