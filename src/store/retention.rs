//! Retention and deletion (API.md, Retention and deletion): policies per
//! stream and per category, the sweep that applies them, truncation, and
//! deletion of streams behind tombstones.
//!
//! Erasure deletes rows: the events, their tag rows, their places in
//! subscriptions and the snapshots that only summarise erased events. It
//! runs in transactions of at most [`ERASE_BATCH`] events under the
//! store-wide write lock, so that it never holds appends up for long and
//! no batch of appends is judged against a half-done erasure. The head of
//! the log survives its event in `log_head`.

use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::backend::{Conn, SqlBackend, connection, fetch_as, now_micros};
use super::error::StoreError;
use super::rows::{ErasableRow, PolicyRow, TombstoneRow};
use super::sql::{Runner, Sql};
use super::writer::signal;

/// Most events one erasing transaction removes.
pub const ERASE_BATCH: i64 = 500;

/// How many times as long as a batch took the sweep waits before its next:
/// it holds the write lock at most a tenth of the time, which keeps appends
/// within a few percent of their pace while it erases (bench/retention.sh),
/// and still erases some 100,000 events a minute on a small machine.
const SWEEP_REST: u32 = 9;

/// What a retention policy applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionTarget {
    /// One stream (its policy wins over its category's).
    Stream(String),
    /// Every stream of a category without a policy of its own.
    Category(String),
}

impl RetentionTarget {
    /// The target a scope (`stream` or `category`) and a name make.
    pub fn parse(scope: &str, name: String) -> Option<Self> {
        match scope {
            "stream" => Some(RetentionTarget::Stream(name)),
            "category" => Some(RetentionTarget::Category(name)),
            _ => None,
        }
    }

    /// What it is: `stream` or `category`.
    pub fn scope(&self) -> &'static str {
        match self {
            RetentionTarget::Stream(_) => "stream",
            RetentionTarget::Category(_) => "category",
        }
    }

    /// The stream's or category's name.
    pub fn name(&self) -> &str {
        match self {
            RetentionTarget::Stream(name) | RetentionTarget::Category(name) => name,
        }
    }
}

/// How long a stream's events are kept: at least one bound, each positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    max_age_s: Option<i64>,
    max_count: Option<i64>,
}

/// The oldest age a policy may name: its microseconds must fit in 64 bits.
const MAX_AGE_S: i64 = i64::MAX / 1_000_000;

impl RetentionPolicy {
    /// A policy keeping events younger than `max_age_s` seconds, and only
    /// the newest `max_count` of each stream.
    pub fn new(max_age_s: Option<i64>, max_count: Option<i64>) -> Result<Self, String> {
        if max_age_s.is_none() && max_count.is_none() {
            return Err("a policy names max_age_s, max_count or both".into());
        }
        if let Some(age) = max_age_s
            && !(1..=MAX_AGE_S).contains(&age)
        {
            return Err(format!("max_age_s must be between 1 and {MAX_AGE_S}"));
        }
        if max_count.is_some_and(|count| count < 1) {
            return Err("max_count must be at least 1".into());
        }
        Ok(RetentionPolicy {
            max_age_s,
            max_count,
        })
    }

    /// Events older than this many seconds are erased.
    pub fn max_age_s(&self) -> Option<i64> {
        self.max_age_s
    }

    /// Only this many of a stream's newest events are kept.
    pub fn max_count(&self) -> Option<i64> {
        self.max_count
    }
}

/// A deleted stream's name, kept so that it answers `410` for good.
#[derive(Debug, Clone)]
pub struct Tombstone {
    /// The stream.
    pub stream: String,
    /// The version it had when deleted.
    pub version: i64,
    /// When it was deleted.
    pub time: DateTime<Utc>,
}

/// What an erasure of a stream did.
#[derive(Debug, Clone, Copy)]
pub struct Erased {
    /// The stream's version, unchanged by the erasure.
    pub version: i64,
    /// How many events it erased.
    pub erased: u64,
}

/// Why an erasure was refused; nothing was erased.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The stream never had an event.
    #[error("stream {0} does not exist")]
    NotFound(String),
    /// The stream was deleted.
    #[error("stream {0} was deleted")]
    Deleted(String),
    /// Truncation beyond the end of the stream.
    #[error("before ({before}) is beyond the stream's version + 1 ({limit})")]
    BeyondVersion {
        /// What was asked.
        before: i64,
        /// The stream's version + 1.
        limit: i64,
    },
    /// The store failed (erasure may have begun: a retry continues it).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Policies, erasure and tombstones.
#[async_trait]
pub trait Retention: Send + Sync {
    /// Stores a policy; `true` when the target had none.
    async fn put_retention(
        &self,
        target: &RetentionTarget,
        policy: RetentionPolicy,
    ) -> Result<bool, StoreError>;
    /// A target's policy.
    async fn retention(
        &self,
        target: &RetentionTarget,
    ) -> Result<Option<RetentionPolicy>, StoreError>;
    /// Deletes a target's policy; `false` when it had none.
    async fn delete_retention(&self, target: &RetentionTarget) -> Result<bool, StoreError>;
    /// Erases a stream's events at positions below `before`.
    async fn truncate(&self, stream: &str, before: i64) -> Result<Erased, EraseError>;
    /// Erases a stream's events and snapshots, and leaves a tombstone.
    async fn delete_stream(&self, stream: &str) -> Result<Erased, EraseError>;
    /// A deleted stream's tombstone.
    async fn tombstone(&self, stream: &str) -> Result<Option<Tombstone>, StoreError>;
    /// Erases what every policy says is due at `now`; how many events.
    async fn sweep(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Changes after every stream deletion by this process and, where the
    /// backend can tell, by others: feeds on a stream look for its
    /// tombstone then.
    fn deletions(&self) -> watch::Receiver<u64>;
}

#[async_trait]
impl<B: SqlBackend> Retention for B {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn put_retention(
        &self,
        target: &RetentionTarget,
        policy: RetentionPolicy,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let existing: Vec<(RetentionTarget, RetentionPolicy)> =
            fetch_as::<B, PolicyRow, _>(&mut tx, policies(Some(target))).await?;
        let mut sql =
            Sql::new("INSERT INTO retention_policies (scope, name, max_age_s, max_count) VALUES (");
        sql.bind(target.scope())
            .push(", ")
            .bind(target.name())
            .push(", ")
            .bind(policy.max_age_s)
            .push(", ")
            .bind(policy.max_count)
            .push(
                ") ON CONFLICT (scope, name) DO UPDATE \
                 SET max_age_s = excluded.max_age_s, max_count = excluded.max_count",
            );
        B::Db::execute(&mut tx, sql).await?;
        tx.commit().await?;
        Ok(existing.is_empty())
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn retention(
        &self,
        target: &RetentionTarget,
    ) -> Result<Option<RetentionPolicy>, StoreError> {
        let mut conn = connection(self).await?;
        let found: Vec<(RetentionTarget, RetentionPolicy)> =
            fetch_as::<B, PolicyRow, _>(&mut conn, policies(Some(target))).await?;
        Ok(found.into_iter().next().map(|(_, policy)| policy))
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn delete_retention(&self, target: &RetentionTarget) -> Result<bool, StoreError> {
        let mut sql = Sql::new("DELETE FROM retention_policies WHERE scope = ");
        sql.bind(target.scope())
            .push(" AND name = ")
            .bind(target.name());
        let mut conn = connection(self).await?;
        Ok(B::Db::execute(&mut conn, sql).await? > 0)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn truncate(&self, stream: &str, before: i64) -> Result<Erased, EraseError> {
        let version = live_version::<B>(&mut *connection(self).await?, stream).await?;
        if before > version + 1 {
            return Err(EraseError::BeyondVersion {
                before,
                limit: version + 1,
            });
        }
        let erased = erase_before(self, stream, before).await?;
        Ok(Erased { version, erased })
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn delete_stream(&self, stream: &str) -> Result<Erased, EraseError> {
        let version = live_version::<B>(&mut *connection(self).await?, stream).await?;
        // Most of the stream goes in bounded batches; the last transaction
        // takes what was appended meanwhile with the tombstone, so that from
        // its commit on the name answers 410 and holds nothing.
        let mut erased = erase_before(self, stream, version + 1).await?;
        let mut tx = self.begin_log_write().await?;
        let version = live_version::<B>(&mut tx, stream).await?;
        let rest: Vec<ErasableRow> =
            B::Db::fetch(&mut tx, stream_events_before(stream, i64::MAX)).await?;
        erased += erase::<B>(&mut tx, &rest).await?;
        let mut sql = Sql::new("INSERT INTO tombstones (stream, version, time) VALUES (");
        sql.bind(stream)
            .push(", ")
            .bind(version)
            .push(", ")
            .bind(now_micros().timestamp_micros())
            .push(")");
        let mut gone = Sql::new("DELETE FROM streams WHERE stream = ");
        gone.bind(stream);
        let mut snapshots = Sql::new("DELETE FROM snapshots WHERE stream = ");
        snapshots.bind(stream);
        let mut policy =
            Sql::new("DELETE FROM retention_policies WHERE scope = 'stream' AND name = ");
        policy.bind(stream);
        for write in [sql, gone, snapshots, policy] {
            B::Db::execute(&mut tx, write).await?;
        }
        B::announce_deletion(&mut tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        signal(&self.parts().deletions);
        Ok(Erased { version, erased })
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn tombstone(&self, stream: &str) -> Result<Option<Tombstone>, StoreError> {
        let mut conn = connection(self).await?;
        Ok(fetch_as::<B, TombstoneRow, _>(&mut conn, tombstone(stream))
            .await?
            .pop())
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn sweep(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let all =
            fetch_as::<B, PolicyRow, _>(&mut *connection(self).await?, policies(None)).await?;
        let mut erased = 0;
        for (target, policy) in all {
            loop {
                let began = Instant::now();
                let mut tx = self.begin_log_write().await?;
                let due = expired::<B>(&target, policy, now.timestamp_micros());
                let rows: Vec<ErasableRow> = B::Db::fetch(&mut tx, due).await?;
                let count = erase::<B>(&mut tx, &rows).await?;
                tx.commit().await?;
                erased += count;
                if count < ERASE_BATCH as u64 {
                    break;
                }
                // Background work: rest, so that appends have the write
                // lock and the machine most of the time.
                tokio::time::sleep(began.elapsed() * SWEEP_REST).await;
            }
        }
        Ok(erased)
    }

    fn deletions(&self) -> watch::Receiver<u64> {
        self.parts().deletions.subscribe()
    }
}

/// A stream's version, refusing one that never existed or was deleted.
async fn live_version<B: SqlBackend>(conn: &mut Conn<B>, stream: &str) -> Result<i64, EraseError> {
    if let Some(version) = B::Db::fetch_int(conn, super::reads::stream_version(stream)).await? {
        return Ok(version);
    }
    if B::Db::fetch_int(conn, tombstone_version(stream))
        .await?
        .is_some()
    {
        return Err(EraseError::Deleted(stream.to_owned()));
    }
    Err(EraseError::NotFound(stream.to_owned()))
}

/// Erases a stream's events below `before`, a bounded batch per
/// transaction; how many.
async fn erase_before<B: SqlBackend>(
    backend: &B,
    stream: &str,
    before: i64,
) -> Result<u64, StoreError> {
    let mut erased = 0;
    loop {
        let mut tx = backend.begin_log_write().await?;
        let rows: Vec<ErasableRow> =
            B::Db::fetch(&mut tx, stream_events_before(stream, before)).await?;
        let count = erase::<B>(&mut tx, &rows).await?;
        tx.commit().await?;
        erased += count;
        if count < ERASE_BATCH as u64 {
            return Ok(erased);
        }
        tokio::task::yield_now().await;
    }
}

/// Erases events (at most [`ERASE_BATCH`], read in the same transaction):
/// their rows, tag rows and places in subscriptions, and the snapshots of
/// their streams that only summarise erased events, keeping the head of the
/// log. How many.
async fn erase<B: SqlBackend>(conn: &mut Conn<B>, rows: &[ErasableRow]) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let positions: Vec<i64> = rows.iter().map(|row| row.global_position).collect();
    let head = Sql::new(
        "INSERT INTO log_head (singleton, global_position) \
         SELECT true, max(global_position) FROM events WHERE true \
         ON CONFLICT (singleton) DO UPDATE SET global_position = CASE \
         WHEN excluded.global_position > log_head.global_position \
         THEN excluded.global_position ELSE log_head.global_position END",
    );
    let mut writes = vec![head];
    let mut tags = Vec::new();
    for row in rows {
        for tag in row.tags()? {
            tags.push(TagOf {
                tag,
                global_position: row.global_position,
            });
        }
    }
    if !tags.is_empty() {
        let mut sql = Sql::new(
            "DELETE FROM event_tags WHERE (tag, global_position) IN \
             (SELECT r.tag, r.global_position FROM ",
        );
        let json = serde_json::to_string(&tags).expect("tags serialise");
        B::json_rows(&mut sql, json, TagOf::COLUMNS);
        sql.push(")");
        writes.push(sql);
    }
    let mut subscribed = Sql::new(
        "DELETE FROM subscription_events \
         WHERE subscription IN (SELECT name FROM subscriptions) AND global_position IN ",
    );
    subscribed.bind_list(&positions);
    writes.push(subscribed);
    let mut events = Sql::new("DELETE FROM events WHERE global_position IN ");
    events.bind_list(&positions);
    let mut streams: Vec<&str> = rows.iter().map(|row| row.stream.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    for write in writes {
        B::Db::execute(conn, write).await?;
    }
    let erased = B::Db::execute(conn, events).await?;
    for stream in streams {
        B::Db::execute(conn, stale_snapshots(stream)).await?;
    }
    Ok(erased)
}

/// A tag row of an erased event, as a row of [`SqlBackend::json_rows`].
#[derive(serde::Serialize)]
struct TagOf {
    tag: String,
    global_position: i64,
}

impl TagOf {
    /// Its columns, as [`SqlBackend::json_rows`] reads them.
    const COLUMNS: &'static [(&'static str, &'static str)] =
        &[("tag", "text"), ("global_position", "bigint")];
}

/// Deletes the snapshots of a stream that summarise only erased events:
/// below the version right before its first remaining event (a snapshot
/// there is what an aggregate loads from after a truncation).
fn stale_snapshots(stream: &str) -> Sql {
    let mut sql = Sql::new("DELETE FROM snapshots WHERE stream = ");
    sql.bind(stream)
        .push(" AND version < coalesce((SELECT min(position) FROM events WHERE stream = ")
        .bind(stream)
        .push("), (SELECT version + 1 FROM streams WHERE stream = ")
        .bind(stream)
        .push(")) - 1");
    sql
}

/// A stream's oldest events below `before`, a batch of them.
fn stream_events_before(stream: &str, before: i64) -> Sql {
    let mut sql = Sql::new("SELECT global_position, stream, tags FROM events WHERE stream = ");
    sql.bind(stream)
        .push(" AND position < ")
        .bind(before)
        .push(" ORDER BY position LIMIT ")
        .bind(ERASE_BATCH);
    sql
}

/// The events a policy says are due at `now` (microseconds), a batch of
/// them, oldest first. Events are in time order along every stream (commit
/// times never go backwards), so what a stream loses is always its oldest.
fn expired<B: SqlBackend>(target: &RetentionTarget, policy: RetentionPolicy, now: i64) -> Sql {
    let mut sql = Sql::new(
        "SELECT e.global_position, e.stream, e.tags FROM events e \
         JOIN streams s ON s.stream = e.stream WHERE ",
    );
    let order = match target {
        RetentionTarget::Stream(stream) => {
            sql.push("e.stream = ").bind(stream.as_str());
            "e.position"
        }
        RetentionTarget::Category(category) => {
            // A scalar subquery rather than NOT EXISTS, which Postgres
            // turns into an anti-join that may read every policy: this is
            // one lookup by key per event examined.
            sql.push("e.category = ").bind(category.as_str()).push(
                " AND (SELECT count(*) FROM retention_policies p \
                 WHERE p.scope = 'stream' AND p.name = e.stream) = 0",
            );
            "e.global_position"
        }
    };
    let mut bounds = Vec::new();
    if let Some(age) = policy.max_age_s {
        let mut bound = Sql::new(&format!("{} < ", B::micros("e.time")));
        bound.bind(now.saturating_sub(age * 1_000_000));
        bounds.push(bound);
    }
    if let Some(count) = policy.max_count {
        let mut bound = Sql::new("e.position <= s.version - ");
        bound.bind(count);
        bounds.push(bound);
    }
    sql.push(" AND (");
    for (i, bound) in bounds.into_iter().enumerate() {
        sql.push(if i == 0 { "" } else { " OR " }).append(bound);
    }
    sql.push(&format!(") ORDER BY {order} LIMIT "))
        .bind(ERASE_BATCH);
    sql
}

/// One target's policy, or every one.
fn policies(target: Option<&RetentionTarget>) -> Sql {
    let mut sql = Sql::new("SELECT scope, name, max_age_s, max_count FROM retention_policies");
    if let Some(target) = target {
        sql.push(" WHERE scope = ")
            .bind(target.scope())
            .push(" AND name = ")
            .bind(target.name());
    }
    sql.push(" ORDER BY scope, name");
    sql
}

/// A stream's tombstone.
fn tombstone(stream: &str) -> Sql {
    let mut sql =
        Sql::new("SELECT stream, version, time AS time_micros FROM tombstones WHERE stream = ");
    sql.bind(stream);
    sql
}

/// A deleted stream's version.
fn tombstone_version(stream: &str) -> Sql {
    let mut sql = Sql::new("SELECT version FROM tombstones WHERE stream = ");
    sql.bind(stream);
    sql
}

/// The read statements of this module, named, with typical arguments.
pub(super) fn statements<B: SqlBackend>() -> Vec<(&'static str, Sql)> {
    let policy = RetentionPolicy {
        max_age_s: Some(60),
        max_count: Some(10),
    };
    vec![
        ("tombstone", tombstone("s-1")),
        ("stream: erasable", stream_events_before("s-1", 10)),
        (
            "stream: expired",
            expired::<B>(&RetentionTarget::Stream("s-1".into()), policy, 0),
        ),
        (
            "category: expired",
            expired::<B>(&RetentionTarget::Category("c".into()), policy, 0),
        ),
    ]
}
