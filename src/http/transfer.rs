//! `/export` and `/import` (API.md, Export and import): the whole store as
//! NDJSON, one record a line, and back, streamed both ways in constant
//! memory.
//!
//! Each line is a JSON object whose first member is `kind`, followed by the
//! record's fields as the API shows them elsewhere:
//!
//! ```text
//! {"kind":"event", …every field of the event as read…}
//! {"kind":"snapshot","stream","version","type","state","time"}
//! {"kind":"checkpoint","consumer","position","time"}
//! {"kind":"schema","type","schema","version","time"}
//! {"kind":"retention","scope":"stream"|"category","name","max_age_s","max_count"}
//! {"kind":"tombstone","stream","version","time"}
//! {"kind":"stream","stream","version","last_time"}
//! {"kind":"head","global_position"}
//! ```
//!
//! in that order of kinds: events in global order, snapshots as they were
//! posted, the rest by name in byte order, and the head last. `position`
//! and `until` bound the event lines only: every other line describes the
//! whole store, as one snapshot of it. An export that breaks off ends
//! without its head line, and an import of it says so.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::auth::{Admin, Caller};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{self, AcceptsJson, EventFields, JsonObject, Query};
use super::snapshots::check_snapshot;
use super::wire::{self, serialize_time};
use super::{AppState, Limits};
use crate::names;
use crate::store::{
    Checkpoint, EventSchema, ExportRange, Import, ImportError, ImportSummary, NewSnapshot,
    RecordedEvent, RetentionPolicy, RetentionTarget, SchemaDocument, Snapshot, StreamInfo,
    Tombstone, TransferItem, TransferKind,
};

/// The media type of an export.
const NDJSON: &str = "application/x-ndjson";

/// The path of the import, which the request deadline leaves alone (see
/// [`import`]).
pub const IMPORT_PATH: &str = "/import";

/// Bytes a line may hold beyond the largest request body: an event's data
/// came in a body, and its line adds the other fields (ids, names, up to 32
/// tags, times).
const LINE_OVERHEAD: usize = 64 * 1024;

/// The export and import routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export))
        .routes(routes!(import))
}

/// The query of an export.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExportParams {
    /// The first global position of the events listed (default: the first).
    /// Other records are listed whole.
    #[param(minimum = 0, example = 1)]
    position: Option<i64>,
    /// The last global position of the events listed (default: the head).
    #[param(minimum = 0, example = 1000)]
    until: Option<i64>,
}

/// Exports the whole store as NDJSON (admin, over every stream).
///
/// One line per record: events in global order, then snapshots,
/// checkpoints, schemas, retention policies, tombstones and streams, and
/// last the head, each `{"kind": …, …}`, all read from one snapshot of the
/// store. `position` and `until` bound the event lines only. A failure once
/// the answer has begun ends it without its head line: an export without
/// one is incomplete.
#[utoipa::path(
    get,
    path = "/export",
    tag = "transfer",
    params(ExportParams),
    responses(
        (status = 200, description = "The store, one record a line, the head last", body = String, content_type = "application/x-ndjson"),
        (status = 406, description = "`Accept` admits no NDJSON", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn export(
    _: Caller<Admin>,
    State(state): State<AppState>,
    Query(params): Query<ExportParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if !extract::accepts(&headers, NDJSON) {
        return Err(ApiError::NotAcceptable(NDJSON));
    }
    let bound = |name: &str, value: Option<i64>| match value {
        Some(value) if value < 0 => Err(ApiError::BadRequest(format!("{name} must be ≥ 0"))),
        value => Ok(value),
    };
    let range = ExportRange {
        position: bound("position", params.position)?.unwrap_or(1),
        until: bound("until", params.until)?,
        max_bytes: state.limits.max_page_bytes,
    };
    let pages = state.store.export(range).await?;
    let body = pages.map(|page| match page {
        Ok(items) => {
            let mut text = Vec::new();
            for item in items {
                write_line(&mut text, item);
            }
            Ok(Bytes::from(text))
        }
        Err(error) => {
            tracing::error!(%error, "an export broke off");
            Err(error)
        }
    });
    let mut response = Body::from_stream(body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(response)
}

/// Appends a record's line: `{"kind":"…"` and then the record's own
/// fields, as the API shows them elsewhere.
fn write_line(out: &mut Vec<u8>, item: TransferItem) {
    out.extend_from_slice(b"{\"kind\":\"");
    out.extend_from_slice(item.kind().as_str().as_bytes());
    out.push(b'"');
    let fields = out.len();
    let written = match item {
        TransferItem::Event(event) => serde_json::to_writer(&mut *out, &wire::Event::from(event)),
        TransferItem::Snapshot(snapshot) => {
            serde_json::to_writer(&mut *out, &wire::Snapshot::from(snapshot))
        }
        TransferItem::Checkpoint(checkpoint) => {
            serde_json::to_writer(&mut *out, &wire::Checkpoint::from(checkpoint))
        }
        TransferItem::Schema(schema) => serde_json::to_writer(&mut *out, &SchemaLine::from(schema)),
        TransferItem::Retention(target, policy) => {
            serde_json::to_writer(&mut *out, &RetentionLine::from((target, policy)))
        }
        TransferItem::Tombstone(tombstone) => {
            serde_json::to_writer(&mut *out, &TombstoneLine::from(tombstone))
        }
        TransferItem::Stream(stream) => {
            serde_json::to_writer(&mut *out, &wire::StreamInfo::from(stream))
        }
        TransferItem::Head(global_position) => serde_json::to_writer(
            &mut *out,
            &HeadLine {
                _kind: IgnoredAny,
                global_position,
            },
        ),
    };
    written.expect("a record serialises");
    // The record's object opens where the kind's member ends: its `{`
    // becomes the `,` between them. Every record has fields.
    out[fields] = b',';
    out.push(b'\n');
}

/// What an import restored.
#[derive(Serialize, ToSchema)]
struct ImportAnswer {
    /// Event lines (those found already stored included).
    events: u64,
    /// Event lines found already stored: an import run again after an
    /// interruption continues after them.
    already_stored: u64,
    /// Snapshot lines.
    snapshots: u64,
    /// Checkpoint lines.
    checkpoints: u64,
    /// Schema lines.
    schemas: u64,
    /// Retention policy lines.
    retention: u64,
    /// Tombstone lines.
    tombstones: u64,
    /// Stream lines.
    streams: u64,
    /// The head of the log now: the next append goes after it.
    head: i64,
}

impl From<ImportSummary> for ImportAnswer {
    fn from(s: ImportSummary) -> Self {
        ImportAnswer {
            events: s.events,
            already_stored: s.already_stored,
            snapshots: s.snapshots,
            checkpoints: s.checkpoints,
            schemas: s.schemas,
            retention: s.retention,
            tombstones: s.tombstones,
            streams: s.streams,
            head: s.head,
        }
    }
}

/// Restores an export (admin, over every stream).
///
/// Into an empty store, or one that holds the beginning of the same export
/// (an import cut short: running it again continues where it stopped), it
/// restores every record exactly, ids, positions, global positions, times,
/// versions and the head, so the next append goes after the export's head.
/// Lines are restored in chunks, each one transaction, as they arrive. A
/// store holding anything else is `409`, with nothing written. A line that
/// is not valid (or the end of the body before the head line) is `400`
/// naming it; the lines before it stay restored.
///
/// The body has no length limit and the request no deadline, deliberately:
/// an export is as long as the store, and the import holds one chunk of it
/// at a time (at most 1000 lines and about the largest request body, and
/// that much of the bytes of bodies in flight), never the whole. What bounds
/// it instead is that the body keeps coming: a pause longer than the request
/// deadline (`--request-timeout-secs`) between two pieces of it is `408`.
/// A line longer than the largest request body (and 64 KiB for the fields
/// around an event's data) is `413`.
#[utoipa::path(
    post,
    path = "/import",
    tag = "transfer",
    request_body(content = String, content_type = "application/x-ndjson", description = "An export, as `GET /export` wrote it"),
    responses(
        (status = 200, description = "Restored", body = ImportAnswer),
        (status = 400, description = "A line is not valid (the problem names it), or the body ended before the head line: the lines before it were restored", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body paused longer than the request deadline", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The store holds something other than the beginning of this export: nothing was written", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "A line is longer than the largest request body allows", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/x-ndjson`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn import(
    _: Caller<Admin>,
    State(state): State<AppState>,
    _: AcceptsJson,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match restore(&state, &headers, body).await {
        Ok(summary) => Json(ImportAnswer::from(summary)).into_response(),
        Err(error) => {
            // The body may be left unread: the connection cannot carry
            // another request, and a client must not send one on it.
            let mut response = error.into_response();
            let close = HeaderValue::from_static("close");
            response.headers_mut().insert(header::CONNECTION, close);
            response
        }
    }
}

/// How long an import that stopped early goes on reading (and dropping)
/// its body before it answers: a client still sending may otherwise lose
/// the answer, its connection reset for the bytes left unread.
const DRAIN: Duration = Duration::from_secs(2);

/// Restores the export a body holds (see [`import`]).
async fn restore(state: &AppState, headers: &HeaderMap, body: Body) -> ApiResult<ImportSummary> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case(NDJSON) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body must be {NDJSON}: an export"
        )));
    }
    let limits = &state.limits;
    let line_cap = limits.max_body_bytes.saturating_add(LINE_OVERHEAD);
    // A chunk's lines, and the line being read.
    let _held = extract::hold_body_bytes(state, limits.max_body_bytes + line_cap).await?;
    let mut lines = Lines::new(body.into_data_stream(), line_cap, limits.request_timeout);
    let mut import = Import::new(limits.max_body_bytes);
    let mut number = 0;
    let ended = loop {
        let line = match lines.next().await {
            Ok(Some(line)) => line,
            Ok(None) => break Ok(()),
            Err(stop) => break Err(stop.at(number + 1)),
        };
        number += 1;
        let admitted = parse_line(&line.text, limits)
            .map_err(|detail| match line.ended {
                true => format!("line {number}: {detail}"),
                false => format!(
                    "line {number} is cut short (the body ends within it), so the export ends \
                     before its head line: it is incomplete; import the whole export again"
                ),
            })
            .and_then(|item| {
                import
                    .admit(number, item, line.text.len())
                    .map_err(|detail| format!("line {number}: {detail}"))
            });
        if let Err(detail) = admitted {
            break Err(ApiError::BadRequest(detail));
        }
        if import.is_full()
            && let Err(error) = state.store.import(&mut import).await
        {
            break Err(refused(error));
        }
    };
    // The lines admitted before the end, or before a line that stopped the
    // import, are restored either way; a failure among them comes first.
    let restored = state.store.import(&mut import).await.map_err(refused);
    if let Err(error) = restored.and(ended) {
        lines.drain(DRAIN).await;
        return Err(error);
    }
    import.finish().map_err(ApiError::BadRequest)
}

/// The problem an import's refusal is.
fn refused(error: ImportError) -> ApiError {
    match error {
        ImportError::Invalid { .. } => ApiError::BadRequest(error.to_string()),
        ImportError::Conflict(detail) => ApiError::Conflict(detail),
        ImportError::Store(error) => error.into(),
    }
}

/// A line of the body, without its `\n`.
struct Line {
    text: Vec<u8>,
    /// Whether a `\n` ended it (the last line of a body may lack one).
    ended: bool,
}

/// Why the body's lines stopped before their end.
enum LinesStopped {
    /// A line is longer than the cap.
    TooLong(usize),
    /// No byte came for this long.
    Stalled(Duration),
    /// The body broke off.
    Broken(String),
}

impl LinesStopped {
    /// The problem, for line `number`.
    fn at(self, number: u64) -> ApiError {
        match self {
            LinesStopped::TooLong(cap) => ApiError::TooLarge(format!(
                "line {number} is longer than {cap} bytes, the largest line this server takes \
                 (--max-body-bytes and 64 KiB)"
            )),
            LinesStopped::Stalled(after) => ApiError::BodyStalled(after.as_secs()),
            LinesStopped::Broken(why) => {
                ApiError::BadRequest(format!("the body broke off at line {number}: {why}"))
            }
        }
    }
}

/// The lines of a request body, read as its pieces arrive: never more than
/// one line (at most `cap` bytes) and one piece held.
struct Lines {
    body: BodyDataStream,
    buffer: Vec<u8>,
    /// Where the next line starts in `buffer`.
    start: usize,
    /// How far `buffer` was searched for a `\n` from `start`.
    searched: usize,
    cap: usize,
    stall: Duration,
    /// The body ended.
    done: bool,
    /// The body paused past `stall`.
    stalled: bool,
}

impl Lines {
    /// The lines of `body`, each at most `cap` bytes, its pieces at most
    /// `stall` apart.
    fn new(body: BodyDataStream, cap: usize, stall: Duration) -> Lines {
        Lines {
            body,
            buffer: Vec::new(),
            start: 0,
            searched: 0,
            cap,
            stall,
            done: false,
            stalled: false,
        }
    }

    /// The next line, or `None` at the end of the body.
    async fn next(&mut self) -> Result<Option<Line>, LinesStopped> {
        loop {
            if let Some(at) = self.buffer[self.searched..]
                .iter()
                .position(|b| *b == b'\n')
            {
                let end = self.searched + at;
                let text = self.buffer[self.start..end].to_vec();
                (self.start, self.searched) = (end + 1, end + 1);
                return self.checked(text, true).map(Some);
            }
            self.searched = self.buffer.len();
            if self.searched - self.start > self.cap {
                return Err(LinesStopped::TooLong(self.cap));
            }
            if self.done {
                if self.start == self.buffer.len() {
                    return Ok(None);
                }
                let text = self.buffer[self.start..].to_vec();
                self.start = self.buffer.len();
                return self.checked(text, false).map(Some);
            }
            // Keep only the line under way before reading on.
            self.buffer.drain(..self.start);
            (self.searched, self.start) = (self.searched - self.start, 0);
            match tokio::time::timeout(self.stall, self.body.next()).await {
                Err(_) => {
                    self.stalled = true;
                    return Err(LinesStopped::Stalled(self.stall));
                }
                Ok(None) => self.done = true,
                Ok(Some(Err(error))) => return Err(LinesStopped::Broken(error.to_string())),
                Ok(Some(Ok(piece))) => self.buffer.extend_from_slice(&piece),
            }
        }
    }

    /// Reads what is left of the body, dropping it, for at most `patience`
    /// (not at all once it paused past the deadline).
    async fn drain(&mut self, patience: Duration) {
        if self.stalled {
            return;
        }
        let rest = async { while let Some(Ok(_)) = self.body.next().await {} };
        let _ = tokio::time::timeout(patience, rest).await;
    }

    /// A line, unless it is over the cap.
    fn checked(&self, text: Vec<u8>, ended: bool) -> Result<Line, LinesStopped> {
        match text.len() > self.cap {
            true => Err(LinesStopped::TooLong(self.cap)),
            false => Ok(Line { text, ended }),
        }
    }
}

/// A line's kind, all that is read of it first.
#[derive(Deserialize)]
struct KindOf {
    kind: String,
}

/// Reads a line as a record of its kind, checked as the API checks what it
/// writes.
fn parse_line(text: &[u8], limits: &Limits) -> Result<TransferItem, String> {
    let JsonObject(KindOf { kind }) =
        serde_json::from_slice(text).map_err(|e| format!("not a record: {e}"))?;
    let Some(kind) = TransferKind::parse(&kind) else {
        let kinds: Vec<&str> = TransferKind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(format!(
            "unknown kind {kind:?}: a line is one of {}",
            kinds.join(", ")
        ));
    };
    match kind {
        TransferKind::Event => record::<EventLine>(text, limits),
        TransferKind::Snapshot => record::<SnapshotLine>(text, limits),
        TransferKind::Checkpoint => record::<CheckpointLine>(text, limits),
        TransferKind::Schema => record::<SchemaLine>(text, limits),
        TransferKind::Retention => record::<RetentionLine>(text, limits),
        TransferKind::Tombstone => record::<TombstoneLine>(text, limits),
        TransferKind::Stream => record::<StreamLine>(text, limits),
        TransferKind::Head => record::<HeadLine>(text, limits),
    }
}

/// A line of one kind, as an import reads it: every field of its record,
/// each in its JSON type, and no other.
trait RecordLine: DeserializeOwned {
    /// The record, checked.
    fn record(self, limits: &Limits) -> Result<TransferItem, String>;
}

/// Reads a line as an `L`.
fn record<L: RecordLine>(text: &[u8], limits: &Limits) -> Result<TransferItem, String> {
    let JsonObject(line) = serde_json::from_slice::<JsonObject<L>>(text)
        .map_err(|e| format!("not a valid record of its kind: {e}"))?;
    line.record(limits)
}

/// A time as the stores keep it: to the microsecond. A finer one could not
/// be exported again as it was imported.
fn exact(time: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    match time.timestamp_subsec_nanos() % 1000 {
        0 => Ok(time),
        _ => Err(format!(
            "times are kept to the microsecond, and {time} is finer"
        )),
    }
}

/// A name checked by a rule of [`names`].
fn checked_name(what: &str, name: String) -> Result<String, String> {
    names::check_name(what, &name)?;
    Ok(name)
}

/// The largest position, version or count an import takes: 2^53 - 1, the
/// largest integer that JSON readers using doubles (JavaScript's) read
/// exactly, and far from where the next append's arithmetic could overflow.
const MAX_COUNT: i64 = (1 << 53) - 1;

/// A position, version or count, from `least` to [`MAX_COUNT`].
fn counted(what: &str, least: i64, value: i64) -> Result<i64, String> {
    match (least..=MAX_COUNT).contains(&value) {
        true => Ok(value),
        false => Err(format!(
            "{what} must be from {least} to {MAX_COUNT}, not {value}"
        )),
    }
}

/// An event line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine {
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    id: Uuid,
    stream: String,
    #[serde(rename = "type")]
    event_type: String,
    position: i64,
    global_position: i64,
    data: Box<RawValue>,
    metadata: Option<Box<RawValue>>,
    causation_id: Option<Uuid>,
    correlation_id: Option<String>,
    tags: Vec<String>,
    time: DateTime<Utc>,
}

impl RecordLine for EventLine {
    fn record(self, limits: &Limits) -> Result<TransferItem, String> {
        let fields = EventFields {
            event_type: &self.event_type,
            data: &self.data,
            metadata: self.metadata.as_deref(),
            correlation_id: self.correlation_id.as_deref(),
            tags: &self.tags,
        };
        fields.check(limits.max_json_depth)?;
        Ok(TransferItem::Event(RecordedEvent {
            id: self.id,
            stream: checked_name("a stream name", self.stream)?,
            event_type: self.event_type,
            position: counted("position", 0, self.position)?,
            global_position: counted("global_position", 1, self.global_position)?,
            data: self.data,
            metadata: self.metadata,
            causation_id: self.causation_id,
            correlation_id: self.correlation_id,
            tags: self.tags,
            time: exact(self.time)?,
        }))
    }
}

/// A snapshot line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotLine {
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    stream: String,
    version: i64,
    #[serde(rename = "type")]
    snapshot_type: Option<String>,
    state: Box<RawValue>,
    time: DateTime<Utc>,
}

impl RecordLine for SnapshotLine {
    fn record(self, limits: &Limits) -> Result<TransferItem, String> {
        let snapshot = NewSnapshot {
            stream: checked_name("a stream name", self.stream)?,
            version: counted("version", 0, self.version)?,
            snapshot_type: self.snapshot_type,
            state: self.state,
        };
        check_snapshot(&snapshot, limits.max_json_depth)?;
        Ok(TransferItem::Snapshot(Snapshot {
            stream: snapshot.stream,
            version: snapshot.version,
            snapshot_type: snapshot.snapshot_type,
            state: snapshot.state,
            time: exact(self.time)?,
        }))
    }
}

/// A checkpoint line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    consumer: String,
    position: i64,
    time: DateTime<Utc>,
}

impl RecordLine for CheckpointLine {
    fn record(self, _: &Limits) -> Result<TransferItem, String> {
        Ok(TransferItem::Checkpoint(Checkpoint {
            consumer: checked_name("a consumer name", self.consumer)?,
            position: counted("position", 0, self.position)?,
            time: exact(self.time)?,
        }))
    }
}

/// A schema line, both ways: no other part of the API shows schemas yet.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaLine {
    #[serde(rename = "kind", skip_serializing)]
    _kind: IgnoredAny,
    #[serde(rename = "type")]
    event_type: String,
    schema: Box<RawValue>,
    version: i64,
    #[serde(serialize_with = "serialize_time")]
    time: DateTime<Utc>,
}

impl From<EventSchema> for SchemaLine {
    fn from(s: EventSchema) -> Self {
        SchemaLine {
            _kind: IgnoredAny,
            event_type: s.event_type,
            schema: s.schema,
            version: s.version,
            time: s.time,
        }
    }
}

impl RecordLine for SchemaLine {
    fn record(self, _: &Limits) -> Result<TransferItem, String> {
        // Checked as a PUT is: appends of its type must be able to use it.
        SchemaDocument::parse(self.schema.clone())?;
        Ok(TransferItem::Schema(EventSchema {
            event_type: checked_name("an event type", self.event_type)?,
            schema: self.schema,
            version: counted("version", 0, self.version)?,
            time: exact(self.time)?,
        }))
    }
}

/// A retention policy line, both ways: no other part of the API shows
/// policies yet.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionLine {
    #[serde(rename = "kind", skip_serializing)]
    _kind: IgnoredAny,
    scope: String,
    name: String,
    max_age_s: Option<i64>,
    max_count: Option<i64>,
}

impl From<(RetentionTarget, RetentionPolicy)> for RetentionLine {
    fn from((target, policy): (RetentionTarget, RetentionPolicy)) -> Self {
        RetentionLine {
            _kind: IgnoredAny,
            scope: target.scope().to_owned(),
            max_age_s: policy.max_age_s(),
            max_count: policy.max_count(),
            name: match target {
                RetentionTarget::Stream(name) | RetentionTarget::Category(name) => name,
            },
        }
    }
}

impl RecordLine for RetentionLine {
    fn record(self, _: &Limits) -> Result<TransferItem, String> {
        let target = RetentionTarget::parse(&self.scope, self.name)
            .ok_or_else(|| format!("scope is stream or category, not {:?}", self.scope))?;
        match &target {
            RetentionTarget::Stream(name) => names::check_name("a stream name", name)?,
            RetentionTarget::Category(name) => names::check_category(name)?,
        }
        let policy = RetentionPolicy::new(self.max_age_s, self.max_count)?;
        Ok(TransferItem::Retention(target, policy))
    }
}

/// A tombstone line, both ways: no other part of the API shows tombstones.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TombstoneLine {
    #[serde(rename = "kind", skip_serializing)]
    _kind: IgnoredAny,
    stream: String,
    version: i64,
    #[serde(serialize_with = "serialize_time")]
    time: DateTime<Utc>,
}

impl From<Tombstone> for TombstoneLine {
    fn from(t: Tombstone) -> Self {
        TombstoneLine {
            _kind: IgnoredAny,
            stream: t.stream,
            version: t.version,
            time: t.time,
        }
    }
}

impl RecordLine for TombstoneLine {
    fn record(self, _: &Limits) -> Result<TransferItem, String> {
        Ok(TransferItem::Tombstone(Tombstone {
            stream: checked_name("a stream name", self.stream)?,
            version: counted("version", 0, self.version)?,
            time: exact(self.time)?,
        }))
    }
}

/// A stream line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamLine {
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    stream: String,
    version: i64,
    last_time: DateTime<Utc>,
}

impl RecordLine for StreamLine {
    fn record(self, _: &Limits) -> Result<TransferItem, String> {
        Ok(TransferItem::Stream(StreamInfo {
            stream: checked_name("a stream name", self.stream)?,
            version: counted("version", 0, self.version)?,
            last_time: exact(self.last_time)?,
        }))
    }
}

/// The head line, both ways.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadLine {
    #[serde(rename = "kind", skip_serializing)]
    _kind: IgnoredAny,
    global_position: i64,
}

impl RecordLine for HeadLine {
    fn record(self, _: &Limits) -> Result<TransferItem, String> {
        Ok(TransferItem::Head(counted(
            "global_position",
            0,
            self.global_position,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_body_bytes: 1024,
            max_body_bytes_in_flight: 4096,
            max_batch_events: 1000,
            max_json_depth: 128,
            max_page_size: 1000,
            max_page_bytes: 4096,
            trace: crate::store::TraceLimits {
                max_depth: 10,
                max_events: 10,
            },
            keep_alive: Duration::from_secs(15),
            request_timeout: Duration::from_secs(30),
        }
    }

    /// A line written and read again is the same line: what an export
    /// writes, an import takes.
    #[test]
    fn lines_read_back_as_written() {
        let lines = [
            r#"{"kind":"event","id":"0192b1a4-7c1e-7cc0-9a53-2d1f7c0b9e11","stream":"account-123","type":"Deposited","position":3,"global_position":1187,"data":{"amount": 12345678901234567890, "fee":1.50},"metadata":{"ip":"10.0.0.1"},"causation_id":null,"correlation_id":"order-77","tags":["account:123"],"time":"2026-11-22T10:15:30.123456Z"}"#,
            r#"{"kind":"snapshot","stream":"account-123","version":2,"type":null,"state":[1,"ü"],"time":"2026-11-22T10:15:30.000001Z"}"#,
            r#"{"kind":"checkpoint","consumer":"projector","position":5,"time":"2026-11-22T10:15:30.123456Z"}"#,
            r#"{"kind":"schema","type":"Deposited","schema":{"type":"object"},"version":2,"time":"2026-11-22T10:15:30.123456Z"}"#,
            r#"{"kind":"retention","scope":"category","name":"account","max_age_s":null,"max_count":10}"#,
            r#"{"kind":"tombstone","stream":"gone-1","version":4,"time":"2026-11-22T10:15:30.123456Z"}"#,
            r#"{"kind":"stream","stream":"account-123","version":3,"last_time":"2026-11-22T10:15:30.123456Z"}"#,
            r#"{"kind":"head","global_position":1190}"#,
        ];
        for line in lines {
            let item = parse_line(line.as_bytes(), &limits()).expect(line);
            let mut written = Vec::new();
            write_line(&mut written, item);
            assert_eq!(String::from_utf8(written).unwrap(), format!("{line}\n"));
        }
    }

    #[test]
    fn malformed_lines_are_refused_with_a_reason() {
        let refused = [
            ("[1, 2]", "expected a JSON object"),
            ("not json", "not a record"),
            (r#"{"kind":"party"}"#, "unknown kind"),
            (
                r#"{"kind":"head","global_position":1,"extra":true}"#,
                "unknown field",
            ),
            (r#"{"kind":"head","global_position":"1"}"#, "invalid type"),
            (r#"{"kind":"head"}"#, "missing field"),
            (r#"{"kind":"head","global_position":-1}"#, "from 0"),
            (
                r#"{"kind":"head","global_position":9007199254740992}"#,
                "to 9007199254740991",
            ),
            (
                r#"{"kind":"tombstone","stream":"a b","version":1,"time":"2026-11-22T10:15:30Z"}"#,
                "may not contain",
            ),
            (
                r#"{"kind":"tombstone","stream":"a","version":1,"time":"2026-11-22T10:15:30.1234567Z"}"#,
                "microsecond",
            ),
            (
                r#"{"kind":"retention","scope":"category","name":"a-1","max_age_s":1,"max_count":null}"#,
                "no `-`",
            ),
            (
                r#"{"kind":"retention","scope":"stream","name":"a-1","max_age_s":null,"max_count":null}"#,
                "names max_age_s, max_count or both",
            ),
        ];
        for (line, reason) in refused {
            let error = parse_line(line.as_bytes(), &limits()).unwrap_err();
            assert!(error.contains(reason), "{line}: {error}");
        }
    }
}
