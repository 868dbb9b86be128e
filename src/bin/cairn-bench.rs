//! `cairn-bench`: a small load tool for a running Cairn server.
//!
//! `--scenario` picks what it measures. Every run works under a fresh random
//! `<run>` id, so runs never collide and one database can be used again (the
//! events stay in the store afterwards). With `--json` the human-readable
//! lines go to stderr and stdout gets a single JSON summary line, e.g. for
//! `jq`. The exit status is non-zero if any request fails or a check does not
//! hold. The examples assume a server listening on port 8080 (`--url`).
//!
//! # `append` (the default): write throughput, then a category read
//!
//! ```text
//! cargo run --release --bin cairn-bench -- --url http://127.0.0.1:8080 --events 20000 --clients 8
//! cargo run --release --bin cairn-bench -- --events 5000 --clients 64 --json
//! ```
//!
//! 1. **append**: `--events` single-event requests
//!    (`POST /streams/{stream}` with `{"type":"Benched","data":{"n":i}}`) sent
//!    by `--clients` concurrent tasks sharing one pooled HTTP client. Task `t`
//!    writes to its own stream `bench<run>-<t>`, so the category `bench<run>`
//!    (unique to the run) holds every event. Each answer must be `201`.
//!    Prints events/s and the request latency p50/p99/max in milliseconds.
//! 2. **read**: pages through `GET /categories/bench<run>?position=P&limit=1000`
//!    following `next_position` until `end`, checks that global positions
//!    strictly increase and that exactly `--events` events came back.
//!    Prints events/s.
//!
//! # `trace`: `GET /trace/{id}` on a deep chain and a wide fan-out
//!
//! ```text
//! cargo run --release --bin cairn-bench -- --scenario trace --repeat 5
//! ```
//!
//! Writes, with client-made UUIDv7 ids:
//!
//! - a **chain** of 1000 events in one `POST /streams/tracebench<run>-chain`,
//!   each event's `causation_id` the id of the one before it;
//! - a **fan-out** in `tracebench<run>-fan`: one root event, then 10,000
//!   events caused by it, in 10 POSTs of 1000.
//!
//! Then it asks `--repeat` times for the trace of the chain's last event (999
//! causes), of its first event (999 levels of effects) and of the fan-out root
//! (10,000 effects). Each answer must be `200`, end with `"truncated":false}`
//! and hold the expected number of events, counted as occurrences of
//! `{"id":"`: the body is not parsed, because the chain's effects tree nests
//! about 2000 JSON levels deep, beyond `serde_json`'s recursion limit. The
//! server's trace caps must be at least their defaults (1000 levels, 10,000
//! effects). Prints one line per trace: events, bytes, min/median/max ms.
//!
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
//! 3. Every feed parses each event it gets, ignores other categories, and
//!    records now − `sent_us` as the append-to-delivery latency. The latency
//!    therefore includes the append's own latency (printed on its own line).
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

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

/// Events in the `trace` scenario's causation chain (at most one batch).
const CHAIN: usize = 1000;
/// Events the `trace` scenario's fan-out root causes.
const FAN: usize = 10_000;
/// Events per `POST` of the fan-out.
const BATCH: usize = 1000;
/// Feeds the `subscribe` scenario opens at the same time.
const OPENING_AT_ONCE: usize = 64;

/// What to measure.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// Append events with concurrent clients, then read the category back.
    Append,
    /// Time `GET /trace/{id}` on a deep causation chain and a wide fan-out.
    Trace,
    /// Deliver appends to many live SSE feeds; measure latency and memory.
    Subscribe,
}

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "cairn-bench",
    about = "Load a Cairn server: appends and reads, traces, or live feeds"
)]
struct Args {
    /// Base URL of the Cairn server.
    #[arg(long, env = "CAIRN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,

    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Append)]
    scenario: Scenario,

    /// append: number of events to append (one event per request).
    #[arg(long, default_value_t = 20_000)]
    events: u64,

    /// append, subscribe: number of concurrent writers (tokio tasks), each with its own stream.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,

    /// append: page size for the read phase (1-1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
    page_size: u64,

    /// trace: how many times each trace is requested.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    repeat: u64,

    /// subscribe: number of live feeds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    subscribers: u64,

    /// subscribe: events appended per second, in total.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,

    /// subscribe: seconds of writing.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,

    /// subscribe: the server's process id, to report its resident memory.
    #[arg(long)]
    server_pid: Option<u32>,

    /// Timeout in seconds of each request, and (subscribe) of the waits for
    /// the feeds to catch up and for the last deliveries.
    #[arg(long, default_value_t = 30)]
    timeout: u64,

    /// Print a machine-readable JSON summary line on stdout (human lines go to stderr).
    #[arg(long)]
    json: bool,
}

impl Args {
    /// Prints a human-readable line: on stdout, or on stderr with `--json`.
    fn say(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    /// The `--timeout`.
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// A pooled HTTP client for `clients` concurrent tasks, with `--timeout` on every request.
    fn client(&self, clients: u64) -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .pool_max_idle_per_host(usize::try_from(clients).unwrap_or(usize::MAX))
            .timeout(self.timeout())
            .build()
            .context("building the HTTP client")
    }
}

/// One page of `GET /categories/{category}`; only the fields the bench needs.
#[derive(Debug, Deserialize)]
struct CategoryPage {
    /// The events of the page, in global order.
    events: Vec<PagedEvent>,
    /// The position to ask for next.
    next_position: i64,
    /// `true` when nothing lies beyond `next_position`.
    end: bool,
}

/// The part of a read event the bench checks.
#[derive(Debug, Deserialize)]
struct PagedEvent {
    /// The event's store-wide position.
    global_position: i64,
}

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

/// Results of a phase of timed appends.
#[derive(Debug)]
struct AppendStats {
    /// Wall-clock time of the whole phase.
    elapsed: Duration,
    /// Latency of every request, sorted ascending.
    latencies: Vec<Duration>,
}

/// Results of the read phase.
#[derive(Debug)]
struct ReadStats {
    /// Wall-clock time of the whole phase.
    elapsed: Duration,
    /// Number of events read.
    events: u64,
    /// Number of pages requested.
    pages: u64,
}

/// Counters that the `subscribe` feeds share with the task driving them.
#[derive(Debug, Default)]
struct Progress {
    /// Feeds that have received their `caught-up` message.
    caught_up: AtomicU64,
    /// The bench's events delivered, each counted once per feed.
    delivered: AtomicU64,
}

/// What one `subscribe` feed saw of the bench's events.
#[derive(Debug, Default)]
struct FeedStats {
    /// Append-to-delivery latency of each distinct event.
    latencies: Vec<Duration>,
    /// Distinct events received.
    received: u64,
    /// Extra copies of events already received.
    duplicates: u64,
}

/// One server-sent event message.
#[derive(Debug)]
struct SseMessage {
    /// Its `event:` field; empty for a plain message.
    event: String,
    /// Its `id:` field, if it had one.
    id: Option<String>,
    /// Its `data:` lines, joined with `\n`.
    data: String,
}

/// Splits a `text/event-stream` body, fed chunk by chunk, into messages.
/// Lines end with `\n` or `\r\n`; `retry:` and unknown fields are ignored.
#[derive(Debug, Default)]
struct SseParser {
    /// Bytes of a line not yet complete.
    pending: Vec<u8>,
    /// The current message's `event:`.
    event: String,
    /// The current message's `id:`.
    id: Option<String>,
    /// The current message's data, `None` until a `data:` line.
    data: Option<String>,
}

impl SseParser {
    /// Adds a chunk of the body and appends the messages it completes to `out`.
    fn push(&mut self, chunk: &[u8], out: &mut Vec<SseMessage>) -> Result<()> {
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(chunk);
        let mut rest = &pending[..];
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let line = &rest[..end];
            rest = &rest[end + 1..];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = std::str::from_utf8(line).context("a feed line is not UTF-8")?;
            out.extend(self.line(line));
        }
        let consumed = pending.len() - rest.len();
        pending.drain(..consumed);
        self.pending = pending;
        Ok(())
    }

    /// Takes one line; a blank line ends the message, if it has data.
    fn line(&mut self, line: &str) -> Option<SseMessage> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let id = self.id.take();
            return self.data.take().map(|data| SseMessage { event, id, data });
        }
        if line.starts_with(':') {
            return None; // a comment, e.g. a keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "event" => self.event = value.to_string(),
            "id" => self.id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let base = args.url.trim_end_matches('/').to_string();
    // A category holds no '-', so the run id is plain hex.
    let run = Uuid::new_v4().simple().to_string()[..12].to_string();
    match args.scenario {
        Scenario::Append => append_scenario(&args, &base, &run).await,
        Scenario::Trace => trace_scenario(&args, &base, &run).await,
        Scenario::Subscribe => subscribe_scenario(&args, &base, &run).await,
    }
}

/// The `append` scenario: the append phase, then the read phase.
async fn append_scenario(args: &Args, base: &str, run: &str) -> Result<()> {
    let category = format!("bench{run}");
    let client = args.client(args.clients)?;
    args.say(&format!(
        "cairn-bench: {} events, {} clients, category {category} at {base}",
        args.events, args.clients
    ));

    let append = append_phase(&client, base, &category, args.events, args.clients).await?;
    let append_rate = rate(args.events, append.elapsed);
    let p50 = percentile(&append.latencies, 0.50);
    let p99 = percentile(&append.latencies, 0.99);
    let max = append.latencies.last().copied().unwrap_or_default();
    args.say(&format!(
        "append: {} events in {:.3} s: {append_rate:.0} events/s; latency ms p50 {:.2} p99 {:.2} max {:.2}",
        args.events,
        append.elapsed.as_secs_f64(),
        ms(p50),
        ms(p99),
        ms(max),
    ));

    let read = read_phase(&client, base, &category, args.page_size).await?;
    let read_rate = rate(read.events, read.elapsed);
    args.say(&format!(
        "read:   {} events in {} pages in {:.3} s: {read_rate:.0} events/s",
        read.events,
        read.pages,
        read.elapsed.as_secs_f64(),
    ));
    ensure!(
        read.events == args.events,
        "read back {} events from category {category}, expected {}",
        read.events,
        args.events
    );

    if args.json {
        let summary = json!({
            "url": base,
            "category": category,
            "events": args.events,
            "clients": args.clients,
            "append": {
                "seconds": append.elapsed.as_secs_f64(),
                "events_per_sec": append_rate,
                "p50_ms": ms(p50),
                "p99_ms": ms(p99),
                "max_ms": ms(max),
            },
            "read": {
                "seconds": read.elapsed.as_secs_f64(),
                "events_per_sec": read_rate,
                "pages": read.pages,
                "page_size": args.page_size,
            },
        });
        println!("{summary}");
    }
    Ok(())
}

/// Appends `events` single-event requests with `clients` concurrent tasks,
/// task `t` writing events `t, t + clients, …` to stream `{category}-{t}`.
async fn append_phase(
    client: &reqwest::Client,
    base: &str,
    category: &str,
    events: u64,
    clients: u64,
) -> Result<AppendStats> {
    let started = Instant::now();
    // Dropping the set on the first error aborts the other tasks.
    let mut tasks = JoinSet::new();
    for task in 0..clients {
        let client = client.clone();
        let url = format!("{base}/streams/{category}-{task}");
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for n in (task..events).step_by(usize::try_from(clients)?) {
                let body = json!({"type": "Benched", "data": {"n": n}});
                let sent = Instant::now();
                post(&client, &url, &body)
                    .await
                    .with_context(|| format!("event {n}"))?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(usize::try_from(events).unwrap_or(0));
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result.context("append task panicked")??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(AppendStats { elapsed, latencies })
}

/// Reads the whole category page by page, following `next_position` until `end`.
async fn read_phase(
    client: &reqwest::Client,
    base: &str,
    category: &str,
    page_size: u64,
) -> Result<ReadStats> {
    let started = Instant::now();
    let mut position: i64 = 1;
    let mut last_global = 0;
    let mut events = 0;
    let mut pages = 0;
    loop {
        let url = format!("{base}/categories/{category}?position={position}&limit={page_size}");
        let response = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if status != StatusCode::OK {
            let text = response.text().await.unwrap_or_default();
            bail!("GET {url} answered {status}, expected 200: {text}");
        }
        let page: CategoryPage = response
            .json()
            .await
            .with_context(|| format!("GET {url}: decoding the page"))?;
        pages += 1;
        for event in &page.events {
            ensure!(
                event.global_position > last_global,
                "GET {url}: global position {} after {last_global}",
                event.global_position
            );
            last_global = event.global_position;
        }
        events += page.events.len() as u64;
        if page.end {
            break;
        }
        // An unfiltered read returns full pages until its last, so a page
        // that neither ends nor moves forward would loop forever.
        ensure!(
            page.next_position > position,
            "GET {url}: next_position {} does not move past {position} and end is false",
            page.next_position
        );
        position = page.next_position;
    }
    Ok(ReadStats {
        elapsed: started.elapsed(),
        events,
        pages,
    })
}

/// The `trace` scenario: writes a causation chain and a fan-out, then times
/// `GET /trace/{id}` on three of their events.
async fn trace_scenario(args: &Args, base: &str, run: &str) -> Result<()> {
    let client = args.client(1)?;
    args.say(&format!(
        "cairn-bench trace: category tracebench{run} at {base}, {} requests per trace",
        args.repeat
    ));

    let started = Instant::now();
    // The chain: each event caused by the one before it.
    let chain: Vec<Uuid> = (0..CHAIN).map(|_| Uuid::now_v7()).collect();
    let events: Vec<Value> = (0..CHAIN)
        .map(|i| traced(chain[i], i, i.checked_sub(1).map(|cause| chain[cause])))
        .collect();
    let chain_url = format!("{base}/streams/tracebench{run}-chain");
    post(&client, &chain_url, &Value::Array(events)).await?;
    // The fan-out: a root, then the events it caused, a batch at a time.
    let fan_url = format!("{base}/streams/tracebench{run}-fan");
    let root = Uuid::now_v7();
    post(&client, &fan_url, &json!([traced(root, 0, None)])).await?;
    for first in (1..=FAN).step_by(BATCH) {
        let events: Vec<Value> = (first..first + BATCH)
            .map(|n| traced(Uuid::now_v7(), n, Some(root)))
            .collect();
        post(&client, &fan_url, &Value::Array(events)).await?;
    }
    args.say(&format!(
        "setup:  {} events written in {:.3} s",
        CHAIN + 1 + FAN,
        started.elapsed().as_secs_f64()
    ));

    // (name, message, events in its trace: the message, its causes and effects)
    let targets = [
        ("chain-last", chain[CHAIN - 1], CHAIN),
        ("chain-first", chain[0], CHAIN),
        ("fan-root", root, FAN + 1),
    ];
    let mut results = Vec::new();
    for (name, id, expected) in targets {
        let url = format!("{base}/trace/{id}");
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..args.repeat {
            let sent = Instant::now();
            let response = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = response.status();
            let body = response
                .text()
                .await
                .with_context(|| format!("GET {url}"))?;
            times.push(sent.elapsed());
            ensure!(
                status == StatusCode::OK,
                "GET {url} answered {status}, expected 200: {body:.500}"
            );
            ensure!(
                body.ends_with(r#""truncated":false}"#),
                "GET {url} ({name}): the trace does not end with \"truncated\":false}}"
            );
            let found = body.matches(r#"{"id":""#).count();
            ensure!(
                found == expected,
                "GET {url} ({name}): {found} events in the trace, expected {expected}"
            );
            bytes = body.len();
        }
        times.sort_unstable();
        let (min, median, max) = (times[0], percentile(&times, 0.5), times[times.len() - 1]);
        args.say(&format!(
            "trace {name:<11} {expected:>5} events {bytes:>8} bytes: ms min {:.2} median {:.2} max {:.2}",
            ms(min),
            ms(median),
            ms(max),
        ));
        results.push(json!({
            "name": name,
            "events": expected,
            "bytes": bytes,
            "min_ms": ms(min),
            "median_ms": ms(median),
            "max_ms": ms(max),
        }));
    }

    if args.json {
        let summary = json!({
            "scenario": "trace",
            "url": base,
            "category": format!("tracebench{run}"),
            "repeat": args.repeat,
            "traces": results,
        });
        println!("{summary}");
    }
    Ok(())
}

/// An event of the `trace` scenario.
fn traced(id: Uuid, n: usize, cause: Option<Uuid>) -> Value {
    json!({"id": id, "type": "Traced", "data": {"n": n}, "causation_id": cause})
}

/// The `subscribe` scenario: opens the feeds, writes at a steady rate, waits
/// for every delivery, and reports latency and the server's memory.
async fn subscribe_scenario(args: &Args, base: &str, run: &str) -> Result<()> {
    let category = format!("subbench{run}");
    let events = args.rate * args.seconds;
    let feeds_wanted = args.subscribers;
    args.say(&format!(
        "cairn-bench subscribe: {feeds_wanted} feeds, {} events/s for {} s by {} clients, category {category} at {base}",
        args.rate, args.seconds, args.clients
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

    let writers = args.client(args.clients)?;
    let write = write_at_rate(&writers, base, &category, events, args, start).await?;
    let (a50, a99, a_max) = p50_p99_max_ms(&write.latencies);
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
            "clients": args.clients,
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

/// One live feed on `url` (`GET /all?position=end`): counts its `caught-up`
/// message and the latency of every event of a stream starting with `prefix`
/// in `progress`, until `stop` fires; counts repeated events as duplicates.
/// Fails if the feed ends or its positions do not increase.
async fn feed(
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
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    let mut messages = Vec::new();
    let mut seen = HashSet::new();
    let mut stats = FeedStats::default();
    let mut caught_up = false;
    let mut last_position = 0;
    loop {
        let chunk = tokio::select! {
            chunk = body.next() => chunk,
            _ = stop.changed() => return Ok(stats),
        };
        let Some(chunk) = chunk else {
            bail!("GET {url}: the server ended the feed");
        };
        let chunk = chunk.with_context(|| format!("GET {url}: reading the feed"))?;
        let now = start.elapsed();
        parser.push(&chunk, &mut messages)?;
        for message in messages.drain(..) {
            match message.event.as_str() {
                "caught-up" if !caught_up => {
                    caught_up = true;
                    progress.caught_up.fetch_add(1, Ordering::Relaxed);
                }
                "" => {
                    let position: i64 = message
                        .id
                        .as_deref()
                        .and_then(|id| id.parse().ok())
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
                        let sent_us = event.data["sent_us"].as_u64().with_context(|| {
                            format!("GET {url}: no sent_us in {}", message.data)
                        })?;
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
}

/// Polls `done` until it holds (`true`) or `timeout` passes (`false`). Fails
/// as soon as a feed ends: feeds run until they are told to stop.
async fn wait_for(
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
) -> Result<AppendStats> {
    let (clients, per_second) = (args.clients, args.rate as f64);
    let began = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for task in 0..clients {
        let client = client.clone();
        let url = format!("{base}/streams/{category}-{task}");
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for i in (task..events).step_by(usize::try_from(clients)?) {
                let due = began + Duration::from_secs_f64(i as f64 / per_second);
                tokio::time::sleep_until(due).await;
                let sent = start.elapsed();
                let body =
                    json!({"type": "SubBenched", "data": {"sent_us": sent.as_micros() as u64}});
                post(&client, &url, &body)
                    .await
                    .with_context(|| format!("event {i}"))?;
                latencies.push(start.elapsed() - sent);
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result.context("writer task panicked")??);
    }
    latencies.sort_unstable();
    Ok(AppendStats {
        elapsed: began.elapsed(),
        latencies,
    })
}

/// `POST`s `body` (one event or an array) to `url`; the answer must be `201`.
async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Result<()> {
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    // Read the whole body so the connection goes back to the pool.
    let text = response
        .text()
        .await
        .with_context(|| format!("POST {url}"))?;
    ensure!(
        status == StatusCode::CREATED,
        "POST {url} answered {status}, expected 201: {text}"
    );
    Ok(())
}

/// The resident memory of process `pid` in MiB (`VmRSS` in
/// `/proc/<pid>/status`); `None` without a pid.
fn server_rss_mib(pid: Option<u32>) -> Result<Option<f64>> {
    let Some(pid) = pid else {
        return Ok(None);
    };
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(Some(kib / 1024.0))
}

/// Nearest-rank percentile `p` (0..=1) of an ascending slice; zero when empty.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p99 and max of an ascending slice, in milliseconds.
fn p50_p99_max_ms(sorted: &[Duration]) -> (f64, f64, f64) {
    let max = sorted.last().copied().unwrap_or_default();
    (
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.99)),
        ms(max),
    )
}

/// A duration in milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Events per second; zero for an empty interval.
fn rate(events: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        events as f64 / secs
    } else {
        0.0
    }
}
