//! The SQLite backend: the embedded, zero-setup store. Every SQL statement
//! Cairn sends to SQLite is here.
//!
//! One connection writes (through the group-commit writer, in `BEGIN
//! IMMEDIATE` transactions, so even a second process on the same file waits
//! its turn instead of failing); a pool of connections reads, which WAL mode
//! lets run beside the writer. `synchronous = FULL`: a commit is on disk
//! before its `201` is sent.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::value::RawValue;
use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use uuid::Uuid;

use super::sql::{self, Bind, RunSql, Sql};
use super::writer::{BatchKeys, BatchState, CommitBatch, Outcome, StoredId, Writer, plan};
use super::{
    AppendError, AppendRequest, Appended, EventRow, GlobalPage, GlobalQuery, RecordedEvent, Store,
    StoreError, StreamInfo, StreamPage, StreamQuery, events, prefix_upper_bound,
};

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// An event store in a SQLite file (or in memory).
pub struct SqliteStore {
    pool: SqlitePool,
    writer: Writer,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at a `sqlite:` URL, runs the
    /// embedded migrations and starts the writer. `sqlite::memory:` is an
    /// ephemeral store on a single connection.
    pub async fn open(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // An in-memory database lives as long as its connection: keep exactly one, forever.
        let pool_options = |size: u32| {
            SqlitePoolOptions::new()
                .max_connections(size)
                .min_connections(u32::from(in_memory))
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(Duration::from_secs(30))
        };
        let pool = pool_options(if in_memory { 1 } else { pool_size })
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        let write_pool = if in_memory {
            pool.clone()
        } else {
            pool_options(1).connect_with(options).await?
        };
        let writer = Writer::spawn(SqliteCommit { pool: write_pool });
        Ok(SqliteStore { pool, writer })
    }
}

/// The SQLite half of group commit.
struct SqliteCommit {
    pool: SqlitePool,
}

#[async_trait]
impl CommitBatch for SqliteCommit {
    async fn commit(&self, batch: &[AppendRequest]) -> Result<Vec<Outcome>, StoreError> {
        let keys = BatchKeys::of(batch);
        // IMMEDIATE takes SQLite's one write lock now, before anything is read:
        // the version checks and the global positions below cannot go stale,
        // even with another process writing the same file.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut state = BatchState::default();
        for stream in &keys.streams {
            let version: Option<i64> =
                sqlx::query_scalar("SELECT version FROM streams WHERE stream = ?")
                    .bind(stream)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(version) = version {
                state.versions.insert(stream.clone(), version);
            }
        }
        for id in &keys.ids {
            let stored: Option<(String, i64, i64)> =
                sqlx::query_as("SELECT stream, position, global_position FROM events WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((stream, position, global_position)) = stored {
                let stored = StoredId {
                    stream,
                    position,
                    global_position,
                };
                state.existing.insert(*id, stored);
            }
        }
        let last: Option<(i64, i64)> = sqlx::query_as(
            "SELECT global_position, time FROM events ORDER BY global_position DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let (last_global_position, last_time) = last.unwrap_or((0, 0));
        state.last_global_position = last_global_position;
        // Commit times never go backwards along the log, even if the clock does.
        let now = Utc::now().timestamp_micros().max(last_time);

        let plan = plan(batch, state);
        for row in &plan.rows {
            sqlx::query(
                "INSERT INTO events (global_position, id, stream, position, category, cardinal_hash, \
                 type, data, metadata, causation_id, correlation_id, time) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(row.global_position)
            .bind(row.event.id)
            .bind(row.stream)
            .bind(row.position)
            .bind(row.category)
            .bind(row.cardinal_hash)
            .bind(&row.event.event_type)
            .bind(row.event.data.get())
            .bind(row.event.metadata.as_deref().map(RawValue::get))
            .bind(row.event.causation_id)
            .bind(row.event.correlation_id.as_deref())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for (stream, version) in &plan.versions {
            sqlx::query(
                "INSERT INTO streams (stream, version, last_time) VALUES (?, ?, ?) \
                 ON CONFLICT (stream) DO UPDATE SET version = excluded.version, last_time = excluded.last_time",
            )
            .bind(stream)
            .bind(version)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(plan.outcomes)
    }
}

/// Binds the values of shared SQL to a query.
fn bind_all<'q, O>(
    mut query: sqlx::query::QueryAs<'q, Sqlite, O, <Sqlite as sqlx::Database>::Arguments<'q>>,
    binds: Vec<Bind>,
) -> sqlx::query::QueryAs<'q, Sqlite, O, <Sqlite as sqlx::Database>::Arguments<'q>> {
    for value in binds {
        query = match value {
            Bind::Int(value) => query.bind(value),
            Bind::Text(value) => query.bind(value),
        };
    }
    query
}

#[async_trait]
impl RunSql for SqliteStore {
    const EVENT_COLUMNS: &str = "global_position, id, stream, position, type, data, metadata, \
                             causation_id, correlation_id, time AS time_micros";

    async fn fetch_position(&self, sql: Sql) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = bind_all(sqlx::query_as(&sql.text), sql.binds)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(position,)| position))
    }

    async fn fetch_events(&self, sql: Sql) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows: Vec<EventRow> = bind_all(sqlx::query_as(&sql.text), sql.binds)
            .fetch_all(&self.pool)
            .await?;
        events(rows)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        self.writer.append(request).await
    }

    async fn read_stream(&self, query: &StreamQuery) -> Result<StreamPage, StoreError> {
        let (lower, upper, order) = query.bounds();
        let sql = format!(
            "SELECT {} FROM events WHERE stream = ?1 AND position BETWEEN ?2 AND ?3 \
             AND (?4 IS NULL OR time <= ?4) ORDER BY position {order} LIMIT ?5",
            Self::EVENT_COLUMNS
        );
        let rows: Vec<EventRow> = sqlx::query_as(&sql)
            .bind(&query.stream)
            .bind(lower)
            .bind(upper)
            .bind(query.as_of.map(|t| t.timestamp_micros()))
            .bind(query.limit + 1)
            .fetch_all(&self.pool)
            .await?;
        // The version is read after the events, so it is never older than them.
        let version = self.stream_version(&query.stream).await?;
        Ok(query.page(version, events(rows)?))
    }

    async fn read_global(&self, query: &GlobalQuery) -> Result<GlobalPage, StoreError> {
        sql::read_global(self, query).await
    }

    async fn stream_version(&self, stream: &str) -> Result<i64, StoreError> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM streams WHERE stream = ?")
                .bind(stream)
                .fetch_optional(&self.pool)
                .await?;
        Ok(version.unwrap_or(-1))
    }

    async fn last_event(
        &self,
        stream: &str,
        event_type: Option<&str>,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {} FROM events WHERE stream = ?1 AND (?2 IS NULL OR type = ?2) \
             ORDER BY position DESC LIMIT 1",
            Self::EVENT_COLUMNS
        );
        let row: Option<EventRow> = sqlx::query_as(&sql)
            .bind(stream)
            .bind(event_type)
            .fetch_optional(&self.pool)
            .await?;
        row.map(RecordedEvent::try_from).transpose()
    }

    async fn event(&self, id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let sql = format!("SELECT {} FROM events WHERE id = ?", Self::EVENT_COLUMNS);
        let row: Option<EventRow> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(RecordedEvent::try_from).transpose()
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT stream, version, last_time FROM streams \
             WHERE stream >= ?1 AND stream < ?2 AND stream > ?3 ORDER BY stream LIMIT ?4",
        )
        .bind(prefix)
        .bind(prefix_upper_bound(prefix))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(stream, version, last_time)| {
                let last_time = chrono::DateTime::from_timestamp_micros(last_time)
                    .ok_or_else(|| StoreError::Internal(format!("stored time {last_time}")))?;
                Ok(StreamInfo {
                    stream,
                    version,
                    last_time,
                })
            })
            .collect()
    }

    async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
