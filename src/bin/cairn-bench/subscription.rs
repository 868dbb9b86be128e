//! # `subscription`: managed subscriptions against a plain category read
//!
//! ```text
//! cargo run --release --bin cairn-bench -- --scenario subscription
//! cargo run --release --bin cairn-bench -- --scenario subscription --events 20000 --clients 8 --page-size 100
//! ```
//!
//! The speed goal of managed subscriptions: with 8 consumers claiming
//! batches of 100, a subscription delivers and acknowledges at least 50% of
//! the events/s that a plain category read pages through, in the same run.
//!
//! 1. **append**: writes `--events` events (default 100,000) to the category
//!    `subbench<run>`, event `i` to stream `subbench<run>-<i mod --streams>`
//!    (default 1000 streams, so the streams interleave in the log), with
//!    `POST /events` of 1000 events each from 4 concurrent writers. Not the
//!    measurement: it only fills the category.
//! 2. **read**: one reader pages through the category sequentially,
//!    `GET /categories/subbench<run>?position=P&limit=<--page-size>` (default
//!    100), following `next_position` until `end`; checks that exactly
//!    `--events` events come back in increasing global order. Prints events/s.
//! 3. **subscriptions**: creates `subbench<run>-stream` (`"ordering":
//!    "stream"`) and then `subbench<run>-none` (`"ordering": "none"`), both on
//!    the category from the beginning with the default lease of 30 s. For
//!    each in turn, `--clients` consumers (default 8; tokio tasks named
//!    `w1`, `w2`, …) loop: `POST /subscriptions/{name}/claim`
//!    `{"consumer", "max": <--page-size>, "wait_ms": 1000}`, then one
//!    `POST /subscriptions/{name}/ack` of every lease the claim gave. The
//!    clock starts before the first claim and stops at the acknowledgement
//!    that brings the count of acknowledged events to `--events` (consumers
//!    then waiting in an empty claim do not count). Prints events/s, the
//!    claims (and how many came back empty: at the end, the consumers still
//!    waiting when the last event was acknowledged), the latency p50/p99 in
//!    ms of the claims that got deliveries and of the acks, redeliveries
//!    (`attempt` > 1) and stale leases. The
//!    subscription is deleted afterwards.
//! 4. **checks**: every event of the category is acknowledged exactly once;
//!    no lease is stale; with `"ordering": "stream"`, the events of each
//!    stream are claimed one at a time in stream order (an event's claim
//!    answers after the claim of the one before it). A consumer that sees no
//!    acknowledgement anywhere for `--timeout` seconds fails the run.
//!
//! Then it prints one `key=value` line per figure, for scripts
//! (`bench/subscriptions.sh`):
//!
//! ```text
//! read_events_per_s=…
//! subscription_stream_events_per_s=…
//! subscription_none_events_per_s=…
//! stream_to_read=…
//! none_to_read=…
//! ```
//!
//! The goal holds when both ratios are at least 0.5. With `--json`, stdout
//! gets one JSON summary line instead (the other lines go to stderr).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::args::Args;
use crate::http::{exchange, post, read_category};
use crate::stats::{p50_p99_max_ms, rate};

/// Events per `POST /events` while filling the category.
const APPEND_BATCH: u64 = 1000;

/// Concurrent writers while filling the category.
const APPEND_WRITERS: u64 = 4;

/// How long a claim waits for events, in milliseconds.
const WAIT_MS: u64 = 1000;

/// The answer to a claim; only the fields the bench needs.
#[derive(Debug, Deserialize)]
struct Claimed {
    /// The deliveries, oldest first.
    deliveries: Vec<Delivery>,
}

/// One delivery of a claim.
#[derive(Debug, Deserialize)]
struct Delivery {
    /// The lease to acknowledge.
    lease: String,
    /// Which delivery of the event this is, from 1.
    attempt: i64,
    /// The event.
    event: Delivered,
}

/// The part of a delivered event the bench uses.
#[derive(Debug, Deserialize)]
struct Delivered {
    /// Its stream.
    stream: String,
    /// Its position in the stream.
    position: i64,
    /// Its global position.
    global_position: i64,
}

/// The answer to an ack.
#[derive(Debug, Deserialize)]
struct Settled {
    /// Leases settled.
    done: u64,
    /// Leases no longer held.
    stale: Vec<String>,
}

/// An acknowledged delivery, for the checks.
#[derive(Debug)]
struct Acked {
    /// The order in which its claim answered, over all consumers.
    claim: u64,
    /// Its stream.
    stream: String,
    /// Its position in the stream.
    position: i64,
    /// Its global position.
    global_position: i64,
}

/// What one consumer did.
#[derive(Debug, Default)]
struct Consumer {
    /// Claims sent.
    claims: u64,
    /// Claims that came back without deliveries.
    empty_claims: u64,
    /// Deliveries with `attempt` > 1.
    redeliveries: u64,
    /// Leases the ack called stale.
    stale: Vec<String>,
    /// The deliveries acknowledged.
    acked: Vec<Acked>,
    /// Latency of every claim that got deliveries (an empty one waited
    /// `wait_ms`).
    claim_latencies: Vec<Duration>,
    /// Latency of every ack.
    ack_latencies: Vec<Duration>,
}

/// What the consumers of one subscription did together.
#[derive(Debug)]
struct Drain {
    /// `stream` or `none`.
    ordering: &'static str,
    /// From before the first claim to the ack of the last event.
    elapsed: Duration,
    /// The consumers' records, merged.
    all: Consumer,
}

impl Drain {
    /// Events acknowledged per second.
    fn rate(&self, events: u64) -> f64 {
        rate(events, self.elapsed)
    }

    /// The human-readable line.
    fn line(&self, events: u64, consumers: u64, batch: u64) -> String {
        let (c50, c99, _) = p50_p99_max_ms(&self.all.claim_latencies);
        let (a50, a99, _) = p50_p99_max_ms(&self.all.ack_latencies);
        format!(
            "subscription {:<6} {events} events acknowledged by {consumers} consumers claiming {batch} in {:.3} s: {:.0} events/s; \
             {} claims ({} empty), non-empty claim ms p50 {c50:.2} p99 {c99:.2}, ack ms p50 {a50:.2} p99 {a99:.2}; \
             {} redeliveries, {} stale leases",
            self.ordering,
            self.elapsed.as_secs_f64(),
            self.rate(events),
            self.all.claims,
            self.all.empty_claims,
            self.all.redeliveries,
            self.all.stale.len(),
        )
    }

    /// The JSON summary.
    fn summary(&self, events: u64) -> Value {
        let (c50, c99, cmax) = p50_p99_max_ms(&self.all.claim_latencies);
        let (a50, a99, amax) = p50_p99_max_ms(&self.all.ack_latencies);
        json!({
            "ordering": self.ordering,
            "seconds": self.elapsed.as_secs_f64(),
            "events_per_sec": self.rate(events),
            "claims": self.all.claims,
            "empty_claims": self.all.empty_claims,
            "claim_ms": {"p50": c50, "p99": c99, "max": cmax},
            "ack_ms": {"p50": a50, "p99": a99, "max": amax},
            "redeliveries": self.all.redeliveries,
            "stale": self.all.stale.len(),
        })
    }

    /// Every event acknowledged exactly once, no stale lease, and (ordering
    /// `stream`) each stream's events claimed one at a time in order.
    fn check(&self, category: &str, events: u64) -> Result<()> {
        let name = self.ordering;
        ensure!(
            self.all.stale.is_empty(),
            "subscription {name}: {} stale leases, e.g. {:?}",
            self.all.stale.len(),
            &self.all.stale[..self.all.stale.len().min(3)]
        );
        let prefix = format!("{category}-");
        let mut seen = HashSet::with_capacity(self.all.acked.len());
        for acked in &self.all.acked {
            ensure!(
                acked.stream.starts_with(&prefix),
                "subscription {name}: delivered an event of stream {}, outside category {category}",
                acked.stream
            );
            ensure!(
                seen.insert(acked.global_position),
                "subscription {name}: event {} acknowledged twice",
                acked.global_position
            );
        }
        ensure!(
            seen.len() as u64 == events,
            "subscription {name}: {} events acknowledged, expected {events}",
            seen.len()
        );
        if name == "stream" {
            let mut streams: HashMap<&str, Vec<(i64, u64)>> = HashMap::new();
            for acked in &self.all.acked {
                streams
                    .entry(&acked.stream)
                    .or_default()
                    .push((acked.position, acked.claim));
            }
            for (stream, mut claims) in streams {
                claims.sort_unstable();
                for pair in claims.windows(2) {
                    ensure!(
                        pair[0].1 < pair[1].1,
                        "subscription stream: {stream}@{} was claimed by claim #{}, not before {stream}@{} (claim #{})",
                        pair[0].0,
                        pair[0].1,
                        pair[1].0,
                        pair[1].1
                    );
                }
            }
        }
        Ok(())
    }
}

/// Fills the category: `events` events in batches of [`APPEND_BATCH`] from
/// [`APPEND_WRITERS`] writers, event `i` to stream `{category}-{i % streams}`.
async fn fill(
    client: &reqwest::Client,
    base: &str,
    category: &str,
    events: u64,
    streams: u64,
) -> Result<Duration> {
    let batches = events.div_ceil(APPEND_BATCH);
    let next = Arc::new(AtomicU64::new(0));
    let url = Arc::new(format!("{base}/events"));
    let category = Arc::new(category.to_owned());
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..APPEND_WRITERS.min(batches) {
        let (client, next, url, category) =
            (client.clone(), next.clone(), url.clone(), category.clone());
        tasks.spawn(async move {
            loop {
                let batch = next.fetch_add(1, Ordering::Relaxed);
                if batch >= batches {
                    return Ok::<_, anyhow::Error>(());
                }
                let first = batch * APPEND_BATCH;
                let body: Vec<Value> = (first..events.min(first + APPEND_BATCH))
                    .map(|i| {
                        json!({
                            "stream": format!("{category}-{}", i % streams),
                            "type": "Benched",
                            "data": {"n": i},
                        })
                    })
                    .collect();
                post(&client, &url, &json!({ "events": body }))
                    .await
                    .with_context(|| format!("appending batch {batch}"))?;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.context("append task panicked")??;
    }
    Ok(started.elapsed())
}

/// Shared by the consumers of one subscription.
#[derive(Debug)]
struct Shared {
    /// `{base}/subscriptions/{name}/claim`.
    claim_url: String,
    /// `{base}/subscriptions/{name}/ack`.
    ack_url: String,
    /// Events to acknowledge in all.
    events: u64,
    /// `max` of every claim.
    batch: u64,
    /// Events acknowledged so far.
    acked: AtomicU64,
    /// Claims answered so far, which numbers the next.
    claims: AtomicU64,
    /// When the last event was acknowledged.
    finished: OnceLock<Instant>,
    /// How long a consumer waits without any acknowledgement anywhere.
    stall: Duration,
}

/// One consumer: claims and acknowledges until every event is acknowledged.
async fn consume(client: reqwest::Client, shared: Arc<Shared>, name: String) -> Result<Consumer> {
    let mut me = Consumer::default();
    let claim = json!({"consumer": name, "max": shared.batch, "wait_ms": WAIT_MS});
    let mut progress = (0, Instant::now());
    loop {
        let acked = shared.acked.load(Ordering::Relaxed);
        if acked >= shared.events {
            return Ok(me);
        }
        if acked != progress.0 {
            progress = (acked, Instant::now());
        } else if progress.1.elapsed() > shared.stall {
            bail!(
                "consumer {name}: no acknowledgement for {} s, {acked} of {} events acknowledged",
                shared.stall.as_secs(),
                shared.events
            );
        }
        let sent = Instant::now();
        let body = exchange(client.post(&shared.claim_url).json(&claim), StatusCode::OK)
            .await
            .with_context(|| format!("consumer {name}: claim"))?;
        let latency = sent.elapsed();
        me.claims += 1;
        let claimed: Claimed = serde_json::from_slice(&body)
            .with_context(|| format!("consumer {name}: decoding a claim"))?;
        let seq = shared.claims.fetch_add(1, Ordering::Relaxed);
        if claimed.deliveries.is_empty() {
            me.empty_claims += 1;
            continue;
        }
        me.claim_latencies.push(latency);
        let leases: Vec<&str> = claimed
            .deliveries
            .iter()
            .map(|d| d.lease.as_str())
            .collect();
        let sent = Instant::now();
        let body = exchange(
            client
                .post(&shared.ack_url)
                .json(&json!({ "leases": leases })),
            StatusCode::OK,
        )
        .await
        .with_context(|| format!("consumer {name}: ack"))?;
        me.ack_latencies.push(sent.elapsed());
        let settled: Settled = serde_json::from_slice(&body)
            .with_context(|| format!("consumer {name}: decoding an ack"))?;
        ensure!(
            settled.done + settled.stale.len() as u64 == leases.len() as u64,
            "consumer {name}: acknowledged {} leases, answered done {} and {} stale",
            leases.len(),
            settled.done,
            settled.stale.len()
        );
        let stale: HashSet<&str> = settled.stale.iter().map(String::as_str).collect();
        for delivery in claimed.deliveries {
            if delivery.attempt > 1 {
                me.redeliveries += 1;
            }
            if !stale.contains(delivery.lease.as_str()) {
                me.acked.push(Acked {
                    claim: seq,
                    stream: delivery.event.stream,
                    position: delivery.event.position,
                    global_position: delivery.event.global_position,
                });
            }
        }
        me.stale.extend(settled.stale);
        let before = shared.acked.fetch_add(settled.done, Ordering::Relaxed);
        if before < shared.events && before + settled.done >= shared.events {
            let _ = shared.finished.set(Instant::now());
        }
    }
}

/// Creates the subscription `{category}-{ordering}` on the category, lets
/// `consumers` consumers claim and acknowledge every event, then deletes it.
async fn drain(
    args: &Args,
    client: &reqwest::Client,
    base: &str,
    category: &str,
    ordering: &'static str,
    consumers: u64,
) -> Result<Drain> {
    let name = format!("{category}-{ordering}");
    let url = format!("{base}/subscriptions/{name}");
    let definition = json!({"source": {"category": category}, "ordering": ordering});
    exchange(client.put(&url).json(&definition), StatusCode::CREATED)
        .await
        .with_context(|| format!("creating subscription {name}"))?;
    let shared = Arc::new(Shared {
        claim_url: format!("{url}/claim"),
        ack_url: format!("{url}/ack"),
        events: args.events(),
        batch: args.page_size(),
        acked: AtomicU64::new(0),
        claims: AtomicU64::new(0),
        finished: OnceLock::new(),
        stall: args.timeout(),
    });
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 1..=consumers {
        tasks.spawn(consume(client.clone(), shared.clone(), format!("w{i}")));
    }
    let mut all = Consumer::default();
    while let Some(result) = tasks.join_next().await {
        let one = result.context("consumer task panicked")??;
        all.claims += one.claims;
        all.empty_claims += one.empty_claims;
        all.redeliveries += one.redeliveries;
        all.stale.extend(one.stale);
        all.acked.extend(one.acked);
        all.claim_latencies.extend(one.claim_latencies);
        all.ack_latencies.extend(one.ack_latencies);
    }
    all.claim_latencies.sort_unstable();
    all.ack_latencies.sort_unstable();
    let finished = *shared
        .finished
        .get()
        .context("the consumers stopped before every event was acknowledged")?;
    exchange(client.delete(&url), StatusCode::NO_CONTENT)
        .await
        .with_context(|| format!("deleting subscription {name}"))?;
    Ok(Drain {
        ordering,
        elapsed: finished - started,
        all,
    })
}

/// The `subscription` scenario: fill a category, read it, then drain it
/// through a subscription with stream ordering and one without.
pub async fn run(args: &Args, base: &str, run: &str) -> Result<()> {
    let category = format!("subbench{run}");
    let (events, consumers, batch) = (args.events(), args.clients(), args.page_size());
    let client = args.client(consumers + APPEND_WRITERS)?;
    args.say(&format!(
        "cairn-bench subscription: {events} events over {} streams, {consumers} consumers claiming {batch}, category {category} at {base}",
        args.streams
    ));

    let took = fill(&client, base, &category, events, args.streams).await?;
    args.say(&format!(
        "append: {events} events in batches of {APPEND_BATCH} from {APPEND_WRITERS} writers in {:.3} s: {:.0} events/s",
        took.as_secs_f64(),
        rate(events, took),
    ));

    let read = read_category(&client, base, &category, batch).await?;
    read.check_count(&category, events)?;
    let read_rate = rate(read.events, read.elapsed);
    args.say(&format!(
        "read:   {} events in {} pages of {batch} in {:.3} s by one sequential reader: {read_rate:.0} events/s",
        read.events,
        read.pages,
        read.elapsed.as_secs_f64(),
    ));

    let mut drains = Vec::new();
    for ordering in ["stream", "none"] {
        let drain = drain(args, &client, base, &category, ordering, consumers).await?;
        args.say(&drain.line(events, consumers, batch));
        drains.push(drain);
    }

    args.say(&format!("read_events_per_s={read_rate:.0}"));
    for drain in &drains {
        args.say(&format!(
            "subscription_{}_events_per_s={:.0}",
            drain.ordering,
            drain.rate(events)
        ));
    }
    for drain in &drains {
        args.say(&format!(
            "{}_to_read={:.3}",
            drain.ordering,
            drain.rate(events) / read_rate
        ));
    }

    if args.json {
        let summary = json!({
            "scenario": "subscription",
            "url": base,
            "category": category,
            "events": events,
            "streams": args.streams,
            "consumers": consumers,
            "batch": batch,
            "read": {
                "seconds": read.elapsed.as_secs_f64(),
                "events_per_sec": read_rate,
                "pages": read.pages,
            },
            "subscriptions": drains.iter().map(|d| d.summary(events)).collect::<Vec<_>>(),
            "ratios": drains
                .iter()
                .map(|d| (d.ordering, d.rate(events) / read_rate))
                .collect::<HashMap<_, _>>(),
        });
        println!("{summary}");
    }
    for drain in &drains {
        drain.check(&category, events)?;
    }
    Ok(())
}
