//! Reads of events: one stream, global order (all, a category, a
//! correlation), single events, the stream listing and the head of the log.

use async_trait::async_trait;
use chrono::Utc;
use uuid::Uuid;

use super::backend::{
    Conn, SqlBackend, connection, event_columns, fetch_as, fetch_events, fetch_events_within,
};
use super::error::StoreError;
use super::model::Snapshot;
use super::model::{
    Direction, Filter, GlobalPage, GlobalQuery, RecordedEvent, Scope, StreamInfo, StreamPage,
    StreamQuery, prefix_upper_bound, scan_window,
};
use super::rows::{SnapshotRow, StreamRow};
use super::snapshots::newest_snapshot;
use super::sql::{Runner, Sql};

/// Reading events and streams.
#[async_trait]
pub trait Reads: Send + Sync {
    /// Reads one stream.
    async fn read_stream(&self, query: &StreamQuery) -> Result<StreamPage, StoreError>;
    /// Reads a category, a correlation or the whole log in global order.
    async fn read_global(&self, query: &GlobalQuery) -> Result<GlobalPage, StoreError>;
    /// The stream's version, -1 when it has no events.
    async fn stream_version(&self, stream: &str) -> Result<i64, StoreError>;
    /// The stream's last event, optionally the last of a type.
    async fn last_event(
        &self,
        stream: &str,
        types: &[String],
    ) -> Result<Option<RecordedEvent>, StoreError>;
    /// One event by id.
    async fn event(&self, id: Uuid) -> Result<Option<RecordedEvent>, StoreError>;
    /// Streams whose name starts with `prefix`, in byte order, after `after`.
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StreamInfo>, StoreError>;
    /// The highest global position ever committed (0 when none), erased or not.
    async fn head(&self) -> Result<i64, StoreError>;
}

#[async_trait]
impl<B: SqlBackend> Reads for B {
    #[tracing::instrument(level = "debug", skip(self))]
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

    #[tracing::instrument(level = "debug", skip(self))]
    async fn read_global(&self, query: &GlobalQuery) -> Result<GlobalPage, StoreError> {
        // A filtered read looks at a bounded window of the log, so a rare
        // filter costs one short page, not a scan of the whole store.
        let mut conn = connection(self).await?;
        let window_end = match query.filter.is_empty() {
            true => None,
            false => B::Db::fetch_int(&mut conn, global_window::<B>(query)).await?,
        };
        let sql = global_events::<B>(query, window_end);
        let events = fetch_events_within::<B>(&mut conn, sql, query.max_bytes).await?;
        Ok(query.page(events, window_end))
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn stream_version(&self, stream: &str) -> Result<i64, StoreError> {
        let mut conn = connection(self).await?;
        Ok(B::Db::fetch_int(&mut conn, stream_version(stream))
            .await?
            .unwrap_or(-1))
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn last_event(
        &self,
        stream: &str,
        types: &[String],
    ) -> Result<Option<RecordedEvent>, StoreError> {
        let mut conn = connection(self).await?;
        Ok(fetch_events::<B>(&mut conn, last_event::<B>(stream, types))
            .await?
            .pop())
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn event(&self, id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let mut conn = connection(self).await?;
        Ok(fetch_events::<B>(&mut conn, event_by_id::<B>(id))
            .await?
            .pop())
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        let mut conn = connection(self).await?;
        fetch_as::<B, StreamRow, StreamInfo>(&mut conn, stream_list::<B>(prefix, after, limit))
            .await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn head(&self) -> Result<i64, StoreError> {
        let mut conn = connection(self).await?;
        Ok(B::Db::fetch_int(&mut conn, head()).await?.unwrap_or(0))
    }
}

/// Starts a `SELECT … FROM events` with the scope of a global read.
pub(super) fn scoped<B: SqlBackend>(columns: &str, query: &GlobalQuery) -> Sql {
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
            bound = bound.min(B::Db::fetch_int(conn, version_then).await?.unwrap_or(-1));
        }
        snapshot =
            fetch_as::<B, SnapshotRow, Snapshot>(conn, newest_snapshot(&query.stream, bound))
                .await?
                .pop();
        if let Some(snapshot) = &snapshot {
            query.position = Some(query.position.unwrap_or(0).max(snapshot.version + 1));
        }
    }
    let sql = stream_events::<B>(&query);
    let events = fetch_events_within::<B>(conn, sql, query.max_bytes).await?;
    // The version is read after the events, so it is never older than them.
    let version = B::Db::fetch_int(conn, stream_version(&query.stream))
        .await?
        .unwrap_or(-1);
    let mut page = query.page(version, events);
    page.snapshot = snapshot;
    Ok(page)
}

/// The events of a stream read, one more than the page (see [`StreamQuery::page`]).
pub(super) fn stream_events<B: SqlBackend>(query: &StreamQuery) -> Sql {
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
pub(super) fn version_at<B: SqlBackend>(stream: &str, micros: i64) -> Sql {
    let mut sql = Sql::new("SELECT max(position) FROM events WHERE stream = ");
    sql.bind(stream)
        .push(&format!(" AND {} <= ", B::micros("time")))
        .bind(micros);
    sql
}

/// Where the scan window of a filtered global read ends (exclusive).
pub(super) fn global_window<B: SqlBackend>(query: &GlobalQuery) -> Sql {
    let mut sql = scoped::<B>("global_position", query);
    sql.push(" ORDER BY global_position LIMIT 1 OFFSET ")
        .bind(scan_window(query.limit));
    sql
}

/// The events of a global read, one more than the page, within the window.
pub(super) fn global_events<B: SqlBackend>(query: &GlobalQuery, window_end: Option<i64>) -> Sql {
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
pub(super) fn last_event<B: SqlBackend>(stream: &str, types: &[String]) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT {} FROM events WHERE stream = ",
        event_columns::<B>()
    ));
    sql.bind(stream);
    if !types.is_empty() {
        let types: Vec<&str> = types.iter().map(String::as_str).collect();
        sql.push(" AND type IN ").bind_list(&types);
    }
    sql.push(" ORDER BY position DESC LIMIT 1");
    sql
}

/// One event by id.
pub(super) fn event_by_id<B: SqlBackend>(id: Uuid) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT {} FROM events WHERE id = ",
        event_columns::<B>()
    ));
    sql.bind(id);
    sql
}

/// A page of the stream listing. [prefix, upper bound) holds exactly the
/// names that start with prefix.
pub(super) fn stream_list<B: SqlBackend>(prefix: &str, after: Option<&str>, limit: i64) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT stream, version, {} AS last_time_micros FROM streams WHERE stream >= ",
        B::micros("last_time")
    ));
    sql.bind(prefix)
        .push(" AND stream < ")
        .bind(prefix_upper_bound(prefix).as_str())
        .push(" AND stream > ")
        .bind(after.unwrap_or(""))
        .push(" ORDER BY stream LIMIT ")
        .bind(limit);
    sql
}

/// The head of the log as a scalar subquery: the highest global position
/// ever committed, which outlives its event's erasure in `log_head`.
pub(super) const HEAD: &str = "(SELECT max(global_position) FROM \
     (SELECT max(global_position) AS global_position FROM events \
     UNION ALL SELECT global_position FROM log_head WHERE singleton = true) AS heads)";

/// The head of the log (NULL when nothing was ever committed).
pub(super) fn head() -> Sql {
    Sql::new(&format!("SELECT {HEAD}"))
}

/// The version of a stream.
pub(super) fn stream_version(stream: &str) -> Sql {
    let mut sql = Sql::new("SELECT version FROM streams WHERE stream = ");
    sql.bind(stream);
    sql
}

/// The read statements of this module, named, with typical arguments.
pub(super) fn statements<B: SqlBackend>() -> Vec<(&'static str, Sql)> {
    let stream = |direction, as_of| StreamQuery {
        stream: "s-1".into(),
        position: Some(0),
        limit: 100,
        max_bytes: usize::MAX,
        direction,
        until_version: Some(10),
        as_of,
        from_snapshot: false,
    };
    let global = |scope: Scope, filtered: bool| GlobalQuery {
        scope,
        position: 1,
        limit: 100,
        max_bytes: usize::MAX,
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
        (
            "last event of a type",
            last_event::<B>("s-1", &["A".into(), "B".into()]),
        ),
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
    ]
}
