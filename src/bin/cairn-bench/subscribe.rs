//! # `subscribe`: fan-out of live feeds
//!
//! ```text
//! cargo run --release --bin cairn-bench -- --scenario subscribe \
//!     --subscribers 1000 --rate 200 --seconds 10 --clients 8 --server-pid "$(pgrep -x cairn)"
//! ```
//!
//! 1. Opens `--subscribers` SSE feeds `GET /all?position=end`
//!    (`Accept: text/event-stream`) on one shared HTTP client and waits until
//!    each has received its `event: caught-up` message. With `--server-pid`,
//!    it reads the server's resident memory (VmRSS in `/proc/<pid>/status`)
//!    before opening the feeds and once they are all idle.
//! 2. `--clients` tasks append single events at a steady total `--rate`
//!    events/s for `--seconds` seconds to streams `subbench<run>-<t>`; each
//!    event's `data` is `{"sent_us": µs}`, microseconds since a start instant
//!    the whole process shares, taken just before the `POST`.
//! 3. Every feed parses each event it gets (see [`crate::feed`]), ignores
//!    other categories, and records now − `sent_us` as the append-to-delivery
//!    latency. The latency therefore includes the append's own latency
//!    (printed on its own line).
//! 4. When writing is done, it waits (up to `--timeout` seconds) until every
//!    feed has received every event, then prints events written, deliveries
//!    expected (feeds × events) and received, the latency p50/p99/max in ms,
//!    and the server's memory before the feeds, with idle feeds and at the
//!    end. A missing or duplicated delivery, or a feed whose positions do not
//!    increase, makes the exit status non-zero.
//!
//! The bench parses every delivery (feeds × rate messages a second) on the same
//! machine as the server, so on a small machine it competes with the server for
//! CPU. More than about a thousand feeds may need a larger `ulimit -n`, for
//! the bench and for the server.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::args::Args;
use crate::feed::{Progress, feed, wait_for};
use crate::http::write_round_robin;
use crate::stats::{Timings, p50_p99_max_ms, rate, server_rss_mib};

/// Feeds opened at the same time.
const OPENING_AT_ONCE: usize = 64;

/// The `subscribe` scenario: opens the feeds, writes at a steady rate, waits
/// for every delivery, and reports latency and the server's memory.
pub async fn run(args: &Args, base: &str, run: &str) -> Result<()> {
    let category = format!("subbench{run}");
    let events = args.rate * args.seconds;
    let feeds_wanted = args.subscribers;
    args.say(&format!(
        "cairn-bench subscribe: {feeds_wanted} feeds, {} events/s for {} s by {} clients, category {category} at {base}",
        args.rate,
        args.seconds,
        args.clients()
    ));
    let rss_before = server_rss_mib(args.server_pid)?;

    // One client for every feed, without a whole-request timeout: that would cut them.
    let feed_client = reqwest::Client::builder()
        .connect_timeout(args.timeout())
        .build()
        .context("building the HTTP client")?;
    let start = Instant::now();
    let progress = Arc::new(Progress::default());
    let (stop, stopped) = watch::channel(());
    let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let mut feeds = JoinSet::new();
    for _ in 0..feeds_wanted {
        feeds.spawn(feed(
            feed_client.clone(),
            format!("{base}/all?position=end"),
            format!("{category}-"),
            start,
            opening.clone(),
            progress.clone(),
            stopped.clone(),
        ));
    }
    let all_caught_up = || progress.caught_up.load(Ordering::Relaxed) == feeds_wanted;
    if !wait_for(&mut feeds, args.timeout(), all_caught_up).await? {
        bail!(
            "only {} of {feeds_wanted} feeds caught up within {} s",
            progress.caught_up.load(Ordering::Relaxed),
            args.timeout
        );
    }
    args.say(&format!(
        "feeds:    {feeds_wanted} caught up in {:.3} s",
        start.elapsed().as_secs_f64()
    ));
    let rss_idle = server_rss_mib(args.server_pid)?;

    let writers = args.client(args.clients())?;
    let write = write_at_rate(&writers, base, &category, events, args, start).await?;
    let (a50, a99, a_max) = write.p50_p99_max_ms();
    args.say(&format!(
        "write:    {events} events in {:.3} s: {:.0} events/s; append latency ms p50 {a50:.2} p99 {a99:.2} max {a_max:.2}",
        write.elapsed.as_secs_f64(),
        rate(events, write.elapsed),
    ));

    let expected = feeds_wanted * events;
    let all_delivered = || progress.delivered.load(Ordering::Relaxed) >= expected;
    if !wait_for(&mut feeds, args.timeout(), all_delivered).await? {
        args.say(&format!(
            "delivery: still incomplete after {} s; giving up",
            args.timeout
        ));
    }
    let rss_end = server_rss_mib(args.server_pid)?;
    stop.send_replace(());
    let mut latencies = Vec::new();
    let (mut distinct, mut duplicates, mut incomplete) = (0, 0, 0);
    while let Some(result) = feeds.join_next().await {
        let stats = result.context("feed task panicked")??;
        distinct += stats.received;
        duplicates += stats.duplicates;
        incomplete += u64::from(stats.received != events);
        latencies.extend(stats.latencies);
    }
    let received = distinct + duplicates;
    let missing = expected.saturating_sub(distinct);
    latencies.sort_unstable();
    let (p50, p99, max) = p50_p99_max_ms(&latencies);
    args.say(&format!(
        "delivery: {expected} expected, {received} received ({missing} missing, {duplicates} duplicates); latency ms p50 {p50:.2} p99 {p99:.2} max {max:.2}",
    ));
    let show = |mib: Option<f64>| mib.map_or("n/a".to_string(), |mib| format!("{mib:.1}"));
    args.say(&format!(
        "rss MiB:  before feeds {}, idle feeds {}, end {}",
        show(rss_before),
        show(rss_idle),
        show(rss_end),
    ));

    if args.json {
        let summary = json!({
            "scenario": "subscribe",
            "url": base,
            "category": category,
            "subscribers": feeds_wanted,
            "rate": args.rate,
            "seconds": args.seconds,
            "clients": args.clients(),
            "events": events,
            "append": {"p50_ms": a50, "p99_ms": a99, "max_ms": a_max},
            "deliveries": {
                "expected": expected,
                "received": received,
                "missing": missing,
                "duplicates": duplicates,
                "p50_ms": p50,
                "p99_ms": p99,
                "max_ms": max,
            },
            "rss_mib": {"before_feeds": rss_before, "idle_feeds": rss_idle, "end": rss_end},
        });
        println!("{summary}");
    }
    ensure!(
        duplicates == 0 && incomplete == 0,
        "{incomplete} of {feeds_wanted} feeds missed events, {duplicates} deliveries were duplicates"
    );
    Ok(())
}

/// Appends `events` single events at a steady total `--rate` with `--clients`
/// tasks: event `i` is due `i / rate` seconds after the phase starts, and task
/// `i % clients` sends it to `{category}-{task}` with `data`
/// `{"sent_us": µs since start}`, taken just before the `POST`.
async fn write_at_rate(
    client: &reqwest::Client,
    base: &str,
    category: &str,
    events: u64,
    args: &Args,
    start: Instant,
) -> Result<Timings> {
    let per_second = args.rate as f64;
    let began = Instant::now();
    let event = move |i: u64| async move {
        let due = began + Duration::from_secs_f64(i as f64 / per_second);
        tokio::time::sleep_until(due.into()).await;
        let sent_us = start.elapsed().as_micros() as u64;
        json!({"type": "SubBenched", "data": {"sent_us": sent_us}})
    };
    write_round_robin(client, base, category, events, args.clients(), event).await
}
