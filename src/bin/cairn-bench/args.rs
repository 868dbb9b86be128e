//! The command line of `cairn-bench`: which scenario to run, its options, and
//! the helpers every scenario takes from them (output, timeout, HTTP client).

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Append events with concurrent clients, then read the category back.
    Append,
    /// Time `GET /trace/{id}` on a deep causation chain and a wide fan-out.
    Trace,
    /// Deliver appends to many live SSE feeds; measure latency and memory.
    Subscribe,
    /// Grow the store step by step, measuring appends at each size, then
    /// read a large category back.
    Growth,
    /// Managed subscriptions: consumers claiming and acknowledging a
    /// category, against a plain read of it.
    Subscription,
}

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "cairn-bench",
    about = "Load a Cairn server: appends and reads, traces, live feeds, store growth, or managed subscriptions"
)]
pub struct Args {
    /// Base URL of the Cairn server.
    #[arg(long, env = "CAIRN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Append)]
    pub scenario: Scenario,

    /// append: number of events to append (one event per request);
    /// subscription: events in the category. Default 100000 for
    /// subscription, 20000 otherwise.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    events: Option<u64>,

    /// append, subscribe, growth: number of concurrent writers (tokio tasks);
    /// subscription: number of consumers. Default 64 for growth, 8 otherwise.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    clients: Option<u64>,

    /// append, growth: page size for the read phase; subscription: the
    /// read's page size and the `max` of every claim (1-1000). Default 100
    /// for subscription, 1000 otherwise.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    page_size: Option<u64>,

    /// subscription: how many streams the category's events are spread over
    /// (event i goes to stream i mod this).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub streams: u64,

    /// trace: how many times each trace is requested.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub repeat: u64,

    /// subscribe: number of live feeds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub subscribers: u64,

    /// subscribe: events appended per second, in total.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,

    /// subscribe: seconds of writing.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,

    /// subscribe: the server's process id, to report its resident memory.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// growth: the store size, in events, to grow to.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub target_events: u64,

    /// growth: events added between two measurements.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub step: u64,

    /// growth: events per request while growing the store (at most the
    /// server's `--max-batch-events`).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,

    /// growth: seconds of single-event appends measured at each size.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub probe_seconds: u64,

    /// Timeout in seconds of each request, and (subscribe) of the waits for
    /// the feeds to catch up and for the last deliveries.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,

    /// Print a machine-readable JSON summary line on stdout (human lines go to stderr).
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// Prints a human-readable line: on stdout, or on stderr with `--json`.
    pub fn say(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    /// The `--clients`, or the scenario's default: 64 for `growth`, 8 otherwise.
    pub fn clients(&self) -> u64 {
        let default = if self.scenario == Scenario::Growth {
            64
        } else {
            8
        };
        self.clients.unwrap_or(default)
    }

    /// The `--events`, or the scenario's default: 100000 for `subscription`,
    /// 20000 otherwise.
    pub fn events(&self) -> u64 {
        let default = if self.scenario == Scenario::Subscription {
            100_000
        } else {
            20_000
        };
        self.events.unwrap_or(default)
    }

    /// The `--page-size`, or the scenario's default: 100 for `subscription`,
    /// 1000 otherwise.
    pub fn page_size(&self) -> u64 {
        let default = if self.scenario == Scenario::Subscription {
            100
        } else {
            1000
        };
        self.page_size.unwrap_or(default)
    }

    /// The `--timeout`.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// The `--clients` count, and a pooled HTTP client for that many writers.
    pub fn writers(&self) -> Result<(u64, reqwest::Client)> {
        let clients = self.clients();
        Ok((clients, self.client(clients)?))
    }

    /// A pooled HTTP client for `clients` concurrent tasks, with `--timeout` on every request.
    pub fn client(&self, clients: u64) -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .pool_max_idle_per_host(usize::try_from(clients).unwrap_or(usize::MAX))
            .timeout(self.timeout())
            .build()
            .context("building the HTTP client")
    }
}
