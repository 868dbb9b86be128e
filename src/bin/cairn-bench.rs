//! `cairn-bench`: a small load tool for a running Cairn server.
//!
//! It runs two phases against the HTTP API and prints one line for each:
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
//! Usage (with a server listening on port 8080):
//!
//! ```text
//! cargo run --release --bin cairn-bench -- --url http://127.0.0.1:8080 --events 20000 --clients 8
//! cargo run --release --bin cairn-bench -- --events 5000 --clients 64 --json
//! ```
//!
//! With `--json` the human-readable lines go to stderr and stdout gets a
//! single JSON summary line, e.g. for `jq`. The exit status is non-zero if
//! any request fails or the read-back count is wrong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "cairn-bench",
    about = "Append N events with C concurrent clients, then read them back by category"
)]
struct Args {
    /// Base URL of the Cairn server.
    #[arg(long, env = "CAIRN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,

    /// Number of events to append (one event per request).
    #[arg(long, default_value_t = 20_000)]
    events: u64,

    /// Number of concurrent clients (tokio tasks), each with its own stream.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,

    /// Page size for the read phase (1-1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
    page_size: u64,

    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,

    /// Print a machine-readable JSON summary line on stdout (human lines go to stderr).
    #[arg(long)]
    json: bool,
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

/// Results of the append phase.
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

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let base = args.url.trim_end_matches('/').to_string();
    // A category holds no '-', so the run id is plain hex.
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let category = format!("bench{run}");

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::try_from(args.clients).unwrap_or(usize::MAX))
        .timeout(Duration::from_secs(args.timeout))
        .build()
        .context("building the HTTP client")?;

    let say = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };

    say(format!(
        "cairn-bench: {} events, {} clients, category {category} at {base}",
        args.events, args.clients
    ));

    let append = append_phase(&client, &base, &category, args.events, args.clients).await?;
    let append_rate = rate(args.events, append.elapsed);
    let p50 = percentile(&append.latencies, 0.50);
    let p99 = percentile(&append.latencies, 0.99);
    let max = append.latencies.last().copied().unwrap_or_default();
    say(format!(
        "append: {} events in {:.3} s: {append_rate:.0} events/s; latency ms p50 {:.2} p99 {:.2} max {:.2}",
        args.events,
        append.elapsed.as_secs_f64(),
        ms(p50),
        ms(p99),
        ms(max),
    ));

    let read = read_phase(&client, &base, &category, args.page_size).await?;
    let read_rate = rate(read.events, read.elapsed);
    say(format!(
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
    let base: Arc<str> = Arc::from(base);
    let started = Instant::now();
    // Dropping the set on the first error aborts the other tasks.
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..clients {
        let client = client.clone();
        let url = format!("{base}/streams/{category}-{task}");
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for n in (task..events).step_by(usize::try_from(clients)?) {
                let body = json!({"type": "Benched", "data": {"n": n}});
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = response.status();
                // Read the whole body so the connection goes back to the pool.
                let text = response
                    .text()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                latencies.push(sent.elapsed());
                if status != StatusCode::CREATED {
                    bail!("POST {url} (event {n}) answered {status}, expected 201: {text}");
                }
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

/// Nearest-rank percentile `p` (0..=1) of an ascending slice; zero when empty.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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
