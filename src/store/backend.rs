//! What a SQL backend supplies so that every concern (`reads`, `snapshots`,
//! `trace`, `checkpoints`, `diagnostics`) is written once for both databases:
//! its pool, a consistent read transaction, the spelling of a time in
//! microseconds, how it reads rows out of a JSON array, and its `EXPLAIN`.
//! Appends differ more (each database serialises writers in its own way) and
//! go through [`super::writer`].

use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool, Transaction};
use tokio::sync::watch;

use super::error::StoreError;
use super::model::{Budgeted, RecordedEvent};
use super::rows::EventRow;
use super::sql::{DecodeRow, Runner, Sql, unavailable};
use super::writer::Writer;

/// What every SQL store holds.
pub(crate) struct Parts<DB: Database> {
    /// Its connection pool for reads and small writes.
    pub pool: Pool<DB>,
    /// Its group-commit writer, through which every append goes.
    pub writer: Writer,
    /// Signalled after commits (see [`super::Appends::changes`]).
    pub changes: Arc<watch::Sender<u64>>,
    /// Signalled after stream deletions (see [`super::Retention::deletions`]).
    pub deletions: Arc<watch::Sender<u64>>,
}

/// The connection type of a backend.
pub(crate) type Conn<B> = <<B as SqlBackend>::Db as Database>::Connection;

/// What a backend supplies for the shared SQL.
pub(crate) trait SqlBackend: Send + Sync + 'static {
    /// Its database.
    type Db: Runner;
    /// Its pool, writer and change signal.
    fn parts(&self) -> &Parts<Self::Db>;
    /// A time column as microseconds since the epoch.
    fn micros(column: &str) -> String;
    /// The other way: microseconds since the epoch (an integer expression)
    /// as a value of a time column, exactly (an import restores times to
    /// the microsecond).
    fn timestamp(micros: &str) -> String;
    /// What follows a text column in a comparison or an `ORDER BY` to
    /// compare it byte by byte, where the column's own collation may not
    /// (an export lists rows in one order on both databases, so that a
    /// store copied from one to the other exports the same file).
    const BYTE_ORDER: &'static str;
    /// What a `SELECT` appends to lock the rows it reads until its
    /// transaction ends (nothing where write transactions lock everything).
    const LOCK_ROWS: &'static str;
    /// Appends a row source named `r` over `json`, an array of objects, one
    /// row per object with the given columns (name, SQL type). Many rows then
    /// travel as one bind, so the statement's text, and with it its prepared
    /// plan, is the same for any number of rows.
    fn json_rows(sql: &mut Sql, json: String, columns: &[(&str, &str)]);
    /// Runs writes that touch different rows, in one round trip where the
    /// database allows it (on Postgres, as data-modifying `WITH` clauses:
    /// they see one snapshot and run in no set order; SQLite, in process,
    /// runs them one after another).
    fn execute_all(
        conn: &mut Conn<Self>,
        writes: Vec<Sql>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Runs one write on its own, committed at once, and returns its rows'
    /// single text column: on Postgres one round trip in autocommit, on
    /// SQLite a transaction on the connection for writes besides appends.
    fn write_now(&self, sql: Sql) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Begins a transaction that writes besides the writer's appends.
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, StoreError>> + Send;
    /// Begins a transaction that holds the store-wide write lock until it
    /// ends, as the writer's batches do, for the changes to the log besides
    /// appends (erasure, tombstones, import): a batch judging versions and
    /// handing out global positions must never see one half done.
    fn begin_log_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, StoreError>> + Send;
    /// Tells the other instances on the database, at commit, that a stream
    /// was deleted (where the database can: nothing on SQLite).
    fn announce_deletion(
        conn: &mut Conn<Self>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Begins a read-only transaction that sees one snapshot of the store.
    fn begin_read(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, StoreError>> + Send;
    /// The plan the database would follow for a query, a line per step, with
    /// full scans discouraged, so that one shows only where no index serves.
    fn explain(
        conn: &mut Conn<Self>,
        sql: Sql,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

/// A pooled connection; failing to get one means the database is unavailable.
pub(crate) async fn connection<B: SqlBackend>(
    backend: &B,
) -> Result<PoolConnection<B::Db>, StoreError> {
    backend.parts().pool.acquire().await.map_err(unavailable)
}

/// Runs a query, decoding rows as `R` and converting each to `T`.
pub(crate) async fn fetch_as<B, R, T>(conn: &mut Conn<B>, sql: Sql) -> Result<Vec<T>, StoreError>
where
    B: SqlBackend,
    B::Db: DecodeRow<R>,
    R: Send,
    T: TryFrom<R, Error = StoreError>,
{
    let rows: Vec<R> = B::Db::fetch(conn, sql).await?;
    rows.into_iter().map(T::try_from).collect()
}

/// The time now, to the microsecond (the precision the stores keep).
pub(crate) fn now_micros() -> chrono::DateTime<Utc> {
    let now = Utc::now();
    chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// The select list of an event, in the shape [`super::rows::EventRow`] reads.
pub(crate) fn event_columns<B: SqlBackend>() -> String {
    format!(
        "global_position, id, stream, position, type, data, metadata, causation_id, \
         correlation_id, tags, {} AS time_micros",
        B::micros("time")
    )
}

/// Runs a query of events until they hold `max_bytes` (see
/// [`Runner::fetch_within`]).
pub(crate) async fn fetch_events_within<B: SqlBackend>(
    conn: &mut Conn<B>,
    sql: Sql,
    max_bytes: usize,
) -> Result<Budgeted<RecordedEvent>, StoreError> {
    B::Db::fetch_within::<EventRow, RecordedEvent>(
        conn,
        sql,
        max_bytes,
        RecordedEvent::try_from,
        RecordedEvent::approximate_size,
    )
    .await
}

/// Runs a query of events.
pub(crate) async fn fetch_events<B: SqlBackend>(
    conn: &mut Conn<B>,
    sql: Sql,
) -> Result<Vec<RecordedEvent>, StoreError> {
    fetch_as::<B, EventRow, RecordedEvent>(conn, sql).await
}

/// An event's tags as `events.tags` keeps them: a JSON array in the order
/// written, or NULL when there are none.
pub(crate) fn tags_column(tags: &[String]) -> Option<String> {
    (!tags.is_empty()).then(|| serde_json::to_string(tags).expect("strings serialise"))
}

/// A value as JSON: a subscription's definition as stored, or rows as
/// [`SqlBackend::json_rows`] reads them.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}
