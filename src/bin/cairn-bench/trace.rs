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

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::args::Args;
use crate::http::{exchange, post};
use crate::stats::{ms, percentile};

/// Events in the causation chain (at most one batch).
const CHAIN: usize = 1000;
/// Events the fan-out root causes.
const FAN: usize = 10_000;
/// Events per `POST` of the fan-out.
const BATCH: usize = 1000;

/// The `trace` scenario: writes a causation chain and a fan-out, then times
/// `GET /trace/{id}` on three of their events.
pub async fn run(args: &Args, base: &str, run: &str) -> Result<()> {
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
            let body = exchange(client.get(&url), StatusCode::OK).await?;
            times.push(sent.elapsed());
            let body = String::from_utf8(body)
                .with_context(|| format!("GET {url} ({name}): the trace is not UTF-8"))?;
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
