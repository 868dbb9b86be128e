//! Export and import (API.md, Export and import): the store as one sequence
//! of records ([`TransferItem`]) in a fixed order (events in global order,
//! then snapshots, checkpoints, schemas, retention policies, tombstones,
//! streams, and last the head of the log).
//!
//! An export reads each table page by page, every page starting after the
//! last row of the one before (keyset pagination), all within one read
//! transaction: the records agree with each other however long the export
//! takes and whatever is appended meanwhile, and memory holds one page.
//!
//! An import restores the lines an [`Import`] admitted, a chunk at a time,
//! each chunk in one transaction under the store-wide write lock: appends
//! wait for a chunk, not for the whole import, and never see half of one.
//! It restores into an empty store or into one that holds the beginning of
//! the same export (an import cut short, run again). Chunks commit in the
//! export's order, so such a store holds the export's events up to some
//! global position, and records of the later kinds only once it holds all
//! of them. Hence the checks, each made before a chunk writes anything:
//! the store's events up to where the export continues must be exactly the
//! export's (global position, id, stream and position), which for any other
//! store fails at the latest in the first chunk that would write; new
//! events go only into a store that holds nothing an export lists after its
//! events; and once the events are done, the store may hold none past the
//! export's last. Records after the events are upserts (snapshots, which
//! have no key, are skipped when one of the same stream, version and time
//! is stored), so restoring them again changes nothing.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::Serialize;
use sqlx::Transaction;
use uuid::Uuid;

use super::backend::{Conn, SqlBackend, event_columns, fetch_as, to_json};
use super::error::{ImportError, StoreError};
use super::model::{
    Budgeted, Checkpoint, ExportRange, ImportSummary, RecordedEvent, Snapshot, StreamInfo,
    TransferItem, TransferKind,
};
use super::reads::head;
use super::retention::{RetentionPolicy, RetentionTarget, Tombstone};
use super::rows::{
    CheckpointRow, EventKeyRow, EventRow, PolicyRow, PostedSnapshotRow, SchemaRow, StreamRow,
    TombstoneRow,
};
use super::schemas::EventSchema;
use super::sql::{Bind, DecodeRow, Runner, Sql};
use super::writer::signal;
use crate::names;

/// Rows a page of an export reads at most, and lines a chunk of an import
/// restores at most: one transaction stays short whatever the store's size.
const PAGE: usize = 1000;

/// The pages of an export, in its order, each the records of one query. An
/// error ends them: the export is then incomplete (it lacks its head).
pub type ExportPages = BoxStream<'static, Result<Vec<TransferItem>, StoreError>>;

/// Moving a whole store out and back in.
#[async_trait]
pub trait Transfers: Send + Sync {
    /// Begins an export of the store as it is now. An error here means
    /// nothing was read; one later ends the pages.
    async fn export(&self, range: ExportRange) -> Result<ExportPages, StoreError>;
    /// Restores the lines `import` admitted since the last call, in one
    /// transaction. [`ImportError::Invalid`] comes after the lines before
    /// the invalid one were restored; any other error, with none of them.
    /// Feeds are woken when events were written.
    async fn import(&self, import: &mut Import) -> Result<(), ImportError>;
}

#[async_trait]
impl<B: SqlBackend> Transfers for B {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn export(&self, range: ExportRange) -> Result<ExportPages, StoreError> {
        let export = Export::<B> {
            tx: self.begin_read().await?,
            range,
            at: Cursor::Events(range.position.saturating_sub(1)),
        };
        Ok(Box::pin(futures::stream::try_unfold(export, Export::next)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(lines = import.pending.len()))]
    async fn import(&self, import: &mut Import) -> Result<(), ImportError> {
        let lines = std::mem::take(&mut import.pending);
        import.pending_bytes = 0;
        if lines.is_empty() {
            return Ok(());
        }
        // An error rolls the transaction back as it is dropped.
        let mut tx = self.begin_log_write().await?;
        let restored = restore::<B>(&mut tx, import, &lines).await?;
        tx.commit().await.map_err(StoreError::from)?;
        if restored.events {
            signal(&self.parts().changes);
        }
        restored.invalid.map_or(Ok(()), Err)
    }
}

/// An export under way: its read transaction, and where it is.
struct Export<B: SqlBackend> {
    tx: Transaction<'static, B::Db>,
    range: ExportRange,
    at: Cursor,
}

/// Where an export is: the kind of record it reads, and the key of the last
/// one read (each page starts after it).
#[derive(Debug, Clone)]
enum Cursor {
    /// At events, after this global position.
    Events(i64),
    /// At snapshots, after this sequence number (the order of posting).
    Snapshots(i64),
    /// At checkpoints, after this consumer.
    Checkpoints(String),
    /// At schemas, after this event type.
    Schemas(String),
    /// At retention policies, after this scope and name.
    Retention(String, String),
    /// At tombstones, after this stream.
    Tombstones(String),
    /// At streams, after this stream.
    Streams(String),
    /// At the head.
    Head,
    /// Past the end.
    Done,
}

impl Cursor {
    /// The start of the next kind.
    fn following(&self) -> Cursor {
        match self {
            Cursor::Events(_) => Cursor::Snapshots(i64::MIN),
            Cursor::Snapshots(_) => Cursor::Checkpoints(String::new()),
            Cursor::Checkpoints(_) => Cursor::Schemas(String::new()),
            Cursor::Schemas(_) => Cursor::Retention(String::new(), String::new()),
            Cursor::Retention(..) => Cursor::Tombstones(String::new()),
            Cursor::Tombstones(_) => Cursor::Streams(String::new()),
            Cursor::Streams(_) => Cursor::Head,
            Cursor::Head | Cursor::Done => Cursor::Done,
        }
    }
}

/// A record read, with where the export resumes after it.
struct Keyed {
    after: Cursor,
    item: TransferItem,
}

impl<B: SqlBackend> Export<B> {
    /// The next page, or `None` past the head.
    async fn next(mut self) -> Result<Option<(Vec<TransferItem>, Self)>, StoreError> {
        loop {
            let max_bytes = self.range.max_bytes;
            let conn: &mut Conn<B> = &mut self.tx;
            let page = match &self.at {
                Cursor::Done => {
                    self.tx.commit().await?;
                    return Ok(None);
                }
                Cursor::Head => {
                    let head = B::Db::fetch_int(conn, head()).await?.unwrap_or(0);
                    self.at = Cursor::Done;
                    return Ok(Some((vec![TransferItem::Head(head)], self)));
                }
                Cursor::Events(after) => {
                    let sql = events_after::<B>(*after, self.range.until);
                    page::<B, EventRow>(conn, sql, max_bytes, |row| {
                        let event = RecordedEvent::try_from(row)?;
                        Ok(Keyed {
                            after: Cursor::Events(event.global_position),
                            item: TransferItem::Event(event),
                        })
                    })
                    .await?
                }
                Cursor::Snapshots(after) => {
                    let select = "SELECT seq, stream, version, type, state, time AS time_micros \
                                  FROM snapshots";
                    let sql = keyset(select, "seq", *after);
                    page::<B, PostedSnapshotRow>(conn, sql, max_bytes, |row| {
                        Ok(Keyed {
                            after: Cursor::Snapshots(row.seq),
                            item: TransferItem::Snapshot(Snapshot::try_from(row.snapshot)?),
                        })
                    })
                    .await?
                }
                Cursor::Checkpoints(after) => {
                    let select = "SELECT consumer, position, time AS time_micros FROM checkpoints";
                    let key = format!("consumer{}", B::BYTE_ORDER);
                    let sql = keyset(select, &key, after.as_str());
                    page::<B, CheckpointRow>(conn, sql, max_bytes, |row| {
                        let checkpoint = Checkpoint::try_from(row)?;
                        Ok(Keyed {
                            after: Cursor::Checkpoints(checkpoint.consumer.clone()),
                            item: TransferItem::Checkpoint(checkpoint),
                        })
                    })
                    .await?
                }
                Cursor::Schemas(after) => {
                    let sql = schemas_after(after);
                    page::<B, SchemaRow>(conn, sql, max_bytes, |row| {
                        let schema = EventSchema::try_from(row)?;
                        Ok(Keyed {
                            after: Cursor::Schemas(schema.event_type.clone()),
                            item: TransferItem::Schema(schema),
                        })
                    })
                    .await?
                }
                Cursor::Retention(scope, name) => {
                    let sql = retention_after(scope, name);
                    page::<B, PolicyRow>(conn, sql, max_bytes, |row| {
                        let (target, policy) = row.try_into()?;
                        Ok(Keyed {
                            after: Cursor::Retention(
                                target.scope().to_owned(),
                                target.name().to_owned(),
                            ),
                            item: TransferItem::Retention(target, policy),
                        })
                    })
                    .await?
                }
                Cursor::Tombstones(after) => {
                    let select = "SELECT stream, version, time AS time_micros FROM tombstones";
                    let sql = keyset(select, "stream", after.as_str());
                    page::<B, TombstoneRow>(conn, sql, max_bytes, |row| {
                        let tombstone = Tombstone::try_from(row)?;
                        Ok(Keyed {
                            after: Cursor::Tombstones(tombstone.stream.clone()),
                            item: TransferItem::Tombstone(tombstone),
                        })
                    })
                    .await?
                }
                Cursor::Streams(after) => {
                    let select = format!(
                        "SELECT stream, version, {} AS last_time_micros FROM streams",
                        B::micros("last_time")
                    );
                    let sql = keyset(&select, "stream", after.as_str());
                    page::<B, StreamRow>(conn, sql, max_bytes, |row| {
                        let stream = StreamInfo::try_from(row)?;
                        Ok(Keyed {
                            after: Cursor::Streams(stream.stream.clone()),
                            item: TransferItem::Stream(stream),
                        })
                    })
                    .await?
                }
            };
            // A full page, or one cut at the byte budget, may have more after it.
            let more = page.cut || page.items.len() == PAGE;
            self.at = match page.items.last() {
                Some(last) if more => last.after.clone(),
                _ => self.at.following(),
            };
            if !page.items.is_empty() {
                return Ok(Some((
                    page.items.into_iter().map(|k| k.item).collect(),
                    self,
                )));
            }
        }
    }
}

/// A page of records: at most [`PAGE`] rows, stopping once they hold
/// `max_bytes`.
async fn page<B: SqlBackend, R: Send>(
    conn: &mut Conn<B>,
    sql: Sql,
    max_bytes: usize,
    into: fn(R) -> Result<Keyed, StoreError>,
) -> Result<Budgeted<Keyed>, StoreError>
where
    B::Db: DecodeRow<R>,
{
    B::Db::fetch_within(conn, sql, max_bytes, into, |keyed| {
        keyed.item.approximate_size()
    })
    .await
}

/// `select` (a `SELECT … FROM table`) of the rows whose `key` follows
/// `after`, in the order of `key`, a page of them.
fn keyset(select: &str, key: &str, after: impl Into<Bind>) -> Sql {
    let mut sql = Sql::new(&format!("{select} WHERE {key} > "));
    sql.bind(after)
        .push(&format!(" ORDER BY {key} LIMIT "))
        .bind(PAGE as i64);
    sql
}

/// A page of events after a global position (up to `until`, if given).
fn events_after<B: SqlBackend>(after: i64, until: Option<i64>) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT {} FROM events WHERE global_position > ",
        event_columns::<B>()
    ));
    sql.bind(after);
    if let Some(until) = until {
        sql.push(" AND global_position <= ").bind(until);
    }
    sql.push(" ORDER BY global_position LIMIT ")
        .bind(PAGE as i64);
    sql
}

/// A page of retention policies after a scope and name.
fn schemas_after(after: &str) -> Sql {
    let mut sql = Sql::new(
        "SELECT type, schema, version, time AS time_micros FROM event_schemas \
         WHERE schema IS NOT NULL AND type > ",
    );
    sql.bind(after)
        .push(" ORDER BY type LIMIT ")
        .bind(PAGE as i64);
    sql
}

/// A page of retention policies after a scope and name.
fn retention_after(scope: &str, name: &str) -> Sql {
    let mut sql = Sql::new(
        "SELECT scope, name, max_age_s, max_count FROM retention_policies WHERE (scope, name) > (",
    );
    sql.bind(scope)
        .push(", ")
        .bind(name)
        .push(") ORDER BY scope, name LIMIT ")
        .bind(PAGE as i64);
    sql
}

/// An import under way: the lines admitted and not yet restored, what the
/// export's order allows next, and how far the store was found to hold the
/// export already. Lines reach the store only through [`Import::admit`],
/// so every line a chunk restores is valid on its own and in its place.
pub struct Import {
    /// A chunk is full once its lines hold this many bytes.
    budget: usize,
    /// Lines admitted and not yet restored, with their numbers.
    pending: Vec<(u64, TransferItem)>,
    /// The bytes of their text.
    pending_bytes: usize,
    /// The kind of the last line admitted.
    kind: Option<TransferKind>,
    /// The key of the last line admitted, within its kind (scope, name).
    last_key: Option<(String, String)>,
    /// The global position of the last event line admitted (0: none).
    last_event: i64,
    /// The highest checkpoint position admitted: the head must reach it.
    max_checkpoint: i64,
    /// The highest version of a stream or tombstone admitted (-1: none):
    /// the head must lie past it, as a stream at version v had v + 1
    /// events, each at a global position of its own.
    max_version: i64,
    /// The head line's, once admitted: nothing may follow it.
    head: Option<i64>,
    /// What the lines admitted add up to.
    summary: ImportSummary,
    /// The store's events up to this global position are the export's.
    verified: i64,
    /// The store was found to hold nothing an export lists after its
    /// events (checked before the first new event is written).
    tail_checked: bool,
    /// The store was found to hold no event past the export's last
    /// (checked before the first record after the events is written).
    events_closed: bool,
}

impl Import {
    /// An import whose chunks hold at most [`PAGE`] lines and stop at
    /// `budget` bytes.
    pub fn new(budget: usize) -> Import {
        Import {
            budget,
            pending: Vec::new(),
            pending_bytes: 0,
            kind: None,
            last_key: None,
            last_event: 0,
            max_checkpoint: 0,
            max_version: -1,
            head: None,
            summary: ImportSummary::default(),
            verified: 0,
            tail_checked: false,
            events_closed: false,
        }
    }

    /// Admits the next line (its number, its record, the bytes of its text)
    /// if it may follow the lines before it: kinds in the export's order,
    /// events in increasing global order, keys of each other kind in
    /// increasing byte order (each once), an event's position below its
    /// global position, the head last, reaching every event, checkpoint and
    /// stream version. Otherwise says why not.
    pub fn admit(&mut self, line: u64, item: TransferItem, bytes: usize) -> Result<(), String> {
        if let Some(head) = self.head {
            return Err(format!(
                "the head line ({head}) ends an export: nothing follows it"
            ));
        }
        let kind = item.kind();
        match self.kind {
            Some(previous) if kind < previous => {
                return Err(format!(
                    "a line of kind {} after lines of kind {}: an export lists events, \
                     snapshots, checkpoints, schemas, retention policies, tombstones, streams \
                     and the head, in that order",
                    kind.as_str(),
                    previous.as_str()
                ));
            }
            Some(previous) if kind == previous => {}
            _ => self.last_key = None,
        }
        self.kind = Some(kind);
        match &item {
            TransferItem::Event(event) => {
                if event.global_position <= self.last_event {
                    return Err(format!(
                        "global positions must increase from line to line: {} after {}",
                        event.global_position, self.last_event
                    ));
                }
                // Position p is a stream's (p + 1)th event, each of them at
                // a global position of its own, from 1.
                if event.position >= event.global_position {
                    return Err(format!(
                        "position {} cannot be reached by global position {}",
                        event.position, event.global_position
                    ));
                }
                self.last_event = event.global_position;
                self.summary.events += 1;
            }
            TransferItem::Snapshot(_) => self.summary.snapshots += 1,
            TransferItem::Checkpoint(checkpoint) => {
                self.in_order("checkpoints", "", &checkpoint.consumer)?;
                self.max_checkpoint = self.max_checkpoint.max(checkpoint.position);
                self.summary.checkpoints += 1;
            }
            TransferItem::Schema(schema) => {
                self.in_order("schemas", "", &schema.event_type)?;
                self.summary.schemas += 1;
            }
            TransferItem::Retention(target, _) => {
                self.in_order("retention policies", target.scope(), target.name())?;
                self.summary.retention += 1;
            }
            TransferItem::Tombstone(tombstone) => {
                self.in_order("tombstones", "", &tombstone.stream)?;
                self.max_version = self.max_version.max(tombstone.version);
                self.summary.tombstones += 1;
            }
            TransferItem::Stream(stream) => {
                self.in_order("streams", "", &stream.stream)?;
                self.max_version = self.max_version.max(stream.version);
                self.summary.streams += 1;
            }
            TransferItem::Head(head) => {
                if *head < self.last_event {
                    return Err(format!(
                        "the head {head} is below the last event's global position {}",
                        self.last_event
                    ));
                }
                if *head < self.max_checkpoint {
                    return Err(format!(
                        "the head {head} is below a checkpoint's position {}",
                        self.max_checkpoint
                    ));
                }
                if *head <= self.max_version {
                    return Err(format!(
                        "the head {head} is below the global position a stream at version {} \
                         reached",
                        self.max_version
                    ));
                }
                self.head = Some(*head);
                self.summary.head = *head;
            }
        }
        self.pending.push((line, item));
        self.pending_bytes += bytes;
        Ok(())
    }

    /// Checks that a key follows the last one of its kind.
    fn in_order(&mut self, what: &str, scope: &str, name: &str) -> Result<(), String> {
        let key = (scope.to_owned(), name.to_owned());
        if let Some(last) = &self.last_key
            && key <= *last
        {
            return Err(format!(
                "{what} come each once, in byte order of their names: {name:?} after {:?}",
                last.1
            ));
        }
        self.last_key = Some(key);
        Ok(())
    }

    /// Whether the lines admitted make a chunk: time to restore them.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= PAGE || self.pending_bytes >= self.budget
    }

    /// What the import restored, once every line admitted was restored; an
    /// error if the export ended before its head line (it is incomplete).
    pub fn finish(self) -> Result<ImportSummary, String> {
        debug_assert!(self.pending.is_empty(), "every line admitted is restored");
        match self.head {
            Some(_) => Ok(self.summary),
            None => Err(
                "the export ends before its head line, so it is incomplete: the lines it holds \
                 were imported, and importing the whole export again completes the store"
                    .to_owned(),
            ),
        }
    }
}

/// What restoring a chunk did: whether it wrote events, and the invalid
/// line that stopped it after the lines before it were written.
#[derive(Default)]
struct Restored {
    events: bool,
    invalid: Option<ImportError>,
}

/// The records of a run of one kind (`TransferItem::$variant`), with their
/// line numbers.
macro_rules! of {
    ($run:expr, $variant:ident) => {
        $run.iter()
            .filter_map(|(line, item)| match item {
                TransferItem::$variant(record) => Some((*line, record)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
}

/// Restores a chunk's lines in order, kind by kind, within the transaction.
async fn restore<B: SqlBackend>(
    conn: &mut Conn<B>,
    import: &mut Import,
    lines: &[(u64, TransferItem)],
) -> Result<Restored, ImportError> {
    let mut restored = Restored::default();
    for run in lines.chunk_by(|(_, a), (_, b)| a.kind() == b.kind()) {
        let kind = run[0].1.kind();
        if kind != TransferKind::Event && !import.events_closed {
            close_events::<B>(conn, import).await?;
        }
        let invalid = match kind {
            TransferKind::Event => {
                let events = of!(run, Event);
                let (wrote, invalid) = restore_events::<B>(conn, import, &events).await?;
                restored.events |= wrote;
                invalid
            }
            TransferKind::Snapshot => {
                let snapshots = of!(run, Snapshot);
                B::Db::execute(conn, insert_snapshots::<B>(&snapshots)).await?;
                None
            }
            TransferKind::Checkpoint => {
                let checkpoints = of!(run, Checkpoint);
                B::Db::execute(conn, upsert_checkpoints::<B>(&checkpoints)).await?;
                None
            }
            TransferKind::Schema => {
                let schemas = of!(run, Schema);
                B::Db::execute(conn, upsert_schemas::<B>(&schemas)).await?;
                None
            }
            TransferKind::Retention => {
                let policies: Vec<_> = run
                    .iter()
                    .filter_map(|(_, item)| match item {
                        TransferItem::Retention(target, policy) => Some((target, policy)),
                        _ => None,
                    })
                    .collect();
                B::Db::execute(conn, upsert_retention::<B>(&policies)).await?;
                None
            }
            TransferKind::Tombstone => {
                let tombstones = of!(run, Tombstone);
                restore_tombstones::<B>(conn, &tombstones).await?
            }
            TransferKind::Stream => {
                let streams = of!(run, Stream);
                restore_streams::<B>(conn, &streams).await?
            }
            TransferKind::Head => {
                for (_, item) in run {
                    if let TransferItem::Head(head) = item {
                        restore_head::<B>(conn, *head).await?;
                    }
                }
                None
            }
        };
        if invalid.is_some() {
            restored.invalid = invalid;
            break;
        }
    }
    Ok(restored)
}

/// The highest global position of a stored event (NULL: none).
const LAST_EVENT: &str = "SELECT max(global_position) FROM events";

/// Restores a run of event lines: those the store holds already are
/// checked against it, the others written, up to the first that cannot
/// follow. Whether any was written, and that line.
async fn restore_events<B: SqlBackend>(
    conn: &mut Conn<B>,
    import: &mut Import,
    events: &[(u64, &RecordedEvent)],
) -> Result<(bool, Option<ImportError>), ImportError> {
    let Some((_, last_line)) = events.last() else {
        return Ok((false, None));
    };
    let last_stored = B::Db::fetch_int(conn, Sql::new(LAST_EVENT))
        .await?
        .unwrap_or(0);
    let (stored, new) =
        events.split_at(events.partition_point(|(_, e)| e.global_position <= last_stored));
    // Every stored event up to where the export continues must be the
    // export's: up to the store's last when new events follow.
    let upto = match new.is_empty() {
        true => last_line.global_position,
        false => last_stored,
    };
    if upto > import.verified {
        let expected: Vec<EventKeyRow> = stored.iter().map(|(_, e)| key_of(e)).collect();
        let found: Vec<EventKeyRow> =
            B::Db::fetch(conn, event_keys(import.verified, upto, expected.len() + 1)).await?;
        if found != expected {
            return Err(ImportError::Conflict(mismatch(&expected, &found)));
        }
        import.verified = upto;
    }
    import.summary.already_stored += stored.len() as u64;
    if new.is_empty() {
        return Ok((false, None));
    }
    if !import.tail_checked {
        if B::Db::fetch_int(conn, Sql::new(BEYOND_EVENTS)).await? == Some(1) {
            return Err(ImportError::Conflict(
                "the store holds more than the beginning of this export (records an export \
                 lists after its events, or a stream without its last event): import into an \
                 empty store"
                    .into(),
            ));
        }
        import.tail_checked = true;
    }
    let ids: Vec<Uuid> = new.iter().map(|(_, e)| e.id).collect();
    let taken: HashSet<Uuid> = B::Db::fetch::<EventKeyRow>(conn, events_with_ids(&ids))
        .await?
        .into_iter()
        .map(|row| row.id)
        .collect();
    let mut names: Vec<&str> = new.iter().map(|(_, e)| e.stream.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut versions: HashMap<String, i64> =
        fetch_as::<B, StreamRow, StreamInfo>(conn, streams_named::<B>(&names))
            .await?
            .into_iter()
            .map(|s| (s.stream, s.version))
            .collect();
    let mut seen = HashSet::new();
    let mut invalid = None;
    let mut valid = new.len();
    for (index, (line, event)) in new.iter().enumerate() {
        let version = versions.get(&event.stream).copied();
        let problem = if taken.contains(&event.id) || !seen.insert(event.id) {
            Some(format!("event id {} appears twice in the export", event.id))
        } else if version.is_some_and(|v| event.position != v + 1) {
            Some(format!(
                "position {} does not continue stream {} (at version {})",
                event.position,
                event.stream,
                version.unwrap_or(-1)
            ))
        } else {
            None
        };
        if let Some(detail) = problem {
            (valid, invalid) = (
                index,
                Some(ImportError::Invalid {
                    line: *line,
                    detail,
                }),
            );
            break;
        }
        versions.insert(event.stream.clone(), event.position);
    }
    let written = &new[..valid];
    if let Some((_, last)) = written.last() {
        B::execute_all(conn, insert_events::<B>(written)).await?;
        import.verified = last.global_position;
    }
    Ok((!written.is_empty(), invalid))
}

/// Checks, before the first record after the events is written, that the
/// store holds no event past the export's last.
async fn close_events<B: SqlBackend>(
    conn: &mut Conn<B>,
    import: &mut Import,
) -> Result<(), ImportError> {
    let last = B::Db::fetch_int(conn, Sql::new(LAST_EVENT))
        .await?
        .unwrap_or(0);
    if last > import.verified {
        return Err(ImportError::Conflict(format!(
            "the store holds events past this export's last (up to global position {last}): \
             it is not the beginning of this export"
        )));
    }
    import.events_closed = true;
    Ok(())
}

/// Whether the store holds anything an export lists only after its events,
/// or a stream whose version is not the position of a stored event of it:
/// a store in the middle of an import's events holds neither.
const BEYOND_EVENTS: &str = "SELECT CAST(CASE WHEN \
    EXISTS (SELECT 1 FROM snapshots) OR EXISTS (SELECT 1 FROM checkpoints) \
    OR EXISTS (SELECT 1 FROM event_schemas) OR EXISTS (SELECT 1 FROM retention_policies) \
    OR EXISTS (SELECT 1 FROM tombstones) OR EXISTS (SELECT 1 FROM log_head) \
    OR EXISTS (SELECT 1 FROM streams AS s WHERE NOT EXISTS (SELECT 1 FROM events AS e \
    WHERE e.stream = s.stream AND e.position = s.version)) \
    THEN 1 ELSE 0 END AS bigint)";

/// An event line as the store's rows would hold it.
fn key_of(event: &RecordedEvent) -> EventKeyRow {
    EventKeyRow {
        global_position: event.global_position,
        id: event.id,
        stream: event.stream.clone(),
        position: event.position,
    }
}

/// Where the store's events and the export's first differ, in words.
fn mismatch(expected: &[EventKeyRow], found: &[EventKeyRow]) -> String {
    let at = expected
        .iter()
        .zip(found)
        .position(|(e, f)| e != f)
        .unwrap_or(expected.len().min(found.len()));
    let describe = |row: Option<&EventKeyRow>| {
        row.map_or("no event".to_owned(), |r| {
            format!(
                "event {} ({} at {}) at global position {}",
                r.id, r.stream, r.position, r.global_position
            )
        })
    };
    format!(
        "the store is neither empty nor the beginning of this export: where the export has \
         {}, the store has {}",
        describe(expected.get(at)),
        describe(found.get(at))
    )
}

/// The store's events in (`after`, `upto`] in global order, at most `limit`.
fn event_keys(after: i64, upto: i64, limit: usize) -> Sql {
    let mut sql = Sql::new(
        "SELECT global_position, id, stream, position FROM events WHERE global_position > ",
    );
    sql.bind(after)
        .push(" AND global_position <= ")
        .bind(upto)
        .push(" ORDER BY global_position LIMIT ")
        .bind(limit as i64);
    sql
}

/// The stored events with these ids.
fn events_with_ids(ids: &[Uuid]) -> Sql {
    let mut sql = Sql::new("SELECT global_position, id, stream, position FROM events WHERE id IN ");
    sql.bind_list(ids);
    sql
}

/// The rows of these streams.
fn streams_named<B: SqlBackend>(names: &[&str]) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT stream, version, {} AS last_time_micros FROM streams WHERE stream IN ",
        B::micros("last_time")
    ));
    sql.bind_list(names);
    sql
}

/// The names of these streams the store holds in `table` (`streams` or
/// `tombstones`).
fn names_in(table: &str, names: &[&str]) -> Sql {
    let mut sql = Sql::new(&format!("SELECT stream FROM {table} WHERE stream IN "));
    sql.bind_list(names);
    sql
}

/// An event as [`SqlBackend::json_rows`] reads it.
#[derive(Serialize)]
struct EventInsert<'a> {
    global_position: i64,
    id: Uuid,
    stream: &'a str,
    position: i64,
    category: &'a str,
    cardinal_hash: i64,
    #[serde(rename = "type")]
    event_type: &'a str,
    data: &'a str,
    metadata: Option<&'a str>,
    causation_id: Option<Uuid>,
    correlation_id: Option<&'a str>,
    tags: Option<String>,
    time: i64,
}

impl EventInsert<'_> {
    /// Its columns, as [`SqlBackend::json_rows`] reads them.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("global_position", "bigint"),
        ("id", "uuid"),
        ("stream", "text"),
        ("position", "bigint"),
        ("category", "text"),
        ("cardinal_hash", "bigint"),
        ("type", "text"),
        ("data", "text"),
        ("metadata", "text"),
        ("causation_id", "uuid"),
        ("correlation_id", "text"),
        ("tags", "text"),
        ("time", "bigint"),
    ];
}

/// A tag of an event as [`SqlBackend::json_rows`] reads it.
#[derive(Serialize)]
struct TagInsert<'a> {
    tag: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    global_position: i64,
}

impl TagInsert<'_> {
    /// Its columns, as [`SqlBackend::json_rows`] reads them.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("tag", "text"),
        ("type", "text"),
        ("global_position", "bigint"),
    ];
}

/// A stream's version and last commit as [`SqlBackend::json_rows`] reads
/// them.
#[derive(Serialize)]
struct StreamUpsert<'a> {
    stream: &'a str,
    version: i64,
    last_time: i64,
}

impl StreamUpsert<'_> {
    /// Its columns, as [`SqlBackend::json_rows`] reads them.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("stream", "text"),
        ("version", "bigint"),
        ("last_time", "bigint"),
    ];
}

/// Writes events as the writer would have: their rows, their tags' rows,
/// and their streams' versions and last commits.
fn insert_events<B: SqlBackend>(events: &[(u64, &RecordedEvent)]) -> Vec<Sql> {
    let rows: Vec<EventInsert> = events
        .iter()
        .map(|(_, e)| EventInsert {
            global_position: e.global_position,
            id: e.id,
            stream: &e.stream,
            position: e.position,
            category: names::category(&e.stream),
            cardinal_hash: names::cardinal_hash(&e.stream),
            event_type: &e.event_type,
            data: e.data.get(),
            metadata: e.metadata.as_deref().map(|m| m.get()),
            causation_id: e.causation_id,
            correlation_id: e.correlation_id.as_deref(),
            tags: super::backend::tags_column(&e.tags),
            time: e.time.timestamp_micros(),
        })
        .collect();
    let mut sql = Sql::new(&format!(
        "INSERT INTO events (global_position, id, stream, position, category, cardinal_hash, \
         type, data, metadata, causation_id, correlation_id, tags, time) \
         SELECT r.global_position, r.id, r.stream, r.position, r.category, r.cardinal_hash, \
         r.type, r.data, r.metadata, r.causation_id, r.correlation_id, r.tags, {} FROM ",
        B::timestamp("r.time")
    ));
    B::json_rows(&mut sql, to_json(&rows), EventInsert::COLUMNS);
    let mut writes = vec![sql];
    let tags: Vec<TagInsert> = events
        .iter()
        .flat_map(|(_, e)| {
            e.tags.iter().map(|tag| TagInsert {
                tag,
                event_type: &e.event_type,
                global_position: e.global_position,
            })
        })
        .collect();
    if !tags.is_empty() {
        let mut sql = Sql::new(
            "INSERT INTO event_tags (tag, type, global_position) \
             SELECT r.tag, r.type, r.global_position FROM ",
        );
        B::json_rows(&mut sql, to_json(&tags), TagInsert::COLUMNS);
        writes.push(sql);
    }
    // Each stream once: its last event here.
    let mut last: HashMap<&str, &RecordedEvent> = HashMap::new();
    for (_, event) in events {
        last.insert(&event.stream, event);
    }
    let streams: Vec<StreamUpsert> = last
        .into_values()
        .map(|e| StreamUpsert {
            stream: &e.stream,
            version: e.position,
            last_time: e.time.timestamp_micros(),
        })
        .collect();
    writes.push(upsert_streams::<B>(&streams));
    writes
}

/// Sets streams' versions and last commits.
fn upsert_streams<B: SqlBackend>(streams: &[StreamUpsert]) -> Sql {
    let mut sql = Sql::new(&format!(
        "INSERT INTO streams (stream, version, last_time) SELECT r.stream, r.version, {} FROM ",
        B::timestamp("r.last_time")
    ));
    B::json_rows(&mut sql, to_json(streams), StreamUpsert::COLUMNS);
    // `WHERE true` tells SQLite's parser the `ON` is no join's.
    sql.push(
        " WHERE true ON CONFLICT (stream) DO UPDATE \
         SET version = excluded.version, last_time = excluded.last_time",
    );
    sql
}

/// A snapshot as [`SqlBackend::json_rows`] reads it, numbered in the
/// export's order.
#[derive(Serialize)]
struct SnapshotInsert<'a> {
    n: usize,
    stream: &'a str,
    version: i64,
    #[serde(rename = "type")]
    snapshot_type: Option<&'a str>,
    state: &'a str,
    time: i64,
}

impl SnapshotInsert<'_> {
    /// Its columns, as [`SqlBackend::json_rows`] reads them.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("n", "bigint"),
        ("stream", "text"),
        ("version", "bigint"),
        ("type", "text"),
        ("state", "text"),
        ("time", "bigint"),
    ];
}

/// Stores snapshots in the export's order (which is the order they were
/// posted, so of equal versions the last posted is read), but for any
/// of the same stream, version and time stored already.
fn insert_snapshots<B: SqlBackend>(snapshots: &[(u64, &Snapshot)]) -> Sql {
    let rows: Vec<SnapshotInsert> = snapshots
        .iter()
        .enumerate()
        .map(|(n, (_, s))| SnapshotInsert {
            n,
            stream: &s.stream,
            version: s.version,
            snapshot_type: s.snapshot_type.as_deref(),
            state: s.state.get(),
            time: s.time.timestamp_micros(),
        })
        .collect();
    let mut sql = Sql::new(
        "INSERT INTO snapshots (stream, version, type, state, time) \
         SELECT r.stream, r.version, r.type, r.state, r.time FROM ",
    );
    B::json_rows(&mut sql, to_json(&rows), SnapshotInsert::COLUMNS);
    sql.push(
        " WHERE NOT EXISTS (SELECT 1 FROM snapshots AS s WHERE s.stream = r.stream \
         AND s.version = r.version AND s.time = r.time) ORDER BY r.n",
    );
    sql
}

/// A checkpoint as [`SqlBackend::json_rows`] reads it.
#[derive(Serialize)]
struct CheckpointUpsert<'a> {
    consumer: &'a str,
    position: i64,
    time: i64,
}

impl CheckpointUpsert<'_> {
    /// Its columns, as [`SqlBackend::json_rows`] reads them.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("consumer", "text"),
        ("position", "bigint"),
        ("time", "bigint"),
    ];
}

/// Sets checkpoints.
fn upsert_checkpoints<B: SqlBackend>(checkpoints: &[(u64, &Checkpoint)]) -> Sql {
    let rows: Vec<CheckpointUpsert> = checkpoints
        .iter()
        .map(|(_, c)| CheckpointUpsert {
            consumer: &c.consumer,
            position: c.position,
            time: c.time.timestamp_micros(),
        })
        .collect();
    let mut sql = Sql::new(
        "INSERT INTO checkpoints (consumer, position, time) \
         SELECT r.consumer, r.position, r.time FROM ",
    );
    B::json_rows(&mut sql, to_json(&rows), CheckpointUpsert::COLUMNS);
    sql.push(
        " WHERE true ON CONFLICT (consumer) DO UPDATE \
         SET position = excluded.position, time = excluded.time",
    );
    sql
}

/// A schema as [`SqlBackend::json_rows`] reads it.
#[derive(Serialize)]
struct SchemaUpsert<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    schema: &'a str,
    version: i64,
    time: i64,
}

impl SchemaUpsert<'_> {
    /// Its columns, as [`SqlBackend::json_rows`] reads them.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("type", "text"),
        ("schema", "text"),
        ("version", "bigint"),
        ("time", "bigint"),
    ];
}

/// Sets event schemas.
fn upsert_schemas<B: SqlBackend>(schemas: &[(u64, &EventSchema)]) -> Sql {
    let rows: Vec<SchemaUpsert> = schemas
        .iter()
        .map(|(_, s)| SchemaUpsert {
            event_type: &s.event_type,
            schema: s.schema.get(),
            version: s.version,
            time: s.time.timestamp_micros(),
        })
        .collect();
    let mut sql = Sql::new(
        "INSERT INTO event_schemas (type, schema, version, time) \
         SELECT r.type, r.schema, r.version, r.time FROM ",
    );
    B::json_rows(&mut sql, to_json(&rows), SchemaUpsert::COLUMNS);
    sql.push(
        " WHERE true ON CONFLICT (type) DO UPDATE \
         SET schema = excluded.schema, version = excluded.version, time = excluded.time",
    );
    sql
}

/// A retention policy as [`SqlBackend::json_rows`] reads it.
#[derive(Serialize)]
struct RetentionUpsert<'a> {
    scope: &'static str,
    name: &'a str,
    max_age_s: Option<i64>,
    max_count: Option<i64>,
}

impl RetentionUpsert<'_> {
    /// Its columns, as [`SqlBackend::json_rows`] reads them.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("scope", "text"),
        ("name", "text"),
        ("max_age_s", "bigint"),
        ("max_count", "bigint"),
    ];
}

/// Sets retention policies.
fn upsert_retention<B: SqlBackend>(policies: &[(&RetentionTarget, &RetentionPolicy)]) -> Sql {
    let rows: Vec<RetentionUpsert> = policies
        .iter()
        .map(|(target, policy)| RetentionUpsert {
            scope: target.scope(),
            name: target.name(),
            max_age_s: policy.max_age_s(),
            max_count: policy.max_count(),
        })
        .collect();
    let mut sql = Sql::new(
        "INSERT INTO retention_policies (scope, name, max_age_s, max_count) \
         SELECT r.scope, r.name, r.max_age_s, r.max_count FROM ",
    );
    B::json_rows(&mut sql, to_json(&rows), RetentionUpsert::COLUMNS);
    sql.push(
        " WHERE true ON CONFLICT (scope, name) DO UPDATE \
         SET max_age_s = excluded.max_age_s, max_count = excluded.max_count",
    );
    sql
}

/// A tombstone as [`SqlBackend::json_rows`] reads it.
#[derive(Serialize)]
struct TombstoneUpsert<'a> {
    stream: &'a str,
    version: i64,
    time: i64,
}

impl TombstoneUpsert<'_> {
    /// Its columns, as [`SqlBackend::json_rows`] reads them.
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("stream", "text"),
        ("version", "bigint"),
        ("time", "bigint"),
    ];
}

/// Restores tombstones up to the first of a stream the store has a version
/// of (a deleted stream has none); that line, if any.
async fn restore_tombstones<B: SqlBackend>(
    conn: &mut Conn<B>,
    tombstones: &[(u64, &Tombstone)],
) -> Result<Option<ImportError>, ImportError> {
    let names: Vec<&str> = tombstones.iter().map(|(_, t)| t.stream.as_str()).collect();
    let live: HashSet<String> = B::Db::fetch_text(conn, names_in("streams", &names))
        .await?
        .into_iter()
        .collect();
    let valid = tombstones
        .iter()
        .position(|(_, t)| live.contains(&t.stream))
        .unwrap_or(tombstones.len());
    if valid > 0 {
        let rows: Vec<TombstoneUpsert> = tombstones[..valid]
            .iter()
            .map(|(_, t)| TombstoneUpsert {
                stream: &t.stream,
                version: t.version,
                time: t.time.timestamp_micros(),
            })
            .collect();
        let mut sql = Sql::new(
            "INSERT INTO tombstones (stream, version, time) \
             SELECT r.stream, r.version, r.time FROM ",
        );
        B::json_rows(&mut sql, to_json(&rows), TombstoneUpsert::COLUMNS);
        sql.push(
            " WHERE true ON CONFLICT (stream) DO UPDATE \
             SET version = excluded.version, time = excluded.time",
        );
        B::Db::execute(conn, sql).await?;
    }
    Ok(tombstones.get(valid).map(|(line, t)| ImportError::Invalid {
        line: *line,
        detail: format!(
            "stream {} has events or a version here: a deleted stream has neither",
            t.stream
        ),
    }))
}

/// Restores streams' versions and last commits up to the first that
/// cannot be: of a deleted stream, or below the position its events
/// reach; that line, if any.
async fn restore_streams<B: SqlBackend>(
    conn: &mut Conn<B>,
    streams: &[(u64, &StreamInfo)],
) -> Result<Option<ImportError>, ImportError> {
    let names: Vec<&str> = streams.iter().map(|(_, s)| s.stream.as_str()).collect();
    let deleted: HashSet<String> = B::Db::fetch_text(conn, names_in("tombstones", &names))
        .await?
        .into_iter()
        .collect();
    let reached: HashMap<String, i64> =
        fetch_as::<B, StreamRow, StreamInfo>(conn, streams_named::<B>(&names))
            .await?
            .into_iter()
            .map(|s| (s.stream, s.version))
            .collect();
    let mut invalid = None;
    let mut valid = streams.len();
    for (index, (line, stream)) in streams.iter().enumerate() {
        let detail = if deleted.contains(&stream.stream) {
            Some(format!(
                "stream {} has a tombstone: a deleted stream has no version",
                stream.stream
            ))
        } else {
            reached
                .get(&stream.stream)
                .filter(|reached| **reached > stream.version)
                .map(|reached| {
                    format!(
                        "stream {}'s events reach position {reached}, past its version {}",
                        stream.stream, stream.version
                    )
                })
        };
        if let Some(detail) = detail {
            (valid, invalid) = (
                index,
                Some(ImportError::Invalid {
                    line: *line,
                    detail,
                }),
            );
            break;
        }
    }
    if valid > 0 {
        let rows: Vec<StreamUpsert> = streams[..valid]
            .iter()
            .map(|(_, s)| StreamUpsert {
                stream: &s.stream,
                version: s.version,
                last_time: s.last_time.timestamp_micros(),
            })
            .collect();
        B::Db::execute(conn, upsert_streams::<B>(&rows)).await?;
    }
    Ok(invalid)
}

/// Restores the head: past the last event, it is kept in `log_head`, as
/// erasure keeps it. A store whose head is already past it holds more than
/// this export.
async fn restore_head<B: SqlBackend>(
    conn: &mut Conn<B>,
    head_line: i64,
) -> Result<(), ImportError> {
    let stored = B::Db::fetch_int(conn, head()).await?.unwrap_or(0);
    if stored > head_line {
        return Err(ImportError::Conflict(format!(
            "the store's head ({stored}) is past this export's ({head_line}): it is not the \
             beginning of this export"
        )));
    }
    let last = B::Db::fetch_int(conn, Sql::new(LAST_EVENT))
        .await?
        .unwrap_or(0);
    if head_line > last {
        let mut sql = Sql::new("INSERT INTO log_head (singleton, global_position) VALUES (true, ");
        sql.bind(head_line).push(
            ") ON CONFLICT (singleton) DO UPDATE SET global_position = excluded.global_position",
        );
        B::Db::execute(conn, sql).await?;
    }
    Ok(())
}

/// The read statements of this module that grow with the store, named,
/// with typical arguments. (The export's pages of the other tables follow
/// their primary keys too; checkpoints are sorted byte by byte where the
/// database's collation may not be, which their key cannot serve.)
pub(super) fn statements<B: SqlBackend>() -> Vec<(&'static str, Sql)> {
    vec![
        ("export: events", events_after::<B>(0, Some(1000))),
        ("import: event keys", event_keys(0, 1000, 1001)),
        ("import: events by id", events_with_ids(&[Uuid::nil()])),
        ("import: streams", streams_named::<B>(&["s-1"])),
    ]
}
