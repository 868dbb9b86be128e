//! The retention sweep: every `--retention-sweep-secs`, each instance
//! applies every retention policy. Its erasures take the store-wide write
//! lock one bounded batch at a time, so appends wait for one batch at most,
//! and instances sweeping together only take turns.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::feed::Feeds;
use crate::store::SharedStore;

/// Sweeps at once, then every `interval`, until `closing` turns true.
pub async fn sweep_every(
    store: SharedStore,
    feeds: Arc<Feeds>,
    interval: Duration,
    mut closing: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = closing.wait_for(|closing| *closing) => return,
        }
        match store.sweep(Utc::now()).await {
            Ok(0) => {}
            Ok(erased) => {
                tracing::info!(erased, "the retention sweep erased events");
                feeds.erased();
            }
            Err(error) => tracing::warn!(%error, "the retention sweep failed; it runs again"),
        }
    }
}
