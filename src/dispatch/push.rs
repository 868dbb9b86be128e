//! Push delivery (API.md, Managed subscriptions): the server POSTs each
//! delivery of a subscription with `push` to its URL, signed per Standard
//! Webhooks when it has a secret. A `2xx` within `timeout_ms` acknowledges;
//! anything else is retried after a backoff (1 s, doubling up to 60 s) and
//! parked after `max_deliveries` attempts.
//!
//! Pushing is an ordinary consumer (`$push`, a name no client can use) of
//! the subscription's leases, so a receiver sees what a pulling consumer
//! would, in the same order. One instance pushes each subscription: the
//! one holding its pusher term in the store, renewed every second. If that
//! instance dies, another takes over when the term runs out, and the leases
//! it held run out and are delivered again. Each subscription has its own
//! task and its own bound of requests in flight, so a slow or dead receiver
//! holds up nothing else.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use standardwebhooks::Webhook;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::{Dispatcher, RECHECK, Wake};
use crate::http::wire;
use crate::store::{
    Claim, Delivery, PushTarget, Settlement, SubscriptionDefinition, SubscriptionError,
};

/// The consumer name push delivery claims under.
pub const CONSUMER: &str = "$push";

/// How long an instance's pusher term lasts without renewal.
const TERM: Duration = Duration::from_secs(5);

/// How often terms are renewed and new push subscriptions picked up.
const RENEW: Duration = Duration::from_secs(1);

/// How much longer a push lease lasts than the receiver's timeout, so that
/// it never runs out while the request is under way.
const LEASE_SLACK: Duration = Duration::from_secs(5);

/// The longest wait before a failed delivery is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Runs push delivery for this instance until `shutdown` turns true, then
/// stops its pushers and gives up their terms.
pub async fn run(dispatcher: Arc<Dispatcher>, mut shutdown: watch::Receiver<bool>) {
    let instance = uuid::Uuid::new_v4().to_string();
    let client = reqwest::Client::builder()
        // A receiver answers itself: a redirect is not an answer.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the HTTP client's settings are valid");
    let mut pushers: HashMap<String, Pusher> = HashMap::new();
    let mut renew = tokio::time::interval(RENEW);
    renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = renew.tick() => {}
            _ = shutdown.wait_for(|closed| *closed) => break,
        }
        let definitions = match dispatcher.store().subscription_definitions().await {
            Ok(definitions) => definitions,
            Err(error) => {
                tracing::warn!(%error, "push delivery cannot read the subscriptions");
                continue;
            }
        };
        let wanted: HashMap<String, SubscriptionDefinition> = definitions
            .into_iter()
            .filter(|(_, definition)| definition.push.is_some())
            .collect();
        pushers.retain(|name, pusher| wanted.get(name) == Some(&pusher.definition));
        for (name, definition) in wanted {
            match dispatcher.store().hold_pusher(&name, &instance, TERM).await {
                Ok(true) => {
                    pushers.entry(name.clone()).or_insert_with(|| {
                        Pusher::start(dispatcher.clone(), client.clone(), name, definition)
                    });
                }
                Ok(false) => {
                    pushers.remove(&name);
                }
                Err(error) => {
                    tracing::warn!(%error, subscription = %name, "cannot renew a pusher term");
                    pushers.remove(&name);
                }
            }
        }
    }
    for name in pushers.keys() {
        if let Err(error) = dispatcher.store().release_pusher(name, &instance).await {
            tracing::debug!(%error, "cannot give up a pusher term; it runs out");
        }
    }
}

/// One subscription's push task; dropping it stops the task.
struct Pusher {
    definition: SubscriptionDefinition,
    _stop: watch::Sender<bool>,
}

impl Pusher {
    /// Starts pushing a subscription's deliveries.
    fn start(
        dispatcher: Arc<Dispatcher>,
        client: reqwest::Client,
        name: String,
        definition: SubscriptionDefinition,
    ) -> Pusher {
        let (stop, stopped) = watch::channel(false);
        if let Some(target) = definition.push.clone() {
            tokio::spawn(push(dispatcher, client, name, target, stopped));
        }
        Pusher {
            definition,
            _stop: stop,
        }
    }
}

/// Pushes a subscription's deliveries, at most `max_in_flight` at once,
/// until `stopped` changes or closes.
async fn push(
    dispatcher: Arc<Dispatcher>,
    client: reqwest::Client,
    name: String,
    target: PushTarget,
    mut stopped: watch::Receiver<bool>,
) {
    let receiver = Receiver::new(client, &name, &target);
    let timeout = Duration::from_millis(target.timeout_ms);
    let claim = |max| Claim {
        consumer: CONSUMER.to_owned(),
        max,
        lease_for: Some(timeout + LEASE_SLACK),
    };
    let max_in_flight = target.max_in_flight as usize;
    let mut posts: JoinSet<(Delivery, Result<(), String>)> = JoinSet::new();
    let mut wake = Wake::new(&dispatcher);
    loop {
        let free = max_in_flight.saturating_sub(posts.len());
        let mut idle = free > 0;
        if free > 0 {
            match dispatcher.claim_now(&name, &claim(free)).await {
                Ok(deliveries) => {
                    idle = deliveries.len() < free;
                    for delivery in deliveries {
                        let receiver = receiver.clone();
                        posts.spawn(async move {
                            let outcome = receiver.post(&delivery).await;
                            (delivery, outcome)
                        });
                    }
                }
                Err(SubscriptionError::NotFound(_)) => return,
                Err(error) => {
                    tracing::warn!(%error, subscription = %name, "push delivery cannot claim")
                }
            }
        }
        tokio::select! {
            _ = stopped.changed() => return,
            Some(posted) = posts.join_next(), if !posts.is_empty() => {
                if let Ok((delivery, outcome)) = posted {
                    settle(&dispatcher, &name, delivery, outcome).await;
                }
            }
            () = wake.wait(Instant::now() + RECHECK), if idle => {}
        }
    }
}

/// Acknowledges a delivery the receiver took, or retries it after a backoff.
async fn settle(
    dispatcher: &Dispatcher,
    name: &str,
    delivery: Delivery,
    outcome: Result<(), String>,
) {
    let settlement = match outcome {
        Ok(()) => Settlement::Ack,
        Err(reason) => Settlement::Retry {
            delay: backoff(delivery.attempt),
            reason,
        },
    };
    if let Err(error) = dispatcher
        .settle(name, &[delivery.lease], &settlement)
        .await
    {
        // The lease runs out and the event is delivered again.
        tracing::warn!(%error, subscription = %name, "push delivery cannot settle a lease");
    }
}

/// The wait before the next attempt after failed attempt `attempt`: 1 s,
/// doubling, at most [`MAX_BACKOFF`].
fn backoff(attempt: i64) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(6);
    Duration::from_secs(1 << doublings).min(MAX_BACKOFF)
}

/// A push receiver: its URL, timeout and signing key.
#[derive(Clone)]
struct Receiver {
    client: reqwest::Client,
    subscription: Arc<str>,
    url: Arc<str>,
    timeout: Duration,
    signer: Option<Arc<Webhook>>,
}

/// The body of a push.
#[derive(Serialize)]
struct PushBody<'a> {
    subscription: &'a str,
    attempt: i64,
    event: wire::Event,
}

impl Receiver {
    /// The receiver of a subscription's pushes.
    fn new(client: reqwest::Client, subscription: &str, target: &PushTarget) -> Self {
        Receiver {
            client,
            subscription: subscription.into(),
            url: target.url.as_str().into(),
            timeout: Duration::from_millis(target.timeout_ms),
            // The secret was checked when the subscription was created.
            signer: target
                .secret
                .as_deref()
                .and_then(|secret| Webhook::new(secret).ok())
                .map(Arc::new),
        }
    }

    /// POSTs one delivery; why it failed, if it did (never quoting the URL,
    /// which may carry credentials).
    async fn post(&self, delivery: &Delivery) -> Result<(), String> {
        let body = serde_json::to_string(&PushBody {
            subscription: &self.subscription,
            attempt: delivery.attempt,
            event: delivery.event.clone().into(),
        })
        .expect("a delivery serialises");
        let id = delivery.event.id.to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = self
            .client
            .post(&*self.url)
            .timeout(self.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(signer) = &self.signer {
            let signature = signer
                .sign(&id, timestamp, body.as_bytes())
                .map_err(|error| format!("cannot sign: {error}"))?;
            request = request.header("webhook-signature", signature);
        }
        match request.body(body).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("the receiver answered {}", response.status())),
            Err(error) if error.is_timeout() => Err(format!(
                "the receiver did not answer within {} ms",
                self.timeout.as_millis()
            )),
            Err(error) => Err(format!(
                "the receiver could not be reached: {}",
                error.without_url()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_a_second_and_doubles_up_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
