//! # `growth`: append throughput as the store grows, then a catch-up read
//!
//! ```text
//! cargo run --release --bin cairn-bench -- --scenario growth
//! cargo run --release --bin cairn-bench -- --scenario growth --target-events 20000 --step 10000 \
//!     --probe-seconds 1 --clients 8 --json
//! ```
//!
//! Does an append get slower as the store fills up? The scenario grows the
//! store from what it holds now to `--target-events` events (default
//! 1,000,000) and measures appends at every size step on the way:
//!
//! 1. **probe**: for `--probe-seconds` seconds (default 5), `--clients`
//!    concurrent clients (default 64) each append single events, every request
//!    to a new stream `growth<run>-<random>`. Prints the store size when the
//!    probe began, the appends' events/s and their latency p50/p99 in ms. The
//!    store size is read from the `global_position`s the appends answer with
//!    (the lowest minus one), which counts the store's events as long as
//!    nothing is deleted from it.
//! 2. **load**: grows the store to the next multiple of `--step` (default
//!    100,000; the last step ends at `--target-events`) with `POST`s of
//!    `--batch` events (default 1000, at most the server's
//!    `--max-batch-events`) from `--clients` concurrent writers, each batch to
//!    a new stream `growthbulk<run>-<n>`. Then it probes again, and so on
//!    until the store holds `--target-events`. The probes' own events count
//!    towards the size.
//! 3. **ratio**: prints the first probe's rate, the last probe's rate and
//!    last / first. The goal is at least 0.8: appends to a store of
//!    `--target-events` events stay within 20% of appends to the store it
//!    started from.
//! 4. **read**: reads the whole category `growthbulk<run>` (every bulk-loaded
//!    event, about `--target-events` on an empty store) with
//!    `GET /categories/growthbulk<run>?position=P&limit=1000`, following
//!    `next_position` until `end`, checks that exactly the events loaded come
//!    back in increasing global order, and prints events/s and MB/s (10^6
//!    bytes of JSON bodies a second): how fast a new consumer catches up.
//!
//! With `--json` stdout gets one summary line: `category` (the bulk category,
//! for `bench/growth.sh`'s database-side read), `steps: [{store_events,
//! appends, events_per_sec, p50_ms, p99_ms}, …]`, `bulk`, `first_events_per_sec`,
//! `last_events_per_sec`, `ratio` and `read`.
//!
//! To go to 10M events, take bigger steps so that there are still ten:
//! `--target-events 10000000 --step 1000000`. On an empty store that writes
//! about 10M events (a few GB in Postgres), so mind the disk. A store that
//! already holds `--target-events` events or more is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::args::Args;
use crate::http::read_category;
use crate::probe::{Positions, Probe, probe};
use crate::stats::{Timings, rate};

/// The bulk load: batches into the category `growthbulk<run>`.
#[derive(Debug)]
struct Bulk {
    /// The writers' shared HTTP client.
    client: reqwest::Client,
    /// `{base}/streams/growthbulk<run>-`, to which the batch number is added.
    prefix: String,
    /// Events per request.
    batch: u64,
    /// Concurrent writers.
    clients: u64,
    /// Requests sent so far, which numbers the next batch's stream.
    batches: u64,
    /// Events written so far.
    events: u64,
    /// Time spent writing so far.
    elapsed: Duration,
}

impl Bulk {
    /// Writes `count` events in batches, each to a new stream, from
    /// concurrent writers; returns the highest global position appended.
    async fn grow(&mut self, count: u64) -> Result<i64> {
        let batches = count.div_ceil(self.batch);
        let first = self.batches;
        let full = Arc::new(batch_body(self.batch));
        let next = Arc::new(AtomicU64::new(0));
        let positions = Positions::new();
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..self.clients.min(batches) {
            let (client, prefix, batch) = (self.client.clone(), self.prefix.clone(), self.batch);
            let (full, next, positions) = (full.clone(), next.clone(), positions.clone());
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= batches {
                        return Ok(latencies);
                    }
                    let size = batch.min(count - i * batch);
                    let partial = (size < batch).then(|| batch_body(size));
                    let body = partial.as_ref().unwrap_or(&full);
                    let url = format!("{prefix}{}", first + i);
                    positions
                        .append(&client, &url, body, &mut latencies)
                        .await?;
                }
            });
        }
        let timings = Timings::gather(tasks, started, "bulk writer").await?;
        self.batches += batches;
        self.events += count;
        self.elapsed += timings.elapsed;
        Ok(positions.highest.load(Ordering::Relaxed))
    }
}

/// A batch of `size` events for the bulk load.
fn batch_body(size: u64) -> Value {
    (0..size)
        .map(|n| json!({"type": "Grown", "data": {"n": n}}))
        .collect()
}

/// The `growth` scenario: probe, grow by a step, probe again, … up to
/// `--target-events`; then the ratio of the last probe to the first, and the
/// read of the bulk-loaded category.
pub async fn run(args: &Args, base: &str, run: &str) -> Result<()> {
    let category = format!("growthbulk{run}");
    let (clients, client) = args.writers()?;
    args.say(&format!(
        "cairn-bench growth: to {} events in steps of {}, batches of {}, {clients} clients, probes of {} s, category {category} at {base}",
        args.target_events, args.step, args.batch, args.probe_seconds
    ));
    let target = i64::try_from(args.target_events)?;
    let step = i64::try_from(args.step)?;
    let mut bulk = Bulk {
        client: client.clone(),
        prefix: format!("{base}/streams/{category}-"),
        batch: args.batch,
        clients,
        batches: 0,
        events: 0,
        elapsed: Duration::ZERO,
    };

    let mut probes = vec![probe(args, &client, base, run).await?];
    let mut size = probes[0].highest;
    ensure!(
        probes[0].store_events < target,
        "the store already holds {} events, not fewer than --target-events",
        probes[0].store_events
    );
    while size < target {
        let boundary = ((size / step + 1) * step).min(target);
        let written_before = bulk.elapsed;
        let loaded = u64::try_from(boundary - size)?;
        let highest = bulk.grow(loaded).await?;
        let took = bulk.elapsed - written_before;
        args.say(&format!(
            "load:   {loaded} events in {:.3} s: {:.0} events/s, to {highest} events in the store",
            took.as_secs_f64(),
            rate(loaded, took),
        ));
        probes.push(probe(args, &client, base, run).await?);
        size = probes[probes.len() - 1].highest;
    }
    let (first, last) = (&probes[0], &probes[probes.len() - 1]);
    let (first_rate, last_rate) = (first.timings.rate(), last.timings.rate());
    let ratio = last_rate / first_rate;
    args.say(&format!(
        "ratio:  {last_rate:.0} events/s at {} events / {first_rate:.0} events/s at {} events = {ratio:.2} (goal >= 0.8)",
        last.store_events, first.store_events,
    ));

    let read = read_category(&client, base, &category, args.page_size()).await?;
    let read_rate = rate(read.events, read.elapsed);
    let mb_per_sec = rate(read.bytes, read.elapsed) / 1e6;
    args.say(&format!(
        "read:   {} events in {} pages ({:.1} MB) in {:.3} s: {read_rate:.0} events/s, {mb_per_sec:.1} MB/s",
        read.events,
        read.pages,
        read.bytes as f64 / 1e6,
        read.elapsed.as_secs_f64(),
    ));
    read.check_count(&category, bulk.events)?;

    if args.json {
        let summary = json!({
            "scenario": "growth",
            "url": base,
            "category": category,
            "target_events": args.target_events,
            "step": args.step,
            "batch": args.batch,
            "clients": clients,
            "probe_seconds": args.probe_seconds,
            "steps": probes.iter().map(Probe::summary).collect::<Vec<_>>(),
            "bulk": {
                "events": bulk.events,
                "requests": bulk.batches,
                "seconds": bulk.elapsed.as_secs_f64(),
                "events_per_sec": rate(bulk.events, bulk.elapsed),
            },
            "first_events_per_sec": first_rate,
            "last_events_per_sec": last_rate,
            "ratio": ratio,
            "read": {
                "events": read.events,
                "pages": read.pages,
                "bytes": read.bytes,
                "seconds": read.elapsed.as_secs_f64(),
                "events_per_sec": read_rate,
                "mb_per_sec": mb_per_sec,
            },
        });
        println!("{summary}");
    }
    Ok(())
}
