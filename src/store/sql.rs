//! The SQL both backends speak. Every read, snapshots and traces are written
//! here once, with `$1`, `$2`… placeholders (SQLite reads them as parameters
//! numbered in order of appearance, which is the same thing); a backend
//! supplies its pool, a consistent read transaction, the spelling of a time
//! in microseconds, and the runners that [`sql_runners!`] writes for it.
//! Only appends, which each database serialises in its own way, live in the
//! backend modules.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool, Transaction};
use tokio::sync::Notify;
use uuid::Uuid;

use super::writer::Writer;
use super::{
    AppendError, AppendRequest, Appended, Checkpoint, Direction, Filter, GlobalPage, GlobalQuery,
    NewSnapshot, RecordedEvent, Scope, Snapshot, SnapshotError, Store, StoreError, StreamInfo,
    StreamPage, StreamQuery, Trace, TraceLimits, scan_window,
};

/// How long a health check waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Most ids in one `IN (…)` list.
const IN_LIST_CHUNK: usize = 500;

/// A value bound to a statement.
pub(crate) enum Bind {
    /// A 64-bit integer.
    Int(i64),
    /// A string, or NULL.
    Text(Option<String>),
    /// A UUID.
    Uuid(Uuid),
}

impl From<i64> for Bind {
    fn from(value: i64) -> Self {
        Bind::Int(value)
    }
}

impl From<&str> for Bind {
    fn from(value: &str) -> Self {
        Bind::Text(Some(value.to_owned()))
    }
}

impl From<Option<&str>> for Bind {
    fn from(value: Option<&str>) -> Self {
        Bind::Text(value.map(str::to_owned))
    }
}

impl From<Uuid> for Bind {
    fn from(value: Uuid) -> Self {
        Bind::Uuid(value)
    }
}

/// A statement and the values bound to its placeholders.
#[derive(Default)]
pub(crate) struct Sql {
    /// The statement.
    pub text: String,
    /// Its values, in placeholder order.
    pub binds: Vec<Bind>,
}

impl Sql {
    /// A statement starting with `text`.
    fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            binds: Vec::new(),
        }
    }

    /// Appends SQL text.
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for a value.
    fn bind(&mut self, value: impl Into<Bind>) -> &mut Self {
        self.binds.push(value.into());
        write!(self.text, "${}", self.binds.len()).expect("writing to a String cannot fail");
        self
    }

    /// Appends `(…)` with a placeholder for each value.
    fn bind_list<T: Into<Bind> + Clone>(&mut self, values: &[T]) -> &mut Self {
        self.push("(");
        for (i, value) in values.iter().enumerate() {
            self.push(if i == 0 { "" } else { ", " })
                .bind(value.clone());
        }
        self.push(")")
    }
}

/// What every SQL store holds.
pub(crate) struct Parts<DB: Database> {
    /// Its connection pool.
    pub pool: Pool<DB>,
    /// Its group-commit writer.
    pub writer: Writer,
    /// Signalled after commits (see [`Store::changes`]).
    pub changes: Arc<Notify>,
}

/// The connection type of a backend.
pub(crate) type Conn<B> = <<B as SqlBackend>::Db as Database>::Connection;

/// What a backend supplies for the shared SQL.
pub(crate) trait SqlBackend: Send + Sync + 'static {
    /// Its database.
    type Db: Database;
    /// Its pool, writer and change signal.
    fn parts(&self) -> &Parts<Self::Db>;
    /// A time column as microseconds since the epoch.
    fn micros(column: &str) -> String;
    /// Begins a read-only transaction that sees one snapshot of the store.
    fn begin_read(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, StoreError>> + Send;
    /// Runs a query of events.
    fn fetch_events(
        conn: &mut Conn<Self>,
        sql: Sql,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;
    /// Runs a query of one nullable integer column; the first row's value.
    fn fetch_int(
        conn: &mut Conn<Self>,
        sql: Sql,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;
    /// Runs a query of snapshots.
    fn fetch_snapshots(
        conn: &mut Conn<Self>,
        sql: Sql,
    ) -> impl Future<Output = Result<Vec<Snapshot>, StoreError>> + Send;
    /// Runs a query of streams.
    fn fetch_streams(
        conn: &mut Conn<Self>,
        sql: Sql,
    ) -> impl Future<Output = Result<Vec<StreamInfo>, StoreError>> + Send;
    /// Runs a query of checkpoints.
    fn fetch_checkpoints(
        conn: &mut Conn<Self>,
        sql: Sql,
    ) -> impl Future<Output = Result<Vec<Checkpoint>, StoreError>> + Send;
    /// The plan the database would follow for a query, a line per step, with
    /// full scans discouraged, so that one shows only where no index serves.
    fn explain(
        conn: &mut Conn<Self>,
        sql: Sql,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Runs a statement; the number of rows it changed.
    fn execute(
        conn: &mut Conn<Self>,
        sql: Sql,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Writes the runners of [`SqlBackend`] for a concrete database, on the
/// helpers [`sql_helpers!`] writes for it.
macro_rules! sql_runners {
    ($db:ty) => {
        async fn fetch_events(
            conn: &mut <$db as sqlx::Database>::Connection,
            sql: $crate::store::sql::Sql,
        ) -> Result<Vec<$crate::store::RecordedEvent>, $crate::store::StoreError> {
            fetch_as::<$crate::store::EventRow, _>(conn, sql).await
        }

        async fn fetch_int(
            conn: &mut <$db as sqlx::Database>::Connection,
            sql: $crate::store::sql::Sql,
        ) -> Result<Option<i64>, $crate::store::StoreError> {
            let row: Option<(Option<i64>,)> = sqlx::query_as_with(&sql.text, arguments(sql.binds)?)
                .fetch_optional(conn)
                .await?;
            Ok(row.and_then(|(value,)| value))
        }

        async fn fetch_snapshots(
            conn: &mut <$db as sqlx::Database>::Connection,
            sql: $crate::store::sql::Sql,
        ) -> Result<Vec<$crate::store::Snapshot>, $crate::store::StoreError> {
            fetch_as::<$crate::store::SnapshotRow, _>(conn, sql).await
        }

        async fn fetch_streams(
            conn: &mut <$db as sqlx::Database>::Connection,
            sql: $crate::store::sql::Sql,
        ) -> Result<Vec<$crate::store::StreamInfo>, $crate::store::StoreError> {
            fetch_as::<$crate::store::StreamRow, _>(conn, sql).await
        }

        async fn fetch_checkpoints(
            conn: &mut <$db as sqlx::Database>::Connection,
            sql: $crate::store::sql::Sql,
        ) -> Result<Vec<$crate::store::Checkpoint>, $crate::store::StoreError> {
            fetch_as::<$crate::store::CheckpointRow, _>(conn, sql).await
        }

        async fn execute(
            conn: &mut <$db as sqlx::Database>::Connection,
            sql: $crate::store::sql::Sql,
        ) -> Result<u64, $crate::store::StoreError> {
            let query = sqlx::query_with(&sql.text, arguments(sql.binds)?);
            Ok(query.execute(conn).await?.rows_affected())
        }
    };
}
pub(crate) use sql_runners;

/// Writes, for a concrete database, the two helpers every runner uses:
/// `arguments` (binds [`Bind`] values) and `fetch_as` (runs a query and
/// converts each row).
macro_rules! sql_helpers {
    ($db:ty) => {
        /// The arguments of shared SQL.
        fn arguments<'q>(
            binds: Vec<$crate::store::sql::Bind>,
        ) -> Result<<$db as sqlx::Database>::Arguments<'q>, $crate::store::StoreError> {
            use sqlx::Arguments as _;
            let mut arguments = <$db as sqlx::Database>::Arguments::default();
            for value in binds {
                match value {
                    $crate::store::sql::Bind::Int(value) => arguments.add(value),
                    $crate::store::sql::Bind::Text(value) => arguments.add(value),
                    $crate::store::sql::Bind::Uuid(value) => arguments.add(value),
                }
                .map_err(|e| $crate::store::StoreError::Internal(format!("binding: {e}")))?;
            }
            Ok(arguments)
        }

        /// Runs shared SQL, decoding rows as `R` and converting each to `T`.
        async fn fetch_as<R, T>(
            conn: &mut <$db as sqlx::Database>::Connection,
            sql: $crate::store::sql::Sql,
        ) -> Result<Vec<T>, $crate::store::StoreError>
        where
            R: for<'r> sqlx::FromRow<'r, <$db as sqlx::Database>::Row> + Send + Unpin,
            T: TryFrom<R, Error = $crate::store::StoreError>,
        {
            let rows: Vec<R> = sqlx::query_as_with(&sql.text, arguments(sql.binds)?)
                .fetch_all(conn)
                .await?;
            rows.into_iter().map(T::try_from).collect()
        }
    };
}
pub(crate) use sql_helpers;

/// A pooled connection; failing to get one means the database is unavailable.
async fn connection<B: SqlBackend>(backend: &B) -> Result<PoolConnection<B::Db>, StoreError> {
    backend
        .parts()
        .pool
        .acquire()
        .await
        .map_err(StoreError::unavailable)
}

/// The time now, to the microsecond (the precision the stores keep).
fn now_micros() -> chrono::DateTime<Utc> {
    let now = Utc::now();
    chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// The select list of an event, in the shape `EventRow` reads.
fn event_columns<B: SqlBackend>() -> String {
    format!(
        "global_position, id, stream, position, type, data, metadata, causation_id, \
         correlation_id, {} AS time_micros",
        B::micros("time")
    )
}

/// Starts a `SELECT … FROM events` with the scope of a global read.
fn scoped<B: SqlBackend>(columns: &str, query: &GlobalQuery) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT {columns} FROM events WHERE global_position >= "
    ));
    sql.bind(query.position);
    match &query.scope {
        Scope::All => {}
        Scope::Category(category) => {
            sql.push(" AND category = ").bind(category.as_str());
        }
        Scope::Correlation(correlation_id) => {
            sql.push(" AND correlation_id = ")
                .bind(correlation_id.as_str());
        }
    }
    sql
}

/// Reads one stream on a connection (within a transaction when the read must
/// be one consistent snapshot).
async fn read_stream_on<B: SqlBackend>(
    conn: &mut Conn<B>,
    query: &StreamQuery,
) -> Result<StreamPage, StoreError> {
    let mut query = query.clone();
    let mut snapshot = None;
    if query.from_snapshot {
        // The snapshot must lie within the read's bounds: at most
        // `until_version`, and a version the stream had reached by `as_of`.
        let mut bound = query.until_version.unwrap_or(i64::MAX);
        if let Some(as_of) = query.as_of {
            let version_then = version_at::<B>(&query.stream, as_of.timestamp_micros());
            bound = bound.min(B::fetch_int(conn, version_then).await?.unwrap_or(-1));
        }
        snapshot = B::fetch_snapshots(conn, newest_snapshot(&query.stream, bound))
            .await?
            .pop();
        if let Some(snapshot) = &snapshot {
            query.position = Some(query.position.unwrap_or(0).max(snapshot.version + 1));
        }
    }
    let events = B::fetch_events(conn, stream_events::<B>(&query)).await?;
    // The version is read after the events, so it is never older than them.
    let version = B::fetch_int(conn, stream_version(&query.stream))
        .await?
        .unwrap_or(-1);
    let mut page = query.page(version, events);
    page.snapshot = snapshot;
    Ok(page)
}

/// The events of a stream read, one more than the page (see [`StreamQuery::page`]).
fn stream_events<B: SqlBackend>(query: &StreamQuery) -> Sql {
    let (lower, upper, order) = query.bounds();
    let mut sql = Sql::new(&format!(
        "SELECT {} FROM events WHERE stream = ",
        event_columns::<B>()
    ));
    sql.bind(query.stream.as_str())
        .push(" AND position >= ")
        .bind(lower)
        .push(" AND position <= ")
        .bind(upper);
    if let Some(as_of) = query.as_of {
        sql.push(&format!(" AND {} <= ", B::micros("time")))
            .bind(as_of.timestamp_micros());
    }
    sql.push(&format!(" ORDER BY position {order} LIMIT "))
        .bind(query.limit + 1);
    sql
}

/// The version a stream had reached at an instant.
fn version_at<B: SqlBackend>(stream: &str, micros: i64) -> Sql {
    let mut sql = Sql::new("SELECT max(position) FROM events WHERE stream = ");
    sql.bind(stream)
        .push(&format!(" AND {} <= ", B::micros("time")))
        .bind(micros);
    sql
}

/// Where the scan window of a filtered global read ends (exclusive).
fn global_window<B: SqlBackend>(query: &GlobalQuery) -> Sql {
    let mut sql = scoped::<B>("global_position", query);
    sql.push(" ORDER BY global_position LIMIT 1 OFFSET ")
        .bind(scan_window(query.limit));
    sql
}

/// The events of a global read, one more than the page, within the window.
fn global_events<B: SqlBackend>(query: &GlobalQuery, window_end: Option<i64>) -> Sql {
    let mut sql = scoped::<B>(&event_columns::<B>(), query);
    let filter = &query.filter;
    if !filter.types.is_empty() {
        let types: Vec<&str> = filter.types.iter().map(String::as_str).collect();
        sql.push(" AND type IN ").bind_list(&types);
    }
    if let Some(correlation_id) = &filter.correlation_id {
        sql.push(" AND correlation_id = ")
            .bind(correlation_id.as_str());
    }
    if let Some((member, size)) = filter.consumer_group {
        // |hash| mod size, written so that it cannot overflow.
        sql.push(" AND abs(cardinal_hash % ")
            .bind(size)
            .push(") = ")
            .bind(member);
    }
    if let Some(end) = window_end {
        sql.push(" AND global_position < ").bind(end);
    }
    sql.push(" ORDER BY global_position LIMIT ")
        .bind(query.limit + 1);
    sql
}

/// The last event of a stream, optionally of a type.
fn last_event<B: SqlBackend>(stream: &str, event_type: Option<&str>) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT {} FROM events WHERE stream = ",
        event_columns::<B>()
    ));
    sql.bind(stream);
    if let Some(event_type) = event_type {
        sql.push(" AND type = ").bind(event_type);
    }
    sql.push(" ORDER BY position DESC LIMIT 1");
    sql
}

/// One event by id.
fn event_by_id<B: SqlBackend>(id: Uuid) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT {} FROM events WHERE id = ",
        event_columns::<B>()
    ));
    sql.bind(id);
    sql
}

/// A page of the stream listing. [prefix, upper bound) holds exactly the
/// names that start with prefix.
fn stream_list<B: SqlBackend>(prefix: &str, after: Option<&str>, limit: i64) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT stream, version, {} AS last_time_micros FROM streams WHERE stream >= ",
        B::micros("last_time")
    ));
    sql.bind(prefix)
        .push(" AND stream < ")
        .bind(super::prefix_upper_bound(prefix).as_str())
        .push(" AND stream > ")
        .bind(after.unwrap_or(""))
        .push(" ORDER BY stream LIMIT ")
        .bind(limit);
    sql
}

/// The highest global position.
fn head() -> Sql {
    Sql::new("SELECT max(global_position) FROM events")
}

/// A consumer's checkpoint.
fn checkpoint(consumer: &str) -> Sql {
    let mut sql = Sql::new(
        "SELECT consumer, position, time AS time_micros FROM checkpoints WHERE consumer = ",
    );
    sql.bind(consumer);
    sql
}

/// The first `limit` events caused by any of `causes`, in global order.
fn effects<B: SqlBackend>(causes: &[Uuid], limit: i64) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT {} FROM events WHERE causation_id IN ",
        event_columns::<B>()
    ));
    sql.bind_list(causes)
        .push(" ORDER BY global_position LIMIT ")
        .bind(limit);
    sql
}

/// The version of a stream.
fn stream_version(stream: &str) -> Sql {
    let mut sql = Sql::new("SELECT version FROM streams WHERE stream = ");
    sql.bind(stream);
    sql
}

/// The newest snapshot of a stream with version ≤ `bound`; of equal versions
/// the one posted last.
fn newest_snapshot(stream: &str, bound: i64) -> Sql {
    let mut sql = Sql::new(
        "SELECT stream, version, type, state, time AS time_micros FROM snapshots WHERE stream = ",
    );
    sql.bind(stream)
        .push(" AND version <= ")
        .bind(bound)
        .push(" ORDER BY version DESC, seq DESC LIMIT 1");
    sql
}

/// Walks `causation_id` up from a message: its causes, nearest first, at most
/// `max_depth + 1` of them (one more than may be kept, to tell a cut chain).
/// A cause the store lacks ends the chain; a cycle repeats until the cap and
/// is cut by the caller.
fn causes(message: Uuid, max_depth: usize, columns: &str) -> Sql {
    let mut sql = Sql::new(
        "WITH RECURSIVE chain(cause, depth) AS (\
         SELECT causation_id, 1 FROM events WHERE causation_id IS NOT NULL AND id = ",
    );
    sql.bind(message)
        .push(
            " UNION ALL SELECT e.causation_id, chain.depth + 1 FROM chain \
             JOIN events e ON e.id = chain.cause WHERE e.causation_id IS NOT NULL AND chain.depth <= ",
        )
        .bind(max_depth as i64)
        .push(&format!(
            ") SELECT {columns} FROM chain JOIN events ON events.id = chain.cause ORDER BY chain.depth"
        ));
    sql
}

/// Every read statement, named, with typical arguments.
fn read_statements<B: SqlBackend>() -> Vec<(&'static str, Sql)> {
    let stream = |direction, as_of| StreamQuery {
        stream: "s-1".into(),
        position: Some(0),
        limit: 100,
        direction,
        until_version: Some(10),
        as_of,
        from_snapshot: false,
    };
    let global = |scope: Scope, filtered: bool| GlobalQuery {
        scope,
        position: 1,
        limit: 100,
        filter: match filtered {
            false => Filter::default(),
            true => Filter {
                types: vec!["A".into(), "B".into()],
                correlation_id: Some("c".into()),
                consumer_group: Some((0, 2)),
            },
        },
    };
    let category = || Scope::Category("c".into());
    vec![
        (
            "stream",
            stream_events::<B>(&stream(Direction::Forward, Some(Utc::now()))),
        ),
        (
            "stream backward",
            stream_events::<B>(&stream(Direction::Backward, None)),
        ),
        ("stream version", stream_version("s-1")),
        ("stream version at an instant", version_at::<B>("s-1", 0)),
        ("newest snapshot", newest_snapshot("s-1", 10)),
        ("last event of a type", last_event::<B>("s-1", Some("A"))),
        ("event by id", event_by_id::<B>(Uuid::nil())),
        ("stream list", stream_list::<B>("acc", Some("acc-1"), 100)),
        ("all", global_events::<B>(&global(Scope::All, false), None)),
        ("all: window", global_window::<B>(&global(Scope::All, true))),
        (
            "all filtered",
            global_events::<B>(&global(Scope::All, true), Some(1000)),
        ),
        (
            "category",
            global_events::<B>(&global(category(), false), None),
        ),
        (
            "category: window",
            global_window::<B>(&global(category(), true)),
        ),
        (
            "category filtered",
            global_events::<B>(&global(category(), true), Some(1000)),
        ),
        (
            "correlation",
            global_events::<B>(&global(Scope::Correlation("c".into()), false), None),
        ),
        ("head", head()),
        ("checkpoint", checkpoint("w")),
        (
            "trace: causes",
            causes(Uuid::nil(), 1000, &event_columns::<B>()),
        ),
        (
            "trace: effects",
            effects::<B>(&[Uuid::nil(), Uuid::max()], 100),
        ),
    ]
}

#[async_trait]
impl<B: SqlBackend> Store for B {
    async fn query_plans(&self) -> Result<Vec<(&'static str, Vec<String>)>, StoreError> {
        let mut tx = self.begin_read().await?;
        let mut plans = Vec::new();
        for (name, sql) in read_statements::<B>() {
            plans.push((name, B::explain(&mut tx, sql).await?));
        }
        tx.rollback().await?;
        Ok(plans)
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        self.parts().writer.append(request).await
    }

    async fn read_stream(&self, query: &StreamQuery) -> Result<StreamPage, StoreError> {
        if !query.from_snapshot {
            return read_stream_on::<B>(&mut *connection(self).await?, query).await;
        }
        // The snapshot and the events after it come from one snapshot of the
        // store: no append can slip in between the two halves.
        let mut tx = self.begin_read().await?;
        let page = read_stream_on::<B>(&mut tx, query).await?;
        tx.commit().await?;
        Ok(page)
    }

    async fn read_global(&self, query: &GlobalQuery) -> Result<GlobalPage, StoreError> {
        // A filtered read looks at a bounded window of the log, so a rare
        // filter costs one short page, not a scan of the whole store.
        let mut conn = connection(self).await?;
        let window_end = match query.filter.is_empty() {
            true => None,
            false => B::fetch_int(&mut conn, global_window::<B>(query)).await?,
        };
        let events = B::fetch_events(&mut conn, global_events::<B>(query, window_end)).await?;
        Ok(query.page(events, window_end))
    }

    async fn stream_version(&self, stream: &str) -> Result<i64, StoreError> {
        let mut conn = connection(self).await?;
        Ok(B::fetch_int(&mut conn, stream_version(stream))
            .await?
            .unwrap_or(-1))
    }

    async fn last_event(
        &self,
        stream: &str,
        event_type: Option<&str>,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        let mut conn = connection(self).await?;
        Ok(
            B::fetch_events(&mut conn, last_event::<B>(stream, event_type))
                .await?
                .pop(),
        )
    }

    async fn event(&self, id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let mut conn = connection(self).await?;
        Ok(B::fetch_events(&mut conn, event_by_id::<B>(id))
            .await?
            .pop())
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        let mut conn = connection(self).await?;
        B::fetch_streams(&mut conn, stream_list::<B>(prefix, after, limit)).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        let ping = async {
            let mut conn = connection(self).await?;
            B::fetch_int(&mut conn, Sql::new("SELECT CAST(1 AS BIGINT)")).await
        };
        match tokio::time::timeout(HEALTH_TIMEOUT, ping).await {
            Ok(result) => result.map(drop),
            Err(_) => Err(StoreError::Unavailable(
                "the database did not answer in time".into(),
            )),
        }
    }

    async fn append_snapshot(&self, snapshot: NewSnapshot) -> Result<Snapshot, SnapshotError> {
        let time = now_micros();
        // One statement: the version check and the insert cannot be split by an append.
        let mut sql =
            Sql::new("INSERT INTO snapshots (stream, version, type, state, time) SELECT ");
        sql.bind(snapshot.stream.as_str())
            .push(", ")
            .bind(snapshot.version)
            .push(", ")
            .bind(snapshot.snapshot_type.as_deref())
            .push(", ")
            .bind(snapshot.state.get())
            .push(", ")
            .bind(time.timestamp_micros())
            .push(" WHERE EXISTS (SELECT 1 FROM streams WHERE stream = ")
            .bind(snapshot.stream.as_str())
            .push(" AND version >= ")
            .bind(snapshot.version)
            .push(")");
        let mut conn = connection(self).await?;
        if B::execute(&mut conn, sql).await? == 0 {
            let actual = B::fetch_int(&mut conn, stream_version(&snapshot.stream)).await?;
            return Err(match actual {
                None => SnapshotError::NoStream(snapshot.stream),
                Some(actual) => SnapshotError::BeyondVersion {
                    version: snapshot.version,
                    actual,
                },
            });
        }
        Ok(Snapshot {
            stream: snapshot.stream,
            version: snapshot.version,
            snapshot_type: snapshot.snapshot_type,
            state: snapshot.state,
            time,
        })
    }

    async fn snapshot(
        &self,
        stream: &str,
        until_version: Option<i64>,
    ) -> Result<Option<Snapshot>, StoreError> {
        let sql = newest_snapshot(stream, until_version.unwrap_or(i64::MAX));
        let mut conn = connection(self).await?;
        Ok(B::fetch_snapshots(&mut conn, sql).await?.pop())
    }

    async fn head(&self) -> Result<i64, StoreError> {
        let mut conn = connection(self).await?;
        Ok(B::fetch_int(&mut conn, head()).await?.unwrap_or(0))
    }

    fn changes(&self) -> Arc<Notify> {
        self.parts().changes.clone()
    }

    async fn put_checkpoint(
        &self,
        consumer: &str,
        position: i64,
    ) -> Result<Checkpoint, StoreError> {
        let time = now_micros();
        let mut sql = Sql::new("INSERT INTO checkpoints (consumer, position, time) VALUES (");
        sql.bind(consumer)
            .push(", ")
            .bind(position)
            .push(", ")
            .bind(time.timestamp_micros())
            .push(
                ") ON CONFLICT (consumer) DO UPDATE \
                 SET position = excluded.position, time = excluded.time",
            );
        let mut conn = connection(self).await?;
        B::execute(&mut conn, sql).await?;
        Ok(Checkpoint {
            consumer: consumer.to_owned(),
            position,
            time,
        })
    }

    async fn checkpoint(&self, consumer: &str) -> Result<Option<Checkpoint>, StoreError> {
        let mut conn = connection(self).await?;
        Ok(B::fetch_checkpoints(&mut conn, checkpoint(consumer))
            .await?
            .pop())
    }

    async fn trace(&self, id: Uuid, limits: TraceLimits) -> Result<Option<Trace>, StoreError> {
        let columns = event_columns::<B>();
        let mut tx = self.begin_read().await?;
        let Some(message) = B::fetch_events(&mut tx, event_by_id::<B>(id)).await?.pop() else {
            return Ok(None);
        };
        let mut truncated = false;

        // Causes: nearest first from the database, cut at a cycle or the cap.
        let mut seen = HashSet::from([id]);
        let mut causes = Vec::new();
        for cause in B::fetch_events(&mut tx, self::causes(id, limits.max_depth, &columns)).await? {
            if causes.len() == limits.max_depth || !seen.insert(cause.id) {
                truncated = true;
                break;
            }
            causes.push(cause);
        }
        causes.reverse();

        // Effects: one level at a time through the causation index, nearest
        // levels first, so the caps keep the part closest to the message.
        let mut children: HashMap<Uuid, Vec<RecordedEvent>> = HashMap::new();
        let mut frontier = vec![id];
        let mut seen = HashSet::from([id]);
        let mut count = 0;
        'levels: for depth in 0..=limits.max_depth {
            let mut next = Vec::new();
            for chunk in frontier.chunks(IN_LIST_CHUNK) {
                // Never more rows than fit, plus one to tell that a cap is hit.
                let room = match depth == limits.max_depth {
                    true => 0,
                    false => limits.max_events - count,
                };
                let limit = room as i64 + 1;
                let found = B::fetch_events(&mut tx, effects::<B>(chunk, limit)).await?;
                let full = found.len() as i64 == limit;
                for effect in found {
                    if depth == limits.max_depth || count == limits.max_events {
                        truncated = true;
                        break 'levels;
                    }
                    if !seen.insert(effect.id) {
                        truncated = true; // a cycle
                        continue;
                    }
                    count += 1;
                    next.push(effect.id);
                    let parent = effect.causation_id.expect("selected by causation_id");
                    children.entry(parent).or_default().push(effect);
                }
                if full {
                    truncated = true;
                    break 'levels;
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        tx.commit().await?;
        Ok(Some(Trace {
            message,
            causes,
            effects_by_cause: children,
            truncated,
        }))
    }
}
