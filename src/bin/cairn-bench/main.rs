//! `cairn-bench`: a small load tool for a running Cairn server.
//!
//! `--scenario` picks what it measures. Every run works under a fresh random
//! `<run>` id, so runs never collide and one database can be used again (the
//! events stay in the store afterwards). With `--json` the human-readable
//! lines go to stderr and stdout gets a single JSON summary line, e.g. for
//! `jq`. The exit status is non-zero if any request fails or a check does not
//! hold. The examples assume a server listening on port 8080 (`--url`).
//!
//! Each scenario lives in its own module, whose header says what it does:
//!
//! - [`append`] (the default): write throughput, then a category read;
//! - [`trace`]: `GET /trace/{id}` on a deep chain and a wide fan-out;
//! - [`subscribe`]: fan-out of live feeds;
//! - [`growth`]: append throughput as the store grows, then a catch-up read;
//! - [`subscription`]: managed subscriptions' claim and ack, against a plain
//!   category read.
//!
//! Shared pieces: [`args`] (the command line), [`http`] (the HTTP client
//! helpers), [`stats`] (percentiles, rates, the server's memory) and, for
//! `subscribe`, [`feed`] (one live SSE feed) and, for `growth`, [`probe`]
//! (appends timed at one store size).

mod append;
mod args;
mod feed;
mod growth;
mod http;
mod probe;
mod stats;
mod subscribe;
mod subscription;
mod trace;

use anyhow::Result;
use clap::Parser;
use uuid::Uuid;

use args::{Args, Scenario};

/// Parses the command line and runs the chosen scenario.
#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let base = args.url.trim_end_matches('/').to_string();
    // A category holds no '-', so the run id is plain hex.
    let run = Uuid::new_v4().simple().to_string()[..12].to_string();
    match args.scenario {
        Scenario::Append => append::run(&args, &base, &run).await,
        Scenario::Trace => trace::run(&args, &base, &run).await,
        Scenario::Subscribe => subscribe::run(&args, &base, &run).await,
        Scenario::Growth => growth::run(&args, &base, &run).await,
        Scenario::Subscription => subscription::run(&args, &base, &run).await,
    }
}
