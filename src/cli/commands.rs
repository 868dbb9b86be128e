//! Each client command: what it asks the server, and what it prints.

use std::io::BufRead;
use std::pin::pin;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use super::CliError;
use super::args::{CheckpointCommand, ClientCommand, SnapshotCommand, Source};
use super::client::{Client, segment};
use super::output::{Output, clipped, progress};

/// Events asked for a page when reading everything (the server's default
/// `--max-page-size`).
const PAGE: u64 = 1000;

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
                Some(event_type) => {
                    let mut event =
                        json!({"type": event_type, "data": parse("--data", data.as_deref())?});
                    if let Some(metadata) = metadata {
                        event["metadata"] = parse("--metadata", Some(&metadata))?;
                    }
                    event
                }
                None => events_from_stdin()?,
            };
            append(&client, &mut out, &stream, body, expect.as_deref()).await
        }
        ClientCommand::Read {
            source,
            position,
            limit,
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
            let mut query = vec![];
            query.extend(types.iter().map(|t| ("type", t.clone())));
            if backward {
                query.push(("direction", "backward".to_owned()));
            }
            query.extend(until_version.map(|v| ("until_version", v.to_string())));
            query.extend(as_of.map(|t| ("as_of", t)));
            read(&client, &mut out, &source, position, limit, query).await
        }
        ClientCommand::Tail {
            source,
            position,
            types,
            ..
        } => tail(&client, &mut out, &source, position, &types).await,
        ClientCommand::Trace { id, .. } => {
            let trace = client.get_json(&format!("/trace/{id}")).await?;
            if out.json() {
                return out.value(&trace);
            }
            draw_trace(&mut out, &trace)
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
                .get_json(&format!("/streams/{}/last{query}", segment(&stream)))
                .await?;
            out.event(&event)
        }
        ClientCommand::Checkpoint(CheckpointCommand::Get { consumer, .. }) => {
            let checkpoint = client
                .get_json(&format!("/checkpoints/{}", segment(&consumer)))
                .await?;
            checkpoint_line(&mut out, &checkpoint)
        }
        ClientCommand::Checkpoint(CheckpointCommand::Set {
            consumer, position, ..
        }) => {
            let request = client
                .request(Method::PUT, &format!("/checkpoints/{}", segment(&consumer)))
                .json(&json!({ "position": position }));
            let checkpoint = client.json(request).await?;
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
                .get_json(&format!("/snapshots/{}{query}", segment(&stream)))
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
            let mut body = json!({"version": version, "state": parse("--state", Some(&state))?});
            if let Some(snapshot_type) = snapshot_type {
                body["type"] = json!(snapshot_type);
            }
            let request = client
                .request(Method::POST, &format!("/snapshots/{}", segment(&stream)))
                .json(&body);
            let snapshot = client.json(request).await?;
            snapshot_line(&mut out, &snapshot)
        }
    }
}

/// Parses a JSON option.
fn parse(option: &str, text: Option<&str>) -> Result<Value, CliError> {
    let text = text.ok_or_else(|| CliError::Usage(format!("{option} is required")))?;
    serde_json::from_str(text).map_err(|e| CliError::Usage(format!("{option} is not JSON: {e}")))
}

/// The events on standard input, one JSON object a line (blank lines
/// skipped), as a batch.
fn events_from_stdin() -> Result<Value, CliError> {
    let mut events = Vec::new();
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event: Value = serde_json::from_str(&line).map_err(|e| {
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
    Ok(Value::Array(events))
}

/// `cairn append`.
async fn append(
    client: &Client,
    out: &mut Output,
    stream: &str,
    body: Value,
    expect: Option<&str>,
) -> Result<(), CliError> {
    let mut request = client
        .request(Method::POST, &format!("/streams/{}", segment(stream)))
        .json(&body);
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
    let answer = client.json(request).await?;
    if out.json() {
        return out.value(&answer);
    }
    let events = answer["events"].as_array().map_or(&[][..], Vec::as_slice);
    let positions: Vec<String> = events.iter().map(|e| e["position"].to_string()).collect();
    out.line(&format!(
        "{} is at version {}: appended at {}",
        answer["stream"].as_str().unwrap_or(stream),
        answer["version"],
        positions.join(", ")
    ))
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
    let mut query = form_urlencoded::Serializer::new(String::from("?"));
    for (name, value) in pairs {
        query.append_pair(name, value);
    }
    query.finish()
}

/// `cairn read`: page after page until the end, or `limit` events.
async fn read(
    client: &Client,
    out: &mut Output,
    source: &Source,
    mut position: Option<i64>,
    limit: Option<u64>,
    query: Vec<(&str, String)>,
) -> Result<(), CliError> {
    let path = source_path(source)?;
    let bar = progress();
    let mut printed = 0u64;
    loop {
        let wanted = limit.map_or(PAGE, |limit| (limit - printed).min(PAGE));
        if wanted == 0 {
            break;
        }
        let mut pairs = query.clone();
        pairs.push(("limit", wanted.to_string()));
        pairs.extend(position.map(|p| ("position", p.to_string())));
        let page = client
            .get_json(&format!("{path}{}", query_string(&pairs)))
            .await?;
        for event in page["events"].as_array().map_or(&[][..], Vec::as_slice) {
            out.event(event)?;
            printed += 1;
            bar.inc(1);
        }
        if page["end"] == json!(true) {
            break;
        }
        position = page["next_position"].as_i64();
    }
    bar.finish_and_clear();
    out.flush()
}

/// `cairn tail`: the source's live feed, resumed after `Last-Event-ID`
/// whenever the connection drops, until the process is interrupted.
async fn tail(
    client: &Client,
    out: &mut Output,
    source: &Source,
    position: Option<i64>,
    types: &[String],
) -> Result<(), CliError> {
    let path = source_path(source)?;
    let mut pairs: Vec<(&str, String)> = types.iter().map(|t| ("type", t.clone())).collect();
    pairs.push((
        "position",
        position.map_or_else(|| "end".to_owned(), |p| p.to_string()),
    ));
    let url = format!("{path}{}", query_string(&pairs));
    let mut last_event_id: Option<String> = None;
    loop {
        let mut request = client
            .request(Method::GET, &url)
            .header("Accept", "text/event-stream");
        if let Some(id) = &last_event_id {
            request = request.header("Last-Event-ID", id.as_str());
        }
        let response = match client.send(request).await {
            Ok(response) => response,
            Err(CliError::Unreachable(why)) => {
                eprintln!("cairn: {why}; resuming in a second");
                tokio::time::sleep(RESUME_AFTER).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        let mut messages = pin!(response.bytes_stream().eventsource());
        while let Some(message) = messages.next().await {
            let Ok(message) = message else { break };
            if message.event != "message" {
                continue; // `caught-up`
            }
            let event: Value = serde_json::from_str(&message.data).map_err(|e| {
                CliError::Failed(format!("the feed sent an event that is not JSON: {e}"))
            })?;
            out.event(&event)?;
            out.flush()?;
            last_event_id = Some(message.id);
        }
        eprintln!("cairn: the feed was interrupted; resuming in a second");
        tokio::time::sleep(RESUME_AFTER).await;
    }
}

/// `cairn streams`: every stream with the prefix, page after page.
async fn streams(client: &Client, out: &mut Output, prefix: &str) -> Result<(), CliError> {
    let mut after: Option<String> = None;
    if !out.json() {
        out.line(&format!("{:<40} {:>9}  LAST WRITE", "STREAM", "VERSION"))?;
    }
    loop {
        let mut pairs = vec![("limit", PAGE.to_string())];
        if !prefix.is_empty() {
            pairs.push(("prefix", prefix.to_owned()));
        }
        pairs.extend(after.map(|a| ("after", a)));
        let page = client
            .get_json(&format!("/streams{}", query_string(&pairs)))
            .await?;
        for stream in page["streams"].as_array().map_or(&[][..], Vec::as_slice) {
            if out.json() {
                out.value(stream)?;
            } else {
                out.line(&format!(
                    "{:<40} {:>9}  {}",
                    stream["stream"].as_str().unwrap_or(""),
                    stream["version"].to_string(),
                    stream["last_time"].as_str().unwrap_or("")
                ))?;
            }
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return out.flush(),
        }
    }
}

/// A checkpoint, printed.
fn checkpoint_line(out: &mut Output, checkpoint: &Value) -> Result<(), CliError> {
    if out.json() {
        return out.value(checkpoint);
    }
    out.line(&format!(
        "{} is at position {} (since {})",
        checkpoint["consumer"].as_str().unwrap_or(""),
        checkpoint["position"],
        checkpoint["time"].as_str().unwrap_or("")
    ))
}

/// A snapshot, printed.
fn snapshot_line(out: &mut Output, snapshot: &Value) -> Result<(), CliError> {
    if out.json() {
        return out.value(snapshot);
    }
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
