//! The HTTP side the scenarios share: sending a request and checking its
//! status, posting events, and paging through a category.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use reqwest::{RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::stats::Timings;

/// One page of `GET /categories/{category}`; only the fields the bench needs.
#[derive(Debug, Deserialize)]
struct CategoryPage {
    /// The events of the page, in global order.
    events: Vec<Positioned>,
    /// The position to ask for next.
    next_position: i64,
    /// `true` when nothing lies beyond `next_position`.
    end: bool,
}

/// The answer to `POST /streams/{stream}`; only the fields the bench needs.
#[derive(Debug, Deserialize)]
pub struct Appended {
    /// Where each appended event sits, in the order sent.
    pub events: Vec<Positioned>,
}

/// The part of a read or appended event the bench uses.
#[derive(Debug, Deserialize)]
pub struct Positioned {
    /// The event's store-wide position.
    pub global_position: i64,
}

/// Results of reading a category back.
#[derive(Debug)]
pub struct ReadStats {
    /// Wall-clock time of the whole read.
    pub elapsed: Duration,
    /// Number of events read.
    pub events: u64,
    /// Number of pages requested.
    pub pages: u64,
    /// Bytes of the pages' bodies.
    pub bytes: u64,
}

impl ReadStats {
    /// Checks that the read of `category` gave `expected` events.
    pub fn check_count(&self, category: &str, expected: u64) -> Result<()> {
        ensure!(
            self.events == expected,
            "read back {} events from category {category}, expected {expected}",
            self.events
        );
        Ok(())
    }
}

/// Sends `request`, reads the whole answer (so the connection goes back to
/// the pool) and checks that its status is `expected`; returns the body.
pub async fn exchange(request: RequestBuilder, expected: StatusCode) -> Result<Vec<u8>> {
    let (client, request) = request.build_split();
    let request = request.context("building a request")?;
    let what = format!("{} {}", request.method(), request.url());
    let response = client
        .execute(request)
        .await
        .with_context(|| what.clone())?;
    let status = response.status();
    let body = response.bytes().await.with_context(|| what.clone())?;
    ensure!(
        status == expected,
        "{what} answered {status}, expected {}: {:.500}",
        expected.as_u16(),
        String::from_utf8_lossy(&body)
    );
    Ok(body.into())
}

/// `POST`s `body` (one event or an array) to `url`; the answer must be `201`.
/// Returns the answer's body.
pub async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Result<Vec<u8>> {
    exchange(client.post(url).json(body), StatusCode::CREATED).await
}

/// `POST`s `body` to `url` like [`post`] and decodes where the events went.
pub async fn append(client: &reqwest::Client, url: &str, body: &Value) -> Result<Appended> {
    let answer = post(client, url, body).await?;
    serde_json::from_slice(&answer).with_context(|| format!("POST {url}: decoding the answer"))
}

/// Sends `events` single-event `POST`s from `clients` concurrent tasks, task
/// `t` sending events `t, t + clients, …` to stream `{category}-{t}`. The body
/// of event `i` is what `event(i)` resolves to (it may first wait until the
/// event is due); each latency counts from then to the answer.
pub async fn write_round_robin<F, Fut>(
    client: &reqwest::Client,
    base: &str,
    category: &str,
    events: u64,
    clients: u64,
    event: F,
) -> Result<Timings>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Value> + Send,
{
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for task in 0..clients {
        let (client, event) = (client.clone(), event.clone());
        let url = format!("{base}/streams/{category}-{task}");
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for i in (task..events).step_by(usize::try_from(clients)?) {
                let body = event(i).await;
                let sent = Instant::now();
                post(&client, &url, &body)
                    .await
                    .with_context(|| format!("event {i}"))?;
                latencies.push(sent.elapsed());
            }
            Ok(latencies)
        });
    }
    Timings::gather(tasks, started, "writer").await
}

/// Reads the whole category page by page, following `next_position` until
/// `end`, and checks that global positions strictly increase.
pub async fn read_category(
    client: &reqwest::Client,
    base: &str,
    category: &str,
    page_size: u64,
) -> Result<ReadStats> {
    let started = Instant::now();
    let mut position: i64 = 1;
    let mut last_global = 0;
    let (mut events, mut pages, mut bytes) = (0, 0, 0);
    loop {
        let url = format!("{base}/categories/{category}?position={position}&limit={page_size}");
        let body = exchange(client.get(&url), StatusCode::OK).await?;
        let page: CategoryPage = serde_json::from_slice(&body)
            .with_context(|| format!("GET {url}: decoding the page"))?;
        pages += 1;
        bytes += body.len() as u64;
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
        bytes,
    })
}
