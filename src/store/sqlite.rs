//! The SQLite backend: the embedded, zero-setup store: connections, and group
//! commit under SQLite's write lock. Everything else is the shared SQL of the
//! concern modules.
//!
//! One connection writes (through the group-commit writer, in `BEGIN
//! IMMEDIATE` transactions, so even a second process on the same file waits
//! its turn instead of failing); a pool of connections reads, which WAL mode
//! lets run beside the writer. `synchronous = FULL`: a commit is on disk
//! before its `201` is sent.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use tokio::sync::watch;

use super::backend::{Parts, SqlBackend, tags_column};
use super::error::StoreError;
use super::plan::{BatchKeys, BatchState, Plan, StoredId};
use super::sql::{Runner, Sql, runner, unavailable};
use super::writer::{WriteStatements, Writer};

/// How long a statement waits for another process's lock on the file before
/// the request is answered 503: API.md allows 2 s for an unavailable store.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// An event store in a SQLite file (or in memory), with one connection for
/// the writes that do not go through the writer (subscriptions' claims and
/// settlements): SQLite takes one writer at a time, and waiting for that
/// connection is a fair queue, where contending for the database's lock is
/// a busy loop that can starve a waiter past its timeout.
pub struct SqliteStore(Parts<Sqlite>, SqlitePool);

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
        let (write_pool, side_pool) = if in_memory {
            (pool.clone(), pool.clone())
        } else {
            (
                pool_options(1).connect_with(options.clone()).await?,
                pool_options(1).connect_with(options).await?,
            )
        };
        let changes = Arc::new(watch::Sender::new(0));
        // On the shared runtime: sqlx already runs each SQLite connection on
        // a thread of its own, and a second thread for the writer only added
        // a hop (17% fewer appends at 64 clients, measured).
        let writer = Writer::spawn(SqliteWrites { pool: write_pool }, changes.clone());
        Ok(SqliteStore(
            Parts {
                pool,
                writer,
                changes,
                deletions: Arc::new(watch::Sender::new(0)),
            },
            side_pool,
        ))
    }
}

/// The SQLite statements of group commit.
struct SqliteWrites {
    pool: SqlitePool,
}

#[async_trait]
impl WriteStatements for SqliteWrites {
    type Tx = Transaction<'static, Sqlite>;

    async fn begin(&mut self) -> Result<Self::Tx, StoreError> {
        // IMMEDIATE takes SQLite's one write lock now, before anything is read:
        // the version checks and the global positions cannot go stale, even
        // with another process writing the same file.
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)
    }

    async fn load(&self, tx: &mut Self::Tx, keys: &BatchKeys) -> Result<BatchState, StoreError> {
        // An embedded database has no round trips to save: one lookup per key.
        let mut state = BatchState::default();
        for stream in &keys.streams {
            let version: Option<i64> =
                sqlx::query_scalar("SELECT version FROM streams WHERE stream = ?")
                    .bind(stream)
                    .fetch_optional(&mut **tx)
                    .await?;
            if let Some(version) = version {
                state.versions.insert(stream.clone(), version);
            }
            let deleted: Option<i64> =
                sqlx::query_scalar("SELECT version FROM tombstones WHERE stream = ?")
                    .bind(stream)
                    .fetch_optional(&mut **tx)
                    .await?;
            if deleted.is_some() {
                state.deleted.insert(stream.clone());
            }
        }
        for id in &keys.ids {
            let stored: Option<(String, i64, i64)> =
                sqlx::query_as("SELECT stream, position, global_position FROM events WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&mut **tx)
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
        for event_type in &keys.types {
            let version: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM event_schemas WHERE type = ? AND schema IS NOT NULL",
            )
            .bind(event_type)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(version) = version {
                state.schema_versions.insert(event_type.clone(), version);
            }
        }
        let last: Option<(i64, i64)> = sqlx::query_as(
            "SELECT global_position, time FROM events ORDER BY global_position DESC LIMIT 1",
        )
        .fetch_optional(&mut **tx)
        .await?;
        let (last_global_position, last_time) = last.unwrap_or((0, 0));
        // The head outlives its event's erasure.
        let erased: Option<i64> =
            sqlx::query_scalar("SELECT global_position FROM log_head WHERE singleton = true")
                .fetch_optional(&mut **tx)
                .await?;
        state.last_global_position = last_global_position.max(erased.unwrap_or(0));
        // Commit times never go backwards along the log, even if the clock does.
        let micros = Utc::now().timestamp_micros().max(last_time);
        state.commit_time = DateTime::<Utc>::from_timestamp_micros(micros)
            .ok_or_else(|| StoreError::Internal(format!("commit time {micros}")))?;
        Ok(state)
    }

    async fn fetch_int(&self, tx: &mut Self::Tx, sql: Sql) -> Result<Option<i64>, StoreError> {
        Sqlite::fetch_int(&mut **tx, sql).await
    }

    async fn fetch_text(&self, tx: &mut Self::Tx, sql: Sql) -> Result<Vec<String>, StoreError> {
        Sqlite::fetch_text(&mut **tx, sql).await
    }

    async fn insert(&self, tx: &mut Self::Tx, plan: &Plan<'_>) -> Result<(), StoreError> {
        let now = plan.commit_time.timestamp_micros();
        for row in &plan.rows {
            sqlx::query(
                "INSERT INTO events (global_position, id, stream, position, category, cardinal_hash, \
                 type, data, metadata, causation_id, correlation_id, tags, time) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            .bind(tags_column(&row.event.tags))
            .bind(now)
            .execute(&mut **tx)
            .await?;
            for tag in &row.event.tags {
                sqlx::query("INSERT INTO event_tags (tag, type, global_position) VALUES (?, ?, ?)")
                    .bind(tag)
                    .bind(&row.event.event_type)
                    .bind(row.global_position)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        for written in &plan.versions {
            let statement = if written.new {
                "INSERT INTO streams (version, last_time, stream) VALUES (?, ?, ?)"
            } else {
                "UPDATE streams SET version = ?, last_time = ? WHERE stream = ?"
            };
            sqlx::query(statement)
                .bind(written.version)
                .bind(now)
                .bind(written.stream)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn commit(&mut self, tx: Self::Tx) -> Result<(), StoreError> {
        Ok(tx.commit().await?)
    }
}

runner!(Sqlite);

impl SqlBackend for SqliteStore {
    type Db = Sqlite;

    fn parts(&self) -> &Parts<Sqlite> {
        &self.0
    }

    fn micros(column: &str) -> String {
        column.to_owned()
    }

    fn timestamp(micros: &str) -> String {
        micros.to_owned()
    }

    // Text compares byte by byte already (BINARY).
    const BYTE_ORDER: &'static str = "";

    const LOCK_ROWS: &'static str = "";

    fn json_rows(sql: &mut Sql, json: String, columns: &[(&str, &str)]) {
        // SQLite's JSON integers come back as integers, text as text: the
        // types need no cast, but for UUIDs, which sqlx keeps as 16-byte
        // blobs.
        let columns: Vec<String> = columns
            .iter()
            .map(|(name, kind)| match *kind {
                "uuid" => {
                    format!("unhex(replace(json_extract(value, '$.{name}'), '-', '')) AS {name}")
                }
                _ => format!("json_extract(value, '$.{name}') AS {name}"),
            })
            .collect();
        sql.push(&format!("(SELECT {} FROM json_each(", columns.join(", ")))
            .bind(json.as_str())
            .push(")) AS r");
    }

    async fn execute_all(conn: &mut SqliteConnection, writes: Vec<Sql>) -> Result<(), StoreError> {
        for write in writes {
            Sqlite::execute(conn, write).await?;
        }
        Ok(())
    }

    async fn write_now(&self, sql: Sql) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = Sqlite::fetch_text(&mut tx, sql).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(rows)
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        // SQLite's one write lock, taken at once (see the writer's `begin`).
        self.1
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)
    }

    async fn begin_log_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        // Every write transaction takes SQLite's one write lock.
        self.begin_write().await
    }

    async fn announce_deletion(_: &mut SqliteConnection) -> Result<(), StoreError> {
        // One process: its own signal is all there is to send.
        Ok(())
    }

    async fn begin_read(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        // In WAL mode a transaction reads one snapshot from its first read on.
        self.0.pool.begin().await.map_err(unavailable)
    }

    async fn explain(conn: &mut SqliteConnection, sql: Sql) -> Result<Vec<String>, StoreError> {
        let explain = format!("EXPLAIN QUERY PLAN {}", sql.text);
        Sqlite::fetch_text(
            conn,
            Sql {
                text: explain,
                binds: sql.binds,
            },
        )
        .await
    }
}
