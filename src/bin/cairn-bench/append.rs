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

use std::future::ready;

use anyhow::Result;
use serde_json::json;

use crate::args::Args;
use crate::http::{read_category, write_round_robin};
use crate::stats::rate;

/// The `append` scenario: the append phase, then the read phase.
pub async fn run(args: &Args, base: &str, run: &str) -> Result<()> {
    let category = format!("bench{run}");
    let (clients, client) = args.writers()?;
    let (events, page_size) = (args.events(), args.page_size());
    args.say(&format!(
        "cairn-bench: {events} events, {clients} clients, category {category} at {base}"
    ));

    // Task `t` writes events `t, t + clients, …` to its own stream `bench<run>-<t>`.
    let event = |n| ready(json!({"type": "Benched", "data": {"n": n}}));
    let append = write_round_robin(&client, base, &category, events, clients, event).await?;
    let append_rate = rate(events, append.elapsed);
    let (p50, p99, max) = append.p50_p99_max_ms();
    args.say(&format!(
        "append: {events} events in {:.3} s: {append_rate:.0} events/s; latency ms p50 {p50:.2} p99 {p99:.2} max {max:.2}",
        append.elapsed.as_secs_f64(),
    ));

    let read = read_category(&client, base, &category, page_size).await?;
    let read_rate = rate(read.events, read.elapsed);
    args.say(&format!(
        "read:   {} events in {} pages in {:.3} s: {read_rate:.0} events/s",
        read.events,
        read.pages,
        read.elapsed.as_secs_f64(),
    ));
    read.check_count(&category, events)?;

    if args.json {
        let summary = json!({
            "url": base,
            "category": category,
            "events": events,
            "clients": clients,
            "append": {
                "seconds": append.elapsed.as_secs_f64(),
                "events_per_sec": append_rate,
                "p50_ms": p50,
                "p99_ms": p99,
                "max_ms": max,
            },
            "read": {
                "seconds": read.elapsed.as_secs_f64(),
                "events_per_sec": read_rate,
                "pages": read.pages,
                "page_size": page_size,
            },
        });
        println!("{summary}");
    }
    Ok(())
}
