//! The measuring step of the `growth` scenario: timed single-event appends
//! at one store size, and the global positions appends answer with, from
//! which the scenario reads the store's size.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::args::Args;
use crate::http::append;
use crate::stats::Timings;

/// The lowest and highest global positions that appends answered with.
#[derive(Debug)]
pub struct Positions {
    /// The lowest so far; `i64::MAX` before any.
    lowest: AtomicI64,
    /// The highest so far; zero before any.
    pub highest: AtomicI64,
}

impl Positions {
    /// No positions yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            lowest: AtomicI64::new(i64::MAX),
            highest: AtomicI64::new(0),
        })
    }

    /// `POST`s `body` to `url`, adds its latency to `latencies` and the
    /// appended events' global positions to `self`.
    pub async fn append(
        &self,
        client: &reqwest::Client,
        url: &str,
        body: &Value,
        latencies: &mut Vec<Duration>,
    ) -> Result<()> {
        let sent = Instant::now();
        let appended = append(client, url, body).await?;
        latencies.push(sent.elapsed());
        for event in appended.events {
            self.lowest
                .fetch_min(event.global_position, Ordering::Relaxed);
            self.highest
                .fetch_max(event.global_position, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// One probe: timed single-event appends at one store size.
#[derive(Debug)]
pub struct Probe {
    /// Events in the store when the probe began.
    pub store_events: i64,
    /// The highest global position after it.
    pub highest: i64,
    /// Its appends.
    pub timings: Timings,
}

impl Probe {
    /// The probe as a `steps` entry of the JSON summary.
    pub fn summary(&self) -> Value {
        let (p50, p99, _) = self.timings.p50_p99_max_ms();
        json!({
            "store_events": self.store_events,
            "appends": self.timings.latencies.len(),
            "events_per_sec": self.timings.rate(),
            "p50_ms": p50,
            "p99_ms": p99,
        })
    }
}

/// Appends single events for `--probe-seconds` from `--clients` concurrent
/// clients, each request to a new stream `growth<run>-<random>`, and prints
/// the step's line.
pub async fn probe(args: &Args, client: &reqwest::Client, base: &str, run: &str) -> Result<Probe> {
    let positions = Positions::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.probe_seconds);
    let mut tasks = JoinSet::new();
    for task in 0..args.clients() {
        let (client, positions) = (client.clone(), positions.clone());
        let prefix = format!("{base}/streams/growth{run}-");
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let body = json!({"type": "GrowthProbed", "data": {"client": task}});
            while Instant::now() < deadline {
                let url = format!("{prefix}{}", Uuid::new_v4().simple());
                positions
                    .append(&client, &url, &body, &mut latencies)
                    .await?;
            }
            Ok(latencies)
        });
    }
    let timings = Timings::gather(tasks, started, "probe").await?;
    let lowest = positions.lowest.load(Ordering::Relaxed);
    ensure!(lowest != i64::MAX, "the probe appended nothing");
    let probe = Probe {
        store_events: lowest - 1,
        highest: positions.highest.load(Ordering::Relaxed),
        timings,
    };
    let (p50, p99, _) = probe.timings.p50_p99_max_ms();
    args.say(&format!(
        "step:   {} events in the store: {} appends, {:.0} events/s; latency ms p50 {p50:.2} p99 {p99:.2}",
        probe.store_events,
        probe.timings.latencies.len(),
        probe.timings.rate(),
    ));
    Ok(probe)
}
