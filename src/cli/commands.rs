//! Each client command: what it asks the server, and what it prints.

use std::io::BufRead;
use std::path::Path;
use std::pin::pin;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::Method;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::CliError;
use super::args::{CheckpointCommand, ClientCommand, SnapshotCommand, Source};
use super::client::{Client, cause, deep_json, parse_json, segment};
use super::output::{Output, clipped, export_progress, progress, upload_progress};

/// How long a dropped feed waits before it resumes.
const RESUME_AFTER: Duration = Duration::from_secs(1);

/// Runs one command.
pub async fn run(command: ClientCommand) -> Result<(), CliError> {
    let client = Client::new(command.server());
    let mut out = Output::new(command.server());
    match command {
        ClientCommand::Append {
            stream,
            event_type,
            data,
            metadata,
            expect,
            ..
        } => {
            let body = match event_type {
                Some(event_type) => serde_json::to_string(&EventBody {
                    event_type: &event_type,
                    data: &parse_option("--data", data.as_deref())?,
                    metadata: metadata
                        .map(|m| parse_option("--metadata", Some(&m)))
                        .transpose()?
                        .as_deref(),
                })
                .expect("an event serialises"),
                None => events_from_stdin()?,
            };
            append(&client, &mut out, &stream, body, expect.as_deref()).await
        }
        ClientCommand::Read {
            source,
            position,
            limit,
            page_size,
            backward,
            types,
            until_version,
            as_of,
            ..
        } => {
            let stream_only = backward || until_version.is_some() || as_of.is_some();
            if stream_only && source.stream.is_none() {
                return Err(CliError::Usage(
                    "--backward, --until-version and --as-of read a stream only".into(),
                ));
            }
            if !types.is_empty() && source.stream.is_some() {
                return Err(CliError::Usage(
                    "--type filters --category and --all reads, not a stream".into(),
                ));
            }
            let mut query = vec![];
            query.extend(types.iter().map(|t| ("type", t.clone())));
            if backward {
                query.push(("direction", "backward".to_owned()));
            }
            query.extend(until_version.map(|v| ("until_version", v.to_string())));
            query.extend(as_of.map(|t| ("as_of", t)));
            let reading = Reading {
                position,
                limit,
                page_size,
            };
            read(&client, &mut out, &source, reading, query).await
        }
        ClientCommand::Tail {
            source,
            position,
            types,
            ..
        } => {
            if !types.is_empty() && source.stream.is_some() {
                return Err(CliError::Usage(
                    "--type filters --category and --all feeds, not a stream".into(),
                ));
            }
            tail(&client, &mut out, &source, position, &types).await
        }
        ClientCommand::Trace { id, .. } => {
            let trace = client.get_text(&format!("/trace/{id}")).await?;
            if out.json() {
                return out.line(trace.trim_end());
            }
            draw_trace(&mut out, &parse_json(&trace)?)
        }
        ClientCommand::Streams { prefix, .. } => streams(&client, &mut out, &prefix).await,
        ClientCommand::Last { stream, types, .. } => {
            let query = query_string(
                &types
                    .iter()
                    .map(|t| ("type", t.clone()))
                    .collect::<Vec<_>>(),
            );
            let event = client
                .get_text(&format!("/streams/{}/last{query}", segment(&stream)))
                .await?;
            out.raw_event(event.trim_end())
        }
        ClientCommand::Export {
            position, until, ..
        } => export(&client, &mut out, position, until).await,
        ClientCommand::Import { file, .. } => import(&client, &mut out, &file).await,
        ClientCommand::Checkpoint(CheckpointCommand::Get { consumer, .. }) => {
            let checkpoint = client
                .get_text(&format!("/checkpoints/{}", segment(&consumer)))
                .await?;
            checkpoint_line(&mut out, &checkpoint)
        }
        ClientCommand::Checkpoint(CheckpointCommand::Set {
            consumer, position, ..
        }) => {
            let request = client
                .request(Method::PUT, &format!("/checkpoints/{}", segment(&consumer)))
                .json(&json!({ "position": position }));
            let checkpoint = client.text(request).await?;
            checkpoint_line(&mut out, &checkpoint)
        }
        ClientCommand::Snapshot(SnapshotCommand::Get {
            stream,
            until_version,
            ..
        }) => {
            let query = query_string(
                &until_version
                    .map(|v| ("until_version", v.to_string()))
                    .into_iter()
                    .collect::<Vec<_>>(),
            );
            let snapshot = client
                .get_text(&format!("/snapshots/{}{query}", segment(&stream)))
                .await?;
            snapshot_line(&mut out, &snapshot)
        }
        ClientCommand::Snapshot(SnapshotCommand::Put {
            stream,
            version,
            state,
            snapshot_type,
            ..
        }) => {
            let body = SnapshotBody {
                version,
                state: &parse_option("--state", Some(&state))?,
                snapshot_type: snapshot_type.as_deref(),
            };
            let request = client
                .request(Method::POST, &format!("/snapshots/{}", segment(&stream)))
                .json(&body);
            let snapshot = client.text(request).await?;
            snapshot_line(&mut out, &snapshot)
        }
    }
}

/// An event to append, its JSON kept as given.
#[derive(serde::Serialize)]
struct EventBody<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a RawValue>,
}

/// A snapshot to store, its state kept as given.
#[derive(serde::Serialize)]
struct SnapshotBody<'a> {
    version: i64,
    state: &'a RawValue,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    snapshot_type: Option<&'a str>,
}

/// A JSON option, kept as given.
fn parse_option(option: &str, text: Option<&str>) -> Result<Box<RawValue>, CliError> {
    let text = text.ok_or_else(|| CliError::Usage(format!("{option} is required")))?;
    deep_json::<Box<RawValue>>(text)
        .map_err(|e| CliError::Usage(format!("{option} is not JSON: {e}")))
}

/// The events on standard input, one JSON object a line (blank lines
/// skipped), as a batch: a JSON array of the lines, each kept as given.
fn events_from_stdin() -> Result<String, CliError> {
    let mut events = Vec::new();
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event = deep_json::<Box<RawValue>>(&line).map_err(|e| {
            CliError::Usage(format!(
                "line {} of standard input is not JSON: {e}",
                number + 1
            ))
        })?;
        events.push(event);
    }
    if events.is_empty() {
        return Err(CliError::Usage(
            "no events: give --type and --data, or events as NDJSON on standard input".into(),
        ));
    }
    Ok(serde_json::to_string(&events).expect("JSON text serialises"))
}

/// `cairn append`.
async fn append(
    client: &Client,
    out: &mut Output,
    stream: &str,
    body: String,
    expect: Option<&str>,
) -> Result<(), CliError> {
    let mut request = client
        .request(Method::POST, &format!("/streams/{}", segment(stream)))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(expect) = expect {
        let tag = match expect {
            "exists" => "*".to_owned(),
            version => {
                let version: i64 = version.parse().map_err(|_| {
                    CliError::Usage(format!(
                        "--expect takes a version, -1 or exists, not {version:?}"
                    ))
                })?;
                format!("\"{version}\"")
            }
        };
        request = request.header("If-Match", tag);
    }
    let answer = client.text(request).await?;
    if out.json() {
        return out.line(answer.trim_end());
    }
    let answer: Value = parse_json(&answer)?;
    let events = answer["events"].as_array().map_or(&[][..], Vec::as_slice);
    let positions: Vec<String> = events.iter().map(|e| e["position"].to_string()).collect();
    out.line(&format!(
        "{} is at version {}: appended at {}",
        answer["stream"].as_str().unwrap_or(stream),
        answer["version"],
        positions.join(", ")
    ))
}

/// `cairn export`: the server's export, written out as it arrives. Its
/// lines are only watched, to count the events and to tell a whole export
/// (the head line last) from one that broke off.
async fn export(
    client: &Client,
    out: &mut Output,
    position: Option<i64>,
    until: Option<i64>,
) -> Result<(), CliError> {
    let mut pairs = vec![];
    pairs.extend(position.map(|p| ("position", p.to_string())));
    pairs.extend(until.map(|u| ("until", u.to_string())));
    let request = client
        .request(Method::GET, &format!("/export{}", query_string(&pairs)))
        .header("Accept", NDJSON);
    let response = client.send(request).await?;
    let bar = export_progress();
    let written = write_export(out, response, &bar).await;
    bar.finish_and_clear();
    written?;
    out.flush()
}

/// The media type of an export.
const NDJSON: &str = "application/x-ndjson";

/// Writes an export's body as it comes, the bar counting its events.
async fn write_export(
    out: &mut Output,
    response: reqwest::Response,
    bar: &indicatif::ProgressBar,
) -> Result<(), CliError> {
    let mut watch = ExportWatch::default();
    let mut body = response.bytes_stream();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|error| {
            CliError::Unavailable(format!(
                "the export broke off ({}): the output is incomplete",
                cause(&error)
            ))
        })?;
        out.raw(&piece)?;
        bar.inc(watch.scan(&piece));
    }
    match watch.complete() {
        true => Ok(()),
        false => Err(CliError::Failed(
            "the export ended before its head line: the output is incomplete".into(),
        )),
    }
}

/// How an event line and the head line begin, as the server writes them.
const EVENT_LINE: &[u8] = b"{\"kind\":\"event\"";
/// See [`EVENT_LINE`].
const HEAD_LINE: &[u8] = b"{\"kind\":\"head\"";

/// What `cairn export` notices of the lines going by.
#[derive(Default)]
struct ExportWatch {
    /// The first bytes of the line under way.
    start: Vec<u8>,
    /// Whether the last whole line was the head.
    last_was_head: bool,
}

impl ExportWatch {
    /// Looks at the next piece of the export; how many event lines it ends.
    fn scan(&mut self, piece: &[u8]) -> u64 {
        let mut events = 0;
        for part in piece.split_inclusive(|b| *b == b'\n') {
            let room = EVENT_LINE.len().saturating_sub(self.start.len());
            self.start.extend_from_slice(&part[..room.min(part.len())]);
            if part.ends_with(b"\n") {
                events += u64::from(self.start.starts_with(EVENT_LINE));
                self.last_was_head = self.start.starts_with(HEAD_LINE);
                self.start.clear();
            }
        }
        events
    }

    /// Whether the export ended with its head line.
    fn complete(&self) -> bool {
        self.start.is_empty() && self.last_was_head
    }
}

/// `cairn import`: a file (or standard input) streamed to the server,
/// the bar following its bytes; what it restored, printed.
async fn import(client: &Client, out: &mut Output, file: &Path) -> Result<(), CliError> {
    let (reader, length): (Box<dyn AsyncRead + Send + Unpin>, Option<u64>) =
        if file == Path::new("-") {
            (Box::new(tokio::io::stdin()), None)
        } else {
            let opened = tokio::fs::File::open(file).await.map_err(|error| {
                CliError::Usage(format!("cannot open {}: {error}", file.display()))
            })?;
            let length = opened.metadata().await.ok().map(|m| m.len());
            (Box::new(opened), length)
        };
    let bar = upload_progress(length);
    let request = client
        .request(Method::POST, "/import")
        .header("Content-Type", NDJSON)
        .body(reqwest::Body::wrap_stream(pieces(reader, bar.clone())));
    let answer = client.text(request).await;
    bar.finish_and_clear();
    let answer = answer?;
    if out.json() {
        return out.line(answer.trim_end());
    }
    let summary: Value = parse_json(&answer)?;
    out.line(&format!(
        "imported {} events ({} of them already stored), {} snapshots, {} checkpoints, \
         {} schemas, {} retention policies, {} tombstones, {} streams; the head is {}",
        summary["events"],
        summary["already_stored"],
        summary["snapshots"],
        summary["checkpoints"],
        summary["schemas"],
        summary["retention"],
        summary["tombstones"],
        summary["streams"],
        summary["head"]
    ))
}

/// Bytes read from a file at a time, and sent as a piece of a body.
const PIECE: usize = 64 * 1024;

/// A reader's bytes as a request body, piece by piece, the bar following.
fn pieces(
    reader: Box<dyn AsyncRead + Send + Unpin>,
    bar: indicatif::ProgressBar,
) -> impl Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures::stream::try_unfold(reader, move |mut reader| {
        let bar = bar.clone();
        async move {
            let mut piece = vec![0; PIECE];
            let read = reader.read(&mut piece).await?;
            if read == 0 {
                return Ok(None);
            }
            piece.truncate(read);
            bar.inc(read as u64);
            Ok(Some((piece, reader)))
        }
    })
}

/// The path of a source's reads.
fn source_path(source: &Source) -> Result<String, CliError> {
    match (&source.stream, &source.category, source.all) {
        (Some(stream), None, false) => Ok(format!("/streams/{}", segment(stream))),
        (None, Some(category), false) => Ok(format!("/categories/{}", segment(category))),
        (None, None, true) => Ok("/all".to_owned()),
        _ => Err(CliError::Usage(
            "give one of a stream, --category or --all".into(),
        )),
    }
}

/// `?a=1&b=2`, or nothing.
fn query_string(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut query = form_urlencoded::Serializer::for_suffix(String::from("?"), 1);
    for (name, value) in pairs {
        query.append_pair(name, value);
    }
    query.finish()
}

/// A page as read: its events kept as the server's exact JSON text.
#[derive(serde::Deserialize)]
struct Page {
    events: Vec<Box<serde_json::value::RawValue>>,
    next_position: i64,
    end: bool,
}

/// `cairn read`: page after page until the end, or `limit` events.
async fn read(
    client: &Client,
    out: &mut Output,
    source: &Source,
    reading: Reading,
    query: Vec<(&str, String)>,
) -> Result<(), CliError> {
    let path = source_path(source)?;
    let bar = progress();
    let read = read_pages(client, out, &path, reading, query, &bar).await;
    bar.finish_and_clear();
    read?;
    out.flush()
}

/// Where a read starts and how much it takes.
pub struct Reading {
    /// The first position.
    pub position: Option<i64>,
    /// Most events printed.
    pub limit: Option<u64>,
    /// Events asked for a page (none: the server's default page, which any
    /// server's `--max-page-size` allows).
    pub page_size: Option<u64>,
}

/// The pages of `cairn read`, each event printed as it comes.
async fn read_pages(
    client: &Client,
    out: &mut Output,
    path: &str,
    reading: Reading,
    query: Vec<(&str, String)>,
    bar: &indicatif::ProgressBar,
) -> Result<(), CliError> {
    let mut position = reading.position;
    let mut printed = 0u64;
    loop {
        let left = reading.limit.map_or(u64::MAX, |limit| limit - printed);
        if left == 0 {
            return Ok(());
        }
        let mut pairs = query.clone();
        if let Some(page_size) = reading.page_size {
            pairs.push(("limit", left.min(page_size).to_string()));
        }
        pairs.extend(position.map(|p| ("position", p.to_string())));
        let page: Page = parse_json(
            &client
                .get_text(&format!("{path}{}", query_string(&pairs)))
                .await?,
        )?;
        for event in page
            .events
            .iter()
            .take(usize::try_from(left).unwrap_or(usize::MAX))
        {
            out.raw_event(event.get())?;
            printed += 1;
            bar.inc(1);
        }
        if page.end {
            return Ok(());
        }
        position = Some(page.next_position);
    }
}

/// Where a dropped feed resumes.
enum Resume {
    /// At a position: where the feed was asked to start, or where its
    /// `caught-up` message said it continues.
    At(String),
    /// Right after the last event printed (`Last-Event-ID`).
    After(String),
}

/// `cairn tail`: the source's live feed, resumed where it stopped whenever
/// the connection drops or the server is briefly unavailable, until the
/// process is interrupted.
async fn tail(
    client: &Client,
    out: &mut Output,
    source: &Source,
    position: Option<i64>,
    types: &[String],
) -> Result<(), CliError> {
    let path = source_path(source)?;
    let mut resume = Resume::At(position.map_or_else(|| "end".to_owned(), |p| p.to_string()));
    loop {
        let mut pairs: Vec<(&str, String)> = types.iter().map(|t| ("type", t.clone())).collect();
        if let Resume::At(position) = &resume {
            pairs.push(("position", position.clone()));
        }
        let url = format!("{path}{}", query_string(&pairs));
        let mut request = client
            .request(Method::GET, &url)
            .header("Accept", "text/event-stream");
        if let Resume::After(id) = &resume {
            request = request.header("Last-Event-ID", id.as_str());
        }
        let response = match client.send(request).await {
            Ok(response) => response,
            Err(CliError::Unreachable(why) | CliError::Unavailable(why)) => {
                eprintln!("cairn: {why}; resuming in a second");
                tokio::time::sleep(RESUME_AFTER).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        let mut messages = pin!(response.bytes_stream().eventsource());
        while let Some(Ok(message)) = messages.next().await {
            match message.event.as_str() {
                "caught-up" => {
                    if let Resume::At(_) = resume {
                        let next: Value = parse_json(&message.data)?;
                        resume = Resume::At(next["position"].to_string());
                    }
                }
                _ => {
                    out.raw_event(&message.data)?;
                    out.flush()?;
                    resume = Resume::After(message.id);
                }
            }
        }
        eprintln!("cairn: the feed was interrupted; resuming in a second");
        tokio::time::sleep(RESUME_AFTER).await;
    }
}

/// A page of the stream listing, its streams as the server's JSON text.
#[derive(serde::Deserialize)]
struct StreamList {
    streams: Vec<Box<serde_json::value::RawValue>>,
    next: Option<String>,
}

/// `cairn streams`: every stream with the prefix, page after page.
async fn streams(client: &Client, out: &mut Output, prefix: &str) -> Result<(), CliError> {
    let mut after: Option<String> = None;
    if !out.json() {
        out.line(&format!("{:<40} {:>9}  LAST WRITE", "STREAM", "VERSION"))?;
    }
    loop {
        let mut pairs = vec![];
        if !prefix.is_empty() {
            pairs.push(("prefix", prefix.to_owned()));
        }
        pairs.extend(after.map(|a| ("after", a)));
        let list: StreamList = parse_json(
            &client
                .get_text(&format!("/streams{}", query_string(&pairs)))
                .await?,
        )?;
        for stream in &list.streams {
            if out.json() {
                out.line(stream.get())?;
                continue;
            }
            let stream: Value = parse_json(stream.get())?;
            out.line(&format!(
                "{:<40} {:>9}  {}",
                stream["stream"].as_str().unwrap_or(""),
                stream["version"].to_string(),
                stream["last_time"].as_str().unwrap_or("")
            ))?;
        }
        match list.next {
            Some(next) => after = Some(next),
            None => return out.flush(),
        }
    }
}

/// A checkpoint (the server's JSON), printed.
fn checkpoint_line(out: &mut Output, checkpoint: &str) -> Result<(), CliError> {
    if out.json() {
        return out.line(checkpoint.trim_end());
    }
    let checkpoint: Value = parse_json(checkpoint)?;
    out.line(&format!(
        "{} is at position {} (since {})",
        checkpoint["consumer"].as_str().unwrap_or(""),
        checkpoint["position"],
        checkpoint["time"].as_str().unwrap_or("")
    ))
}

/// A snapshot (the server's JSON), printed.
fn snapshot_line(out: &mut Output, snapshot: &str) -> Result<(), CliError> {
    if out.json() {
        return out.line(snapshot.trim_end());
    }
    let snapshot: Value = parse_json(snapshot)?;
    out.line(&format!(
        "{} at version {} ({}, {}): {}",
        snapshot["stream"].as_str().unwrap_or(""),
        snapshot["version"],
        snapshot["type"].as_str().unwrap_or("untyped"),
        snapshot["time"].as_str().unwrap_or(""),
        snapshot["state"]
    ))
}

/// A trace as a tree: the causes root first, the message, then its
/// effects.
fn draw_trace(out: &mut Output, trace: &Value) -> Result<(), CliError> {
    let label = |event: &Value| {
        format!(
            "{} {}@{} {} {}",
            event["type"].as_str().unwrap_or(""),
            event["stream"].as_str().unwrap_or(""),
            event["position"],
            event["id"].as_str().unwrap_or(""),
            clipped(&event["data"].to_string(), 40)
        )
    };
    let causes = trace["causes"].as_array().map_or(&[][..], Vec::as_slice);
    for (depth, cause) in causes.iter().enumerate() {
        out.line(&format!("{}{}", "  ".repeat(depth), label(cause)))?;
    }
    let indent = "  ".repeat(causes.len());
    out.line(&format!("{indent}{} ◀ traced", label(&trace["message"])))?;
    let effects = trace["effects"].as_array().map_or(&[][..], Vec::as_slice);
    draw_effects(out, effects, &indent, &label)?;
    if trace["truncated"] == json!(true) {
        out.line("(truncated: a depth or size cap was reached)")?;
    }
    Ok(())
}

/// Draws effect nodes under `prefix`, each with its own effects.
fn draw_effects(
    out: &mut Output,
    effects: &[Value],
    prefix: &str,
    label: &dyn Fn(&Value) -> String,
) -> Result<(), CliError> {
    for (i, node) in effects.iter().enumerate() {
        let last = i + 1 == effects.len();
        out.line(&format!(
            "{prefix}{}{}",
            if last { "└─ " } else { "├─ " },
            label(node)
        ))?;
        let children = node["effects"].as_array().map_or(&[][..], Vec::as_slice);
        let deeper = format!("{prefix}{}", if last { "   " } else { "│  " });
        draw_effects(out, children, &deeper, label)?;
    }
    Ok(())
}
