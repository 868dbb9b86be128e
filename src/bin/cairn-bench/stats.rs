//! Arithmetic of the results: request timings and their percentiles, rates,
//! and the server's resident memory.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::task::JoinSet;

/// Results of a phase of timed requests.
#[derive(Debug)]
pub struct Timings {
    /// Wall-clock time of the whole phase.
    pub elapsed: Duration,
    /// Latency of every request, sorted ascending.
    pub latencies: Vec<Duration>,
}

impl Timings {
    /// Waits for every task of `tasks`, each giving the latencies of its
    /// requests, and gathers them, sorted, with the time since `started`.
    /// Fails on the first task that fails; dropping the set then aborts the
    /// others. `what` names the tasks in the message of a panic.
    pub async fn gather(
        mut tasks: JoinSet<Result<Vec<Duration>>>,
        started: Instant,
        what: &str,
    ) -> Result<Self> {
        let mut latencies = Vec::new();
        while let Some(result) = tasks.join_next().await {
            latencies.extend(result.with_context(|| format!("{what} task panicked"))??);
        }
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        Ok(Self { elapsed, latencies })
    }

    /// Requests per second over the whole phase.
    pub fn rate(&self) -> f64 {
        rate(self.latencies.len() as u64, self.elapsed)
    }

    /// p50, p99 and max latency, in milliseconds.
    pub fn p50_p99_max_ms(&self) -> (f64, f64, f64) {
        p50_p99_max_ms(&self.latencies)
    }
}

/// Nearest-rank percentile `p` (0..=1) of an ascending slice; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p99 and max of an ascending slice, in milliseconds.
pub fn p50_p99_max_ms(sorted: &[Duration]) -> (f64, f64, f64) {
    let max = sorted.last().copied().unwrap_or_default();
    (
        ms(percentile(sorted, 0.5)),
        ms(percentile(sorted, 0.99)),
        ms(max),
    )
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Events per second; zero for an empty interval.
pub fn rate(events: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        events as f64 / secs
    } else {
        0.0
    }
}

/// The resident memory of process `pid` in MiB (`VmRSS` in
/// `/proc/<pid>/status`); `None` without a pid.
pub fn server_rss_mib(pid: Option<u32>) -> Result<Option<f64>> {
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
