//! One live SSE feed of the `subscribe` scenario, parsed with
//! `eventsource-stream`: what it counts, and how the scenario waits on many.

use std::collections::HashSet;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

/// The part of an event delivered on a feed that the bench uses.
#[derive(Debug, Deserialize)]
struct FeedEvent {
    /// The event's id.
    id: Uuid,
    /// Its stream, to tell the bench's events from others.
    stream: String,
    /// Its data: `{"sent_us": …}` for the bench's events.
    data: Value,
}

/// Counters that the feeds share with the task driving them.
#[derive(Debug, Default)]
pub struct Progress {
    /// Feeds that have received their `caught-up` message.
    pub caught_up: AtomicU64,
    /// The bench's events delivered, each counted once per feed.
    pub delivered: AtomicU64,
}

/// What one feed saw of the bench's events.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Append-to-delivery latency of each distinct event.
    pub latencies: Vec<Duration>,
    /// Distinct events received.
    pub received: u64,
    /// Extra copies of events already received.
    pub duplicates: u64,
}

/// One live feed on `url` (`GET /all?position=end`): counts its `caught-up`
/// message and the latency of every event of a stream starting with `prefix`
/// in `progress`, until `stop` fires; counts repeated events as duplicates.
/// Fails if the feed ends or its positions do not increase.
pub async fn feed(
    client: reqwest::Client,
    url: String,
    prefix: String,
    start: Instant,
    opening: Arc<Semaphore>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<()>,
) -> Result<FeedStats> {
    let response = {
        let _permit = opening.acquire().await?;
        client
            .get(&url)
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
    };
    let status = response.status();
    if status != StatusCode::OK {
        let text = response.text().await.unwrap_or_default();
        bail!("GET {url} (feed) answered {status}, expected 200: {text}");
    }
    let mut messages = pin!(response.bytes_stream().eventsource());
    let mut seen = HashSet::new();
    let mut stats = FeedStats::default();
    let mut caught_up = false;
    let mut last_position = 0;
    loop {
        let message = tokio::select! {
            message = messages.next() => message,
            _ = stop.changed() => return Ok(stats),
        };
        let Some(message) = message else {
            bail!("GET {url}: the server ended the feed");
        };
        let message = message.with_context(|| format!("GET {url}: reading the feed"))?;
        let now = start.elapsed();
        match message.event.as_str() {
            "caught-up" if !caught_up => {
                caught_up = true;
                progress.caught_up.fetch_add(1, Ordering::Relaxed);
            }
            // A message without an `event:` field.
            "message" => {
                let position: i64 = message
                    .id
                    .parse()
                    .with_context(|| format!("GET {url}: a message without a numeric id"))?;
                let event: FeedEvent = serde_json::from_str(&message.data)
                    .with_context(|| format!("GET {url}: decoding {}", message.data))?;
                let ours = event.stream.starts_with(&prefix);
                if ours && !seen.insert(event.id) {
                    stats.duplicates += 1;
                    continue;
                }
                ensure!(
                    position > last_position,
                    "GET {url}: position {position} after {last_position}"
                );
                last_position = position;
                if ours {
                    let sent_us = event.data["sent_us"]
                        .as_u64()
                        .with_context(|| format!("GET {url}: no sent_us in {}", message.data))?;
                    stats.received += 1;
                    let sent = Duration::from_micros(sent_us);
                    stats.latencies.push(now.saturating_sub(sent));
                    progress.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

/// Polls `done` until it holds (`true`) or `timeout` passes (`false`). Fails
/// as soon as a feed ends: feeds run until they are told to stop.
pub async fn wait_for(
    feeds: &mut JoinSet<Result<FeedStats>>,
    timeout: Duration,
    done: impl Fn() -> bool,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return Ok(true);
        }
        if let Some(result) = feeds.try_join_next() {
            result.context("feed task panicked")??;
            bail!("a feed ended before it was told to stop");
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
